"""The server's side of the opening handshake, sans-I/O: from an upgrade request to the 101 to send.

Two steps around the middleware of a WebSocket route. ``check`` runs before any middleware: the
RFC 6455 checks (``zzz.handshake.validate_request``) and the origin check, so a request that
cannot be upgraded is refused whatever the middleware would do. ``accept`` is the route's
endpoint once the middleware let the request through: it picks the subprotocol and negotiates
permessage-deflate, and returns the ``UpgradeResponse`` (the middleware may still replace it by
any other response). The server writes its ``encode()`` (the 101), and drives ``connection(...)``,
the protocol state it agreed on, with a ``WebSocketProtocol`` on the same transport.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any

from zzz import deflate as deflate_module
from zzz import handshake
from zzz.http import Request, Response
from zzz.protocol import Connection
from zzz.settings import Settings

__all__ = ["UpgradeResponse", "accept", "check", "connection", "negotiate_deflate", "origin_allowed"]


class UpgradeResponse(Response):
    """What the endpoint of a WebSocket route returns: middleware may still replace it.

    Attributes:
        config: the route's WebSocket config (``Route.ws_config``, a ``zzz.WsConfig``).
        key: the client's ``Sec-WebSocket-Key``.
        subprotocol: the subprotocol chosen, or None.
        deflate: the negotiated ``zzz.deflate.DeflateParams``, or None.
        ext_header: the ``Sec-WebSocket-Extensions`` value to answer with, or None.
    """

    def __init__(
        self,
        config: Any,
        key: str,
        subprotocol: str | None,
        deflate: deflate_module.DeflateParams | None,
        ext_header: str | None,
    ) -> None:
        super().__init__(b"", status=101)
        self.config = config
        self.key = key
        self.subprotocol = subprotocol
        self.deflate = deflate
        self.ext_header = ext_header

    def encode(self, *, keep_alive: bool = True, head: bool = False, date: bool = True) -> bytes:
        """The ``101 Switching Protocols`` head (the arguments of ``Response.encode`` don't apply).

        Raises:
            ValueError: the subprotocol or extension answer would not be a valid header.
        """
        return handshake.build_response(self.key, subprotocol=self.subprotocol, extensions=self.ext_header)


def check(request: Request, settings: Settings) -> str:
    """The checks an upgrade request passes before any middleware, in this order.

    The opening handshake (405, 400, 426: see ``zzz.handshake``), then the origin: with
    ``allowed_origins`` set, a request whose ``Origin`` is missing or not listed gets 403.

    Returns:
        The ``Sec-WebSocket-Key``, for ``accept``.

    Raises:
        zzz.handshake.HandshakeError: the refusal to answer with.
    """
    key = handshake.validate_request(request.method, request.http_version, request.headers.items())
    allowed = settings.allowed_origins
    if allowed is not None:
        origin = request.headers.get("origin")
        if origin is None or not origin_allowed(origin, allowed):
            raise handshake.HandshakeError(403, "Forbidden: origin not allowed")
    return key


def accept(request: Request, config: Any, key: str, settings: Settings) -> UpgradeResponse:
    """The upgrade ``request`` gets once its route's middleware let it through.

    Args:
        request: the request as the innermost middleware passed it on.
        config: the route's WebSocket config (its ``subprotocols`` are offered).
        key: what ``check`` returned.
        settings: ``compression`` and ``deflate`` decide the permessage-deflate answer.
    """
    subprotocol = None
    if config.subprotocols:
        subprotocol = handshake.select_subprotocol(
            request.headers.get_all("sec-websocket-protocol"), config.subprotocols
        )
    negotiated = negotiate_deflate(request, settings) if settings.compression else None
    ext_header, params = negotiated if negotiated else (None, None)
    return UpgradeResponse(config, key, subprotocol, params, ext_header)


def connection(up: UpgradeResponse, settings: Settings) -> Connection:
    """The sans-I/O ``Connection`` of an accepted upgrade: the negotiated deflate, the message limits."""
    deflate = None
    if up.deflate is not None:
        config = settings.deflate or deflate_module.DeflateConfig()
        deflate = deflate_module.PerMessageDeflate.from_config(up.deflate, config, is_server=True)
    return Connection(is_server=True, deflate=deflate, limits=settings.ws)


def origin_allowed(origin: str, allowed: Sequence[str]) -> bool:
    """Whether ``origin`` is one of ``allowed`` (case-insensitive, a trailing ``/`` ignored)."""
    origin = origin.strip().lower().rstrip("/")
    return any(hmac.compare_digest(origin, a.strip().lower().rstrip("/")) for a in allowed)


def negotiate_deflate(
    request: Request, settings: Settings
) -> tuple[str, deflate_module.DeflateParams] | None:
    """The ``(Sec-WebSocket-Extensions answer, DeflateParams)`` for the client's offers, or None."""
    values = request.headers.get_all("sec-websocket-extensions")
    if not values:
        return None
    return deflate_module.negotiate_request(values, settings.deflate or deflate_module.DeflateConfig())
