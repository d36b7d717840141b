"""One I/O driver for both sides of a WebSocket connection: ``ConnectionDriver``, the asyncio
protocol under the server's ``WebSocketProtocol`` (``websocket.py``) and the client's protocol
(``client.py``).

Charter (in the manner of h11's ``_state.py``):

Rule 1: everything that changes the driver's phase lives in this file: the ``Phase`` enum, the
``TRANSITIONS`` table and its one setter, ``ConnectionDriver._advance``. A side names what happened
(``Change``); it never assigns ``phase``. Code that decides on the phase reads it.

Rule 2: the driver does not know what a side does with a message. It owns the transport, the
connection's outbox and the things both sides do the same way: the flush (one write or
``writelines`` of everything queued) and the backpressure limit, ``drain`` and the flow-control
callbacks, the reasons to pause reading, the close timer and the linger after a failure, the
heartbeats and the ping-timeout close, the hand-off of calls from other threads, ``closed`` and
the final close code. The server adds the user's callbacks; the client adds the message queue.

Theory of operation. The phase says what the driver does with what it reads and when the end of
the connection is reported; the close handshake itself is the ``Connection``'s ``State`` (OPEN,
CLOSING, CLOSED) and is not mirrored here. Two things decide a phase: whether the transport is
still there, and whether an ``async`` callback is running (the server awaits one callback at a
time, and the reads of a connection wait for it). So:

    CONNECTING  --OPENED-->    OPEN                (the client's handshake is done)
    OPEN        --AWAITING-->  IN_CALLBACK         (a callback returned an awaitable)
    IN_CALLBACK --RETURNED-->  OPEN                (it returned: the reads that waited go on)
    IN_CALLBACK --LOST-->      LOST_IN_CALLBACK    (the peer left while it ran)
    LOST_IN_CALLBACK --RETURNED--> LOST
    OPEN, CONNECTING --LOST--> LOST
    LOST        --AWAITING-->  LOST_IN_CALLBACK    (what came before the loss awaits a callback)
    IN_CALLBACK, LOST_IN_CALLBACK --CANCELLED--> LOST   (shutdown cancelled it: abandon, abort)
    LOST        --REPORTED-->  REPORTED            (on_close / wait_closed)
    REPORTED    --LOST-->      REPORTED            (connection_lost after a cancelled callback)

``LOST`` is short: what was received before the loss is still delivered (which may await a
callback again), then the end is reported, once. ``REPORTED`` is final. Closing and lingering
are not phases: our close frame, the peer's and a failure are the Connection's ``State``, and
what the driver does about them (a close timer, a half-close) changes nothing in how it reads or
reports; making them phases would only mirror that state a second time.

Invariant kept by ``_advance``: ``readloop.enabled is (phase is Phase.OPEN)`` for a driver with a
``ReadLoop`` (the server with a sync ``on_message``): the compiled per-read loop runs only while
reads may go straight to the callback.
"""

from __future__ import annotations

import asyncio
import enum
import threading
from collections.abc import Callable, Mapping
from typing import Any

from zzz import core
from zzz.frames import CloseCode
from zzz.keepalive import Keepalive
from zzz.protocol import Connection, State
from zzz.readloop import Counters, ReadLoop, Writer
from zzz.settings import FlowControl, Timeouts

__all__ = ["TRANSITIONS", "Change", "ConnectionDriver", "Phase"]


class Phase(enum.Enum):
    """Where the driver is in the connection's life (see the module's theory of operation)."""

    #: The client reads the handshake response; nothing is framed yet.
    CONNECTING = "connecting"
    #: Reads become events as they come (through the per-read loop when there is one).
    OPEN = "open"
    #: An async callback runs: reads wait in the Connection and reading pauses at the next one.
    IN_CALLBACK = "in callback"
    #: The transport is gone (or being aborted) and the end is not reported yet: what was
    #: received before is still delivered.
    LOST = "lost"
    #: The transport is gone while an async callback runs: the end is reported when it returns.
    LOST_IN_CALLBACK = "lost in callback"
    #: The end was reported (the server's ``on_close``; the client's ``wait_closed``); final.
    REPORTED = "reported"


class Change(enum.Enum):
    """What happened to a driver: the events of ``TRANSITIONS``."""

    #: The handshake completed (the client; a server's driver starts OPEN).
    OPENED = "opened"
    #: A callback returned an awaitable; the driver awaits it before anything else is delivered.
    AWAITING = "awaiting"
    #: The awaited callback returned or raised.
    RETURNED = "returned"
    #: The awaited callback was cancelled (shutdown): the connection is abandoned and aborted.
    CANCELLED = "cancelled"
    #: The transport called ``connection_lost``.
    LOST = "lost"
    #: The end was reported.
    REPORTED = "reported"


