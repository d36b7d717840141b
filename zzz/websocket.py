"""The server side of one WebSocket connection: the user's ``WebSocket`` handle and the asyncio
protocol that drives ``zzz.protocol.Connection`` for it (callbacks, heartbeats, backpressure).

Everything the callbacks send while one read is handled goes out in one ``transport.write``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zzz import core
from zzz.frames import Binary, CloseCode, Text, encode_close
from zzz.hub import ConnectionHub
from zzz.keepalive import Keepalive
from zzz.protocol import CloseReceived, Connection, ConnectionFailed, Pong, State

_OPEN = State.OPEN

__all__ = ["WsConfig", "WebSocket", "WebSocketProtocol", "broadcast"]

logger = logging.getLogger("zzz")

OnOpen = Callable[["WebSocket"], Any]
OnMessage = Callable[["WebSocket", Any], Any]
OnClose = Callable[["WebSocket", int, str], Any]

# Reasons to stop reading from the socket; reading resumes when none is left.
_PAUSED_BY_CALLBACK = 1
_PAUSED_BY_WRITER = 2


@dataclass(frozen=True)
class WsConfig:
    """What a WebSocket route does. Every callback is optional, sync or ``async def``.

    Args:
        on_open: ``on_open(ws)`` once the connection is open, before any message.
        on_message: ``on_message(ws, msg)`` with ``msg`` a ``zzz.Text`` or ``zzz.Binary``; messages of
            one connection are delivered in order, one at a time.
        on_close: ``on_close(ws, code, reason)`` exactly once when the connection ends: the code of
            the peer's close frame (1005 if it had none), the code zzz sent when it failed the
            connection (1002, 1007, 1008, 1009, 1011), or 1006 when the peer vanished.
        subprotocols: subprotocols this route speaks, in order of preference.
    """

    on_open: OnOpen | None = None
    on_message: OnMessage | None = None
    on_close: OnClose | None = None
    subprotocols: Sequence[str] = field(default=())


class WebSocket(core.Sender):
    """The handle a callback gets for one connection. ``send``, ``send_binary`` and ``close`` are
    safe from any thread and do nothing once the connection is closed.

    ``send(text)`` and ``send_binary(data)`` come from ``core.Sender`` (compiled with the
    extension): they raise ``TypeError`` for the wrong type and write straight into the
    connection's outbox.
    """

    __slots__ = (
        "_proto",
        "_thread_id",
        "params",
        "query",
        "assigns",
        "path",
        "headers",
        "remote_address",
        "scheme",
        "subprotocol",
        "__weakref__",
    )

    def __init__(
        self,
        proto: WebSocketProtocol,
        *,
        params: Mapping[str, str],
        query: Mapping[str, str],
        assigns: dict[str, Any],
        path: str,
        headers: Any,
        remote_address: Any,
        subprotocol: str | None,
        scheme: str = "ws",
    ) -> None:
        super().__init__(proto.conn.outbox, proto._flush, proto.loop, proto.send_text, proto.send_binary)
        self._proto = proto
        self._thread_id = threading.get_ident()
        self.params = params
        self.query = query
        self.assigns = assigns
        self.path = path
        self.headers = headers
        self.remote_address = remote_address
        self.subprotocol = subprotocol
        self.scheme = scheme  # "ws" or "wss": the connection's, or the one a trusted proxy named

    def __repr__(self) -> str:
        return f"<WebSocket {self.path} {self.remote_address} {'closed' if self.closed else 'open'}>"

    # Request data kept for the connection's life

    def param(self, name: str) -> str | None:
        """The route parameter ``name`` (``:name`` or ``*name`` in the pattern), or None."""
        return self.params.get(name)

    def query_param(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or None."""
        return self.query.get(name)

    def get_assign(self, name: str) -> Any:
        """What middleware assigned under ``name`` before the upgrade, or None."""
        return self.assigns.get(name)

    # Sending

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the close handshake; the TCP connection is aborted after ``close_timeout`` if the
        peer does not answer.

        Raises:
            TypeError: wrong argument types.
            ValueError: a code that may not be sent, or a reason over 123 bytes of UTF-8.
        """
        if not isinstance(code, int) or isinstance(code, bool):
            raise TypeError(f"close() code must be an int, not {type(code).__name__}")
        if not isinstance(reason, str):
            raise TypeError(f"close() reason must be a str, not {type(reason).__name__}")
        encode_close(code, reason)  # validate in the caller's thread, where the error is useful
        if threading.get_ident() == self._thread_id:
            self._proto.close(code, reason)
            return
        loop = self._proto.loop
        try:
            loop.call_soon_threadsafe(self._proto.close, code, reason)
        except RuntimeError:  # the loop is closed, so is the connection: nothing to do
            if not loop.is_closed():
                raise

    @property
    def closed(self) -> bool:
        """True once the connection is closing or closed: sends are ignored from then on."""
        return self._proto.closed

    @property
    def buffered_amount(self) -> int:
        """Bytes accepted by ``send`` and not yet handed to the kernel."""
        return self._proto.buffered_amount

    async def drain(self) -> None:
        """Wait until the write buffer is below its low-water mark (or the connection is gone).

        Always yields to the loop at least once, so a ``send``/``drain`` loop can't starve it."""
        await self._proto.drain()


