"""The zzz client: ``async with zzz.connect(url) as ws`` on the same sans-I/O core as the server.

Messages arrive through ``await ws.recv()`` or ``async for``; ``send``, ``send_binary`` and
``close`` are the server handle's methods, safe from any thread.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import threading
from collections import deque
from collections.abc import AsyncIterator, Generator, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from zzz import deflate as deflate_module
from zzz import handshake
from zzz.errors import ConnectionClosed
from zzz.frames import Binary, CloseCode, Text, WsMessage, encode_close
from zzz.keepalive import Keepalive
from zzz.protocol import CloseReceived, Connection, ConnectionFailed, Pong, State

__all__ = ["connect", "ClientWebSocket", "InvalidURI"]

_MAX_RESPONSE_HEAD = 64 * 1024
_NORMAL_CODES = (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY, CloseCode.NO_STATUS_RCVD)


class InvalidURI(ValueError):
    """The URL is not a ``ws://`` or ``wss://`` URL."""


class _ClientProtocol(asyncio.Protocol):
    """Reads the handshake response, then drives the ``Connection`` and queues messages."""

    def __init__(self, ws: ClientWebSocket) -> None:
        self.ws = ws
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.handshake: asyncio.Future[tuple[int, list[tuple[str, str]], bytes]] = ws._loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.ws._conn is not None:
            self.ws._data_received(data)
            return
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > _MAX_RESPONSE_HEAD and not self.handshake.done():
                self.handshake.set_exception(handshake.InvalidHandshake("response head too large"))
            return
        if self.handshake.done():
            return
        head = bytes(self.head[:end]).decode("latin-1")
        rest = bytes(self.head[end + 4 :])
        self.head = bytearray()
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            self.handshake.set_exception(handshake.InvalidHandshake(f"malformed status line {lines[0][:80]!r}"))
            return
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                self.handshake.set_exception(handshake.InvalidHandshake("malformed response header"))
                return
            headers.append((name.strip().lower(), value.strip()))
        self.handshake.set_result((int(parts[1]), headers, rest))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError("connection closed during the handshake"))
        self.ws._connection_lost()

    def pause_writing(self) -> None:
        # A server that floods pings and never reads must not make us queue pongs without end;
        # reading goes on (see Connection.hold_pongs), received messages are bounded by max_queue.
        self.ws._writing_paused = True
        if self.ws._conn is not None:
            self.ws._conn.hold_pongs(True)

    def resume_writing(self) -> None:
        self.ws._writing_paused = False
        if self.ws._conn is not None:
            self.ws._conn.hold_pongs(False)
            self.ws._flush()
        self.ws._wake_drain()


