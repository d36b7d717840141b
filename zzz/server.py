"""The zzz server: ``App`` (routes, middleware, settings), the HTTP/1.1 side of every connection
until it upgrades, and ``Server`` (a listening app, its graceful shutdown).

Requests are parsed by ``zzz.http_parser`` and answered through the one dispatcher,
``RouteTable.handle``; the opening handshake is ``zzz.upgrade``; an upgraded connection is handed
to ``zzz.websocket.WebSocketProtocol`` on the same transport. Running until a signal, and worker
processes, are ``zzz.runner``; zzz's own files are ``zzz.static``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl as ssl_module
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from zzz import metrics, proxy, runner, upgrade
from zzz._grammar import HOST
from zzz.errors import HttpRefusal
from zzz.frames import encode_close
from zzz.http import HttpError, Request, Response, error_response
from zzz.http_parser import RequestParser
from zzz.hub import ConnectionHub
from zzz.proxy import TrustedProxies
from zzz.routing import Route, RouteTable
from zzz.settings import FLAT_NAMES, Settings
from zzz.static import CLIENT_FILES, static_route
from zzz.upgrade import UpgradeResponse
from zzz.websocket import WebSocketProtocol

__all__ = ["App", "Server", "Settings"]

logger = logging.getLogger("zzz")


# How long a connection refused with an error response keeps reading (and discarding) after it,
# so that unread request bytes don't make the kernel reset the connection and lose the response.
_LINGER_SECONDS = 2.0


# How long a connection accepted just before shutdown, with no request read yet, may take to send it.
_SHUTDOWN_GRACE = 1.0


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


async def listen(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], asyncio.Protocol],
    settings: Settings,
    host: str,
    port: int,
    ssl: ssl_module.SSLContext | None,
    reuse_port: bool,
    sock: socket.socket | None,
    backlog: int,
) -> asyncio.AbstractServer:
    """Bind (or take ``sock``) and serve ``factory``'s protocols: ``App.start`` and the ASGI
    server's ``start`` alike. With TLS the handshake is bounded by ``open_timeout``."""
    extra: dict[str, Any] = {}
    if ssl is not None:
        extra["ssl"] = ssl
        if settings.open_timeout is not None:
            extra["ssl_handshake_timeout"] = settings.open_timeout
    if sock is not None:
        return await loop.create_server(factory, sock=sock, backlog=backlog, **extra)
    return await loop.create_server(
        factory, host, port, reuse_port=reuse_port or None, backlog=backlog, **extra
    )


class HttpFlow(asyncio.Protocol):
    """The flow control both HTTP protocols share, this module's and the ASGI one's
    (``zzz._asgi_http``): reading paused for a set of reasons (bits, ``_PAUSED_BY_WRITER`` among
    them), writing paused by the transport with a waiter for the drain, one timer, and the
    lingering close after an error response.

    A subclass sets the attributes below in its ``__init__``; ``_drop_input`` says what a
    lingering connection forgets, ``_on_timeout`` what the timer does when it fires.
    """

    hub: ConnectionHub
    transport: asyncio.Transport | None
    paused: int  # _PAUSED_BY_* bits
    writing_paused: bool  # between pause_writing and resume_writing
    drain_waiter: asyncio.Future[None] | None  # waiting for resume_writing
    lingering: bool  # an error response was sent: read and discard until the peer closes
    closing: bool
    early: list[bytes]
    timer: asyncio.TimerHandle | None

    def pause_writing(self) -> None:
        self.writing_paused = True
        # A client that pipelines requests and never reads must not fill our memory with answers.
        self._pause(_PAUSED_BY_WRITER)

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._resume(_PAUSED_BY_WRITER)
        self._wake_drain()

    async def _drain(self) -> None:
        waiter = self.hub.loop.create_future()
        self.drain_waiter = waiter
        try:
            await waiter
        finally:
            self.drain_waiter = None

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
        self._drop_input()
        self._cancel_timer()
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self.timer = self.hub.loop.call_later(_LINGER_SECONDS, self._on_timeout)

    def _drop_input(self) -> None:
        """What a lingering connection forgets: the bytes read after an upgrade request."""
        self.early = []

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_timeout(self) -> None:
        self.timer = None
        if self.transport is not None:
            self.transport.abort()


