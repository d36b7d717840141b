"""The HTTP/1.1 side of an ASGI connection: requests streamed to the app as ``http`` scopes, and
WebSocket upgrades offered to it as ``websocket`` scopes until it accepts.

Parsing is zzz's own (``RequestParser(stream=True)`` on httptools: every head limit, the Host
and upgrade-body checks of the native server); the body reaches the app in pieces as it comes
(``more_body``), and reading pauses while ``write_high_water`` bytes of it wait for the app to
read them, or while 16 pipelined requests wait for their turn. Answers go out as the app sends
them: with its Content-Length, or chunked when it gives none and sends more than one part.
An accepted WebSocket goes to ``zzz._asgi_ws.AsgiWebSocket`` on the same transport.

The ASGI rules the app must keep are checked in its ``send``, which raises ``RuntimeError``
when one is broken (a second start, a body after the response completed, a message before
``websocket.accept`` ...); a failure the app did not handle is logged and answered as the
issue says: 500 before a response started, the connection dropped after, 1011 on a WebSocket.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from zzz import handshake, proxy, upgrade
from zzz._asgi_ws import AsgiWebSocket
from zzz._grammar import REASONS, is_field_value, is_token
from zzz.errors import HttpRefusal
from zzz.http import HttpError, Request, _http_date, error_response
from zzz.http_parser import END_OF_BODY, RequestParser
from zzz.hub import ConnectionHub
from zzz.server import HttpFlow, _bad_request, _health_response

__all__ = ["ASGI_VERSION", "AsgiApp3", "AsgiHttpProtocol"]

logger = logging.getLogger("zzz")

AsgiApp3 = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[dict[str, Any]]],
        Callable[[dict[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]

#: The ``scope["asgi"]`` of every scope: ASGI 3.0, the 2.4 HTTP and WebSocket spec.
ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}

_SHUTDOWN_GRACE = 1.0
_MAX_QUEUED = 16  # pipelined requests waiting for their turn before reading pauses
_FEED_SLICE = 16 * 1024
_MAX_EARLY = 64 * 1024  # bytes kept after an upgrade request while the app decides
_NO_BODY_STATUSES = frozenset({204, 304}) | frozenset(range(100, 200))

# Reasons reading is paused, besides HttpFlow's own (2: the write buffer is over its high-water
# mark).
_PAUSED_BY_BODY = 1  # the body not read by the app is over write_high_water
_PAUSED_BY_QUEUE = 4  # _MAX_QUEUED requests wait, or an error waits behind them
_PAUSED_BY_UPGRADE = 8  # _MAX_EARLY bytes after an upgrade request the app has not decided

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _address(addr: Any) -> Any:
    """An ASGI ``client``/``server`` value: ``[host, port]``, ``[path, None]`` or None."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        return (str(addr[0]), int(addr[1]))
    if isinstance(addr, str) and addr:
        return (addr, None)
    return None


def _header_bytes(items: Iterable[Any], what: str) -> list[tuple[bytes, bytes]]:
    """The app's headers as checked byte pairs (a CR, LF or NUL can't reach the wire).

    Raises:
        RuntimeError: a header is not a pair of bytes, its name no token or its value not a
            valid field value.
    """
    out: list[tuple[bytes, bytes]] = []
    for item in items:
        try:
            name, value = item
        except (TypeError, ValueError):
            raise RuntimeError(f"{what}: a header must be a (name, value) pair, not {item!r}") from None
        if isinstance(name, str):
            name = name.encode("latin-1")
        if isinstance(value, str):
            value = value.encode("latin-1")
        if not isinstance(name, (bytes, bytearray)) or not isinstance(value, (bytes, bytearray)):
            raise TypeError(f"{what}: header names and values must be bytes, not {item!r}")
        if not is_token(name.decode("latin-1")):
            raise RuntimeError(f"{what}: invalid header name {bytes(name)!r}")
        if not is_field_value(value.decode("latin-1")):
            raise RuntimeError(f"{what}: invalid value for header {bytes(name)!r}")
        out.append((bytes(name), bytes(value)))
    return out


def _status(message: dict[str, Any], what: str) -> int:
    status = message.get("status")
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise RuntimeError(f"{what}: invalid status {status!r}")
    return status


