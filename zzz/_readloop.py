# cython: language_level=3, annotation_typing=False, binding=True, auto_pickle=False
"""The per-read fast path of one connection: ``Writer`` (the connection's one flush: its outbox
to its transport), ``ReadLoop`` (a read, its callbacks and one write) and ``SendHandle`` (the
handle's ``send`` and ``send_binary``); ``broadcast``, the fan-out of one message to many
handles, flushed once per loop turn; and the ``Counters`` they add to (``zzz.metrics.Counters``:
C fields in the compiled build, so a read counts in a few instructions).

One text, two builds. This file runs as it is over the pure-Python core (``zzz._purepy``), and
``setup.py`` compiles it with Cython, typed by ``_readloop_c.pxd``, into ``zzz._readloop_c`` over
the compiled core, whose ``FrameReader`` and ``Outbox`` it then calls at C speed. ``zzz.readloop``
picks the build that matches ``zzz.core.IMPLEMENTATION``. The annotations are for mypy only; the
``.pxd`` gives the C types. Both cores expose the names used here (``FrameReader.feed`` and
``.error``, ``Outbox.text/binary/take``, ``.size``, ``.open``, ``.in_read``).

Layer 4 (I/O): this is where a read meets the transport, the loop and the user's callback, with
no Python frame between them in the common case. The reader and the outbox come from
``Connection.fast_path()``; what the loop can't finish goes back, as a ``ReadStop``, to the
driver, which hands the frames to ``Connection.resume``.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable, Iterable
from threading import get_ident as _thread_ident
from typing import TYPE_CHECKING, Any

from zzz.core import encode_frame as _encode_frame
from zzz.errors import WebSocketError
from zzz.protocol import ReadStop

if TYPE_CHECKING:
    from zzz import core

__all__ = ["EARLY_FLUSH_SIZE", "Counters", "ReadLoop", "SendHandle", "Writer", "broadcast"]

# While a read is handled, replies are held for its one write; past this many bytes they go out early.
_EARLY_FLUSH_SIZE = 256 * 1024
EARLY_FLUSH_SIZE = _EARLY_FLUSH_SIZE
# A ReadStop without the Python call of the named tuple's own __new__ (the slow path counts too).
_TUPLE_NEW = tuple.__new__
_COUNTER_FIELDS = (
    "connections_total",
    "messages_in",
    "messages_out",
    "bytes_in",
    "bytes_out",
    "closes",
    "handshake_failures",
    "backpressure_closes",
)


class Counters:
    """The counts of one listening server (``zzz.metrics.Counters``): ints the I/O layer adds to.

    Who adds what, and when (never per message in Python on the fast path):

    - ``connections_total``: ``ConnectionHub.register`` (a WebSocket is open).
    - ``bytes_in``: every read of an upgraded connection, ``len(data)`` (``ReadLoop.feed``, or the
      driver's read when the fast path is off), and the bytes read with the upgrade request.
    - ``messages_in``: data messages (text or binary, whole, not control frames) delivered to
      ``on_message``; the per-read loop adds the number of a read's messages once per read.
    - ``messages_out`` / ``bytes_out``: per write, the bytes handed to the transport and the data
      messages among them (the outbox's ``size`` and ``messages``, read just before ``take()``).
    - ``closes[code]``: once per WebSocket, when its end is reported (``on_close``'s code).
    - ``backpressure_closes``: a connection closed because its send buffer passed
      ``max_backpressure`` (its close is also in ``closes[1008]``).
    - ``handshake_failures[status]``: a request to a WebSocket route answered with anything but
      the 101 (400, 403, 405, 426, a middleware's response, 500).
    """

    __slots__ = _COUNTER_FIELDS

    def __init__(self) -> None:
        self.connections_total = 0
        self.messages_in = 0
        self.messages_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.closes: dict[int, int] = {}
        self.handshake_failures: dict[int, int] = {}
        self.backpressure_closes = 0

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _COUNTER_FIELDS)
        return f"Counters({fields})"

    def closed(self, code: int) -> None:
        """A WebSocket ended with ``code`` (what ``on_close`` was told)."""
        self.closes[code] = self.closes.get(code, 0) + 1

    def handshake_failed(self, status: int) -> None:
        """An upgrade request on a WebSocket route was answered ``status`` instead of 101."""
        self.handshake_failures[status] = self.handshake_failures.get(status, 0) + 1


def _method(obj: Any, name: str) -> Callable[..., Any]:
    """``obj.<name>`` as a function called with ``obj`` first: the function of its class when the
    attribute is a method bound to ``obj``, else a small wrapper of what the attribute is."""
    bound = getattr(obj, name)
    if type(bound) is types.MethodType and bound.__self__ is obj:
        func: Callable[..., Any] = bound.__func__
        return func
    return lambda _obj, *args: bound(*args)


class Writer:
    """A connection's one flush: everything its outbox holds, handed to the transport in one call.

    The driver makes one per connection and calls ``flush()``; the per-read loop, the handle's
    ``send`` and ``broadcast``'s end-of-turn flush call it too, in C in the compiled build (no
    Python frame per receiver). A flush counts what it writes (``bytes_out``, ``messages_out``)
    and calls ``over_limit()`` when the transport then holds more than ``max_buffer`` bytes
    (None: no limit). After ``detach()`` (the transport is gone) a flush discards what is queued.

    Args:
        outbox: the connection's ``Outbox`` (``Connection.fast_path()``).
        transport: where it goes (``write``, ``writelines``, ``get_write_buffer_size``); None:
            detached from the start.
        max_buffer: bytes the transport may hold after a write before ``over_limit()``.
        over_limit: called when a write leaves more than ``max_buffer`` bytes unsent.
        counters: where writes are counted (``Counters``; None: counted nowhere anyone reads).
    """

    __slots__ = (
        "_buffer_size",
        "_counters",
        "_max_buffer",
        "_out",
        "_over_limit",
        "_transport",
        "_write",
        "_writelines",
    )

    def __init__(
        self,
        outbox: core.Outbox,
        transport: Any,
        max_buffer: int | None,
        over_limit: Callable[[], Any],
        counters: Counters | None = None,
    ) -> None:
        if outbox is None:
            raise TypeError("Writer needs a connection's outbox")
        # Always a Counters, so that a flush never tests for None.
        self._counters = Counters() if counters is None else counters
        self._out = outbox
        self._max_buffer = -1 if max_buffer is None else max_buffer
        self._over_limit = over_limit
        self._transport: Any = None
        self._write: Any = None
        self._writelines: Any = None
        self._buffer_size: Any = None
        if transport is not None:
            self.attach(transport)

    @property
    def attached(self) -> bool:
        """False once ``detach()`` was called (or when made without a transport)."""
        return self._transport is not None

    def attach(self, transport: Any) -> None:
        """Write to ``transport`` from now on.

        The writer keeps the functions of the transport's class (``write``, ``writelines``,
        ``get_write_buffer_size``), called with the transport, rather than its bound methods: a
        broadcast's end-of-turn flush runs over every receiver right after the kernel's writes to
        the others pushed them out of the caches, and each bound method was one more object (one
        more cache miss) per receiver, where the class's function is one for all of them.
        """
        self._write = _method(transport, "write")
        self._writelines = _method(transport, "writelines")
        self._buffer_size = _method(transport, "get_write_buffer_size")
        self._transport = transport

    def detach(self) -> None:
        """The transport is gone: from now on a flush discards what is queued."""
        self._transport = None
        self._write = None
        self._writelines = None
        self._buffer_size = None

    def flush(self) -> None:
        """Write everything queued, in one call; ``over_limit()`` past ``max_buffer``."""
        out = self._out
        if not out.size:
            return
        transport = self._transport
        if transport is None:
            out.take()
            return
        counters = self._counters
        counters.bytes_out += out.size  # before take(), which resets both
        counters.messages_out += out.messages
        one = out.take_one()
        if one is not None:
            self._write(transport, one)
        else:
            self._writelines(transport, out.take())
        if self._max_buffer >= 0 and self._buffer_size(transport) > self._max_buffer:
            self._over_limit()

    def buffered(self) -> int:
        """Bytes not yet handed to the kernel: the transport's buffer and the outbox (0 detached)."""
        transport = self._transport
        if transport is None:
            return 0
        transport_buffer: int = self._buffer_size(transport)
        return transport_buffer + self._out.size


class ReadLoop:
    """The per-read fast path of a connection with a plain (not ``async``) ``on_message``:
    ``feed(data)`` is the transport's ``data_received``.

    A read whose frames are all whole data messages, read without error, is handled here from
    start to end: parse, ``on_message(ws, msg)`` for each, then one ``writer.flush()`` of
    everything sent. Every other read goes back to the driver: ``slow(data)`` when the fast path
    is off (``enabled`` False, the outbox closed, the reader failed), or ``finish(stop)`` with a
    ``ReadStop`` saying what was read and where delivery stopped, when the read held something
    else (a control frame, a fragment, a compressed message, a violation) or a callback raised or
    returned a value. ``keepalive.received`` is set on every read.

    Args:
        reader: the connection's ``FrameReader(messages=True)`` (``Connection.fast_path()``).
        writer: the connection's ``Writer``, over its outbox; reads and messages are counted in
            its counters.
        on_message: the sync callback, called as ``on_message(ws, msg)``.
        ws: the handle passed to it.
        slow: takes a read the loop does not handle.
        finish: takes the ``ReadStop`` of a read the loop started and could not finish.
        keepalive: gets ``received = True`` on every read.
    """

    __slots__ = (
        "_counters",
        "_finish",
        "_keepalive",
        "_on_message",
        "_out",
        "_raised",
        "_reader",
        "_slow",
        "_value",
        "_writer",
        "_ws",
        "enabled",
    )

    def __init__(
        self,
        reader: core.FrameReader,
        writer: Writer,
        on_message: Callable[[Any, Any], Any],
        ws: Any,
        slow: Callable[[Any], Any],
        finish: Callable[[ReadStop], Any],
        keepalive: Any,
    ) -> None:
        if reader is None or not isinstance(writer, Writer):
            raise TypeError("ReadLoop needs a connection's reader and Writer")
        self._writer = writer
        self._counters = self._writer._counters  # through the typed field: C fields
        self._reader = reader
        self._out = self._writer._out
        self._on_message = on_message
        self._ws = ws
        self._slow = slow
        self._finish = finish
        self._keepalive = keepalive
        # How the last run of callbacks stopped: a call raised (``_value`` is the exception) or
        # returned ``_value``; ``_value`` None when it ran to the end. Cleared by ``_stop``.
        self._raised = False
        self._value: Any = None
        # False while an async callback runs (the driver's phase is IN_CALLBACK): every read then
        # waits for it the slow way. Its one setter is ConnectionDriver._set_phase.
        self.enabled = True

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Handle one read (see the class)."""
        out = self._out
        self._keepalive.received = True
        if not self.enabled or not out.open or self._reader.error is not None:
            self._slow(data)  # which counts the read
            return
        counters = self._counters
        counters.bytes_in += len(data)
        error = None
        out.in_read = True
        try:
            try:
                frames = self._reader.feed(data)
            except WebSocketError as exc:
                frames = exc.frames
                error = exc
            pos = self._run(frames, 0)
        finally:
            out.in_read = False
        if pos == len(frames) and self._value is None and error is None:
            del frames[:]  # the reader made this list for this read; nothing in it is kept
            self._writer.flush()  # nothing queued: returns at once
            return
        self._finish(self._stop(frames, pos, error))

    def deliver(self, stop: ReadStop) -> ReadStop:
        """Go on calling ``on_message`` from where ``stop`` left off (once the driver has dealt
        with the exception or the result that stopped it); return where this run stopped.

        Messages after the outbox stopped being ``open`` are skipped: they arrived after our
        close frame (RFC 6455 §1.4).
        """
        frames = stop.frames
        return self._stop(frames, self._run(frames, stop.pos), stop.error)

    def _run(self, frames: list[Any], pos: int) -> int:
        """Call ``on_message(ws, msg)`` for the messages at ``frames[pos:]`` up to the first frame
        tuple; return the position reached. A call that raises an ``Exception`` or returns
        something other than None ends the run early (``_raised`` and ``_value`` say how).
        The messages delivered are counted once, at the end of the run."""
        out = self._out
        on_message = self._on_message
        ws = self._ws
        n = len(frames)
        start = pos
        skipped = 0
        while pos < n:
            msg = frames[pos]
            if type(msg) is tuple:
                break
            pos += 1
            if not out.open:
                skipped += 1
                continue
            try:
                result = on_message(ws, msg)
            except Exception as exc:  # noqa: BLE001 - the driver fails the connection with 1011
                self._raised = True
                self._value = exc
                break
            if result is not None:
                self._value = result
                break
        self._counters.messages_in += pos - start - skipped
        return pos

    def _stop(self, frames: list[Any], pos: int, error: WebSocketError | None) -> ReadStop:
        stop: ReadStop = _TUPLE_NEW(ReadStop, (frames, pos, error, self._raised, self._value))
        self._raised = False
        self._value = None
        return stop


class SendHandle:
    """The sending half of a connection handle (the base of ``zzz.WebSocket``): ``send`` and
    ``send_binary``, safe from any thread.

    On the thread that made it, a message goes into the writer's outbox at once and
    ``writer.flush()`` is called unless a read is being handled (then the read's end writes
    everything once), or the queue passed ``EARLY_FLUSH_SIZE``. From any other thread the call is
    handed to the loop: ``loop.call_soon_threadsafe(text_later, text)`` (or ``binary_later`` with
    a copy of the bytes); once the loop is closed, that does nothing.

    ``broadcast`` skips a handle whose writer is detached (the transport is gone) and, for a
    connection that compresses, asks ``conn`` (its ``Connection``: ``encode_message`` and
    ``broadcast_key``) for the frame.
    """

    __slots__ = (
        "_binary_later",
        "_conn",
        "_dirty",
        "_out",
        "_owner_loop",
        "_owner_thread",
        "_text_later",
        "_writer",
    )

    def __init__(
        self,
        writer: Writer,
        loop: Any,
        text_later: Callable[[str], Any],
        binary_later: Callable[[bytes], Any],
        conn: Any = None,
    ) -> None:
        if not isinstance(writer, Writer):
            raise TypeError(f"SendHandle needs a connection's Writer, not {type(writer).__name__}")
        self._writer = writer
        self._out = self._writer._out  # through the typed field: a C field
        self._owner_loop = loop
        self._owner_thread = _thread_ident()
        self._text_later = text_later
        self._binary_later = binary_later
        self._conn = conn
        # True while this handle waits in its thread's end-of-turn flush (see ``broadcast``).
        self._dirty = False

    def send(self, text: str) -> None:
        """Send a text message.

        Raises:
            TypeError: ``text`` is not a ``str``.
        """
        if not isinstance(text, str):
            raise TypeError(f"send() takes a str, not {type(text).__name__}; use send_binary() for bytes")
        if _thread_ident() == self._owner_thread:
            out = self._out
            out.text(text)
            if not out.in_read or out.size >= _EARLY_FLUSH_SIZE:
                self._writer.flush()
        else:
            self._hand_over(self._text_later, text)

    def send_binary(self, data: bytes | bytearray | memoryview) -> None:
        """Send a binary message.

        Raises:
            TypeError: ``data`` is not bytes, bytearray or memoryview.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"send_binary() takes bytes, bytearray or memoryview, not {type(data).__name__}")
        if _thread_ident() == self._owner_thread:
            out = self._out
            out.binary(data)
            if not out.in_read or out.size >= _EARLY_FLUSH_SIZE:
                self._writer.flush()
        else:
            # Copy now: the caller may reuse its buffer before the loop gets to it.
            self._hand_over(self._binary_later, bytes(data))

    def _hand_over(self, fn: Callable[[Any], Any], arg: Any) -> None:
        try:
            self._owner_loop.call_soon_threadsafe(fn, arg)
        except RuntimeError:
            # The loop is closed, so is the connection: a send after close does nothing.
            if not self._owner_loop.is_closed():
                raise


# Above this, a skip threshold is as good as none (and still fits a C ssize_t).
_SKIP_MAX = 1 << 62
# Per thread, the loop and the handles whose broadcast frames wait for its end-of-turn flush.
_TURNS: dict[int, tuple[Any, list[Any]]] = {}
_log = logging.getLogger("zzz")


def broadcast(
    websockets: Iterable[Any],
    message: str | bytes | bytearray | memoryview,
    *,
    skip_if_buffered_over: int | None = None,
) -> int:
    """Queue one message on many connections; return how many it was queued for.

    The frame is encoded once for every receiver that does not compress, and once per
    ``broadcast_key`` (the negotiated window bits and zlib settings) for receivers that compress
    without context takeover (``DeflateConfig(server_no_context_takeover=True)``); receivers with
    context takeover get an encode each. Receivers whose reads are being handled send it with the
    read's one write; every other receiver's outbox is flushed once at the end of the loop turn
    (one ``loop.call_soon`` per turn for all the broadcasts of the turn), or at once when its
    queue reaches ``EARLY_FLUSH_SIZE``. The flush checks ``max_backpressure`` as every flush does.

    Called from a thread other than the one of a receiver's loop, the broadcast to the receivers
    of that loop is handed to it with ``loop.call_soon_threadsafe`` (after the sends handed over
    before it, before those after it); such receivers are counted when they are open at the time
    of the call, and ``skip_if_buffered_over`` is applied when the loop runs it (their buffers are
    the loop's to read). Once that loop has closed, nothing is sent to them and they are not counted.

    Args:
        websockets: the receivers, ``zzz.WebSocket`` handles (any iterable).
        message: a ``str`` (a text message) or bytes-like (a binary one, copied).
        skip_if_buffered_over: skip (and don't count) a receiver whose unsent bytes (its
            ``buffered_amount``: the transport's buffer and the queue not yet written) are over
            this many; None: never skip.

    Returns:
        The number of receivers the message was queued for: closed and skipped ones are not counted.

    Raises:
        TypeError: ``message`` is not a str or bytes-like, ``skip_if_buffered_over`` not an int
            or None, or a receiver is not a ``zzz.WebSocket`` (the receivers before it got the message).
        ValueError: ``skip_if_buffered_over`` is negative.
    """
    if skip_if_buffered_over is None:
        skip = -1
    elif not isinstance(skip_if_buffered_over, int) or isinstance(skip_if_buffered_over, bool):
        raise TypeError(
            f"skip_if_buffered_over must be an int or None, not {type(skip_if_buffered_over).__name__}"
        )
    elif skip_if_buffered_over < 0:
        raise ValueError(f"skip_if_buffered_over must be >= 0, got {skip_if_buffered_over}")
    else:
        skip = min(skip_if_buffered_over, _SKIP_MAX)
    if isinstance(message, str):
        return _fan_out(websockets, message.encode("utf-8"), 1, skip)
    if isinstance(message, (bytes, bytearray, memoryview)):
        return _fan_out(websockets, bytes(message), 2, skip)
    raise TypeError(f"broadcast() takes a str or bytes-like message, not {type(message).__name__}")


def _fan_out(websockets: Iterable[Any], payload: bytes, opcode: int, skip: int) -> int:
    """The loop of ``broadcast``: ``payload`` with ``opcode`` to every open receiver (``skip`` -1: none)."""
    tid = _thread_ident()
    frame: bytes | None = None
    shared: dict[Any, bytes] | None = None  # broadcast_key -> its compressed frame
    remote: dict[Any, list[Any]] | None = None  # another thread's loop -> its receivers
    turn: list[Any] | None = None  # this thread's handles to flush at the end of the turn
    fresh: Any = None  # the run of this frame's receivers that had nothing queued (Outbox.share)
    count = 0
    for ws in websockets:
        if not isinstance(ws, SendHandle):
            raise TypeError(f"broadcast() sends to zzz.WebSocket handles, not {type(ws).__name__}")
        handle: SendHandle = ws
        out = handle._out
        if not out.open:
            continue
        writer = handle._writer
        if writer._transport is None:  # the connection is gone, whatever its close handshake reached
            continue
        if handle._owner_thread != tid:
            if remote is None:
                remote = {}
            group = remote.get(handle._owner_loop)
            if group is None:
                group = remote[handle._owner_loop] = []
            group.append(handle)
            continue
        if skip >= 0 and writer.buffered() > skip:
            continue
        conn = handle._conn
        if out.encoder is None or conn is None:
            if frame is None:
                frame = _encode_frame(opcode, payload)
            fresh = out.share(frame, fresh)
        else:
            key = conn.broadcast_key
            if key is None:  # context takeover: this connection's own compressor
                out.raw(conn.encode_message(payload, opcode))
            else:
                if shared is None:
                    shared = {}
                compressed = shared.get(key)
                if compressed is None:
                    compressed = shared[key] = conn.encode_message(payload, opcode)
                out.raw(compressed)
        count += 1
        out.messages += 1  # a data message, queued as a raw frame: counted at the flush
        if out.size >= _EARLY_FLUSH_SIZE:
            writer.flush()
        elif not out.in_read and not handle._dirty:
            if turn is None:
                turn = _turn(tid, handle._owner_loop)
            handle._dirty = True
            turn.append(handle)
    if remote is not None:
        for loop, group in remote.items():
            try:
                loop.call_soon_threadsafe(_fan_out, group, payload, opcode, skip)
            except RuntimeError:
                # That loop is closed, so are its connections: nothing is sent to them.
                if not loop.is_closed():
                    raise
                continue
            count += len(group)
    return count


def _turn(tid: int, loop: Any) -> list[Any]:
    """The list of handles this thread's broadcasts flush at the end of the current turn of
    ``loop``, with the flush scheduled (once per turn)."""
    entry = _TURNS.get(tid)
    if entry is not None:
        if entry[0] is loop:
            return entry[1]
        # Left by a loop that stopped before its turn ended (a thread runs one loop at a time).
        _forget(entry[1])
    handles: list[Any] = []
    try:
        loop.call_soon(_flush_turn, tid, handles)
    except RuntimeError:
        if not loop.is_closed():
            raise
        return handles  # a closed loop: its connections are gone, nothing will be written
    _TURNS[tid] = (loop, handles)
    return handles


def _forget(handles: list[Any]) -> None:
    h: SendHandle
    for h in handles:
        h._dirty = False


def _flush_turn(tid: int, handles: list[Any]) -> None:
    """The end of a turn: flush every handle a broadcast queued frames for, once each."""
    entry = _TURNS.get(tid)
    if entry is not None and entry[1] is handles:
        del _TURNS[tid]  # broadcasts from here on belong to the next turn
    _forget(handles)
    h: SendHandle
    for h in handles:
        try:
            h._writer.flush()
        except Exception:  # noqa: BLE001 - a bug; the other connections must still get theirs
            _log.exception("zzz.broadcast: flushing a connection failed")
