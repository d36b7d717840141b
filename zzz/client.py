"""The zzz client: ``async with zzz.connect(url) as ws`` on the same sans-I/O core and the same
driver (``zzz.driver.ConnectionDriver``) as the server.

Messages arrive through ``await ws.recv()`` or ``async for``; ``send``, ``send_binary`` and
``close`` are the server handle's methods, safe from any thread.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import threading
from collections import deque
from collections.abc import AsyncIterator, Generator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from zzz import deflate as deflate_module
from zzz import handshake
from zzz.driver import PAUSED_BY_QUEUE, Change, ConnectionDriver, Phase
from zzz.errors import ConnectionClosed
from zzz.frames import Binary, CloseCode, Text, WsMessage, encode_close
from zzz.protocol import CloseReceived, Connection, ConnectionFailed, Pong, State
from zzz.settings import Compression, FlowControl, Timeouts, WsLimits

__all__ = ["ClientWebSocket", "InvalidURI", "connect"]

_MAX_RESPONSE_HEAD = 64 * 1024
_NORMAL_CODES = (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY, CloseCode.NO_STATUS_RCVD)


class InvalidURI(ValueError):
    """The URL is not a ``ws://`` or ``wss://`` URL."""


@dataclass(frozen=True)
class ClientSettings:
    """What ``connect`` was given: the groups the server uses too (``zzz.settings``), and what
    only a client says.

    Attributes:
        ws: what the server may send (``WsLimits``).
        timeouts: ``open`` (TCP, TLS and the handshake together), ``close``, the heartbeats.
        flow: ``write_high_water`` (``write_limit``) and ``write_low_water`` (a quarter of it) for
            ``drain()``; ``max_queue`` received messages before reading pauses.
        permessage_deflate: whether to offer compression, and its ``DeflateConfig``.
        subprotocols: offered, in order of preference (None: none).
        extra_headers: more request headers (a mapping or pairs).
        ssl: the ``ssl.SSLContext`` for ``wss://`` (None: the system's trust store).
    """

    ws: WsLimits
    timeouts: Timeouts
    flow: FlowControl
    permessage_deflate: Compression
    subprotocols: list[str] | None
    extra_headers: Any
    ssl: ssl_module.SSLContext | None