def _body(message: dict[str, Any], what: str) -> bytes:
    body = message.get("body", b"")
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError(f"{what}: body must be bytes, not {type(body).__name__}")
    return bytes(body)


def _simple_response(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes, *, keep_alive: bool, head: bool = False
) -> bytes:
    """A whole response with a Content-Length (a denial, a 403, a 500)."""
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, "Unknown").encode("latin-1"))]
    names = {name.lower() for name, _ in headers}
    if b"server" not in names:
        lines.append(b"server: zzz\r\n")
    if b"date" not in names:
        lines.append(b"date: %s\r\n" % _http_date().encode("latin-1"))
    for name, value in headers:
        if name.lower() not in (b"content-length", b"transfer-encoding", b"connection"):
            lines.append(b"%s: %s\r\n" % (name, value))
    lines.append(b"connection: keep-alive\r\n" if keep_alive else b"connection: close\r\n")
    if status not in _NO_BODY_STATUSES:
        lines.append(b"content-length: %d\r\n" % len(body))
    lines.append(b"\r\n")
    out = b"".join(lines)
    return out if head or status in _NO_BODY_STATUSES else out + body


def _error(status: int, text: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return status, [(b"content-type", b"text/plain; charset=utf-8")], text.encode()


class _Cycle:
    """One HTTP request and its response: the app's ``receive`` and ``send`` for it."""

    def __init__(self, proto: AsgiHttpProtocol, request: Request, scope: dict[str, Any]) -> None:
        self.proto = proto
        self.request = request
        self.scope = scope
        self.body: list[bytes] = []
        self.buffered = 0
        self.complete = False  # the whole request body arrived
        self.body_done = False  # the app got the body's last piece (more_body False)
        self.disconnected = False
        self.expect_continue = (request.headers.get("expect") or "").lower() == "100-continue"
        self.keep_alive = request.keep_alive
        self.head_only = request.method == "HEAD"
        self.started = False
        self.finished = False  # the response is complete
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_written = False
        self.chunked = False
        self.length: int | None = None  # the app's Content-Length
        self.sent = 0
        self.waiter: asyncio.Future[None] | None = None

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # From the parser

    def feed(self, data: bytes) -> None:
        if self.finished or self.disconnected:
            return  # the answer is out: the rest of the body is read and dropped
        self.body.append(data)
        self.buffered += len(data)
        if self.buffered > self.proto.settings.write_high_water:
            self.proto._pause(_PAUSED_BY_BODY)
        self._wake()

    def end(self) -> None:
        self.complete = True
        self._wake()

    def lost(self) -> None:
        self.disconnected = True
        self._wake()

    # The app's side

    async def receive(self) -> dict[str, Any]:
        """The next ``http.request`` piece, or ``http.disconnect``."""
        proto = self.proto
        while True:
            if self.disconnected or self.finished:
                return {"type": "http.disconnect"}
            if self.body or (self.complete and not self.body_done):
                body = self.body
                data = body[0] if len(body) == 1 else b"".join(body)
                self.body = []
                self.buffered = 0
                proto._resume(_PAUSED_BY_BODY)
                self.body_done = self.complete
                return {"type": "http.request", "body": data, "more_body": not self.complete}
            # Nothing to give: the body is on its way, or it was all read and the app waits for
            # the disconnect (or for its own response to complete).
            if self.expect_continue and not self.started and proto.transport is not None:
                self.expect_continue = False  # the app reads: let the client send the body
                proto.transport.write(_CONTINUE)
            self.waiter = proto.hub.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    async def send(self, message: dict[str, Any]) -> None:
        """``http.response.start`` and ``http.response.body``, in that order.

        Raises:
            RuntimeError: a message out of order, of an unknown type, or malformed; a body
                longer than the Content-Length the app gave.
        """
        kind = message.get("type")
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError(
                    "Unexpected ASGI message 'http.response.start' sent, after response already started."
                )
            self.status = _status(message, "http.response.start")
            self.headers = _header_bytes(message.get("headers", ()), "http.response.start")
            self.started = True
            return
        if kind != "http.response.body":
            raise RuntimeError(f"Unexpected ASGI message {kind!r} in an http scope.")
        if not self.started:
            raise RuntimeError(
                "Unexpected ASGI message 'http.response.body' sent, before 'http.response.start'."
            )
        if self.finished:
            raise RuntimeError(
                "Unexpected ASGI message 'http.response.body' sent, after response already completed."
            )
        body = _body(message, "http.response.body")
        more = bool(message.get("more_body", False))
        proto = self.proto
        transport = proto.transport
        if transport is None or self.disconnected:
            if not more:
                self.finished = True
            return  # the client is gone: what the app still sends goes nowhere (as on uvicorn)
        out: list[bytes] = []
        if not self.head_written:
            out.append(self._head(body, more))
        no_body = self.head_only or self.status in _NO_BODY_STATUSES
        if not no_body:
            if self.length is not None:
                self.sent += len(body)
                if self.sent > self.length:
                    raise RuntimeError("Response content longer than Content-Length")
            if self.chunked:
                if body:
                    out.append(b"%x\r\n%s\r\n" % (len(body), body))
                if not more:
                    out.append(b"0\r\n\r\n")
            elif body:
                out.append(body)
        if out:
            transport.write(b"".join(out) if len(out) > 1 else out[0])
        if not more:
            self.finished = True
            if self.length is not None and self.sent < self.length and not no_body:
                logger.error("ASGI response shorter than its Content-Length on %s", self.request.path)
                self.keep_alive = False
            self._wake()
            proto._response_done(self)
        elif proto.writing_paused:
            await proto._drain()

    def _head(self, body: bytes, more: bool) -> bytes:
        """The response head, deciding the framing: the app's Content-Length, else one whose
        value is the body when it comes in one part, else chunked (close-delimited for 1.0)."""
        self.head_written = True
        proto = self.proto
        status = self.status
        keep_alive = self.keep_alive and not proto.hub.closing
        if self.expect_continue and not self.complete:
            keep_alive = False  # the client waits for a 100 we never sent: its body won't come
        has_server = has_date = False
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, "Unknown").encode("latin-1"))]
        for name, value in self.headers:
            lower = name.lower()
            if lower == b"content-length":
                try:
                    self.length = int(value)
                except ValueError:
                    raise RuntimeError(f"invalid Content-Length {value!r}") from None
            elif lower == b"transfer-encoding":
                if value.lower() == b"chunked":
                    self.chunked = True
            elif lower == b"connection":
                if b"close" in value.lower():
                    keep_alive = False
                continue  # ours says what this connection does
            elif lower == b"server":
                has_server = True
            elif lower == b"date":
                has_date = True
            lines.append(b"%s: %s\r\n" % (name, value))
        if not has_server:
            lines.append(b"server: zzz\r\n")
        if not has_date:
            lines.append(b"date: %s\r\n" % _http_date().encode("latin-1"))
        if status not in _NO_BODY_STATUSES and self.length is None and not self.chunked:
            if not more:
                if not self.head_only:
                    self.length = len(body)
                    lines.append(b"content-length: %d\r\n" % len(body))
            elif self.request.http_version == "1.0":
                keep_alive = False  # no chunked coding in 1.0: the end of the body is the close
            elif not self.head_only:
                self.chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
        self.keep_alive = keep_alive
        lines.append(b"connection: keep-alive\r\n" if keep_alive else b"connection: close\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    def fail_500(self) -> None:
        """The app failed before starting a response: 500, and the connection closes."""
        self.started = self.finished = True
        self.keep_alive = False
        transport = self.proto.transport
        if transport is not None and not self.disconnected:
            status, headers, body = _error(500, "Internal Server Error")
            transport.write(_simple_response(status, headers, body, keep_alive=False, head=self.head_only))
        self._wake()
        self.proto._response_done(self)


class _Handshake:
    """A WebSocket upgrade offered to the app: ``websocket.connect`` until it accepts, closes or
    denies it; then the accepted connection's ``receive`` and ``send``."""

    def __init__(self, proto: AsgiHttpProtocol, request: Request, scope: dict[str, Any], key: str) -> None:
        self.proto = proto
        self.request = request
        self.scope = scope
        self.key = key
        self.connect_sent = False
        self.ws: AsgiWebSocket | None = None
        self.done = False  # answered without accepting (403, 500, the app's own response)
        self.disconnected = False
        self.deny: tuple[int, list[tuple[bytes, bytes]]] | None = None
        self.deny_body: list[bytes] = []
        self.waiter: asyncio.Future[None] | None = None
        # What _Cycle has, so that the protocol can treat both alike.
        self.keep_alive = False
        self.finished = False

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def lost(self) -> None:
        self.disconnected = True
        self._wake()

    def feed(self, data: bytes) -> None:
        """Never called: an upgrade request has no body (``_bad_request`` refuses one)."""

    def end(self) -> None:
        """The upgrade request's end (it has no body)."""

    async def receive(self) -> dict[str, Any]:
        """``websocket.connect`` first; then the accepted connection's messages."""
        while True:
            ws = self.ws
            if ws is not None:
                return await ws.receive()
            if not self.connect_sent:
                self.connect_sent = True
                return {"type": "websocket.connect"}
            if self.disconnected or self.done:
                return {"type": "websocket.disconnect", "code": 1006, "reason": ""}
            self.waiter = self.proto.hub.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    async def send(self, message: dict[str, Any]) -> None:
        """Raises: RuntimeError for a message the ASGI WebSocket spec does not allow now."""
        kind = message.get("type")
        ws = self.ws
        if ws is not None:
            if kind == "websocket.send":
                text, data = message.get("text"), message.get("bytes")
                if text is not None and not isinstance(text, str):
                    raise TypeError(f"websocket.send: text must be a str, not {type(text).__name__}")
                if text is None:
                    if data is None:
                        raise RuntimeError("websocket.send: neither 'bytes' nor 'text' is set")
                    if not isinstance(data, (bytes, bytearray, memoryview)):
                        raise TypeError(f"websocket.send: bytes must be bytes, not {type(data).__name__}")
                    await ws.send_message(None, data if type(data) is bytes else bytes(data))
                else:
                    await ws.send_message(text, None)
            elif kind == "websocket.close":
                if ws._app_closed:
                    return
                ws.close(_code(message), _reason(message))
            else:
                raise RuntimeError(
                    f"Expected ASGI message 'websocket.send' or 'websocket.close', but got {kind!r}."
                )
            return
        if self.deny is not None:
            if kind != "websocket.http.response.body" or self.done:
                raise RuntimeError(f"Expected ASGI message 'websocket.http.response.body', but got {kind!r}.")
            self.deny_body.append(_body(message, "websocket.http.response.body"))
            if not message.get("more_body", False):
                status, headers = self.deny
                self._answer(status, headers, b"".join(self.deny_body))
            return
        if self.done:
            raise RuntimeError(
                f"Unexpected ASGI message {kind!r}, after the WebSocket was closed before accepting."
            )
        if kind == "websocket.accept":
            self._accept(message)
        elif kind == "websocket.close":
            status, headers, body = _error(403, "Forbidden")
            self._answer(status, headers, body)
        elif kind == "websocket.http.response.start":
            self.deny = (
                _status(message, "websocket.http.response.start"),
                _header_bytes(message.get("headers", ()), "websocket.http.response.start"),
            )
        else:
            raise RuntimeError(
                "Expected ASGI message 'websocket.accept', 'websocket.close' or "
                f"'websocket.http.response.start', but got {kind!r}."
            )

    def _answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Refuse the upgrade with this response; the connection closes after it."""
        self.done = self.finished = True
        proto = self.proto
        proto.hub.counters.handshake_failed(status)
        if proto.transport is not None and not self.disconnected:
            proto.transport.write(_simple_response(status, headers, body, keep_alive=False))
        self._wake()
        proto._response_done(self)

    def _accept(self, message: dict[str, Any]) -> None:
        proto = self.proto
        settings = proto.settings
        subprotocol = message.get("subprotocol")
        if subprotocol is not None and not isinstance(subprotocol, str):
            raise TypeError(f"websocket.accept: subprotocol must be a str, not {type(subprotocol).__name__}")
        extra = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in _header_bytes(message.get("headers", ()), "websocket.accept")
        ]
        negotiated = upgrade.negotiate_deflate(self.request, settings) if settings.compression else None
        ext_header, params = negotiated if negotiated else (None, None)
        try:
            head = handshake.build_response(
                self.key, subprotocol=subprotocol, extensions=ext_header, extra_headers=extra
            )
        except ValueError as exc:
            raise RuntimeError(f"websocket.accept: {exc}") from None
        transport = proto.transport
        if transport is None or self.disconnected:
            self.done = True
            return  # the client left meanwhile: the app's next receive says so
        up = upgrade.UpgradeResponse(None, self.key, subprotocol, params, ext_header)
        conn = upgrade.connection(up, settings)
        transport.write(head)
        ws = AsgiWebSocket(proto.hub, transport, conn, self.request.path)
        self.ws = ws
        proto._switch(ws)
        ws.start(b"".join(proto.early))
        proto.early = []
        if proto.hub.closing:
            ws.shutdown()  # accepted after the last round of the drain
        self._wake()

    def app_done(self, exc: BaseException | None) -> None:
        """The app returned (or raised ``exc``): end what it left open."""
        ws = self.ws
        if ws is not None:
            if exc is not None:
                ws.close(1011, "internal error")
            elif not ws._app_closed:
                ws.close(1000, "")
            return
        if self.done:
            return
        if self.deny is not None:  # a denial begun and never finished: nothing valid to send
            self.done = self.finished = True
            self.proto.hub.counters.handshake_failed(self.deny[0])
            self.proto._response_done(self)
            return
        if exc is None:
            logger.error("ASGI callable returned without sending handshake on %s", self.request.path)
        status, headers, body = _error(500, "Internal Server Error")
        self._answer(status, headers, body)


def _code(message: dict[str, Any]) -> int:
    code = message.get("code", 1000)
    if code is None:
        return 1000
    if isinstance(code, bool) or not isinstance(code, int):
        raise TypeError(f"websocket.close: code must be an int, not {type(code).__name__}")
    return code


def _reason(message: dict[str, Any]) -> str:
    reason = message.get("reason") or ""
    if not isinstance(reason, str):
        raise TypeError(f"websocket.close: reason must be a str, not {type(reason).__name__}")
    return reason


class AsgiHttpProtocol(HttpFlow):
    """One connection of an ASGI server until (and unless) it upgrades (see the module).

    Args:
        hub: the server's shared state.
        app: the ASGI 3 application.
        state: the lifespan ``state``; every scope gets a shallow copy of it.
        exporter: answers ``metrics_path`` (before the app), when set.
    """

    def __init__(
        self, hub: ConnectionHub, app: AsgiApp3, state: dict[str, Any], exporter: Any = None
    ) -> None:
        self.hub = hub
        self.exporter = exporter
        self.app = app
        self.state = state
        self.settings = s = hub.settings
        self.parser = RequestParser(
            max_request_line=s.max_request_line,
            max_header_size=s.max_header_size,
            max_header_count=s.max_header_count,
            max_head_size=s.max_head_size,
            stream=True,
        )
        self.transport: asyncio.Transport | None = None
        self.cycles: deque[_Cycle | _Handshake] = deque()  # [0] is the app's; the last reads the body
        self.task: asyncio.Task[None] | None = None
        self.error: HttpError | None = None  # a parse error, answered once the cycles before it are
        self.timer: asyncio.TimerHandle | None = None
        self.paused = 0
        self.writing_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.peer: Any = None
        self.sockname: Any = None
        self.scheme = "http"
        self.upgrading = False  # the parser stopped at an upgrade: later bytes are early frames
        self.early: list[bytes] = []
        self.early_size = 0
        self.switched = False
        self.lingering = False
        self.closing = False
        self.answered = False

    # Connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = transport.get_extra_info("peername")
        self.sockname = transport.get_extra_info("sockname")
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        hub = self.hub
        limit = self.settings.max_connections
        if limit is not None and len(hub.connections) >= limit:
            status, headers, body = _error(503, "Service Unavailable")
            headers.append((b"retry-after", b"1"))
            transport.write(_simple_response(status, headers, body, keep_alive=False))  # type: ignore[attr-defined]
            hub.refused.add(self)
            self._linger()
            return
        hub.connections.add(self)
        hub.idle.clear()
        transport.set_write_buffer_limits(  # type: ignore[attr-defined]
            high=self.settings.write_high_water, low=self.settings.write_low_water
        )
        self._arm_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._cancel_timer()
        self._wake_drain()
        for cycle in self.cycles:
            cycle.lost()
        if not self.switched:
            self.hub.refused.discard(self)
            self.hub.connection_gone(self)

    def data_received(self, data: bytes) -> None:
        if self.lingering or self.error is not None:
            return
        if self.upgrading:
            self._keep_early(data)
            return
        parser = self.parser
        pos, end = 0, len(data)
        while pos < end:
            piece = data if pos == 0 and end <= _FEED_SLICE else data[pos : pos + _FEED_SLICE]
            pos += len(piece)
            try:
                events = parser.feed(piece)
            except HttpError as exc:
                self._parse_error(exc)
                return
            for event in events:
                if event is END_OF_BODY:
                    self.cycles[-1].end()
                elif type(event) is bytes:
                    self.cycles[-1].feed(event)
                else:
                    self._request(event)
            if self.upgrading:
                self._keep_early(parser.upgrade_tail + data[pos:])
                break
            if parser.stopped:
                break
        if len(self.cycles) > _MAX_QUEUED:
            self._pause(_PAUSED_BY_QUEUE)
        self._next()

    def _parse_error(self, exc: HttpError) -> None:
        if not self.cycles:
            self._refuse(exc)
            return
        self.error = exc  # answered after the requests before it
        self._pause(_PAUSED_BY_QUEUE)
        for cycle in self.cycles:
            if isinstance(cycle, _Cycle) and not cycle.complete:
                cycle.lost()  # its body will never come

    def _refuse(self, exc: HttpRefusal) -> None:
        transport = self.transport
        if transport is None:
            return
        transport.write(error_response(exc).encode(keep_alive=False))
        self._linger()

    def _keep_early(self, data: bytes) -> None:
        if data:
            self.early.append(data)
            self.early_size += len(data)
            if self.early_size > _MAX_EARLY:
                self._pause(_PAUSED_BY_UPGRADE)

    def _request(self, request: Request) -> None:
        """A request head: its scope, and its place in the queue."""
        self._cancel_timer()
        peer, scheme, proxies = self.peer, self.scheme, self.hub.proxies
        request.remote_address = peer
        if proxies is None:
            client, named = peer, scheme
        else:
            client, named = proxy.resolve(proxies, request.headers, peer, scheme)
        request.client = client
        request.scheme = proxy.http_scheme(named)
        scope: dict[str, Any] = {
            "asgi": ASGI_VERSION,
            "http_version": request.http_version,
            "scheme": request.scheme,
            "path": request.path,
            "raw_path": request.raw_path.encode("latin-1"),
            "query_string": request.query_string.encode("latin-1"),
            "root_path": "",
            "headers": [
                (name.encode("latin-1"), value.encode("latin-1")) for name, value in request.headers.items()
            ],
            "client": _address(client),
            "server": _address(self.sockname),
            "state": dict(self.state),
        }
        cycle: _Cycle | _Handshake
        if request.upgrade:
            self.upgrading = True
            scope["type"] = "websocket"
            scope["scheme"] = proxy.ws_scheme(named)
            scope["subprotocols"] = [
                p.strip()
                for value in request.headers.get_all("sec-websocket-protocol")
                for p in value.split(",")
                if p.strip()
            ]
            scope["extensions"] = {"websocket.http.response": {}}
            cycle = _Handshake(self, request, scope, "")
        else:
            scope["type"] = "http"
            scope["method"] = request.method
            cycle = _Cycle(self, request, scope)
        self.cycles.append(cycle)

    def _next(self) -> None:
        """Start the app on the first request in the queue, unless it runs already."""
        if self.task is not None or not self.cycles or self.transport is None:
            return
        cycle = self.cycles[0]
        refusal: HttpRefusal | None = _bad_request(cycle.request)
        if isinstance(cycle, _Handshake) and refusal is None:
            try:
                cycle.key = upgrade.check(cycle.request, self.settings)
            except HttpRefusal as exc:
                refusal = exc
            if refusal is not None:
                self.hub.counters.handshake_failed(refusal.status)
        if refusal is not None:
            self.cycles.clear()
            self._refuse(refusal)
            return
        path = cycle.request.path
        settings = self.settings
        if isinstance(cycle, _Cycle) and (
            path == settings.health_path or (self.exporter is not None and path == settings.metrics_path)
        ):
            # zzz's own paths, answered before the app (as on the native side).
            request = cycle.request
            if path == settings.health_path:
                response = _health_response(request, self.hub)
            else:
                response = self.exporter.handle(request)
            keep_alive = request.keep_alive and not self.hub.closing
            self.transport.write(response.encode(keep_alive=keep_alive, head=request.method == "HEAD"))
            cycle.started = cycle.finished = True
            cycle.keep_alive = keep_alive
            self.answered = True
            self.hub.loop.call_soon(self._response_done, cycle)
            return
        self.task = task = self.hub.loop.create_task(self._run(cycle))
        self.hub.tasks.add(task)
        task.add_done_callback(self.hub.tasks.discard)

    async def _run(self, cycle: _Cycle | _Handshake) -> None:
        error: BaseException | None = None
        try:
            await self.app(cycle.scope, cycle.receive, cycle.send)
        except Exception as exc:  # the app's failure is answered and logged
            error = exc
            logger.error(
                "Exception in ASGI application (%s %s)", cycle.scope["type"], cycle.request.path, exc_info=exc
            )
        if isinstance(cycle, _Handshake):
            cycle.app_done(error)
        elif not cycle.started:
            if error is None:
                logger.error("ASGI callable returned without starting response on %s", cycle.request.path)
            cycle.fail_500()
        elif not cycle.finished:
            if error is None:
                logger.error("ASGI callable returned without completing response on %s", cycle.request.path)
            cycle.finished = True
            self.abort()  # half a response: the client must not take it for a whole one
        if self.task is asyncio.current_task():
            self.task = None
            self._next()

    def _response_done(self, cycle: _Cycle | _Handshake) -> None:
        """``cycle``'s answer is complete: the next request's turn, or the connection's end."""
        self.answered = True
        if self.cycles and self.cycles[0] is cycle:
            self.cycles.popleft()
        if self.task is not None and not self.task.done():
            self.task = None  # the app may run on (background tasks); the next request starts
        transport = self.transport
        if transport is None or self.switched:
            return
        if not cycle.keep_alive or self.closing or self.hub.closing:
            self.cycles.clear()
            if isinstance(cycle, _Cycle) and cycle.complete:
                transport.close()
            else:
                self._linger()  # unread request bytes: don't let a reset eat the answer
            return
        if self.paused & _PAUSED_BY_QUEUE and len(self.cycles) <= _MAX_QUEUED // 2 and self.error is None:
            self._resume(_PAUSED_BY_QUEUE)
        if self.cycles:
            self._next()
        elif self.error is not None:
            self._refuse(self.error)
        else:
            self._arm_timer()

    def _switch(self, ws: AsgiWebSocket) -> None:
        """The app accepted: the transport is the WebSocket's from now on."""
        assert self.transport is not None
        self._cancel_timer()
        self.switched = True
        self.hub.connections.discard(self)
        self.hub.connections.add(ws)
        self.transport.set_protocol(ws)
        if self.paused:
            self.paused = 0
            self.transport.resume_reading()
        if self.writing_paused:
            ws.pause_writing()
        self.transport = None  # this protocol is done with it (connection_lost goes to ws)

    # Flow control

    # Timers and the end

    def _arm_timer(self) -> None:
        timeout = self.settings.open_timeout
        if timeout is not None and self.transport is not None:
            self._cancel_timer()
            self.timer = self.hub.loop.call_later(timeout, self._on_timeout)

    def shutdown(self) -> None:
        """The server closes: close when idle, after the answer being written otherwise."""
        self.closing = True
        if self.transport is None or self.cycles or self.lingering:
            return
        if self.answered:
            self.transport.close()
            return
        self._cancel_timer()
        self.timer = self.hub.loop.call_later(_SHUTDOWN_GRACE, self._on_timeout)

    def abort(self) -> None:
        """Drop the connection now (the server's shutdown gave up on it, or half a response went out)."""
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()