_CONNECTING = Phase.CONNECTING
_OPEN = Phase.OPEN
_IN_CALLBACK = Phase.IN_CALLBACK
_LOST = Phase.LOST
_LOST_IN_CALLBACK = Phase.LOST_IN_CALLBACK
_REPORTED = Phase.REPORTED

#: phase -> what happened -> next phase. Anything else is a bug in the driver and raises.
TRANSITIONS: Mapping[Phase, Mapping[Change, Phase]] = {
    _CONNECTING: {Change.OPENED: _OPEN, Change.LOST: _LOST},
    _OPEN: {Change.AWAITING: _IN_CALLBACK, Change.LOST: _LOST},
    _IN_CALLBACK: {Change.RETURNED: _OPEN, Change.LOST: _LOST_IN_CALLBACK, Change.CANCELLED: _LOST},
    _LOST: {Change.AWAITING: _LOST_IN_CALLBACK, Change.REPORTED: _REPORTED},
    _LOST_IN_CALLBACK: {Change.RETURNED: _LOST, Change.CANCELLED: _LOST},
    _REPORTED: {Change.LOST: _REPORTED},
}

# Reasons to stop reading from the socket; reading resumes when none is left.
PAUSED_BY_CALLBACK = 1  # server: an async callback runs and a read came meanwhile
PAUSED_BY_WRITER = 2  # server: the transport's write buffer is over its high-water mark
PAUSED_BY_QUEUE = 4  # client: max_queue messages wait for recv()

# Waiting for the peer to close after we failed the connection, when close_timeout is None.
_LINGER_WITHOUT_TIMEOUT = 2.0


