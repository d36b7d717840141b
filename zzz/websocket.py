"""The server side of one WebSocket connection: the user's ``WebSocket`` handle and the
``WebSocketProtocol`` that runs the route's callbacks on top of the shared driver
(``zzz.driver.ConnectionDriver``: flush, backpressure, drain, timers, heartbeats, phases).

Everything the callbacks send while one read is handled goes out in one ``transport.write``.
With a sync ``on_message`` the transport calls the per-read loop (``zzz.readloop.ReadLoop``)
directly, and it comes back here only for what is not a whole message. ``broadcast`` is the
compiled loop's (``zzz.readloop.broadcast``), re-exported here as ``zzz.broadcast``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zzz.driver import PAUSED_BY_CALLBACK, Change, ConnectionDriver, Phase
from zzz.frames import Binary, CloseCode, Text, encode_close
from zzz.hub import ConnectionHub
from zzz.protocol import CloseReceived, Connection, ConnectionFailed, Pong, ReadStop, State
from zzz.readloop import ReadLoop, SendHandle, broadcast

__all__ = ["WebSocket", "WebSocketProtocol", "WsConfig", "broadcast"]

logger = logging.getLogger("zzz")

OnOpen = Callable[["WebSocket"], Any]
OnMessage = Callable[["WebSocket", Any], Any]
OnClose = Callable[["WebSocket", int, str], Any]

_OPEN = State.OPEN
_PHASE_OPEN = Phase.OPEN
_PHASE_LOST = Phase.LOST


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


class WebSocket(SendHandle):
    """The handle a callback gets for one connection. ``send``, ``send_binary`` and ``close`` are
    safe from any thread and do nothing once the connection is closed.

    ``send(text)`` and ``send_binary(data)`` come from ``zzz.readloop.SendHandle`` (compiled with
    the extension): they raise ``TypeError`` for the wrong type and write straight into the
    connection's outbox.
    """

    __slots__ = (
        "__weakref__",
        "_proto",
        "assigns",
        "headers",
        "params",
        "path",
        "query",
        "remote_address",
        "scheme",
        "subprotocol",
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
        super().__init__(proto._writer, proto.loop, proto.send_text, proto.send_binary, proto.conn)
        self._proto = proto
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

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
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
        self._proto._call_soon(self._proto.close, code, reason)

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


class WebSocketProtocol(ConnectionDriver):
    """Drives one upgraded connection: bytes to events to callbacks, sends to one write per read."""

    def __init__(
        self,
        state: ConnectionHub,
        config: WsConfig,
        transport: asyncio.Transport,
        conn: Connection,
        handle_kwargs: dict[str, Any],
    ) -> None:
        settings = state.settings
        super().__init__(
            state.loop,
            phase=Phase.OPEN,
            timeouts=settings.timeouts,
            flow=settings.flow,
            counters=state.counters,
        )
        self.state = state
        self.config = config
        self.conn: Connection = conn
        # in_read is True while a read (or a callback run) is handled: sends wait for its end.
        reader, _ = self._set_connection(transport, conn)
        self.ws = WebSocket(self, **handle_kwargs)
        self._on_message = config.on_message
        self._task: asyncio.Task[Any] | None = None
        # A sync on_message gets every whole message of a read from the per-read loop, which the
        # transport calls directly; it comes back here (_receive, _finish_read) for everything
        # else. Async ones pull events one at a time (decompression waits for them too).
        if config.on_message is not None and not _is_async(config.on_message):
            self._readloop = ReadLoop(
                reader,
                self._writer,
                config.on_message,
                self.ws,
                self._receive,
                self._finish_read,
                self._keepalive,
            )
            self.data_received = self._readloop.feed  # type: ignore[method-assign]

    # Life cycle

    def start(self, early_data: bytes) -> None:
        """Called once the 101 response is written: run on_open, then feed what came with it."""
        self.state.register(self)
        self._start()
        logger.info("websocket open %s %s", self.ws.path, self.ws.remote_address)
        on_open = self.config.on_open
        self._outbox.in_read = True
        try:
            if on_open is not None:
                self._run_callback(on_open, (self.ws,))
            if early_data:
                self.state.counters.bytes_in += len(early_data)
                self.conn.receive_data(early_data)
            if self.phase is _PHASE_OPEN:
                self._process()
        finally:
            self._outbox.in_read = False
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()
        self.state.unregister(self)
        if self.phase is _PHASE_LOST:
            self._process()  # complete messages already received are still delivered
            if self.phase is _PHASE_LOST:
                self._report_close()

    def _receive(self, data: bytes) -> None:
        """A read, the general way: events one at a time (the ``ReadLoop`` takes the reads it can
        handle whole when ``on_message`` is sync)."""
        self._keepalive.received = True
        self.state.counters.bytes_in += len(data)
        conn = self.conn
        if self.phase is Phase.IN_CALLBACK:
            conn.receive_data(data)
            self._pause(PAUSED_BY_CALLBACK)
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

    def _finish_read(self, stop: ReadStop) -> None:
        """The rest of a read the ``ReadLoop`` started: it delivered ``stop.frames[:stop.pos]``
        and stopped at a callback's exception or result, at a frame that is not a whole message,
        or at a violation (``stop.error``). Control frames and failures come after the batch's
        replies."""
        outbox = self._outbox
        outbox.in_read = True
        try:
            if stop.value is not None:  # a callback raised (the value is its exception) or returned
                stop = self._dispatch_on(stop)
            self.conn.resume(stop)
            self._process()
        finally:
            outbox.in_read = False
        if outbox.pending:
            self._flush()

    # Events to callbacks

    def _dispatch_on(self, stop: ReadStop) -> ReadStop:
        """A batch run of a sync ``on_message`` stopped: a callback raised (``stop.value`` is the
        exception) or returned something. Handle it, then run the rest of the batch; a callback
        that returned an awaitable after all is awaited before anything else is delivered.
        Returns where delivery ended, for ``Connection.resume``."""
        readloop = self._readloop
        assert readloop is not None
        while True:
            if stop.raised:
                self._callback_failed(stop.value)
            elif stop.value is None:
                return stop
            elif inspect.isawaitable(stop.value):
                self._await_callback(stop.value)
                return stop
            stop = readloop.deliver(stop)

    def _process(self) -> None:
        """Pull events and run callbacks until none is left or an async callback must be awaited
        (deliveries happen in the OPEN phase, and in LOST for what came before the loss)."""
        conn = self.conn
        ws = self.ws
        on_message = self._on_message
        counters = self.state.counters
        while self.phase is _PHASE_OPEN or self.phase is _PHASE_LOST:
            event = conn.next_event()
            if event is None:
                return
            cls = type(event)
            if cls is Text or cls is Binary:
                if conn.state is not _OPEN:
                    continue
                # The slow path: one message at a time in Python already (the fast path counts
                # a read's messages once, in ReadLoop._run).
                counters.messages_in += 1
                if on_message is not None:
                    try:
                        result = on_message(ws, event)
                    except Exception as exc:  # noqa: BLE001 - a failing callback closes with 1011
                        self._callback_failed(exc)
                        continue
                    if result is not None and inspect.isawaitable(result):
                        self._await_callback(result)
            else:
                self._control_event(event)

    def _control_event(self, event: Any) -> None:
        cls = type(event)
        if cls is CloseReceived:
            self._close = (event.code, event.reason)
            self._flush()
            if self.transport is not None:
                self.transport.close()
        elif cls is ConnectionFailed:
            self._close = (event.code, event.reason)
            logger.info("websocket failed %s: %s %s", self.ws.remote_address, event.code, event.reason)
            self._flush()
            self._linger()
        elif cls is Pong:
            self._keepalive.pong()

    def _run_callback(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            result = fn(*args)
        except Exception as exc:  # noqa: BLE001 - a failing callback closes with 1011
            self._callback_failed(exc)
            return
        if result is not None and inspect.isawaitable(result):
            self._await_callback(result)

    def _await_callback(self, awaitable: Awaitable[Any]) -> None:
        """Await a callback's result before anything else is delivered: reads wait for it."""
        self._advance(Change.AWAITING)
        self._task = self.loop.create_task(self._finish_callback(awaitable))
        self.state.tasks.add(self._task)
        self._task.add_done_callback(self.state.tasks.discard)

    async def _finish_callback(self, awaitable: Awaitable[Any]) -> None:
        try:
            await awaitable
        except asyncio.CancelledError:
            # Shutdown cancels callbacks still running after close_timeout (or the loop's end
            # cancels every task): nothing more is delivered, and on_close still comes, once.
            self._task = None
            self._advance(Change.CANCELLED)
            self.conn.abandon()
            self.abort()
            self._report_close()
            raise
        except Exception as exc:  # noqa: BLE001 - a failing callback closes with 1011
            self._callback_failed(exc)
        self._advance(Change.RETURNED)
        self._task = None
        self._outbox.in_read = True
        try:
            self._process()
        finally:
            self._outbox.in_read = False
        self._flush()
        if self.phase is _PHASE_OPEN:
            self._resume(PAUSED_BY_CALLBACK)
        elif self.phase is _PHASE_LOST:
            self._report_close()

    def _callback_failed(self, exc: BaseException) -> None:
        logger.error("callback raised on %s; closing with 1011", self.ws.path, exc_info=exc)
        self.close(CloseCode.INTERNAL_ERROR, "internal error")

    def _report_close(self) -> None:
        if self.phase is Phase.REPORTED:
            return
        self._advance(Change.REPORTED)
        code, reason = self.final_close
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

    def send_text(self, text: str) -> None:
        self.conn.send_text(text)
        if not self._outbox.in_read:
            self._flush()

    def send_binary(self, data: bytes | bytearray | memoryview) -> None:
        self.conn.send_binary(data)
        if not self._outbox.in_read:
            self._flush()

    def send_frame(self, frame: bytes) -> None:
        """Queue an already encoded frame (whole frames, as ``Connection.send_raw`` takes them)."""
        self.conn.send_raw(frame)
        if not self._outbox.in_read:
            self._flush()

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        if self.transport is None or self.conn.state is not _OPEN:
            return
        self.conn.send_close(code, reason)
        self._close = (code, reason)
        if not self._outbox.in_read:
            self._flush()
        self._arm_close_timer(self._close_timeout, self._on_close_timeout)

    def _over_limit(self) -> None:
        if self._close == (CloseCode.POLICY_VIOLATION, "backpressure limit exceeded"):
            return  # done once; the buffer stays over the limit until the transport is gone (uvloop)
        logger.warning("closing %s: write buffer over max_backpressure", self.ws.remote_address)
        self.state.counters.backpressure_closes += 1
        self._close = (CloseCode.POLICY_VIOLATION, "backpressure limit exceeded")
        self.conn.send_close(CloseCode.POLICY_VIOLATION, "backpressure limit exceeded")
        self.abort()  # the close frame sits behind unread data: on_close keeps 1008

    def _on_close_timeout(self) -> None:
        if self.transport is not None:
            if self.conn.close_rcvd is None:
                self._close = None  # we sent a close and never heard back: report 1006
            self.transport.abort()

    def _on_ping_timeout(self) -> None:
        logger.info("websocket %s: no pong within ping_timeout; closing", self.ws.remote_address)
        super()._on_ping_timeout()

    # Shutdown

    def shutdown(self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down") -> None:
        self.close(code, reason)
