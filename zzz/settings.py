"""Every knob of zzz, as small frozen groups: the one settings vocabulary of ``App``, ``connect``
and ``Connection``.

Each group holds what one part of the house reads: ``WsLimits`` the protocol layer, ``HttpLimits``
the HTTP side, ``Timeouts`` and ``FlowControl`` the I/O drivers, ``Compression`` and ``Security``
the upgrade. ``Settings`` composes them for an ``App``; its flat names (``max_message_size``,
``open_timeout``, ...) are the keyword arguments of ``App(**settings)`` and read-only attributes,
mapped to the groups by ``FLAT_NAMES``. ``None`` turns a limit or a timeout off.

Plain data: nothing here reads a socket, a loop or a request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from zzz.deflate import DeflateConfig

__all__ = [
    "FLAT_NAMES",
    "Compression",
    "FlowControl",
    "HttpLimits",
    "Operations",
    "Security",
    "Settings",
    "StaticFiles",
    "Telemetry",
    "Timeouts",
    "WsLimits",
]


@dataclass(frozen=True)
class WsLimits:
    """What one WebSocket connection accepts from its peer.

    Attributes:
        max_message_size: a message after reassembly and decompression (1 MiB); over it: 1009.
        max_frame_size: one frame's payload (None: same as ``max_message_size``); over it: 1009.
        max_fragments: frames in one message (4096); over it: 1008.
    """

    max_message_size: int | None = 1 << 20
    max_frame_size: int | None = None
    max_fragments: int | None = 4096


@dataclass(frozen=True)
class HttpLimits:
    """What the HTTP side refuses, and with which status.

    Attributes:
        max_request_line: request line bytes (8192); over it: 414.
        max_header_size: one header line (8192); over it: 431.
        max_header_count: header fields in a head (128); over it: 431.
        max_head_size: a whole request head (64 KiB); over it: 431.
        max_body_size: an HTTP request body (1 MiB); over it: 413.
        max_connections: open TCP connections (50,000); beyond it new ones get 503.
    """

    max_request_line: int = 8192
    max_header_size: int = 8192
    max_header_count: int = 128
    max_head_size: int = 65536
    max_body_size: int = 1 << 20
    max_connections: int | None = 50_000


@dataclass(frozen=True)
class Timeouts:
    """How long a connection may wait, in seconds.

    Attributes:
        open: from accept to a complete request head, and on idle keep-alive (10); on the client,
            TCP, TLS and the handshake together.
        close: wait for the peer's close frame before aborting (10).
        ping_interval: a ping when the peer was silent this long (20).
        ping_timeout: no pong this long after a ping: 1011 sent, 1006 reported (20).
    """

    open: float | None = 10.0
    close: float | None = 10.0
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0


@dataclass(frozen=True)
class FlowControl:
    """How much may wait in memory on one connection.

    Attributes:
        write_high_water: send buffer bytes above which ``drain()`` waits and reading pauses (64 KiB).
        write_low_water: send buffer bytes below which writing resumes (16 KiB).
        max_backpressure: unsent bytes per connection (8 MiB); over it the connection is closed, 1008.
        max_queue: received messages a client buffers before it stops reading (16; client only).
    """

    write_high_water: int = 64 * 1024
    write_low_water: int = 16 * 1024
    max_backpressure: int | None = 8 << 20
    max_queue: int = 16


@dataclass(frozen=True)
class Telemetry:
    """What zzz tells an operator.

    Attributes:
        metrics_path: serve ``stats()`` in the Prometheus text format at this path (None: not
            served); needs the ``prometheus-client`` package (``zzz[metrics]``).
    """

    metrics_path: str | None = None


@dataclass(frozen=True)
class Compression:
    """permessage-deflate (RFC 7692).

    Attributes:
        enabled: negotiate it when the peer offers it (server) or offer it (client) (True).
        config: window bits, memory level, context takeover (None: ``DeflateConfig()``).
    """

    enabled: bool = True
    config: DeflateConfig | None = None


@dataclass(frozen=True)
class Security:
    """Who may connect.

    Attributes:
        allowed_origins: exact ``scheme://host[:port]`` values; others get 403 (None: any).
        proxy_headers: believe ``Forwarded`` / ``X-Forwarded-For`` / ``X-Forwarded-Proto`` from a
            trusted proxy (False).
        forwarded_allow_ips: the peers whose forwarding headers are believed: addresses or CIDRs,
            ``"*"`` for any (``("127.0.0.1",)``).
    """

    allowed_origins: Sequence[str] | None = None
    proxy_headers: bool = False
    forwarded_allow_ips: Sequence[str] = ("127.0.0.1",)


@dataclass(frozen=True)
class StaticFiles:
    """How zzz serves its own files (the browser client at ``/__zzz/``).

    Attributes:
        max_age: ``Cache-Control: max-age`` in seconds (86400).
    """

    max_age: int = 86400


@dataclass(frozen=True)
class Operations:
    """How a server stops, and how it tells a load balancer.

    Attributes:
        drain_batch: WebSockets closed at once when the server shuts down or restarts (1000); the
            rest wait for the next round, so clients do not all reconnect in the same instant.
        drain_interval: seconds between two rounds (0.5).
        health_path: a path the server answers itself, before routing and middleware: 200 while
            serving, 503 while draining (None: no such path).

    Raises:
        ValueError: ``drain_batch`` < 1, ``drain_interval`` < 0, or a ``health_path`` that does not
            start with ``/``.
    """

    drain_batch: int = 1000
    drain_interval: float = 0.5
    health_path: str | None = None

    def __post_init__(self) -> None:
        if (
            isinstance(self.drain_batch, bool)
            or not isinstance(self.drain_batch, int)
            or self.drain_batch < 1
        ):
            raise ValueError(f"drain_batch must be an int >= 1, not {self.drain_batch!r}")
        if (
            isinstance(self.drain_interval, bool)
            or not isinstance(self.drain_interval, (int, float))
            or not (self.drain_interval >= 0)
        ):
            raise ValueError(f"drain_interval must be a number >= 0, not {self.drain_interval!r}")
        if self.health_path is not None and not (
            isinstance(self.health_path, str) and self.health_path.startswith("/")
        ):
            raise ValueError(
                f"health_path must be None or a path starting with '/', not {self.health_path!r}"
            )


# Flat name -> (group attribute of Settings, field of that group). The flat names are the keyword
# arguments of App and the attributes read all over the server; the groups are where they live.
FLAT_NAMES: Mapping[str, tuple[str, str]] = {
    # Limits
    "max_message_size": ("ws", "max_message_size"),
    "max_frame_size": ("ws", "max_frame_size"),
    "max_fragments": ("ws", "max_fragments"),
    "max_request_line": ("http", "max_request_line"),
    "max_header_size": ("http", "max_header_size"),
    "max_header_count": ("http", "max_header_count"),
    "max_head_size": ("http", "max_head_size"),
    "max_body_size": ("http", "max_body_size"),
    "max_connections": ("http", "max_connections"),
    "max_backpressure": ("flow", "max_backpressure"),
    "write_high_water": ("flow", "write_high_water"),
    "write_low_water": ("flow", "write_low_water"),
    # Timeouts
    "open_timeout": ("timeouts", "open"),
    "close_timeout": ("timeouts", "close"),
    "ping_interval": ("timeouts", "ping_interval"),
    "ping_timeout": ("timeouts", "ping_timeout"),
    # Compression
    "compression": ("permessage_deflate", "enabled"),
    "deflate": ("permessage_deflate", "config"),
    # Telemetry
    "metrics_path": ("telemetry", "metrics_path"),
    # Security
    "allowed_origins": ("security", "allowed_origins"),
    "proxy_headers": ("security", "proxy_headers"),
    "forwarded_allow_ips": ("security", "forwarded_allow_ips"),
    # Static files
    "static_max_age": ("static", "max_age"),
    # Operations
    "drain_batch": ("ops", "drain_batch"),
    "drain_interval": ("ops", "drain_interval"),
    "health_path": ("ops", "health_path"),
}

_GROUPS: dict[str, type[Any]] = {
    "ws": WsLimits,
    "http": HttpLimits,
    "timeouts": Timeouts,
    "flow": FlowControl,
    "telemetry": Telemetry,
    "permessage_deflate": Compression,
    "security": Security,
    "static": StaticFiles,
    "ops": Operations,
}


@dataclass(frozen=True, init=False)
class Settings:
    """Every knob of an ``App``: the groups, and a flat read-only name for each of their fields.

    ``Settings(max_message_size=..., open_timeout=...)`` takes the flat names (those of
    ``App(**settings)``); ``Settings(ws=WsLimits(...), timeouts=Timeouts(...))`` takes whole groups,
    and flat names given with them override the group's field. A group not given has its defaults.

    Attributes:
        ws: ``WsLimits`` (``max_message_size``, ``max_frame_size``, ``max_fragments``).
        http: ``HttpLimits`` (``max_request_line``, ``max_header_size``, ``max_header_count``,
            ``max_head_size``, ``max_body_size``, ``max_connections``).
        timeouts: ``Timeouts`` (``open_timeout``, ``close_timeout``, ``ping_interval``,
            ``ping_timeout``).
        flow: ``FlowControl`` (``write_high_water``, ``write_low_water``, ``max_backpressure``;
            its ``max_queue`` is the client's and has no flat name here).
        telemetry: ``Telemetry`` (``metrics_path``).
        permessage_deflate: ``Compression`` (``compression``, ``deflate``).
        security: ``Security`` (``allowed_origins``, ``proxy_headers``, ``forwarded_allow_ips``).
        static: ``StaticFiles`` (``static_max_age``).
        ops: ``Operations`` (``drain_batch``, ``drain_interval``, ``health_path``).
    """

    ws: WsLimits
    http: HttpLimits
    timeouts: Timeouts
    flow: FlowControl
    telemetry: Telemetry
    permessage_deflate: Compression
    security: Security
    static: StaticFiles
    ops: Operations

    def __init__(
        self,
        *,
        ws: WsLimits | None = None,
        http: HttpLimits | None = None,
        timeouts: Timeouts | None = None,
        flow: FlowControl | None = None,
        telemetry: Telemetry | None = None,
        permessage_deflate: Compression | None = None,
        security: Security | None = None,
        static: StaticFiles | None = None,
        ops: Operations | None = None,
        **flat: Any,
    ) -> None:
        """Build the groups from whole groups and flat names.

        Raises:
            TypeError: a flat name that is no setting, or a group of the wrong type.
        """
        unknown = set(flat) - FLAT_NAMES.keys()
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        given = {
            "ws": ws,
            "http": http,
            "timeouts": timeouts,
            "flow": flow,
            "telemetry": telemetry,
            "permessage_deflate": permessage_deflate,
            "security": security,
            "static": static,
            "ops": ops,
        }
        changes: dict[str, dict[str, Any]] = {}
        for name, value in flat.items():
            group, field_name = FLAT_NAMES[name]
            changes.setdefault(group, {})[field_name] = value
        for group, cls in _GROUPS.items():
            value = given[group]
            if value is None:
                value = cls(**changes.get(group, {}))
            elif not isinstance(value, cls):
                raise TypeError(f"Settings {group}= takes a {cls.__name__}, not {type(value).__name__}")
            elif group in changes:
                value = replace(value, **changes[group])
            object.__setattr__(self, group, value)  # frozen: the dataclass forbids plain assignment

    # The flat names, read-only (keep in step with FLAT_NAMES).

    @property
    def max_message_size(self) -> int | None:
        """``ws.max_message_size``."""
        return self.ws.max_message_size

    @property
    def max_frame_size(self) -> int | None:
        """``ws.max_frame_size``."""
        return self.ws.max_frame_size

    @property
    def max_fragments(self) -> int | None:
        """``ws.max_fragments``."""
        return self.ws.max_fragments

    @property
    def max_request_line(self) -> int:
        """``http.max_request_line``."""
        return self.http.max_request_line

    @property
    def max_header_size(self) -> int:
        """``http.max_header_size``."""
        return self.http.max_header_size

    @property
    def max_header_count(self) -> int:
        """``http.max_header_count``."""
        return self.http.max_header_count

    @property
    def max_head_size(self) -> int:
        """``http.max_head_size``."""
        return self.http.max_head_size

    @property
    def max_body_size(self) -> int:
        """``http.max_body_size``."""
        return self.http.max_body_size

    @property
    def max_connections(self) -> int | None:
        """``http.max_connections``."""
        return self.http.max_connections

    @property
    def max_backpressure(self) -> int | None:
        """``flow.max_backpressure``."""
        return self.flow.max_backpressure

    @property
    def write_high_water(self) -> int:
        """``flow.write_high_water``."""
        return self.flow.write_high_water

    @property
    def write_low_water(self) -> int:
        """``flow.write_low_water``."""
        return self.flow.write_low_water

    @property
    def metrics_path(self) -> str | None:
        """``telemetry.metrics_path``."""
        return self.telemetry.metrics_path

    @property
    def open_timeout(self) -> float | None:
        """``timeouts.open``."""
        return self.timeouts.open

    @property
    def close_timeout(self) -> float | None:
        """``timeouts.close``."""
        return self.timeouts.close

    @property
    def ping_interval(self) -> float | None:
        """``timeouts.ping_interval``."""
        return self.timeouts.ping_interval

    @property
    def ping_timeout(self) -> float | None:
        """``timeouts.ping_timeout``."""
        return self.timeouts.ping_timeout

    @property
    def compression(self) -> bool:
        """``permessage_deflate.enabled``."""
        return self.permessage_deflate.enabled

    @property
    def deflate(self) -> DeflateConfig | None:
        """``permessage_deflate.config``."""
        return self.permessage_deflate.config

    @property
    def allowed_origins(self) -> Sequence[str] | None:
        """``security.allowed_origins``."""
        return self.security.allowed_origins

    @property
    def proxy_headers(self) -> bool:
        """``security.proxy_headers``."""
        return self.security.proxy_headers

    @property
    def forwarded_allow_ips(self) -> Sequence[str]:
        """``security.forwarded_allow_ips``."""
        return self.security.forwarded_allow_ips

    @property
    def static_max_age(self) -> int:
        """``static.max_age``."""
        return self.static.max_age

    @property
    def drain_batch(self) -> int:
        """``ops.drain_batch``."""
        return self.ops.drain_batch

    @property
    def drain_interval(self) -> float:
        """``ops.drain_interval``."""
        return self.ops.drain_interval

    @property
    def health_path(self) -> str | None:
        """``ops.health_path``."""
        return self.ops.health_path
