"""The zzz server: ``App`` (routes, middleware, settings), the HTTP/1.1 side of every connection,
the WebSocket upgrade, graceful shutdown and worker processes.

HTTP requests are parsed by ``zzz.http`` (httptools); upgraded connections are handed to
``zzz.websocket.WebSocketProtocol`` on the same transport.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import re
import signal
import socket
import ssl as ssl_module
import sys
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from zzz import deflate as deflate_module
from zzz import handshake
from zzz._grammar import HOST
from zzz.frames import encode_close
from zzz.http import HttpError, Request, Response, error_response
from zzz.http_parser import RequestParser
from zzz.protocol import Connection
from zzz.routing import Router, RouteTable, run_chain
from zzz.settings import FLAT_NAMES, Settings
from zzz.websocket import WebSocketProtocol, WsConfig

__all__ = ["App", "Server", "Settings"]

logger = logging.getLogger("zzz")

_STATIC = Path(__file__).with_name("static")


class ServerState:
    """What all connections of one listening server share: settings, routes, live connections."""

    def __init__(self, app: App, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.settings = app.settings
        self.routes = app.route_table
        self.loop = loop
        self.connections: set[Any] = set()
        self.websockets: set[WebSocketProtocol] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.refused: set[Any] = set()  # answered 503 and lingering; not counted as connections
        self.closing = False
        self.idle: asyncio.Event = asyncio.Event()
        self.idle.set()

    def register(self, proto: WebSocketProtocol) -> None:
        self.websockets.add(proto)

    def unregister(self, proto: WebSocketProtocol) -> None:
        self.websockets.discard(proto)
        self.connection_gone(proto)

    def connection_gone(self, proto: Any) -> None:
        self.connections.discard(proto)
        if not self.connections:
            self.idle.set()


class UpgradeResponse(Response):
    """What the endpoint of a WebSocket route returns: middleware may still replace it."""

    def __init__(
        self, config: WsConfig, key: str, subprotocol: str | None, deflate: Any, ext_header: str | None
    ):
        super().__init__(b"", status=101)
        self.config = config
        self.key = key
        self.subprotocol = subprotocol
        self.deflate = deflate
        self.ext_header = ext_header


# How long a connection refused with an error response keeps reading (and discarding) after it,
# so that unread request bytes don't make the kernel reset the connection and lose the response.
_LINGER_SECONDS = 2.0


# Flow control of the HTTP side. Each read is parsed in pieces of at most _FEED_SLICE bytes, and
# parsing stops once _MAX_QUEUED requests wait for an answer: the rest of the read is kept as it
# came (a few bytes per request, not a Request object each) and reading pauses until the queue
# is half empty, so pipelining costs bounded memory whatever the client sends.
_MAX_QUEUED = 16
_FEED_SLICE = 16 * 1024
# Bytes kept after an upgrade request while middleware decides it (they are the first frames
# if it goes through); past this, reading pauses until the upgrade is decided.
_MAX_EARLY = 64 * 1024
# Why reading is paused (bits: it resumes when none is left).
_PAUSED_BY_QUEUE = 1  # too many parsed requests waiting, or an error waiting behind them
_PAUSED_BY_WRITER = 2  # the transport's write buffer is over write_high_water
_PAUSED_BY_UPGRADE = 4  # _MAX_EARLY bytes came after an upgrade request not yet decided


def _error_bytes(status: int, message: str = "", headers: Iterable[tuple[str, str]] = ()) -> bytes:
    return HttpError(status, message, list(headers)).to_response().encode(keep_alive=False)


class HttpProtocol(asyncio.Protocol):
    """The HTTP/1.1 side of a connection until (and unless) it upgrades."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.settings = state.settings
        self.transport: asyncio.Transport | None = None
        s = self.settings
        self.parser = RequestParser(
            max_request_line=s.max_request_line,
            max_header_size=s.max_header_size,
            max_header_count=s.max_header_count,
            max_head_size=s.max_head_size,
            max_body_size=s.max_body_size,
        )
        self.queue: deque[Request] = deque()  # parsed, not answered yet (at most _MAX_QUEUED)
        self.unparsed = b""  # read while the queue was full: unparsed[unparsed_pos:] waits
        self.unparsed_pos = 0
        self.error: HttpError | None = None  # a parse error to answer once the queue is answered
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.upgrading = False  # an upgrade request is being handled; later bytes are frames
        self.switched = False  # the transport now belongs to a WebSocketProtocol
        self.early: list[bytes] = []  # bytes after the upgrade request: the first frames
        self.early_size = 0
        self.paused = 0  # _PAUSED_BY_* bits
        self.writing_paused = False  # between pause_writing and resume_writing
        self.drain_waiter: asyncio.Future[None] | None = None  # _serve waiting for resume_writing
        self.peer: Any = None
        self.closing = False
        self.lingering = False  # an error response was sent: read and discard until the peer closes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        state = self.state
        self.peer = transport.get_extra_info("peername")
        limit = self.settings.max_connections
        if state.closing or (limit is not None and len(state.connections) >= limit):
            transport.write(_error_bytes(503, "Service Unavailable", [("Retry-After", "1")]))  # type: ignore[attr-defined]
            state.refused.add(self)
            self._linger()
            return
        state.connections.add(self)
        state.idle.clear()
        s = self.settings
        transport.set_write_buffer_limits(high=s.write_high_water, low=s.write_low_water)  # type: ignore[attr-defined]
        self._arm_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._cancel_timer()
        self._wake_drain()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if not self.switched:
            self.state.refused.discard(self)
            self.state.connection_gone(self)

    def data_received(self, data: bytes) -> None:
        if self.lingering or self.error is not None:
            return
        if self.upgrading:
            self._keep_early(data)
        elif self.unparsed:  # paused; a transport may still hand over what it had read
            self.unparsed = self.unparsed[self.unparsed_pos :] + data
            self.unparsed_pos = 0
        else:
            self._parse(data, 0)

    def _parse(self, data: bytes, pos: int) -> None:
        """Parse ``data[pos:]`` into the queue; stop (and keep the rest) when the queue is full.

        The queue holds at most _MAX_QUEUED requests plus those of one _FEED_SLICE piece.
        """
        parser = self.parser
        queue = self.queue
        end = len(data)
        while pos < end:
            if len(queue) >= _MAX_QUEUED:
                self.unparsed, self.unparsed_pos = data, pos  # no copy: refills walk the same bytes
                self._pause(_PAUSED_BY_QUEUE)
                break
            piece = data if pos == 0 and end <= _FEED_SLICE else data[pos : pos + _FEED_SLICE]
            pos += len(piece)
            try:
                requests = parser.feed(piece)
            except HttpError as exc:
                if self.task is None and not queue:
                    self._fail(exc)
                    return
                # Answer the requests before it first: the error response comes last.
                self.error = exc
                self._pause(_PAUSED_BY_QUEUE)
                break
            if requests:
                for request in requests:
                    request.remote_address = self.peer
                queue.extend(requests)
                if requests[-1].upgrade:
                    self.upgrading = True
                    self._keep_early(parser.upgrade_tail + data[pos:])
                    break
            if parser.stopped:  # after Connection: close the rest is ignored
                break
        if queue and self.task is None:
            self._cancel_timer()
            self.task = self.state.loop.create_task(self._serve())

    def _refill(self) -> None:
        """The queue has room again: parse what was kept, and read again if all of it fit."""
        data, pos = self.unparsed, self.unparsed_pos
        self.unparsed, self.unparsed_pos = b"", 0
        if data:
            self._parse(data, pos)
        if not self.unparsed and self.error is None:
            self._resume(_PAUSED_BY_QUEUE)

    def _keep_early(self, data: bytes) -> None:
        if not data:
            return
        self.early.append(data)
        self.early_size += len(data)
        if self.early_size > _MAX_EARLY:
            self._pause(_PAUSED_BY_UPGRADE)

    # Flow control

    def pause_writing(self) -> None:
        self.writing_paused = True
        # A client that pipelines requests and never reads must not fill our memory with answers.
        self._pause(_PAUSED_BY_WRITER)

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._resume(_PAUSED_BY_WRITER)
        self._wake_drain()

    def _wake_drain(self) -> None:
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _pause(self, reason: int) -> None:
        if self.lingering:
            return  # lingering reads (and discards) whatever happens
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def _resume(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and self.transport is not None:
            self.transport.resume_reading()

    def _resume_all(self) -> None:
        if self.paused:
            self.paused = 0
            if self.transport is not None:
                self.transport.resume_reading()

    def _fail(self, exc: HttpError) -> None:
        transport = self.transport
        if transport is None:
            return
        transport.write(exc.to_response().encode(keep_alive=False))
        self._linger()

    def _linger(self) -> None:
        """Close after an error response without losing it.

        Closing a socket with unread input makes the kernel send a reset, and the peer then
        discards our response before reading it (a request refused at a limit always leaves
        input unread). So shut down our side, keep reading and discarding, and close when the
        peer does or after ``_LINGER_SECONDS``.
        """
        transport = self.transport
        if transport is None or self.lingering:
            return
        self._resume_all()
        self.lingering = True
        self.closing = True
        self.queue.clear()
        self.unparsed, self.unparsed_pos = b"", 0
        self.early = []
        self._cancel_timer()
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self.timer = self.state.loop.call_later(_LINGER_SECONDS, self._on_timeout)

    def _arm_timer(self) -> None:
        timeout = self.settings.open_timeout
        if timeout is not None:
            self.timer = self.state.loop.call_later(timeout, self._on_timeout)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_timeout(self) -> None:
        self.timer = None
        if self.transport is not None:
            self.transport.abort()

    async def _serve(self) -> None:
        queue = self.queue
        try:
            while queue and self.transport is not None:
                if self.writing_paused:  # answer the next request once the client reads
                    await self._drain()
                    continue
                request = queue.popleft()
                if self.paused & _PAUSED_BY_QUEUE and len(queue) <= _MAX_QUEUED // 2:
                    self._refill()
                if not await self._handle(request):
                    return
        finally:
            self.task = None
        if self.transport is None or self.lingering or self.switched:
            return
        if self.error is not None:
            self._fail(self.error)
            return
        if not self.upgrading:
            if self.closing or self.state.closing:
                self.transport.close()
            else:
                self._arm_timer()

    async def _handle(self, request: Request) -> bool:
        """Answer one request; False when the connection must not serve another."""
        state = self.state
        refusal = _bad_request(request)
        if refusal is not None:
            self._write(refusal.to_response(), request, keep_alive=False)
            return False
        try:
            match = state.routes.match(request.method, request.raw_path)
        except HttpError as exc:
            self._write(exc.to_response(), request, keep_alive=not request.upgrade and request.keep_alive)
            return not request.upgrade and request.keep_alive
        request.params = match.params
        route = match.route
        if route.ws_config is not None:
            return await self._handle_upgrade(request, route.ws_config, match.middleware)
        assert route.handler is not None
        try:
            response = await run_chain(match.middleware, request, route.handler)
        except HttpError as exc:
            response = exc.to_response()
        except Exception:
            logger.exception("handler raised for %s %s", request.method, request.path)
            response = HttpError(500).to_response()
        keep_alive = request.keep_alive and not request.upgrade and not state.closing
        self._write(response, request, keep_alive)
        return keep_alive

    async def _drain(self) -> None:
        waiter = self.state.loop.create_future()
        self.drain_waiter = waiter
        try:
            await waiter
        finally:
            self.drain_waiter = None

    def _write(self, response: Response, request: Request, keep_alive: bool) -> None:
        if self.transport is None:
            return
        self.transport.write(response.encode(keep_alive=keep_alive, head=request.method == "HEAD"))
        if not keep_alive:
            self._linger()

    async def _handle_upgrade(self, request: Request, config: WsConfig, middleware: Sequence[Any]) -> bool:
        settings = self.settings
        headers = request.headers.items()
        try:
            key = handshake.validate_request(request.method, request.http_version, headers)
            if settings.allowed_origins is not None:
                origin = request.headers.get("origin")
                if origin is None or not _origin_allowed(origin, settings.allowed_origins):
                    raise handshake.HandshakeError(403, "Forbidden: origin not allowed")
        except handshake.HandshakeError as exc:
            self._write(error_response(exc), request, False)
            return False

        def endpoint(req: Request) -> Response:
            subprotocol = None
            if config.subprotocols:
                subprotocol = handshake.select_subprotocol(
                    req.headers.get_all("sec-websocket-protocol"), config.subprotocols
                )
            negotiated = None
            if settings.compression:
                negotiated = _negotiate_deflate(req, settings)
            ext_header, params = negotiated if negotiated else (None, None)
            return UpgradeResponse(config, key, subprotocol, params, ext_header)

        try:
            response = await run_chain(middleware, request, endpoint)
        except HttpError as exc:
            response = exc.to_response()
        except Exception:
            logger.exception("middleware raised for %s", request.path)
            response = HttpError(500).to_response()
        if not isinstance(response, UpgradeResponse):
            self._write(response, request, False)
            return False
        self._switch(request, response)
        return False

    def _switch(self, request: Request, up: UpgradeResponse) -> None:
        transport = self.transport
        if transport is None:
            self.state.connection_gone(self)
            return
        settings = self.settings
        self._cancel_timer()
        deflate = None
        if up.deflate is not None:
            cfg = settings.deflate or deflate_module.DeflateConfig()
            deflate = deflate_module.PerMessageDeflate.from_config(up.deflate, cfg, is_server=True)
        conn = Connection(
            is_server=True,
            deflate=deflate,
            max_message_size=settings.max_message_size,
            max_frame_size=settings.max_frame_size,
            max_fragments=settings.max_fragments,
        )
        transport.write(
            handshake.build_response(up.key, subprotocol=up.subprotocol, extensions=up.ext_header)
        )
        proto = WebSocketProtocol(
            self.state,
            up.config,
            transport,
            conn,
            {
                "params": request.params,
                "query": request.query,
                "assigns": request.assigns,
                "path": request.path,
                "headers": request.headers,
                "remote_address": self.peer,
                "subprotocol": up.subprotocol,
            },
        )
        self.switched = True
        self.state.connections.discard(self)
        self.state.connections.add(proto)
        transport.set_protocol(proto)
        # The WebSocket side starts reading, and keeps its own account of why it pauses.
        self._resume_all()
        if self.writing_paused:  # the transport will call resume_writing on proto, not on us
            proto.pause_writing()
        early = b"".join(self.early)
        self.early = []
        proto.start(early)

    # Shutdown

    def shutdown(self) -> None:
        self.closing = True
        if self.task is None and self.transport is not None and not self.upgrading:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _bad_request(request: Request) -> HttpError | None:
    """The 400 a request gets before routing, whatever its route, or None.

    Host (RFC 9112 section 3.2): more than one, or an invalid value, is refused in any version;
    a missing one in HTTP/1.1 (HTTP/1.0 did not have it, and a 1.0 request needs none).
    A body on an upgrade request: llhttp does not read it, so it would reach the upgraded
    protocol as its first bytes (WebSocket frames smuggled past a proxy that saw a body), or
    be lost for a plain route. ``Content-Length: 0`` is no body.
    """
    hosts = request.headers.get_all("host")
    if len(hosts) > 1:
        return HttpError(400, "more than one Host header")
    if hosts:
        if not HOST.match(hosts[0].strip(" \t")):
            return HttpError(400, "invalid Host header")
    elif request.http_version != "1.0":
        return HttpError(400, "missing Host header")
    if request.upgrade and _has_body(request):
        return HttpError(400, "an upgrade request must not have a body")
    return None


def _has_body(request: Request) -> bool:
    headers = request.headers
    if "transfer-encoding" in headers:
        return True
    for value in headers.get_all("content-length"):
        value = value.strip(" \t")
        if not (value.isascii() and value.isdigit() and int(value) == 0):
            return True
    return False


def _origin_allowed(origin: str, allowed: Sequence[str]) -> bool:
    origin = origin.strip().lower().rstrip("/")
    return any(hmac.compare_digest(origin, a.strip().lower().rstrip("/")) for a in allowed)


def _negotiate_deflate(request: Request, settings: Settings) -> tuple[str, Any] | None:
    values = request.headers.get_all("sec-websocket-extensions")
    if not values:
        return None
    return deflate_module.negotiate_request(values, settings.deflate or deflate_module.DeflateConfig())


class Server:
    """A running zzz server (from ``await app.start(...)``)."""

    def __init__(self, state: ServerState, servers: list[asyncio.AbstractServer]) -> None:
        self._state = state
        self._servers = servers
        self._closed: asyncio.Future[None] | None = None

    @property
    def sockets(self) -> list[socket.socket]:
        return [s for srv in self._servers for s in getattr(srv, "sockets", ())]

    @property
    def port(self) -> int:
        """The port the first socket listens on (useful with ``port=0``)."""
        return int(self.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        """Open connections, HTTP and WebSocket."""
        return len(self._state.connections)

    async def close(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Stop accepting, close every WebSocket with ``code``, wait up to ``close_timeout`` for
        the handshakes, then abort what is left and wait for running callbacks.

        Raises:
            ValueError: ``code`` may not be sent (as for ``WebSocket.close``) or ``reason`` is over
                123 bytes of UTF-8; nothing is closed then.
        """
        encode_close(code, reason)  # before anything stops: a bad code must not leave half a shutdown
        state = self._state
        if state.closing:
            if self._closed is not None:
                await asyncio.shield(self._closed)
            return
        state.closing = True
        self._closed = state.loop.create_future()
        try:
            for srv in self._servers:
                srv.close()
            for proto in list(state.connections):
                if isinstance(proto, WebSocketProtocol):
                    proto.shutdown(code, reason)
                else:
                    proto.shutdown()
            timeout = state.settings.close_timeout
            if state.connections:
                try:
                    await asyncio.wait_for(state.idle.wait(), timeout)
                except asyncio.TimeoutError:
                    pass
            for proto in [*state.connections, *state.refused]:
                proto.abort()
            # Let connection_lost callbacks run (on_close), then finish or cancel callbacks.
            await asyncio.sleep(0)
            if state.tasks:
                _done, pending = await asyncio.wait(list(state.tasks), timeout=timeout)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending, timeout=1)
            # Callbacks that just finished or were cancelled report on_close, and an async
            # on_close is a task of its own: give those a moment too.
            late = [task for task in state.tasks if not task.done()]
            if late:
                _done, pending = await asyncio.wait(late, timeout=1)
                for task in pending:
                    task.cancel()
            for srv in self._servers:
                await srv.wait_closed()
        finally:
            self._closed.set_result(None)

    async def serve_forever(self) -> None:
        """Wait until ``close()`` is called."""
        while not self._state.closing:
            await asyncio.sleep(3600)


class App:
    """A zzz application: routes and controllers, app-wide middleware, and ``Settings``.

    Args:
        routes: routes (``Router.ws/get/...``) and controllers (``Controller.define``).
        middleware: app-wide middleware, run before any controller's.
        **settings: any field of ``zzz.Settings``.

    Raises:
        TypeError: an unknown setting.
    """

    def __init__(
        self, routes: Iterable[Any] = (), *, middleware: Sequence[Any] = (), **settings: Any
    ) -> None:
        unknown = set(settings) - FLAT_NAMES.keys()
        if unknown:
            raise TypeError(f"unknown App setting(s): {', '.join(sorted(unknown))}")
        self.settings = Settings(**settings)
        routes = list(routes)
        for name in ("zzz.js", "zzz.mjs"):  # the browser client, as a classic script and as an ES module
            routes.append(Router.get(f"/__zzz/{name}", _serve_static(name, self.settings.static_max_age)))
        self.route_table = RouteTable(routes, app_middleware=middleware)

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        ssl: ssl_module.SSLContext | None = None,
        reuse_port: bool = False,
        sock: socket.socket | None = None,
        backlog: int = 2048,
    ) -> Server:
        """Listen inside the running loop and return the ``Server``.

        Raises:
            ValueError: ``port`` is outside 0-65535 (checked before anything binds).
            TypeError: ``port`` is not an int.
        """
        _check_port(port)
        loop = asyncio.get_running_loop()
        state = ServerState(self, loop)
        extra: dict[str, Any] = {}
        if ssl is not None:
            extra["ssl"] = ssl
            if self.settings.open_timeout is not None:
                extra["ssl_handshake_timeout"] = self.settings.open_timeout
        if sock is not None:
            srv = await loop.create_server(lambda: HttpProtocol(state), sock=sock, backlog=backlog, **extra)
        else:
            srv = await loop.create_server(
                lambda: HttpProtocol(state),
                host,
                port,
                reuse_port=reuse_port or None,
                backlog=backlog,
                **extra,
            )
        server = Server(state, [srv])
        logger.info("zzz listening on %s", ", ".join(str(s.getsockname()) for s in server.sockets))
        return server

    def run(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        loop: str = "auto",
        workers: int = 1,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        """Serve until SIGINT or SIGTERM, then shut down gracefully (blocking).

        Args:
            loop: "auto" (uvloop when installed), "uvloop" or "asyncio".
            workers: processes sharing the port with SO_REUSEPORT (Linux), each with its own loop.

        Raises:
            ValueError: an unknown ``loop``, ``workers`` < 1, or ``port`` outside 0-65535 (checked
                before anything binds).
            TypeError: ``port`` is not an int.
        """
        _check_port(port)
        if loop not in ("auto", "uvloop", "asyncio"):
            raise ValueError('loop must be "auto", "uvloop" or "asyncio"')
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if workers == 1:
            _run_one(self, host, port, loop, ssl, reuse_port=False)
            return
        _run_workers(self, host, port, loop, ssl, workers)


def _check_port(port: Any) -> None:
    # The loops don't agree on what to do with a bad port: uvloop binds it modulo 65536, asyncio
    # raises OverflowError from deep inside getaddrinfo. Refuse it here, before any socket exists.
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, not {type(port).__name__}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is outside 0-65535")


def _http_url(host: str, port: int) -> str:
    """``http://host:port/``, with an IPv6 address in brackets (RFC 3986 section 3.2.2)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def _loop_factory(kind: str) -> Any:
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise RuntimeError(
                    "loop='uvloop' but uvloop is not installed (pip install zzz[uvloop])"
                ) from None
            return asyncio.new_event_loop
        return uvloop.new_event_loop
    return asyncio.new_event_loop


def _run_one(app: App, host: str, port: int, loop_kind: str, ssl: Any, reuse_port: bool) -> None:
    async def main() -> None:
        server = await app.start(host, port, ssl=ssl, reuse_port=reuse_port)
        stop = asyncio.Event()
        running = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                running.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        print(f"zzz: serving on {_http_url(host, server.port)} (pid {os.getpid()})", flush=True)
        await stop.wait()
        logger.info("zzz: shutting down")
        await server.close()

    factory = _loop_factory(loop_kind)
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main())
    else:  # pragma: no cover - Python 3.10
        ev = factory()
        try:
            ev.run_until_complete(main())
        finally:
            ev.close()


def _run_workers(app: App, host: str, port: int, loop_kind: str, ssl: Any, workers: int) -> None:
    if not hasattr(socket, "SO_REUSEPORT"):
        raise RuntimeError("workers > 1 needs SO_REUSEPORT (Linux, BSD, macOS)")
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _run_one(app, host, port, loop_kind, ssl, reuse_port=True)
            except BaseException:
                logger.exception("worker failed")
                code = 1
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    for child in children:
        while True:
            try:
                os.waitpid(child, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break


def _serve_static(name: str, max_age: int) -> Any:
    """A GET handler for one file of zzz/static, read once, with an ETag and caching headers."""
    cache: dict[str, tuple[bytes, str]] = {}

    def handler(request: Request) -> Response:
        if name not in cache:
            path = _STATIC / name
            try:
                body = path.read_bytes()
            except OSError:
                raise HttpError(404) from None
            cache[name] = (body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
        body, etag = cache[name]
        headers = [("Cache-Control", f"public, max-age={max_age}"), ("ETag", etag)]
        if _none_match(request.headers.get_all("if-none-match"), etag):
            return Response(b"", status=304, headers=headers)
        return Response(body, headers=headers, content_type="application/javascript; charset=utf-8")

    return handler


# An entity-tag, weak or strong (RFC 9110 section 8.8.3): etagc is any visible byte but DQUOTE.
# Empty list members are allowed (section 5.6.1), hence the leading commas.
_ENTITY_TAG = re.compile(r'[\s,]*(?:W/)?("[\x21\x23-\x7e\x80-\xff]*")[ \t]*(?:,|\Z)')


def _none_match(values: list[str], etag: str) -> bool:
    """Whether an ``If-None-Match`` (all its field lines) matches ``etag`` (RFC 9110 section 13.1.2).

    ``*`` matches any current representation; otherwise the comparison is weak: ``W/"x"`` matches
    ``"x"``. A member that is not an entity-tag ends the list (a malformed field matches nothing
    after it, so the full response is sent, which is always safe).
    """
    for value in values:
        if value.strip() == "*":
            return True
        pos, end = 0, len(value)
        while pos < end:
            m = _ENTITY_TAG.match(value, pos)
            if m is None:
                break
            if m.group(1) == etag:
                return True
            pos = m.end()
    return False