class ClientWebSocket:
    """A client connection. Create it with ``zzz.connect``."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self._settings = settings
        self._loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        self._proto: _ClientProtocol | None = None
        self._conn: Connection | None = None
        self._messages: deque[WsMessage] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = asyncio.Event()
        self._paused = False
        self._writing_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._close_timer: asyncio.TimerHandle | None = None
        self._keepalive = Keepalive(
            self._loop, settings["ping_interval"], settings["ping_timeout"], self._send_ping, self._on_ping_timeout
        )
        self.close_code: int | None = None
        self.close_reason: str = ""
        self.subprotocol: str | None = None
        self.response_headers: list[tuple[str, str]] = []

    # Opening

    async def _open(self, url: str) -> None:
        s = self._settings
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise InvalidURI(f"not a ws:// or wss:// URL: {url!r}")
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        ssl_ctx = s["ssl"]
        if secure and ssl_ctx is None:
            ssl_ctx = ssl_module.create_default_context()
        elif not secure and ssl_ctx is not None:
            raise InvalidURI("an ssl context needs a wss:// URL")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = parts.netloc.rpartition("@")[2]
        key = handshake.generate_key()
        config = s["deflate"] or deflate_module.DeflateConfig()
        offer = deflate_module.client_offer(config) if s["compression"] else None
        self._proto = proto = _ClientProtocol(self)
        await self._loop.create_connection(
            lambda: proto, parts.hostname, port, ssl=ssl_ctx, server_hostname=parts.hostname if secure else None
        )
        assert proto.transport is not None
        proto.transport.write(
            handshake.build_request(
                host_header,
                path,
                key,
                subprotocols=s["subprotocols"],
                extensions=offer,
                extra_headers=list(_header_items(s["extra_headers"])),
            )
        )
        status, headers, rest = await proto.handshake
        handshake.check_response(status, headers, key, subprotocols_offered=s["subprotocols"] or ())
        self.response_headers = headers
        self.subprotocol = next((v for n, v in headers if n == "sec-websocket-protocol"), None)
        deflate = None
        answers = [v for n, v in headers if n == "sec-websocket-extensions"]
        if answers:
            if offer is None:
                raise handshake.InvalidHandshake("server answered an extension we did not offer")
            try:
                params = deflate_module.accept_response(", ".join(answers), config)
            except ValueError as exc:
                raise handshake.InvalidHandshake(f"invalid extension answer: {exc}") from None
            deflate = deflate_module.PerMessageDeflate.from_config(params, config, is_server=False)
        self._conn = Connection(
            is_server=False,
            deflate=deflate,
            max_message_size=s["max_message_size"],
            max_frame_size=s["max_frame_size"],
            max_fragments=s["max_fragments"],
        )
        proto.transport.set_write_buffer_limits(high=s["write_limit"], low=s["write_limit"] // 4)
        self._keepalive.start()
        if rest:
            self._data_received(rest)

    # Receiving

    def _data_received(self, data: bytes) -> None:
        conn = self._conn
        assert conn is not None
        self._keepalive.received = True
        conn.receive_data(data)
        self._pump()

    def _pump(self, drain: bool = False) -> None:
        """Turn received frames into events, one message ahead of the application at most.

        While a message waits to be read, later frames stay parsed but unprocessed: if one of
        them breaks the protocol, the connection fails only after the application has read (and
        perhaps answered) the messages that came before it, as a server's callbacks would.
        """
        conn = self._conn
        if conn is None:
            return
        while drain or not (self._messages and conn.state is State.OPEN):
            event = conn.next_event()
            if event is None:
                break
            cls = type(event)
            if cls is Text or cls is Binary:
                self._messages.append(event)  # type: ignore[arg-type]
            elif cls is CloseReceived or cls is ConnectionFailed:
                self.close_code, self.close_reason = event.code, event.reason  # type: ignore[union-attr]
                self._flush()
                if cls is ConnectionFailed:
                    self._close_transport()
                else:
                    # The server should close TCP first; don't wait for it forever.
                    self._arm_close_timer()
            elif cls is Pong:
                self._keepalive.pong()
        self._flush()
        if self._messages:
            self._wake()
        backlog = conn.pending_frame_count
        if backlog >= self._settings["max_queue"] and not self._paused and conn.state is State.OPEN:
            self._paused = True
            if self._proto is not None and self._proto.transport is not None:
                self._proto.transport.pause_reading()
        elif self._paused and backlog <= self._settings["max_queue"] // 4:
            self._resume_reading()

    def _connection_lost(self) -> None:
        self._pump(drain=True)  # messages that arrived before the connection dropped are still read
        self._cancel_timers()
        if self.close_code is None:
            self.close_code = CloseCode.ABNORMAL_CLOSURE
        if self._conn is not None:
            self._conn.abandon()
        self._closed.set()
        self._wake()
        self._wake_drain()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def recv(self) -> WsMessage:
        """The next message.

        Raises:
            ConnectionClosed: the connection is closed and every received message was read.
        """
        while not self._messages:
            self._pump()
            if self._messages:
                break
            if self._closed.is_set() or (self._conn is not None and self._conn.state is State.CLOSED
                                         and self.close_code is not None):
                raise ConnectionClosed(self.close_code or CloseCode.ABNORMAL_CLOSURE, self.close_reason)
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._messages.popleft()

    def __aiter__(self) -> AsyncIterator[WsMessage]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[WsMessage]:
        while True:
            try:
                yield await self.recv()
            except ConnectionClosed as exc:
                if exc.code in _NORMAL_CODES:
                    return
                raise

    # Sending

    def send(self, text: str) -> None:
        """Send a text message (thread-safe; ignored once closed).

        Raises:
            TypeError: ``text`` is not a ``str``.
        """
        if not isinstance(text, str):
            raise TypeError(f"send() takes a str, not {type(text).__name__}; use send_binary() for bytes")
        self._call(self._send_text, text)

    def send_binary(self, data: bytes | bytearray | memoryview) -> None:
        """Send a binary message (thread-safe; ignored once closed).

        Raises:
            TypeError: ``data`` is not bytes-like.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"send_binary() takes bytes, bytearray or memoryview, not {type(data).__name__}")
        if threading.get_ident() != self._thread_id:
            data = bytes(data)
        self._call(self._send_binary, data)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the close handshake (thread-safe); ``await ws.wait_closed()`` to wait for its end.

        Raises:
            ValueError: a code that may not be sent, or a reason over 123 bytes of UTF-8.
        """
        encode_close(code, reason)
        self._call(self._close, code, reason)

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is closed."""
        await self._closed.wait()

    async def ping(self, data: bytes = b"") -> None:
        """Send a ping; returns without waiting for the pong."""
        if self._conn is not None:
            self._conn.send_ping(data)
            self._flush()

    async def drain(self) -> None:
        """Wait until the write buffer is below its low-water mark; always yields to the loop once,
        so a ``send``/``drain`` loop lets other work (the peer's close frame, say) run."""
        if self._writing_paused and not self._closed.is_set():
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter
        else:
            await asyncio.sleep(0)

    @property
    def closed(self) -> bool:
        """True once the connection is closing or closed."""
        return self._conn is None or self._conn.state is not State.OPEN

    def _call(self, fn: Any, *args: Any) -> None:
        if threading.get_ident() == self._thread_id:
            fn(*args)
            return
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed, so is the connection: nothing to do
            if not self._loop.is_closed():
                raise

    def _send_text(self, text: str) -> None:
        if self._conn is not None:
            self._conn.send_text(text)
            self._flush()

    def _send_binary(self, data: bytes | bytearray | memoryview) -> None:
        if self._conn is not None:
            self._conn.send_binary(data)
            self._flush()

    def _close(self, code: int, reason: str) -> None:
        conn = self._conn
        if conn is None or conn.state is not State.OPEN:
            return
        conn.send_close(code, reason)
        self._flush()
        self._arm_close_timer()
        # The peer's close frame may sit behind messages nobody will read: read on (the connection
        # now discards data frames) so the handshake can finish.
        self._pump()
        self._resume_reading()

    def _resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            if self._proto is not None and self._proto.transport is not None:
                self._proto.transport.resume_reading()

    def _flush(self) -> None:
        conn = self._conn
        proto = self._proto
        if conn is None or proto is None or proto.transport is None or not conn.pending_output:
            return
        proto.transport.write(conn.data_to_send())

    def _wake_drain(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # Timers

    def _arm_close_timer(self) -> None:
        timeout = self._settings["close_timeout"]
        if self._close_timer is None and timeout is not None:
            self._close_timer = self._loop.call_later(timeout, self._close_transport)

    def _close_transport(self) -> None:
        self._close_timer = None
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()

    def _send_ping(self) -> bool:
        if self.closed or self._conn is None:
            return False
        self._conn.send_ping(b"zzz")
        self._flush()
        return True

    def _on_ping_timeout(self) -> None:
        if self._conn is not None and self._conn.state is State.OPEN:
            self._conn.send_close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            self._flush()
        self._abort()

    def _cancel_timers(self) -> None:
        self._keepalive.cancel()
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None

    def _abort(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.abort()


def _header_items(headers: Any) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if hasattr(headers, "items"):
        return [(str(k), str(v)) for k, v in headers.items()]
    return [(str(k), str(v)) for k, v in headers]


class connect:  # noqa: N801 - used like a function: ``async with zzz.connect(url) as ws``
    """Open a WebSocket connection; use as ``async with connect(url) as ws`` or ``ws = await connect(url)``.

    Args:
        url: ``ws://`` or ``wss://`` URL.
        subprotocols: subprotocols to offer, in order of preference.
        compression: offer permessage-deflate.
        extra_headers: more request headers (mapping or pairs).
        max_message_size / max_frame_size / max_fragments: receive limits (1009 / 1008 past them).
        open_timeout: seconds for TCP, TLS and the handshake together.
        close_timeout: seconds to wait for the close handshake before closing TCP.
        ping_interval / ping_timeout: heartbeats; no pong in time aborts (code 1006).
        max_queue: received messages buffered before reading pauses.
        write_limit: write buffer high-water mark for ``drain()``.
        ssl: an ``ssl.SSLContext`` for ``wss://`` (default: the system's trust store).
        deflate: a ``zzz.deflate.DeflateConfig`` for the compression offer.

    Raises:
        InvalidURI: not a ws/wss URL.
        zzz.handshake.InvalidHandshake: the server refused or answered wrongly.
        TimeoutError: ``open_timeout`` passed.
    """

    def __init__(
        self,
        url: str,
        *,
        subprotocols: Sequence[str] | None = None,
        compression: bool = True,
        extra_headers: Any = None,
        max_message_size: int | None = 1 << 20,
        max_frame_size: int | None = None,
        max_fragments: int | None = 4096,
        open_timeout: float | None = 10,
        close_timeout: float | None = 10,
        ping_interval: float | None = 20,
        ping_timeout: float | None = 20,
        max_queue: int = 16,
        write_limit: int = 64 * 1024,
        ssl: ssl_module.SSLContext | None = None,
        deflate: Any = None,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self._url = url
        self._open_timeout = open_timeout
        self._settings = dict(
            subprotocols=list(subprotocols) if subprotocols else None,
            compression=compression,
            extra_headers=extra_headers,
            max_message_size=max_message_size,
            max_frame_size=max_frame_size,
            max_fragments=max_fragments,
            close_timeout=close_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            max_queue=max_queue,
            write_limit=write_limit,
            ssl=ssl,
            deflate=deflate,
        )
        self._ws: ClientWebSocket | None = None

    async def _connect(self) -> ClientWebSocket:
        ws = ClientWebSocket(self._settings)
        try:
            await asyncio.wait_for(ws._open(self._url), self._open_timeout)
        except BaseException:
            ws._abort()
            raise
        return ws

    def __await__(self) -> Generator[Any, None, ClientWebSocket]:
        return self._connect().__await__()

    async def __aenter__(self) -> ClientWebSocket:
        self._ws = await self._connect()
        return self._ws

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        ws = self._ws
        assert ws is not None
        ws.close()
        timeout = self._settings["close_timeout"]
        try:
            await asyncio.wait_for(ws.wait_closed(), None if timeout is None else timeout + 1)
        except asyncio.TimeoutError:
            ws._abort()