class HttpProtocol(HttpFlow):
    """The HTTP/1.1 side of a connection until (and unless) it upgrades."""

    def __init__(self, hub: ConnectionHub) -> None:
        self.hub = hub
        self.settings = hub.settings
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
        self.scheme = "http"  # the connection's own: "https" over TLS
        self.closing = False
        self.lingering = False  # an error response was sent: read and discard until the peer closes
        # Set by _before_upgrade while the request being answered is for a WebSocket route.
        self.upgrade_key: str | None = None
        self.websocket_route = False
        self.answered = False  # a response was written (the connection is not a fresh one)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        hub = self.hub
        self.peer = transport.get_extra_info("peername")
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        limit = self.settings.max_connections
        # Not refused while the server closes: its listeners are closed first, so a connection that
        # still arrives was accepted before, and its client is owed an answer (Connection: close).
        if limit is not None and len(hub.connections) >= limit:
            transport.write(_error_bytes(503, "Service Unavailable", [("Retry-After", "1")]))  # type: ignore[attr-defined]
            hub.refused.add(self)
            self._linger()
            return
        hub.connections.add(self)
        hub.idle.clear()
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
            self.hub.refused.discard(self)
            self.hub.connection_gone(self)

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
                self._address(requests)
                queue.extend(requests)
                if requests[-1].upgrade:
                    self.upgrading = True
                    self._keep_early(parser.upgrade_tail + data[pos:])
                    break
            if parser.stopped:  # after Connection: close the rest is ignored
                break
        if queue and self.task is None:
            self._cancel_timer()
            self.task = self.hub.loop.create_task(self._serve())

    def _address(self, requests: list[Request]) -> None:
        """Who sent ``requests``: the peer, or with ``proxy_headers`` whom a trusted proxy names."""
        peer, scheme, proxies = self.peer, self.scheme, self.hub.proxies
        for request in requests:
            request.remote_address = peer
            if proxies is None:
                request.client, request.scheme = peer, scheme
            else:
                client, named = proxy.resolve(proxies, request.headers, peer, scheme)
                request.client, request.scheme = client, proxy.http_scheme(named)

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

    # Errors

    def _fail(self, exc: HttpError) -> None:
        transport = self.transport
        if transport is None:
            return
        transport.write(exc.to_response().encode(keep_alive=False))
        self._linger()

    def _drop_input(self) -> None:
        super()._drop_input()
        self.queue.clear()
        self.unparsed, self.unparsed_pos = b"", 0

    def _arm_timer(self) -> None:
        timeout = self.settings.open_timeout
        if timeout is not None:
            self.timer = self.hub.loop.call_later(timeout, self._on_timeout)

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
            if self.closing or self.hub.closing:
                self.transport.close()
            else:
                self._arm_timer()

    async def _handle(self, request: Request) -> bool:
        """Answer one request; False when the connection must not serve another."""
        refusal = _bad_request(request)
        if refusal is not None:
            self._write(refusal.to_response(), request, keep_alive=False)
            return False
        if request.path == self.settings.health_path:
            self._write(
                _health_response(request, self.hub), request, request.keep_alive and not self.hub.closing
            )
            return request.keep_alive and not self.hub.closing
        self.upgrade_key = None
        self.websocket_route = False
        try:
            response = await self.hub.routes.handle(
                request, websocket_endpoint=self._accept_upgrade, before_upgrade=self._before_upgrade
            )
        except Exception:
            if self.websocket_route:
                logger.exception("middleware raised for %s", request.path)
            else:
                logger.exception("handler raised for %s %s", request.method, request.path)
            response = HttpError(500).to_response()
        if self.websocket_route:
            # Whatever the answer to a WebSocket route, this connection serves no other request.
            if isinstance(response, UpgradeResponse):
                self._switch(request, response)
            else:
                self.hub.counters.handshake_failed(response.status)
                self._write(response, request, False)
            return False
        keep_alive = request.keep_alive and not request.upgrade and not self.hub.closing
        self._write(response, request, keep_alive)
        return keep_alive

    def _before_upgrade(self, request: Request, route: Route) -> Response | None:
        # Before any middleware, as RFC 6455 (and the README's error table) want it.
        self.websocket_route = True
        try:
            self.upgrade_key = upgrade.check(request, self.settings)
        except HttpRefusal as exc:
            return error_response(exc)
        return None

    def _accept_upgrade(self, request: Request, route: Route) -> UpgradeResponse:
        assert self.upgrade_key is not None  # _before_upgrade ran for this route
        return upgrade.accept(request, route.ws_config, self.upgrade_key, self.settings)

    def _write(self, response: Response, request: Request, keep_alive: bool) -> None:
        if self.transport is None:
            return
        self.answered = True
        self.transport.write(response.encode(keep_alive=keep_alive, head=request.method == "HEAD"))
        if not keep_alive:
            self._linger()

    def _switch(self, request: Request, up: UpgradeResponse) -> None:
        transport = self.transport
        if transport is None:
            self.hub.connection_gone(self)
            return
        self._cancel_timer()
        conn = upgrade.connection(up, self.settings)
        transport.write(up.encode())
        proto = WebSocketProtocol(
            self.hub,
            up.config,
            transport,
            conn,
            {
                "params": request.params,
                "query": request.query,
                "assigns": request.assigns,
                "path": request.path,
                "headers": request.headers,
                "remote_address": request.client,
                "subprotocol": up.subprotocol,
                "scheme": proxy.ws_scheme(request.scheme),
            },
        )
        self.switched = True
        self.hub.connections.discard(self)
        self.hub.connections.add(proto)
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
        """The server closes: close when idle, after the answer being written otherwise.

        A connection that has not been answered yet was accepted just before the listener
        closed, and its request is on its way (or half read): it gets that request answered
        (with ``Connection: close``) if it comes within ``_SHUTDOWN_GRACE`` seconds.
        """
        self.closing = True
        if self.task is not None or self.transport is None or self.upgrading or self.lingering:
            return
        if self.answered:
            self.transport.close()
            return
        self._cancel_timer()
        self.timer = self.hub.loop.call_later(_SHUTDOWN_GRACE, self._on_timeout)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _health_response(request: Request, hub: ConnectionHub) -> Response:
    """The answer of ``health_path``: 200 while serving, 503 once the server drains."""
    headers = [("Cache-Control", "no-store")]
    if request.method not in ("GET", "HEAD"):
        return Response("method not allowed\n", status=405, headers=[*headers, ("Allow", "GET, HEAD")])
    if hub.closing:
        return Response("draining\n", status=503, headers=[*headers, ("Retry-After", "1")])
    return Response("ok\n", headers=headers)


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


