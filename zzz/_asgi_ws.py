"""One accepted ASGI WebSocket: the shared driver (``zzz.driver.ConnectionDriver``) under the
app's ``receive`` and ``send``.

The core does what it does on the native side: the ``Connection`` parses, unmasks, validates
UTF-8, reassembles, inflates within ``max_message_size`` and answers pings; the driver flushes,
applies backpressure, runs the heartbeats and the close timer. What differs is who reads: the
app pulls messages with ``await receive()``. So the driver turns frames into events only while
no message waits for the app, and not while the app holds the last message it got and has
neither answered it (``send``) nor asked for the next: a close frame or a violation that
follows a message is acted on only after the app's answer to that message is queued, and that
answer goes out before our close frame, as the native server's callbacks get theirs out. The
frames behind stay parsed in the ``Connection``; reading pauses while ``max_queue`` of them
wait.

Sends are queued in the connection's outbox and written once per loop iteration (or at once
past ``write_high_water`` bytes, and then the app waits while the transport's buffer is over
that mark): an app that answers a batch of pipelined messages makes one write, not one each.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from zzz.driver import PAUSED_BY_QUEUE, Change, ConnectionDriver, Phase
from zzz.frames import Binary, CloseCode, Text
from zzz.hub import ConnectionHub
from zzz.protocol import CloseReceived, Connection, ConnectionFailed, Pong, State

__all__ = ["AsgiWebSocket", "ClientDisconnected"]

logger = logging.getLogger("zzz")


class ClientDisconnected(OSError):
    """The app sent on a WebSocket the client has closed (or that is gone).

    An ``OSError``, as uvicorn's: Starlette turns it into ``WebSocketDisconnect``.
    """


class AsgiWebSocket(ConnectionDriver):
    """Drives one accepted WebSocket for an ASGI app (see the module).

    Args:
        hub: the server's shared state (settings, counters, the set of WebSockets).
        transport: the upgraded transport (the 101 is written).
        conn: the negotiated ``Connection``.
        name: what the log lines call this connection (the path).
    """

    def __init__(self, hub: ConnectionHub, transport: asyncio.Transport, conn: Connection, name: str) -> None:
        settings = hub.settings
        super().__init__(
            hub.loop, phase=Phase.OPEN, timeouts=settings.timeouts, flow=settings.flow, counters=hub.counters
        )
        self.hub = hub
        self.conn: Connection = conn
        self.name = name
        self._set_connection(transport, conn)
        self._messages: deque[Text | Binary] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._max_queue = settings.flow.max_queue
        self._high_water = settings.flow.write_high_water
        self._app_closed = False  # the app sent websocket.close
        # The app got a message and has neither answered it nor asked for the next: hold the
        # events behind it (see the module).
        self._held = False
        self._flush_handle: asyncio.Handle | None = None
        self._unflushed = 0  # payload bytes queued since the last write

    # Life cycle

    def start(self, early: bytes) -> None:
        """The 101 is written: start the heartbeats and read what came with the request."""
        self.hub.register(self)
        self._start()
        if early:
            self.data_received(early)

    def data_received(self, data: bytes) -> None:
        self._keepalive.received = True
        self._counters.bytes_in += len(data)
        self.conn.receive_data(data)
        self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()
        self.hub.unregister(self)
        self._process()  # what arrived before the loss is still delivered
        self.conn.abandon()
        self._advance(Change.REPORTED)
        code = self.final_close[0]
        self._counters.closed(code)
        logger.info("asgi websocket closed %s code=%s", self.name, code)
        self._wake()

    def _process(self) -> None:
        """Turn received frames into events while no message waits for the app (all of them once
        the transport is gone)."""
        conn = self.conn
        messages = self._messages
        drain = self.phase is Phase.LOST
        while drain or conn.state is not State.OPEN or not (messages or self._held):
            event = conn.next_event()
            if event is None:
                break
            cls = type(event)
            if cls is Text or cls is Binary:
                messages.append(event)  # type: ignore[arg-type]
                self._counters.messages_in += 1
            elif cls is CloseReceived:
                self._close = (event.code, event.reason)  # type: ignore[union-attr]
                self._flush()
                if self.transport is not None:
                    self.transport.close()  # the server closes TCP first (RFC 6455 §7.1.1)
            elif cls is ConnectionFailed:
                self._close = (event.code, event.reason)  # type: ignore[union-attr]
                logger.info("asgi websocket failed %s: %s %s", self.name, event.code, event.reason)  # type: ignore[union-attr]
                self._flush()
                self._linger()
            elif cls is Pong:
                self._keepalive.pong()
        # What the connection answered (pongs) goes out with the app's next sends, once per
        # loop iteration: flushing here, which ``send_message`` reaches after every answer to a
        # pipelined message, would write once per message.
        if self._outbox.size:
            self._flush_soon()
        if messages:
            self._wake()
        backlog = conn.pending_frame_count
        if backlog >= self._max_queue and not self._paused & PAUSED_BY_QUEUE and conn.state is State.OPEN:
            self._pause(PAUSED_BY_QUEUE)
        elif backlog <= self._max_queue // 4:
            self._resume(PAUSED_BY_QUEUE)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # The app's receive

    async def receive(self) -> dict[str, Any]:
        """The next ``websocket.receive``, or ``websocket.disconnect`` once the connection is gone
        and every message was read (and after that, ``websocket.disconnect`` again)."""
        messages = self._messages
        self._held = False
        while True:
            if not messages:
                self._process()
            if messages:
                msg = messages.popleft()
                self._held = True
                if type(msg) is Text:
                    return {"type": "websocket.receive", "text": msg.data}
                return {"type": "websocket.receive", "bytes": msg.data}
            if self.phase is Phase.REPORTED:
                code, reason = self.final_close
                return {"type": "websocket.disconnect", "code": code, "reason": reason}
            self._waiter = self.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    # The app's send

    async def send_message(self, text: str | None, data: bytes | None) -> None:
        """``websocket.send``: queue it and write it; wait while the write buffer is over its
        high-water mark.

        Raises:
            RuntimeError: the app closed the connection already.
            ClientDisconnected: the client closed it or is gone.
        """
        if self._app_closed:
            raise RuntimeError("Unexpected ASGI message 'websocket.send', after sending 'websocket.close'")
        if self.transport is None or self.conn.state is not State.OPEN:
            raise ClientDisconnected("the WebSocket is closed")
        if text is not None:
            self.conn.send_text(text)
            self._unflushed += len(text)
        else:
            assert data is not None
            self.conn.send_binary(data)
            self._unflushed += len(data)
        if self._held:
            self._held = False  # answered: what came after the message may be acted on now
            if self._messages or self.conn.pending_frame_count:
                self._process()
        if self._unflushed > self._high_water:
            self._flush()
            # Yield even when the kernel took it all: a send loop must not starve the loop.
            await self.drain()
        else:
            self._flush_soon()

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """``websocket.close``: start the close handshake; a second close does nothing.

        Raises:
            ValueError: a code that may not be sent, or a reason over 123 bytes of UTF-8.
        """
        self._app_closed = True
        conn = self.conn
        if self.transport is None or conn.state is not State.OPEN:
            return
        conn.send_close(code, reason)
        self._close = (code, reason)
        self._flush()
        self._arm_close_timer(self._close_timeout, self._on_close_timeout)
        # The peer's close frame may sit behind messages the app will not read: read on (the
        # connection now discards data frames) so the handshake can finish.
        self._process()
        self._resume(PAUSED_BY_QUEUE)

    def _flush_soon(self) -> None:
        """Write what is queued once this loop iteration's callbacks have run."""
        if self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        handle = self._flush_handle
        if handle is not None:
            handle.cancel()
            self._flush_handle = None
        self._unflushed = 0
        self._writer.flush()  # the driver's one flush: counts, writes, checks max_backpressure

    def _over_limit(self) -> None:
        if self._close == (CloseCode.POLICY_VIOLATION, "backpressure limit exceeded"):
            return
        logger.warning("closing %s: write buffer over max_backpressure", self.name)
        self._counters.backpressure_closes += 1
        self._close = (CloseCode.POLICY_VIOLATION, "backpressure limit exceeded")
        self.conn.send_close(CloseCode.POLICY_VIOLATION, "backpressure limit exceeded")
        self.abort()

    def _on_close_timeout(self) -> None:
        if self.transport is not None:
            if self.conn.close_rcvd is None:
                self._close = None  # we sent a close and never heard back: report 1006
            self.transport.abort()

    def _on_ping_timeout(self) -> None:
        logger.info("asgi websocket %s: no pong within ping_timeout; closing", self.name)
        super()._on_ping_timeout()

    # Shutdown (Server.close)

    def shutdown(self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down") -> None:
        """The server drains: close with ``code`` (1001, or 1012 on a restart)."""
        conn = self.conn
        if self.transport is None or conn.state is not State.OPEN:
            return
        conn.send_close(code, reason)
        self._close = (code, reason)
        self._flush()
        self._arm_close_timer(self._close_timeout, self._on_close_timeout)
        self._process()
        self._resume(PAUSED_BY_QUEUE)
