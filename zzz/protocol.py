"""The sans-I/O WebSocket connection: bytes in, events out; messages in, bytes out.

It owns reassembly, bounded inflation, control frames and the close handshake, and maps every
violation to its close code in one place (``_fail``). It never touches a socket or a loop, and
never calls user code: callbacks belong to the drivers (layer 4).

A driver reads through ``receive_data`` and ``next_event``; the per-read loop of the server
(``zzz.readloop.ReadLoop``) instead parses with the reader and queues into the outbox that
``fast_path()`` gives, and hands back what it could not finish with ``resume(ReadStop)``.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from typing import Any, NamedTuple

from zzz import core
from zzz.deflate import PerMessageDeflate, compressed_size_bound
from zzz.errors import InvalidUtf8, MessageTooBig, WebSocketError
from zzz.frames import Binary, CloseCode, Text, encode_close, parse_close
from zzz.settings import WsLimits

__all__ = [
    "CloseReceived",
    "Connection",
    "ConnectionFailed",
    "Event",
    "Ping",
    "Pong",
    "ReadStop",
    "State",
]

OP_CONT = core.OP_CONT
OP_TEXT = core.OP_TEXT
OP_BINARY = core.OP_BINARY
OP_CLOSE = core.OP_CLOSE
OP_PING = core.OP_PING
OP_PONG = core.OP_PONG
_encode_frame = core.encode_frame


class State(enum.IntEnum):
    """Where the connection is in its life (RFC 6455 §4 and §7)."""

    OPEN = 1
    CLOSING = 2  # we sent a close frame and wait for the peer's
    CLOSED = 3  # the close handshake is over, or the connection failed


@dataclass(frozen=True, slots=True)
class Ping:
    """The peer pinged us (already answered with a pong)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    """The peer answered a ping."""

    data: bytes