class Server:
    """A running zzz server (from ``await app.start(...)``)."""

    def __init__(
        self,
        hub: ConnectionHub,
        servers: list[asyncio.AbstractServer],
        on_closed: Callable[[], None] | None = None,
    ) -> None:
        self._hub = hub
        self._servers = servers
        self._closed: asyncio.Future[None] | None = None
        # Called once ``close()`` is done, before it returns (the app's last metrics sync).
        self._on_closed = on_closed

    @property
    def sockets(self) -> list[socket.socket]:
        return [s for srv in self._servers for s in getattr(srv, "sockets", ())]

    @property
    def port(self) -> int:
        """The port the first socket listens on (useful with ``port=0``); 0 on a Unix socket."""
        name = self.sockets[0].getsockname()
        return int(name[1]) if isinstance(name, tuple) else 0

    @property
    def connections(self) -> int:
        """Open connections, HTTP and WebSocket."""
        return len(self._hub.connections)

    @property
    def draining(self) -> bool:
        """True once ``close()`` started: the health path answers 503 from then on."""
        return self._hub.closing

    async def close(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Stop accepting, drain, then abort what is left and wait for running callbacks.

        The drain: the WebSockets are closed with ``code`` in rounds of ``drain_batch``,
        ``drain_interval`` seconds apart (so that their clients do not all reconnect at once);
        HTTP connections get what they asked answered with ``Connection: close``, the health path
        answers 503; then everything still open gets ``close_timeout`` to finish. ``code`` is 1001
        (Going Away) for a shutdown and 1012 (Service Restart) for a restart. Calling it again
        waits for the first call.

        Raises:
            ValueError: ``code`` may not be sent (as for ``WebSocket.close``) or ``reason`` is over
                123 bytes of UTF-8; nothing is closed then.
        """
        encode_close(code, reason)  # before anything stops: a bad code must not leave half a shutdown
        hub = self._hub
        if hub.closing:
            if self._closed is not None:
                await asyncio.shield(self._closed)
            return
        hub.closing = True
        self._closed = hub.loop.create_future()
        try:
            # Connections already accepted are still served; new ones go to whoever else
            # listens on the same socket (the other workers), or wait in its queue.
            for srv in self._servers:
                srv.close()
            await self._close_websockets(code, reason)
            for proto in list(hub.connections):
                if proto in hub.websockets:
                    proto.shutdown(code, reason)  # upgraded after the last round
                else:
                    proto.shutdown()
            timeout = hub.settings.close_timeout
            if hub.connections:
                try:
                    await asyncio.wait_for(hub.idle.wait(), timeout)
                except asyncio.TimeoutError:
                    pass
            for proto in [*hub.connections, *hub.refused]:
                proto.abort()
            # Let connection_lost callbacks run (on_close), then finish or cancel callbacks.
            await asyncio.sleep(0)
            if hub.tasks:
                _done, pending = await asyncio.wait(list(hub.tasks), timeout=timeout)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending, timeout=1)
            # Callbacks that just finished or were cancelled report on_close, and an async
            # on_close is a task of its own: give those a moment too.
            late = [task for task in hub.tasks if not task.done()]
            if late:
                _done, pending = await asyncio.wait(late, timeout=1)
                for task in pending:
                    task.cancel()
            for srv in self._servers:
                await srv.wait_closed()
        finally:
            if self._on_closed is not None:
                self._on_closed()
            self._closed.set_result(None)

    async def _close_websockets(self, code: int, reason: str) -> None:
        """Close the WebSockets in rounds of ``drain_batch``, ``drain_interval`` seconds apart.

        Those upgraded while the rounds run (accepted before the listener closed) join a later
        round; the loop ends when a round finds none left.
        """
        hub = self._hub
        size, interval = hub.settings.drain_batch, hub.settings.drain_interval
        told: set[Any] = set()
        rounds = 0
        while True:
            # The WebSockets by the hub's account, whichever driver runs them (native or ASGI).
            todo = [p for p in hub.websockets if p not in told]
            if not todo:
                return
            for start in range(0, len(todo), size):
                if rounds:
                    await asyncio.sleep(interval)
                rounds += 1
                for proto in todo[start : start + size]:
                    told.add(proto)
                    proto.shutdown(code, reason)

    async def serve_forever(self) -> None:
        """Wait until ``close()`` is called."""
        while not self._hub.closing:
            await asyncio.sleep(3600)

    def stats(self) -> dict[str, Any]:
        """What this server counted since it started, and what is open now.

        Returns:
            ``connections_open``, ``connections_total``, ``messages_in``, ``messages_out``,
            ``bytes_in``, ``bytes_out``, ``backpressure_closes``, ``channel_joins``, ``topics``,
            ``subscribers`` (ints), ``closes`` (close code -> count) and ``handshake_failures``
            (HTTP status -> count); see the README's metrics table.
        """
        hub = self._hub
        endpoints = metrics.channel_endpoints(hub.routes.routes)
        return metrics.stats([hub.counters], len(hub.websockets), endpoints)


class App:
    """A zzz application: routes and controllers, app-wide middleware, and ``Settings``.

    Args:
        routes: routes (``Router.ws/get/...``) and controllers (``Controller.define``).
        middleware: app-wide middleware, run before any controller's.
        **settings: any field of ``zzz.Settings``.

    Raises:
        TypeError: an unknown setting.
        ValueError: a ``forwarded_allow_ips`` entry that is no address, network or ``"*"``.
        ImportError: ``metrics_path`` is set and ``prometheus-client`` is not installed.
    """

    def __init__(
        self, routes: Iterable[Any] = (), *, middleware: Sequence[Any] = (), **settings: Any
    ) -> None:
        unknown = set(settings) - FLAT_NAMES.keys()
        if unknown:
            raise TypeError(f"unknown App setting(s): {', '.join(sorted(unknown))}")
        self.settings = Settings(**settings)
        TrustedProxies(self.settings.forwarded_allow_ips)  # a bad entry is refused here, not per request
        routes = list(routes)
        routes.extend(static_route(name, self.settings.static_max_age) for name in CLIENT_FILES)
        self._exporter: metrics.PrometheusExporter | None = None
        if self.settings.metrics_path is not None:
            metrics.require_prometheus()
            self._exporter = metrics.PrometheusExporter(self.stats)
            routes.append(self._exporter.route(self.settings.metrics_path))
        self.route_table = RouteTable(routes, app_middleware=middleware)
        self._channel_endpoints = metrics.channel_endpoints(self.route_table.routes)
        self._hubs: list[ConnectionHub] = []  # of the servers this app started in this process

    def stats(self) -> dict[str, Any]:
        """``Server.stats()`` summed over the servers this app started in this process (in a
        worker: that worker's); every count is 0 before the first start."""
        hubs = self._hubs
        return metrics.stats(
            [hub.counters for hub in hubs], sum(len(hub.websockets) for hub in hubs), self._channel_endpoints
        )

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
        hub = ConnectionHub(self.settings, self.route_table, loop)
        srv = await listen(
            loop, lambda: HttpProtocol(hub), self.settings, host, port, ssl, reuse_port, sock, backlog
        )
        server = Server(hub, [srv], None if self._exporter is None else self._exporter.closed)
        self._hubs.append(hub)
        if self._exporter is not None:
            hubs = self._hubs
            self._exporter.started(loop, lambda: any(not h.closing for h in hubs))
        logger.info("zzz listening on %s", ", ".join(str(s.getsockname()) for s in server.sockets))
        return server

    def run(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        loop: str = "auto",
        workers: int | None = None,
        ssl: ssl_module.SSLContext | None = None,
        uds: str | None = None,
    ) -> None:
        """Serve until SIGINT or SIGTERM, then shut down gracefully (blocking).

        Args:
            loop: "auto" (uvloop when installed), "uvloop" or "asyncio".
            workers: None serves in this process; a number starts that many supervised worker
                processes sharing one listening socket (restarted when they die; SIGHUP restarts
                them one by one, SIGTTIN/SIGTTOU add or remove one; see ``zzz.runner``).
            ssl: serve TLS with this context.
            uds: listen on this Unix socket path instead of ``host``/``port``.

        Raises:
            ValueError: an unknown ``loop``, ``workers`` < 1, or ``port`` outside 0-65535 (checked
                before anything binds).
            TypeError: ``port`` is not an int.
            SystemExit: 1 when the supervisor stops because its workers keep dying, or when it
                cannot listen.
        """
        _check_port(port)
        if loop not in ("auto", "uvloop", "asyncio"):
            raise ValueError('loop must be "auto", "uvloop" or "asyncio"')
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ValueError("workers must be at least 1")
        runner.run(self, runner.Listen(host, port, uds), loop, ssl, workers)


def _check_port(port: Any) -> None:
    # The loops don't agree on what to do with a bad port: uvloop binds it modulo 65536, asyncio
    # raises OverflowError from deep inside getaddrinfo. Refuse it here, before any socket exists.
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, not {type(port).__name__}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is outside 0-65535")