def _is_async(fn: Callable[..., Any] | None) -> bool:
    return fn is not None and inspect.iscoroutinefunction(fn)


class WebSocketProtocol(asyncio.Protocol):
    """Drives one upgraded connection: bytes to events to callbacks, sends to one write per read."""

    def __init__(
        self,
        state: ConnectionHub,
        config: WsConfig,
        transport: asyncio.Transport,
        conn: Connection,
        handle_kwargs: dict[str, Any],
    ) -> None:
        self.loop: asyncio.AbstractEventLoop = state.loop
        self.state = state
        self.settings = state.settings
        self.config = config
        self.transport: asyncio.Transport | None = transport
        self.conn: Connection = conn
        self.ws = WebSocket(self, **handle_kwargs)
        self._on_message = config.on_message
        # A sync on_message gets every whole message of a read in one call into the core; async
        # ones pull events one at a time (decompression waits for them too).
        self._batch_on_message = None if _is_async(config.on_message) else config.on_message
        self._max_backpressure = state.settings.max_backpressure
        # in_read is True while a read (or a callback run) is handled: sends wait for its end.
        self._outbox = conn.outbox
        self._paused = 0
        self._busy = False  # an async callback is running; events wait for it
        self._task: asyncio.Task[Any] | None = None
        self._lost = False
        self._close_reported = False
        self._final_code: tuple[int, str] | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._writing_paused = False
        self._close_timer: asyncio.TimerHandle | None = None
        self._keepalive = Keepalive(
            self.loop, state.settings.ping_interval, state.settings.ping_timeout, self._send_ping, self._on_ping_timeout
        )
        # With a sync on_message the transport calls the core's per-read loop directly; it comes
        # back to Python (_receive, _finish_read) for everything but whole messages.
        self._receiver: Any = None
        if self._batch_on_message is not None:
            self._receiver = core.Receiver(
                conn.reader,
                self._outbox,
                self._batch_on_message,
                self.ws,
                self._receive,
                self._finish_read,
                transport,
                self._max_backpressure,
                self._fail_slow_reader,
                self._keepalive,
            )
            self.data_received = self._receiver.feed  # type: ignore[method-assign]

    # Life cycle

    def start(self, early_data: bytes) -> None:
        """Called once the 101 response is written: run on_open, then feed what came with it."""
        settings = self.settings
        transport = self.transport
        assert transport is not None
        transport.set_write_buffer_limits(high=settings.write_high_water, low=settings.write_low_water)
        self.state.register(self)
        self._keepalive.start()
        logger.info("websocket open %s %s", self.ws.path, self.ws.remote_address)
        on_open = self.config.on_open
        self._outbox.in_read = True
        try:
            if on_open is not None:
                self._run_callback(on_open, (self.ws,))
            if early_data:
                self.conn.receive_data(early_data)
            if not self._busy:
                self._process()
        finally:
            self._outbox.in_read = False
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.transport = None
        self._cancel_timers()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()
        self.state.unregister(self)
        if not self._busy:
            self._process()  # complete messages already received are still delivered
            self._report_close()

    def _receive(self, data: bytes) -> None:
        """A read, the general way: events one at a time (the ``core.Receiver`` takes the reads
        it can handle whole when ``on_message`` is sync)."""
        self._keepalive.received = True
        conn = self.conn
        if self._busy:
            conn.receive_data(data)
            self._pause(_PAUSED_BY_CALLBACK)
            return
        outbox = self._outbox
        outbox.in_read = True
        try:
            conn.receive_data(data)
            self._process()
        finally:
            outbox.in_read = False
        if outbox.pending:
            self._flush()

    data_received = _receive

    def _finish_read(self, frames: list[Any], pos: int, raised: bool, value: Any, error: Any) -> None:
        """The rest of a read the ``core.Receiver`` started: it dispatched ``frames[:pos]`` and
        stopped at a callback's exception or result, at a frame that is not a whole message, or
        at a violation (``error``). Control frames and failures come after the batch's replies."""
        self.conn.adopt(frames, pos, error)
        outbox = self._outbox
        outbox.in_read = True
        try:
            if raised or value is not None:
                self._dispatch_on(raised, value)
            self._process()
        finally:
            outbox.in_read = False
        if outbox.pending:
            self._flush()

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost reports 1006 if no close frame came

    # Events to callbacks

    def _dispatch_on(self, raised: bool, value: Any) -> None:
        """A batch run of a sync ``on_message`` stopped: a callback raised (``value`` is the
        exception) or returned something. Handle it, then run the rest of the batch; a callback
        that returned an awaitable after all is awaited before anything else is delivered."""
        while True:
            if raised:
                self._callback_failed(value)
            elif value is None:
                return
            elif inspect.isawaitable(value):
                self._await_callback(value)
                return
            raised, value = self.conn.dispatch(self._on_message, self.ws)

    def _process(self) -> None:
        """Pull events and run callbacks until none is left or an async callback must be awaited."""
        conn = self.conn
        ws = self.ws
        on_message = self._on_message
        while not self._busy:
            event = conn.next_event()
            if event is None:
                return
            cls = type(event)
            if cls is Text or cls is Binary:
                if on_message is not None and conn.state is _OPEN:
                    try:
                        result = on_message(ws, event)
                    except Exception as exc:
                        self._callback_failed(exc)
                        continue
                    if result is not None and inspect.isawaitable(result):
                        self._await_callback(result)
            else:
                self._control_event(event)

    def _control_event(self, event: Any) -> None:
        cls = type(event)
        if cls is CloseReceived:
            self._final_code = (event.code, event.reason)
            self._flush()
            if self.transport is not None:
                self.transport.close()
        elif cls is ConnectionFailed:
            self._final_code = (event.code, event.reason)
            logger.info("websocket failed %s: %s %s", self.ws.remote_address, event.code, event.reason)
            self._flush()
            self._linger()
        elif cls is Pong:
            self._keepalive.pong()

    def _run_callback(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            result = fn(*args)
        except Exception as exc:
            self._callback_failed(exc)
            return
        if result is not None and inspect.isawaitable(result):
            self._await_callback(result)

    def _set_busy(self, busy: bool) -> None:
        """An async callback is running (or no longer): reads wait for it, so the fast path is off."""
        self._busy = busy
        if self._receiver is not None:
            self._receiver.enabled = not busy

    def _await_callback(self, awaitable: Awaitable[Any]) -> None:
        self._set_busy(True)
        self._task = self.loop.create_task(self._finish_callback(awaitable))
        self.state.tasks.add(self._task)
        self._task.add_done_callback(self.state.tasks.discard)

    async def _finish_callback(self, awaitable: Awaitable[Any]) -> None:
        try:
            await awaitable
        except asyncio.CancelledError:
            # Shutdown cancels callbacks still running after close_timeout (or the loop's end
            # cancels every task): nothing more is delivered, and on_close still comes, once.
            self._set_busy(False)
            self._task = None
            self.conn.abandon()
            self.abort()
            self._report_close()
            raise
        except Exception as exc:
            self._callback_failed(exc)
        self._set_busy(False)
        self._task = None
        self._outbox.in_read = True
        try:
            self._process()
        finally:
            self._outbox.in_read = False
        self._flush()
        if not self._busy:
            self._resume(_PAUSED_BY_CALLBACK)
            if self._lost:
                self._report_close()

    def _callback_failed(self, exc: BaseException) -> None:
        logger.error("callback raised on %s; closing with 1011", self.ws.path, exc_info=exc)
        self.close(CloseCode.INTERNAL_ERROR, "internal error")

    def _report_close(self) -> None:
        if self._close_reported:
            return
        self._close_reported = True
        code, reason = self._final_code or (CloseCode.ABNORMAL_CLOSURE, "")
        self.state.counters.closed(code)
        logger.info("websocket closed %s %s code=%s", self.ws.path, self.ws.remote_address, code)
        on_close = self.config.on_close
        if on_close is None:
            return
        try:
            result = on_close(self.ws, code, reason)
        except Exception:
            logger.exception("on_close raised on %s", self.ws.path)
            return
        if result is not None and inspect.isawaitable(result):
            task = self.loop.create_task(self._await_on_close(result))
            self.state.tasks.add(task)
            task.add_done_callback(self.state.tasks.discard)

    async def _await_on_close(self, awaitable: Awaitable[Any]) -> None:
        try:
            await awaitable
        except Exception:
            logger.exception("on_close raised on %s", self.ws.path)

    # Sending (loop thread only; WebSocket hands calls from other threads over)

    @property
    def closed(self) -> bool:
        return self.transport is None or self.conn.state is not _OPEN

    def send_text(self, text: str) -> None:
        self.conn.send_text(text)
        if not self._outbox.in_read:
            self._flush()

    def send_binary(self, data: bytes | bytearray | memoryview) -> None:
        self.conn.send_binary(data)
        if not self._outbox.in_read:
            self._flush()

    def send_frame(self, frame: bytes) -> None:
        """Queue an already encoded frame (used by broadcasts that encode once)."""
        self.conn.send_raw(frame)
        if not self._outbox.in_read:
            self._flush()

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self.transport is None or self.conn.state is not State.OPEN:
            return
        self.conn.send_close(code, reason)
        self._final_code = (code, reason)
        if not self._outbox.in_read:
            self._flush()
        timeout = self.settings.close_timeout
        if timeout is not None and self._close_timer is None:
            self._close_timer = self.loop.call_later(timeout, self._on_close_timeout)

    def _flush(self) -> None:
        outbox = self._outbox
        if not outbox.pending:
            return
        buffers = outbox.take()
        transport = self.transport
        if transport is None:
            return
        if len(buffers) == 1:
            transport.write(buffers[0])
        else:
            transport.writelines(buffers)
        limit = self._max_backpressure
        if limit is not None and transport.get_write_buffer_size() > limit:
            self._fail_slow_reader()

    def _linger(self) -> None:
        """Close after failing the connection without losing our close frame.

        A peer that broke the protocol is usually still sending; closing with its bytes unread
        makes the kernel reset the connection, and the peer then drops our close frame unread
        (it sees 1006, not the code that says what it did wrong). So shut down our side and
        discard what still comes (the failed Connection ignores it) until the peer closes, or
        abort after ``close_timeout`` (2 s when that is None). ``on_close`` gets our code.
        """
        transport = self.transport
        if transport is None:
            return
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        if self._close_timer is None:
            self._close_timer = self.loop.call_later(self.settings.close_timeout or 2.0, self.abort)

    def _fail_slow_reader(self) -> None:
        if self._final_code == (CloseCode.POLICY_VIOLATION, "backpressure limit exceeded"):
            return  # done once; the buffer stays over the limit until the transport is gone (uvloop)
        logger.warning("closing %s: write buffer over max_backpressure", self.ws.remote_address)
        self.state.counters.backpressure_closes += 1
        self._final_code = (CloseCode.POLICY_VIOLATION, "backpressure limit exceeded")
        self.conn.send_close(CloseCode.POLICY_VIOLATION, "backpressure limit exceeded")
        self.abort()  # the close frame sits behind unread data: on_close keeps 1008

    def _on_close_timeout(self) -> None:
        self._close_timer = None
        if self.transport is not None:
            if self.conn.close_rcvd is None:
                self._final_code = None  # we sent a close and never heard back: report 1006
            self.transport.abort()

    @property
    def buffered_amount(self) -> int:
        transport = self.transport
        return 0 if transport is None else transport.get_write_buffer_size()

    async def drain(self) -> None:
        if self.transport is None or not self._writing_paused:
            await asyncio.sleep(0)  # always a turn for the loop: a send/drain loop must not starve it
            return
        waiter = self.loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    # Flow control

    def pause_writing(self) -> None:
        self._writing_paused = True
        # A peer that doesn't read must not make us buffer pongs without end: stop reading too.
        self._pause(_PAUSED_BY_WRITER)

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._resume(_PAUSED_BY_WRITER)
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _pause(self, reason: int) -> None:
        if not self._paused and self.transport is not None:
            self.transport.pause_reading()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        if not self._paused & reason:
            return
        self._paused &= ~reason
        if not self._paused and self.transport is not None:
            self.transport.resume_reading()

    # Heartbeats and timers

    def _send_ping(self) -> bool:
        if self.closed:
            return False
        self.conn.send_ping(b"zzz")
        self._flush()
        return True

    def _on_ping_timeout(self) -> None:
        logger.info("websocket %s: no pong within ping_timeout; closing", self.ws.remote_address)
        if self.conn.state is State.OPEN:
            self.conn.send_close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            self._flush()
        self._final_code = None  # the peer vanished: on_close sees 1006
        if self.transport is not None:
            self.transport.abort()

    def _cancel_timers(self) -> None:
        self._keepalive.cancel()
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None

    # Shutdown

    def shutdown(self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down") -> None:
        self.close(code, reason)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def broadcast(sockets: Sequence[WebSocket], message: str | bytes) -> None:
    """Send one message to many connections, encoding the frame once for all that don't compress.

    Must be called on the loop's thread. Closed connections are skipped.
    """
    if isinstance(message, str):
        payload = message.encode("utf-8")
        opcode = core.OP_TEXT
    else:
        payload = bytes(message)
        opcode = core.OP_BINARY
    frame: bytes | None = None
    for ws in sockets:
        proto = ws._proto
        outbox = proto._outbox
        if proto.transport is None or not outbox.open:
            continue
        if outbox.encoder is not None:  # per-connection compression context: encode for it
            proto.send_frame(proto.conn.encode_message(payload, opcode))
            continue
        if frame is None:
            frame = core.encode_frame(opcode, payload)
        outbox.raw(frame)
        if not outbox.in_read:
            proto._flush()