class _ClientProtocol(ConnectionDriver):
    """The client's driver: reads the handshake response, then drives the ``Connection`` and
    turns its events into the handle's message queue."""

    # Reading goes on while writing is paused; only the latest ping is answered meanwhile (see
    # ConnectionDriver.pause_reading_while_writing_paused): a server that floods pings and
    # never reads can't grow our memory, and received messages are bounded by max_queue.
    pause_reading_while_writing_paused = False

    def __init__(self, ws: ClientWebSocket) -> None:
        settings = ws._settings
        super().__init__(ws._loop, phase=Phase.CONNECTING, timeouts=settings.timeouts, flow=settings.flow)
        self.ws = ws
        self._max_queue = settings.flow.max_queue
        self.head = bytearray()
        self.handshake: asyncio.Future[tuple[int, list[tuple[str, str]], bytes]] = ws._loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def opened(self, conn: Connection, rest: bytes) -> None:
        """The handshake is done: drive ``conn`` from now on, starting with ``rest``."""
        transport = self.transport
        assert transport is not None
        self._set_connection(transport, conn)
        self._advance(Change.OPENED)
        self._start()
        if rest:
            self.data_received(rest)

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is not None:
            self._keepalive.received = True
            conn.receive_data(data)
            self._process()
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
            self.handshake.set_exception(
                handshake.InvalidHandshake(f"malformed status line {lines[0][:80]!r}")
            )
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
        self._lost()
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError("connection closed during the handshake"))
        self._process()  # messages that arrived before the connection dropped are still read
        if self.conn is not None:
            self.conn.abandon()
        self._advance(Change.REPORTED)
        ws = self.ws
        ws._closed.set()
        ws._wake()

    def _process(self) -> None:
        """Turn received frames into events, one message ahead of the application at most (all
        of them once the transport is gone).

        While a message waits to be read, later frames stay parsed but unprocessed: if one of
        them breaks the protocol, the connection fails only after the application has read (and
        perhaps answered) the messages that came before it, as a server's callbacks would.
        """
        conn = self.conn
        if conn is None:
            return
        messages = self.ws._messages
        drain = self.phase is Phase.LOST
        while drain or not (messages and conn.state is State.OPEN):
            event = conn.next_event()
            if event is None:
                break
            cls = type(event)
            if cls is Text or cls is Binary:
                messages.append(event)  # type: ignore[arg-type]
            elif cls is CloseReceived or cls is ConnectionFailed:
                self._close = (event.code, event.reason)  # type: ignore[union-attr]
                self._flush()
                if cls is ConnectionFailed:
                    self._close_transport()
                elif self.transport is not None:
                    # The server should close TCP first; don't wait for it forever.
                    self._arm_close_timer(self._close_timeout, self._close_transport)
            elif cls is Pong:
                self._keepalive.pong()
        self._flush()
        if messages:
            self.ws._wake()
        backlog = conn.pending_frame_count
        if backlog >= self._max_queue and not self._paused & PAUSED_BY_QUEUE and conn.state is State.OPEN:
            self._pause(PAUSED_BY_QUEUE)
        elif backlog <= self._max_queue // 4:
            self._resume(PAUSED_BY_QUEUE)

    def _close_transport(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # Loop thread only (ClientWebSocket hands calls from other threads over)

    def send_text(self, text: str) -> None:
        if self.conn is not None:
            self.conn.send_text(text)
            self._flush()

    def send_binary(self, data: bytes | bytearray | memoryview) -> None:
        if self.conn is not None:
            self.conn.send_binary(data)
            self._flush()

    def close(self, code: int, reason: str) -> None:
        conn = self.conn
        if conn is None or conn.state is not State.OPEN:
            return
        conn.send_close(code, reason)
        self._flush()
        self._arm_close_timer(self._close_timeout, self._close_transport)
        # The peer's close frame may sit behind messages nobody will read: read on (the connection
        # now discards data frames) so the handshake can finish.
        self._process()
        self._resume(PAUSED_BY_QUEUE)


class ClientWebSocket:
    """A client connection. Create it with ``zzz.connect``.

    Attributes:
        subprotocol: the subprotocol the server chose, or None.
        response_headers: the handshake response's headers, names lower-cased.
    """

    def __init__(self, settings: ClientSettings) -> None:
        self._settings = settings
        self._loop = asyncio.get_running_loop()
        self._messages: deque[WsMessage] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = asyncio.Event()
        self._proto = _ClientProtocol(self)
        self.subprotocol: str | None = None
        self.response_headers: list[tuple[str, str]] = []

    @property
    def close_code(self) -> int | None:
        """The code the connection closed with: the server's close frame (1005 if it had none),
        the code we sent when the server broke the protocol, 1006 when the connection ended
        without a close handshake; None until then."""
        proto = self._proto
        if proto._close is not None:
            return proto._close[0]
        return CloseCode.ABNORMAL_CLOSURE if proto.phase is Phase.REPORTED else None

    @property
    def close_reason(self) -> str:
        """The reason that came with ``close_code`` ("" if none)."""
        close = self._proto._close
        return "" if close is None else close[1]

    # Opening

    async def _open(self, url: str) -> None:
        s = self._settings
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise InvalidURI(f"not a ws:// or wss:// URL: {url!r}")
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        ssl_ctx = s.ssl
        if secure and ssl_ctx is None:
            ssl_ctx = ssl_module.create_default_context()
        elif not secure and ssl_ctx is not None:
            raise InvalidURI("an ssl context needs a wss:// URL")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = parts.netloc.rpartition("@")[2]
        key = handshake.generate_key()
        config = s.permessage_deflate.config or deflate_module.DeflateConfig()
        offer = deflate_module.client_offer(config) if s.permessage_deflate.enabled else None
        proto = self._proto
        await self._loop.create_connection(
            lambda: proto,
            parts.hostname,
            port,
            ssl=ssl_ctx,
            server_hostname=parts.hostname if secure else None,
        )
        assert proto.transport is not None
        proto.transport.write(
            handshake.build_request(
                host_header,
                path,
                key,
                subprotocols=s.subprotocols,
                extensions=offer,
                extra_headers=list(_header_items(s.extra_headers)),
            )
        )
        status, headers, rest = await proto.handshake
        handshake.check_response(status, headers, key, subprotocols_offered=s.subprotocols or ())
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
        proto.opened(Connection(is_server=False, deflate=deflate, limits=s.ws), rest)

    # Receiving

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def recv(self) -> WsMessage:
        """The next message.

        Raises:
            ConnectionClosed: the connection is closed and every received message was read.
        """
        proto = self._proto
        while not self._messages:
            proto._process()
            if self._messages:
                break
            conn = proto.conn
            if self._closed.is_set() or (
                conn is not None and conn.state is State.CLOSED and proto._close is not None
            ):
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
        self._proto._call_soon(self._proto.send_text, text)

    def send_binary(self, data: bytes | bytearray | memoryview) -> None:
        """Send a binary message (thread-safe; ignored once closed).

        Raises:
            TypeError: ``data`` is not bytes-like.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"send_binary() takes bytes, bytearray or memoryview, not {type(data).__name__}")
        if threading.get_ident() != self._proto._thread_id:
            data = bytes(data)  # copy now: the caller may reuse its buffer before the loop gets to it
        self._proto._call_soon(self._proto.send_binary, data)

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the close handshake (thread-safe); ``await ws.wait_closed()`` to wait for its end.

        Raises:
            ValueError: a code that may not be sent, or a reason over 123 bytes of UTF-8.
        """
        encode_close(code, reason)
        self._proto._call_soon(self._proto.close, code, reason)

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is closed."""
        await self._closed.wait()

    async def ping(self, data: bytes = b"") -> None:
        """Send a ping; returns without waiting for the pong."""
        proto = self._proto
        if proto.conn is not None:
            proto.conn.send_ping(data)
            proto._flush()

    async def drain(self) -> None:
        """Wait until the write buffer is below its low-water mark; always yields to the loop once,
        so a ``send``/``drain`` loop lets other work (the peer's close frame, say) run."""
        await self._proto.drain()

    @property
    def closed(self) -> bool:
        """True once the connection is closing or closed."""
        return self._proto.closed

    def _abort(self) -> None:
        self._proto.abort()


def _header_items(headers: Any) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if hasattr(headers, "items"):
        return [(str(k), str(v)) for k, v in headers.items()]
    return [(str(k), str(v)) for k, v in headers]


class connect:
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
        self._settings = ClientSettings(
            ws=WsLimits(
                max_message_size=max_message_size, max_frame_size=max_frame_size, max_fragments=max_fragments
            ),
            timeouts=Timeouts(
                open=open_timeout, close=close_timeout, ping_interval=ping_interval, ping_timeout=ping_timeout
            ),
            # A client has no backpressure limit: its sends are the application's own.
            flow=FlowControl(
                write_high_water=write_limit,
                write_low_water=write_limit // 4,
                max_backpressure=None,
                max_queue=max_queue,
            ),
            permessage_deflate=Compression(enabled=compression, config=deflate),
            subprotocols=list(subprotocols) if subprotocols else None,
            extra_headers=extra_headers,
            ssl=ssl,
        )
        self._ws: ClientWebSocket | None = None

    async def _connect(self) -> ClientWebSocket:
        ws = ClientWebSocket(self._settings)
        try:
            await asyncio.wait_for(ws._open(self._url), self._settings.timeouts.open)
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
        timeout = self._settings.timeouts.close
        try:
            await asyncio.wait_for(ws.wait_closed(), None if timeout is None else timeout + 1)
        except asyncio.TimeoutError:
            ws._abort()