@dataclass(frozen=True, slots=True)
class CloseReceived:
    """The peer's close frame: ``code`` is 1005 when it carried none. If we had not sent a close
    frame yet, the echo is already queued; either way the handshake is complete."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionFailed:
    """The peer broke the protocol: a close frame with ``code`` is queued and the transport should
    be closed once it is flushed."""

    code: int
    reason: str


Event = Text | Binary | Ping | Pong | CloseReceived | ConnectionFailed


class ReadStop(NamedTuple):
    """Where a driver's fast path (``zzz.readloop.ReadLoop``) stopped in one read. Made only on
    the slow path (a read that was not all whole messages, or a callback that raised or returned
    something), so the common read costs nothing.

    Attributes:
        frames: everything the connection's reader returned for the read: ``Text``/``Binary``
            messages and ``(opcode, fin, rsv1, payload)`` frame tuples.
        pos: how many of them were delivered already.
        error: the reader's violation, found after ``frames``, or None.
        raised: the callback for ``frames[pos - 1]`` raised ``value``.
        value: that exception, or what the callback returned; None when delivery stopped at a
            frame tuple or at the end.
    """

    frames: list[Any]
    pos: int
    error: WebSocketError | None
    raised: bool
    value: Any


_NO_LIMITS = WsLimits(max_message_size=None, max_frame_size=None, max_fragments=None)

# Module-level aliases: looking up an Enum member through its class is slow on the hot path.
_OPEN = State.OPEN
_CLOSING = State.CLOSING
_CLOSED = State.CLOSED


class Connection:
    """One WebSocket connection's protocol state, server or client side.

    Receiving: ``receive_data(bytes)``, then ``next_event()`` until it returns None (or
    ``events_received()``). Sending: ``send_text``, ``send_binary``, ``send_raw``, ``send_ping``,
    ``send_close``, then ``data_to_send()``. The fast-path port: ``fast_path()`` and ``resume``.

    Args:
        is_server: server side expects masked frames and sends unmasked ones; the client the reverse.
        deflate: a ``zzz.deflate.PerMessageDeflate`` when permessage-deflate was negotiated.
        limits: what the peer may send (``zzz.settings.WsLimits``; None: no limit at all).
            ``max_message_size`` applies after reassembly and decompression; ``max_frame_size``
            None means ``max_message_size``, raised to ``deflate.compressed_size_bound`` of it when
            compressing; ``max_fragments`` counts the frames of one message.
    """

    __slots__ = (
        "_deflate",
        "_error",
        "_frames",
        "_held_pong",
        "_hold_pongs",
        "_max_message_size",
        "_msg_compressed",
        "_msg_opcode",
        "_msg_size",
        "_out",
        "_parts",
        "_pos",
        "_reader",
        "_utf8",
        "close_rcvd",
        "close_sent",
        "is_server",
        "state",
    )

    def __init__(
        self,
        *,
        is_server: bool = True,
        deflate: PerMessageDeflate | None = None,
        limits: WsLimits | None = None,
    ) -> None:
        if limits is None:
            limits = _NO_LIMITS
        max_message_size = limits.max_message_size
        max_frame_size = limits.max_frame_size
        self.is_server = is_server
        self.state = State.OPEN
        self.close_sent: tuple[int, str] | None = None
        self.close_rcvd: tuple[int, str] | None = None
        self._deflate = deflate
        if max_frame_size is None and max_message_size is not None:
            max_frame_size = max_message_size
            if deflate is not None:
                # A compressed frame of incompressible data is longer than the message it carries,
                # by up to 12.5 % depending on the peer's compressor settings (not ours): allow
                # zlib's worst case for any settings, so that every message within the limit gets
                # through. The exact limit applies to what a compressed frame inflates to, and to
                # uncompressed frames as they are.
                max_frame_size = compressed_size_bound(max_message_size)
        self._reader = core.FrameReader(
            require_mask=is_server,
            allow_rsv1=deflate is not None,
            max_frame_size=max_frame_size,
            max_message_size=max_message_size,
            max_fragments=limits.max_fragments,
            messages=True,
        )
        # What the reader delivered: whole messages as Text/Binary, other frames as tuples.
        self._frames: list[Any] = []
        self._pos = 0
        self._error: WebSocketError | None = None
        # A server without compression has its frames built by the outbox itself.
        self._out = core.Outbox(None if is_server and deflate is None else self.encode_message)
        self._max_message_size = max_message_size
        self._parts: list[bytes | bytearray] = []
        self._msg_opcode = 0
        self._msg_compressed = False
        self._msg_size = 0
        self._utf8: Any = None
        # While the transport can take no more (hold_pongs), only the latest ping is answered.
        self._hold_pongs = False
        self._held_pong: bytes | None = None

    # Receiving

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Take bytes from the network; call ``next_event`` to get what they mean."""
        if self.state is _CLOSED or self._error is not None:
            return
        try:
            frames = self._reader.feed(data)
        except WebSocketError as exc:
            frames = exc.frames
            self._error = exc
        if self._pos >= len(self._frames):
            self._frames = frames
            self._pos = 0
        else:
            self._frames.extend(frames)

    @property
    def pending_frame_count(self) -> int:
        """Frames received and not yet turned into events."""
        return len(self._frames) - self._pos

    def next_event(self) -> Event | None:
        """Process received frames up to the next event; None when there is none yet.

        Decompression happens here, one message at a time, so a caller that stops pulling events
        (a slow consumer) stops the work and the memory of inflating further messages.
        """
        frames = self._frames
        while self._pos < len(frames):
            item = frames[self._pos]
            self._pos += 1
            if type(item) is not tuple:  # a whole uncompressed message, the common case
                if self.state is _OPEN:
                    return item  # type: ignore[no-any-return]
                continue  # after our close frame, data is discarded (RFC 6455 §1.4)
            if self.state is _CLOSED:
                break
            opcode, fin, rsv1, payload = item
            try:
                event = self._handle_frame(opcode, fin, rsv1, payload)
            except WebSocketError as exc:
                return self._fail(exc)
            if event is not None:
                return event
        if self._pos >= len(frames) and self._frames:
            self._frames = []
            self._pos = 0
        if self._error is not None and self.state is not _CLOSED:
            return self._fail(self._error)
        return None

    # The fast-path port

    def fast_path(self) -> tuple[core.FrameReader, core.Outbox]:
        """The connection's ``(reader, outbox)``, for a driver that reads and sends without a call
        into this class per message (``zzz.readloop``); with ``resume``, its one way in.

        ``reader`` is the ``core.FrameReader(messages=True)`` this connection reads with. A driver
        may feed it reads itself, instead of ``receive_data``, and deliver the whole messages
        (``Text``/``Binary``) at the front of what it returns, as long as the rest, and the
        reader's violation if one was raised, come back through ``resume`` before anything else
        is read or ``next_event`` is called. Feed it only while nothing is pending here (after
        ``next_event`` returned None) and while ``outbox.open`` is True.

        ``outbox`` is the ``core.Outbox`` that queues this connection's frames: a driver takes
        its buffers (``take()``) to write them, sets ``in_read`` while it handles a read, and may
        queue data messages (``text``, ``binary``, which do nothing unless ``open``). ``open`` is
        kept equal to ``state is State.OPEN`` by this class alone (see ``_set_state``).
        """
        return self._reader, self._out

    def resume(self, stop: ReadStop) -> None:
        """Take back what the fast path read and did not deliver: ``stop.frames[stop.pos:]`` come
        before anything received later, and ``stop.error`` (the reader's violation) fails the
        connection once they are processed. ``next_event`` goes on from there. ``stop.raised``
        and ``stop.value`` are the driver's business and are ignored here. After the close,
        nothing of it is processed (``next_event`` drops data and stops at the first frame)."""
        if self._pos >= len(self._frames):  # nothing pending: the common case
            self._frames = stop.frames
            self._pos = stop.pos
        else:
            self._frames.extend(stop.frames[stop.pos :])
        error = stop.error
        if error is not None and self._error is None:
            self._error = error

    def events_received(self) -> list[Event]:
        """Every event the received bytes complete (convenience for clients and tests)."""
        events: list[Event] = []
        while True:
            event = self.next_event()
            if event is None:
                return events
            events.append(event)

    def _handle_frame(self, opcode: int, fin: bool, rsv1: bool, payload: bytes | str) -> Event | None:
        if opcode < OP_CLOSE:
            if self.state is not _OPEN:
                return None  # after our close frame, data is discarded (RFC 6455 §1.4)
            return self._handle_fragment(opcode, fin, rsv1, payload)  # type: ignore[arg-type]
        if opcode == OP_PING:
            if self.state is _OPEN:
                if self._hold_pongs:
                    self._held_pong = payload  # type: ignore[assignment]
                else:
                    self._out.raw(self._frame(OP_PONG, payload))  # type: ignore[arg-type]
            return Ping(payload)  # type: ignore[arg-type]
        if opcode == OP_PONG:
            return Pong(payload)  # type: ignore[arg-type]
        code, reason = parse_close(payload)  # type: ignore[arg-type]
        self.close_rcvd = (code, reason)
        if self.state is _OPEN:
            # Echo the peer's code, as most peers and Autobahn expect.
            echo = payload if code != CloseCode.NO_STATUS_RCVD else b""
            self._out.raw(self._frame(OP_CLOSE, echo))  # type: ignore[arg-type]
            self.close_sent = (code, "")
        self._set_state(_CLOSED)
        self._frames = []
        self._pos = 0
        return CloseReceived(code, reason)

    def _handle_fragment(
        self, opcode: int, fin: bool, rsv1: bool, payload: bytes | bytearray
    ) -> Event | None:
        if opcode:  # first frame of a message
            self._msg_opcode = opcode
            self._msg_compressed = rsv1
            self._msg_size = 0
            if rsv1 and opcode == OP_TEXT:
                if self._utf8 is None:
                    self._utf8 = core.Utf8Validator()
                else:
                    self._utf8.reset()
        if self._msg_compressed:
            deflate = self._deflate
            assert deflate is not None  # the reader refuses RSV1 unless deflate was negotiated
            limit = self._max_message_size
            budget = None if limit is None else limit - self._msg_size
            payload = deflate.decompress_frame(payload, fin, budget)
            if self._msg_opcode == OP_TEXT and self._utf8.feed(payload) >= 0:
                raise InvalidUtf8("invalid UTF-8")
        self._msg_size += len(payload)
        if self._max_message_size is not None and self._msg_size > self._max_message_size:
            raise MessageTooBig("message too big")
        self._parts.append(payload)
        if not fin:
            return None
        parts = self._parts
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._parts = []
        msg_opcode = self._msg_opcode
        self._msg_opcode = 0
        if msg_opcode == OP_BINARY:
            return Binary(bytes(data))
        if self._msg_compressed and not self._utf8.complete:
            raise InvalidUtf8("invalid UTF-8")
        try:
            return Text(data.decode("utf-8"))  # bytes or bytearray: decode without a copy
        except UnicodeDecodeError:
            raise InvalidUtf8("invalid UTF-8") from None

    def _fail(self, exc: WebSocketError) -> ConnectionFailed:
        code = exc.close_code
        reason = exc.reason[:123]
        if self.state is _OPEN:
            self._out.raw(self._frame(OP_CLOSE, encode_close(code, reason)))
            self.close_sent = (code, reason)
        self._set_state(_CLOSED)
        self._frames = []
        self._pos = 0
        self._error = exc
        return ConnectionFailed(code, reason)

    # Sending

    def _frame(self, opcode: int, payload: bytes | bytearray | memoryview, rsv1: bool = False) -> bytes:
        if self.is_server:
            return _encode_frame(opcode, payload, True, rsv1)
        return _encode_frame(opcode, payload, True, rsv1, os.urandom(4))

    def encode_message(self, data: bytes | bytearray | memoryview, opcode: int) -> bytes:
        """Return the wire bytes of one data message (compressed when negotiated and worth it)."""
        deflate = self._deflate
        if deflate is not None and deflate.should_compress(len(data)):
            return self._frame(opcode, deflate.compress(data), True)
        return self._frame(opcode, data)

    def send_text(self, text: str) -> None:
        """Queue a text message; ignored unless the connection is open."""
        self._out.text(text)

    def send_binary(self, data: bytes | bytearray | memoryview) -> None:
        """Queue a binary message; ignored unless the connection is open. A mutable buffer is
        copied (the caller may reuse it); a big ``bytes`` payload is queued without a copy."""
        self._out.binary(data)

    @property
    def broadcast_key(self) -> tuple[int, int, int, int] | None:
        """What this server connection's compressed messages depend on, when they depend on
        nothing else (``server_no_context_takeover`` agreed): connections with equal keys send the
        same frame for the same message, so a broadcast encodes it once per key. None otherwise
        (no compression, context takeover, or a client, whose frames are masked)."""
        deflate = self._deflate
        return deflate.shared_key if deflate is not None and self.is_server else None

    def send_raw(self, frame: bytes) -> None:
        """Queue bytes that are already one complete data frame (broadcasts encode once)."""
        if self.state is _OPEN:
            self._out.raw(frame)
            self._out.messages += 1

    def hold_pongs(self, hold: bool) -> None:
        """Answer pings as they come (``hold`` False, the default), or keep one pong back, for the
        most recent ping, and queue it when ``hold`` turns False again.

        For a transport whose write buffer is full: a peer that floods pings and reads nothing
        can't make us queue pongs without end, and we need not stop reading (which could deadlock
        with a peer that waits for us to read before it reads). RFC 6455 §5.5.3 allows answering
        only the most recent of several pings. Nothing is queued once the connection is closing.
        """
        self._hold_pongs = hold
        if not hold and self._held_pong is not None:
            payload, self._held_pong = self._held_pong, None
            if self.state is _OPEN:
                self._out.raw(self._frame(OP_PONG, payload))

    def send_ping(self, data: bytes = b"") -> None:
        """Queue a ping (payload ≤ 125 bytes)."""
        if len(data) > 125:
            raise ValueError("ping payload is over 125 bytes")
        if self.state is _OPEN:
            self._out.raw(self._frame(OP_PING, data))

    def send_close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the close handshake; ignored unless open.

        Raises:
            ValueError: the code may not be sent or the reason is too long.
        """
        payload = encode_close(code, reason)
        if self.state is _OPEN:
            self._out.raw(self._frame(OP_CLOSE, payload))
            self.close_sent = (code, reason)
            self._set_state(_CLOSING)

    def abandon(self) -> None:
        """The transport is gone: the connection is closed, whatever the handshake reached."""
        self._set_state(_CLOSED)

    def _set_state(self, state: State) -> None:
        """The one setter of ``state``; it keeps the outbox's mirror of it true.

        Invariant: ``outbox.open is (state is State.OPEN)``. The outbox drops data messages
        unless open, and the per-read loop (which reads only the outbox) stops delivering
        messages once it is not: after our close frame, data is discarded (RFC 6455 §1.4), and
        after a failure nothing is delivered at all.
        """
        self.state = state
        self._out.open = state is _OPEN

    def data_to_send(self) -> bytes:
        """Everything queued for the network since the last call, as one buffer."""
        out = self._out.take()
        if not out:
            return b""
        return out[0] if len(out) == 1 else b"".join(out)

    @property
    def pending_output(self) -> bool:
        """True when ``data_to_send`` has something."""
        return self._out.pending