class ConnectionDriver(asyncio.Protocol):
    """The asyncio protocol that drives one ``Connection`` over one transport (see the module).

    Args:
        loop: the loop this connection lives on; calls from other threads are handed to it.
        phase: ``Phase.OPEN`` (server, created after the handshake) or ``Phase.CONNECTING``.
        timeouts: ``close`` (seconds to wait for the peer after our close frame; None: forever),
            ``ping_interval`` and ``ping_timeout`` (heartbeats, ``zzz.keepalive.Keepalive``).
        flow: the transport's write-buffer marks (``write_high_water``, ``write_low_water``) and
            ``max_backpressure``, the unsent bytes it may hold after a write before
            ``_over_limit()`` (None: no limit).
        counters: where every write is counted (``bytes_out``, ``messages_out``); the server's
            hub's, None for the client (nothing reads them).

    Subclasses set ``transport`` and ``conn`` (``_set_connection``), and define ``_process``
    (turn pending events into what the side does with them) and, for the backpressure limit,
    ``_over_limit``.
    """

    #: On the server, reading stops while the transport's buffer is over its high-water mark: a
    #: peer that does not read must not make us buffer pongs or replies without end. The client
    #: keeps reading and answers only the latest ping (``Connection.hold_pongs``) instead, so
    #: that streaming both ways to a server that does the former can't deadlock.
    pause_reading_while_writing_paused = True

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        phase: Phase,
        timeouts: Timeouts,
        flow: FlowControl,
        counters: Counters | None = None,
    ) -> None:
        self.loop = loop
        # Always a Counters (a client's counts nobody reads), so that no count tests for None.
        self._counters: Counters = Counters() if counters is None else counters
        self.phase = phase
        self.transport: asyncio.Transport | None = None
        self.conn: Connection | None = None
        # Until the handshake is done (client), an empty outbox: a flush then writes nothing.
        self._outbox: core.Outbox = core.Outbox()
        # The one flush (compiled with the per-read loop); detached until there is a connection.
        self._writer = Writer(self._outbox, None, None, self._over_limit, counters)
        self._readloop: ReadLoop | None = None
        self._thread_id = threading.get_ident()
        self._flow = flow
        self._close_timeout = timeouts.close
        self._max_backpressure = flow.max_backpressure
        # The code and reason the end is reported with: the peer's close frame, the one we sent
        # when failing the connection (or closing it, on the server). None until one is known;
        # the end reports 1006 then (the transport went without a close handshake).
        self._close: tuple[int, str] | None = None
        self._paused = 0  # PAUSED_BY_* bits
        self._writing_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._close_timer: asyncio.TimerHandle | None = None
        self._keepalive = Keepalive(
            loop, timeouts.ping_interval, timeouts.ping_timeout, self._send_ping, self._on_ping_timeout
        )

    def _set_connection(self, transport: asyncio.Transport, conn: Connection) -> tuple[Any, core.Outbox]:
        """Drive ``conn`` over ``transport``; return the connection's ``fast_path()``."""
        self.transport = transport
        self.conn = conn
        reader, self._outbox = conn.fast_path()
        self._writer = Writer(
            self._outbox, transport, self._max_backpressure, self._over_limit, self._counters
        )
        return reader, self._outbox

    def _start(self) -> None:
        """The connection is open on the transport: set its write-buffer marks (they decide when
        ``pause_writing`` comes and ``drain`` waits) and start the heartbeats."""
        assert self.transport is not None
        flow = self._flow
        self.transport.set_write_buffer_limits(high=flow.write_high_water, low=flow.write_low_water)
        self._keepalive.start()

    # The phase

    def _advance(self, change: Change) -> Phase:
        """The one setter of ``phase`` (see ``TRANSITIONS``); it keeps the read loop's mirror true.

        Raises:
            RuntimeError: ``change`` cannot happen in the current phase (a bug in the driver).
        """
        try:
            phase = TRANSITIONS[self.phase][change]
        except KeyError:
            raise RuntimeError(f"{change.value!r} cannot happen in phase {self.phase.name}") from None
        self.phase = phase
        if self._readloop is not None:
            self._readloop.enabled = phase is _OPEN
        return phase

    @property
    def closed(self) -> bool:
        """True once the connection is closing or closed: sends are ignored from then on."""
        conn = self.conn
        return self.transport is None or conn is None or conn.state is not State.OPEN

    @property
    def final_close(self) -> tuple[int, str]:
        """The code and reason the connection ends with (1006 when none is known)."""
        return self._close or (CloseCode.ABNORMAL_CLOSURE, "")

    def _process(self) -> None:
        raise NotImplementedError

    def _over_limit(self) -> None:
        raise NotImplementedError

    # Writing

    def _flush(self) -> None:
        """Write everything queued, in one call; fail the connection past ``max_backpressure``
        (``Writer.flush``, which the per-read loop and broadcasts call without this frame)."""
        self._writer.flush()

    @property
    def buffered_amount(self) -> int:
        """Bytes accepted for sending and not yet handed to the kernel: the transport's buffer
        and what waits in the outbox (a broadcast's frames until the end of the loop turn)."""
        return self._writer.buffered()

    async def drain(self) -> None:
        """Wait until the write buffer is below its low-water mark (or the connection is gone).

        Always yields to the loop at least once, so a ``send``/``drain`` loop can't starve it."""
        if self.transport is None or not self._writing_paused:
            await asyncio.sleep(0)
            return
        waiter = self.loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def _wake_drain(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # Flow control

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self.pause_reading_while_writing_paused:
            self._pause(PAUSED_BY_WRITER)
        elif self.conn is not None:
            self.conn.hold_pongs(True)

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self.pause_reading_while_writing_paused:
            self._resume(PAUSED_BY_WRITER)
        elif self.conn is not None:
            self.conn.hold_pongs(False)
            self._flush()
        self._wake_drain()

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

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost reports 1006 if no close frame came

    # Ending

    def _lost(self) -> None:
        """The transport is gone: stop the timers, release ``drain`` and advance to LOST (or
        LOST_IN_CALLBACK); the side then delivers what is left and reports the end."""
        self.transport = None
        self._writer.detach()
        self._cancel_timers()
        self._wake_drain()
        self._advance(Change.LOST)

    def _arm_close_timer(self, timeout: float | None, action: Callable[[], None]) -> None:
        """Call ``action`` after ``timeout`` seconds unless a close timer is armed already."""
        if timeout is not None and self._close_timer is None:
            self._close_timer = self.loop.call_later(timeout, self._close_timer_fired, action)

    def _close_timer_fired(self, action: Callable[[], None]) -> None:
        self._close_timer = None
        action()

    def _linger(self) -> None:
        """Close after failing the connection without losing our close frame.

        A peer that broke the protocol is usually still sending; closing with its bytes unread
        makes the kernel reset the connection, and the peer then drops our close frame unread
        (it sees 1006, not the code that says what it did wrong). So shut down our side and
        discard what still comes (the failed Connection ignores it) until the peer closes, or
        abort after ``close_timeout`` (2 s when that is None).
        """
        transport = self.transport
        if transport is None:
            return
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._arm_close_timer(self._close_timeout or _LINGER_WITHOUT_TIMEOUT, self.abort)

    def abort(self) -> None:
        """Drop the TCP connection at once."""
        if self.transport is not None:
            self.transport.abort()

    def _cancel_timers(self) -> None:
        self._keepalive.cancel()
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None

    # Heartbeats

    def _send_ping(self) -> bool:
        if self.closed:
            return False
        assert self.conn is not None
        self.conn.send_ping(b"zzz")
        self._flush()
        return True

    def _on_ping_timeout(self) -> None:
        """No sign of life within ``ping_timeout``: say 1011 if we still can, report 1006, abort."""
        conn = self.conn
        if conn is not None and conn.state is State.OPEN:
            conn.send_close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            self._flush()
        self._close = None  # the peer vanished: the end reports 1006
        self.abort()

    # Other threads

    def _call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` now on the loop's thread, or hand it to the loop from any other
        thread; once the loop is closed (so is the connection) that does nothing."""
        if threading.get_ident() == self._thread_id:
            fn(*args)
            return
        loop = self.loop
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            if not loop.is_closed():
                raise
