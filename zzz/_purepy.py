"""Pure-Python twin of ``zzz._speedups``: masking, UTF-8 validation, frame reading and encoding.

Bytes only: nothing here touches a transport, a loop or a user callback. Same names, same results
and the same errors (messages included) as the compiled extension; ``zzz.core`` picks one of the
two and nothing else imports this module.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zzz.errors import InvalidUtf8, MessageTooBig, PolicyViolation, ProtocolError, WebSocketError

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "Binary",
    "FrameReader",
    "Outbox",
    "Text",
    "Utf8Validator",
    "encode_frame",
    "mask",
    "mask_inplace",
    "validate_utf8",
]

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_KNOWN_OPCODES = frozenset((OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG))
_UNLIMITED = 1 << 64
_pack_short = struct.Struct("!BBH").pack
_pack_long = struct.Struct("!BBQ").pack
_unpack_short = struct.Struct("!H").unpack_from
_unpack_long = struct.Struct("!Q").unpack_from


def _check_key(key: bytes) -> None:
    if len(key) != 4:
        raise ValueError("mask key must be exactly 4 bytes")


def mask(data: bytes | bytearray | memoryview, key: bytes, phase: int = 0) -> bytes:
    """Return ``data`` XORed with the repeating 4-byte ``key``, starting at key byte ``phase``."""
    _check_key(key)
    if not isinstance(data, (bytes, bytearray)):
        # Mask the raw bytes: len() of a buffer with multi-byte items counts items, not bytes.
        data = memoryview(data).cast("B")
    n = len(data)
    if n == 0:
        return b""
    phase &= 3
    key = bytes(key)  # a memoryview key can be neither sliced-and-joined nor repeated
    if phase:
        key = key[phase:] + key[:phase]
    # One big-integer XOR is the fastest whole-buffer operation pure Python has.
    stream = key * ((n >> 2) + 1)
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream[:n], "little")).to_bytes(n, "little")


def mask_inplace(buf: bytearray | memoryview, key: bytes, phase: int = 0) -> None:
    """XOR the writable buffer ``buf`` with ``key`` in place, starting at key byte ``phase``."""
    view = memoryview(buf)
    if view.readonly:
        raise TypeError("mask_inplace needs a writable buffer")
    view = view.cast("B")
    view[:] = mask(view, key, phase)


def _utf8_failure(data: bytes | bytearray | memoryview) -> int:
    """Index of the first byte at which ``data`` stops being a prefix of valid UTF-8, or -1."""
    try:
        bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data":
            return -1
        # An invalid lead byte fails where it stands; a bad continuation fails at ``end``.
        return exc.start if exc.reason == "invalid start byte" else exc.end
    return -1


def validate_utf8(data: bytes | bytearray | memoryview) -> int:
    """Return -1 when ``data`` is complete, valid UTF-8.

    Otherwise return the index of the first invalid byte, or ``len(data)`` when the data is a
    valid prefix cut inside a multi-byte sequence.
    """
    if isinstance(data, (bytes, bytearray)) and data.isascii():
        return -1
    failure = _utf8_failure(data)
    if failure >= 0:
        return failure
    try:
        bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return len(data)
    return -1


class Utf8Validator:
    """Incremental UTF-8 validator: state carries across ``feed`` calls, failure is reported
    at the first byte that can no longer start or continue a valid sequence."""

    __slots__ = ("_failed", "_pending")

    def __init__(self) -> None:
        self._pending = b""
        self._failed = False

    def reset(self) -> None:
        """Forget all state: ready for a new message."""
        self._pending = b""
        self._failed = False

    @property
    def complete(self) -> bool:
        """True when no multi-byte sequence is left open (and nothing failed)."""
        return not self._pending and not self._failed

    def feed(self, data: bytes | bytearray | memoryview) -> int:
        """Validate the next chunk. Return -1 if all is well so far, else the index in ``data``
        of the first invalid byte (0 for every chunk after a failure)."""
        if self._failed:
            return 0
        pending = self._pending
        if not pending and isinstance(data, (bytes, bytearray)) and data.isascii():
            return -1
        chunk = pending + bytes(data)
        try:
            chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.reason == "unexpected end of data":
                self._pending = chunk[exc.start :]
                return -1
            self._failed = True
            where = exc.start if exc.reason == "invalid start byte" else exc.end
            return where - len(pending)
        self._pending = b""
        return -1


class FrameReader:
    """Incremental RFC 6455 frame reader.

    ``feed(data)`` accepts any chunking and returns the frames completed by it, each a tuple
    ``(opcode, fin, rsv1, payload)`` with the payload unmasked. The payload of an unfragmented,
    uncompressed text frame is a ``str``; every other payload is ``bytes``. Every rule of
    RFC 6455 §5 that can be checked on the header is checked before any payload is buffered,
    and the text of uncompressed text messages is validated as its bytes arrive.

    With ``messages=True`` a frame that is a whole uncompressed data message on its own is
    delivered as ``Text(str)`` or ``Binary(bytes)`` instead of a tuple: the form the callbacks
    get, made once.

    On a violation ``feed`` raises a ``WebSocketError`` subclass whose ``frames`` attribute holds
    the frames completed before it; the reader stays failed afterwards (``error`` is that
    violation, None until then).
    """

    def __init__(
        self,
        *,
        require_mask: bool = True,
        allow_rsv1: bool = False,
        max_frame_size: int | None = None,
        max_message_size: int | None = None,
        max_fragments: int | None = None,
        messages: bool = False,
    ) -> None:
        self.require_mask = require_mask
        self.allow_rsv1 = allow_rsv1
        self.messages = messages
        self.max_frame_size = _UNLIMITED if max_frame_size is None else max_frame_size
        self.max_message_size = _UNLIMITED if max_message_size is None else max_message_size
        self.max_fragments = _UNLIMITED if max_fragments is None else max_fragments
        self._buf = bytearray()
        self.error: WebSocketError | None = None
        # The frame whose payload is being read (``_length < 0`` when reading a header).
        self._length = -1
        self._opcode = 0
        self._fin = False
        self._rsv1 = False
        self._key = b""
        self._payload = bytearray()
        # The data message in progress (opcode 0 when none).
        self._msg_opcode = 0
        self._msg_compressed = False
        self._msg_size = 0
        self._msg_frames = 0
        self._utf8 = Utf8Validator()

    def feed(self, data: bytes | bytearray | memoryview) -> list[Any]:
        """Parse ``data``; return the frames it completes."""
        if self.error is not None:
            self.error.frames = []
            raise self.error
        frames: list[Any] = []
        try:
            self._parse(data, frames)
        except WebSocketError as exc:
            exc.frames = frames
            self.error = exc
            raise
        return frames

    def _parse(self, data: bytes | bytearray | memoryview, frames: list) -> None:  # type: ignore[type-arg]
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        while True:
            if self._length < 0:
                header_end = self._read_header(buf, pos, end)
                if header_end < 0:
                    break
                pos = header_end
            want = self._length - len(self._payload)
            if end - pos >= want and not self._payload:
                # Fast path: the whole payload is in the buffer.
                raw = (
                    bytes(buf[pos : pos + want])
                    if self._key == b""
                    else mask(buf[pos : pos + want], self._key)
                )
                pos += want
                self._complete(raw, frames, streamed=False)
                continue
            take = min(want, end - pos)
            if take:
                start = len(self._payload)
                chunk = buf[pos : pos + take]
                if self._key:
                    mask_inplace(chunk, self._key, start)
                self._payload += chunk
                pos += take
                self._check_streamed_text(chunk)
            if len(self._payload) < self._length:
                break
            raw = bytes(self._payload)
            self._payload = bytearray()
            self._complete(raw, frames, streamed=True)
        del buf[:pos]

    def _read_header(self, buf: bytearray, pos: int, end: int) -> int:
        """Parse a header at ``pos``; return where its payload starts, or -1 if incomplete."""
        if end - pos < 2:
            return -1
        b0 = buf[pos]
        b1 = buf[pos + 1]
        fin = bool(b0 & 0x80)
        rsv1 = bool(b0 & 0x40)
        opcode = b0 & 0x0F
        masked = bool(b1 & 0x80)
        length = b1 & 0x7F
        if b0 & 0x30:
            raise ProtocolError("reserved bits set")
        if opcode not in _KNOWN_OPCODES:
            raise ProtocolError(f"invalid opcode {opcode}")
        if opcode >= OP_CLOSE:
            if not fin:
                raise ProtocolError("fragmented control frame")
            if length > 125:
                raise ProtocolError("control frame too long")
            if rsv1:
                raise ProtocolError("reserved bits set")
        elif rsv1:
            if not self.allow_rsv1:
                raise ProtocolError("reserved bits set")
            if opcode == OP_CONT:
                raise ProtocolError("RSV1 set on continuation frame")
        if opcode == OP_CONT:
            if not self._msg_opcode:
                raise ProtocolError("unexpected continuation frame")
        elif opcode < OP_CLOSE and self._msg_opcode:
            raise ProtocolError("expected continuation frame")
        if masked != self.require_mask:
            raise ProtocolError("frame not masked" if self.require_mask else "frame masked by server")
        offset = pos + 2
        if length == 126:
            if end - offset < 2:
                return -1
            (length,) = _unpack_short(buf, offset)
            offset += 2
        elif length == 127:
            if end - offset < 8:
                return -1
            (length,) = _unpack_long(buf, offset)
            if length >> 63:
                raise ProtocolError("invalid frame length")
            offset += 8
        if masked:
            if end - offset < 4:
                return -1
            key = bytes(buf[offset : offset + 4])
            offset += 4
        else:
            key = b""
        if length > self.max_frame_size:
            raise MessageTooBig("frame too big")
        if opcode < OP_CLOSE:
            if self._msg_frames >= self.max_fragments:
                raise PolicyViolation("too many fragments")
            compressed = rsv1 if opcode != OP_CONT else self._msg_compressed
            if not compressed and length > self.max_message_size - self._msg_size:
                raise MessageTooBig("message too big")
            if opcode != OP_CONT:
                self._msg_opcode = opcode
                self._msg_compressed = rsv1
            self._msg_frames += 1
            self._msg_size += length
        self._length = length
        self._opcode = opcode
        self._fin = fin
        self._rsv1 = rsv1
        self._key = key
        return offset

    def _validates_text(self) -> bool:
        return self._msg_opcode == OP_TEXT and not self._msg_compressed and self._opcode < OP_CLOSE

    def _check_streamed_text(self, chunk: bytes | bytearray) -> None:
        if self._validates_text() and self._utf8.feed(chunk) >= 0:
            raise InvalidUtf8("invalid UTF-8")

    def _complete(self, raw: bytes, frames: list, streamed: bool) -> None:  # type: ignore[type-arg]
        opcode = self._opcode
        fin = self._fin
        payload: bytes | str = raw
        if self._validates_text():
            if fin and opcode == OP_TEXT:
                # A whole text message in one frame: decoding it is the validation.
                try:
                    payload = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidUtf8("invalid UTF-8") from None
            else:
                if not streamed and self._utf8.feed(raw) >= 0:
                    raise InvalidUtf8("invalid UTF-8")
                if fin and not self._utf8.complete:
                    raise InvalidUtf8("invalid UTF-8")
        if fin and opcode < OP_CLOSE:
            self._msg_opcode = 0
            self._msg_compressed = False
            self._msg_size = 0
            self._msg_frames = 0
            self._utf8.reset()
        self._length = -1
        if self.messages and fin and not self._rsv1 and (opcode == OP_TEXT or opcode == OP_BINARY):
            frames.append(Text(payload) if opcode == OP_TEXT else Binary(payload))  # type: ignore[arg-type]
        else:
            frames.append((opcode, fin, self._rsv1, payload))


def encode_frame(
    opcode: int,
    payload: bytes | bytearray | memoryview,
    fin: bool = True,
    rsv1: bool = False,
    mask_key: bytes | None = None,
) -> bytes:
    """Return one frame: header plus payload, masked with ``mask_key`` when one is given."""
    if not 0 <= opcode <= 0xF:
        raise ValueError("opcode must be 0..15")
    if not isinstance(payload, (bytes, bytearray)):
        # The header must count bytes, not the items of a multi-byte-item buffer.
        payload = memoryview(payload).cast("B")
    n = len(payload)
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    mask_bit = 0x80 if mask_key is not None else 0
    if n < 126:
        header = bytes((b0, mask_bit | n))
    elif n < 0x10000:
        header = _pack_short(b0, mask_bit | 126, n)
    else:
        header = _pack_long(b0, mask_bit | 127, n)
    if mask_key is None:
        return header + bytes(payload)
    _check_key(mask_key)
    return header + mask_key + mask(payload, mask_key)


@dataclass(frozen=True, slots=True)
class Text:
    """A text message; ``data`` is the decoded ``str``."""

    data: str


@dataclass(frozen=True, slots=True)
class Binary:
    """A binary message; ``data`` is ``bytes``."""

    data: bytes


# Sending

# Payloads from this size on are queued as their own buffer, not copied behind their header.
_SPLIT_FRAME_SIZE = 64 * 1024


class Outbox:
    """The frames one connection has queued for the network, in order.

    ``text`` and ``binary`` queue data messages and do nothing unless ``open``; ``raw`` queues a
    frame that is already encoded (control frames, broadcasts) whatever the state. Without an
    ``encoder`` the frames are a server's: unmasked and uncompressed, built here; with one,
    ``encoder(payload: bytes, opcode)`` returns each data frame (masking, compression).
    ``take`` hands everything over as a list of immutable buffers for one vectored write.
    ``size`` counts the bytes queued (read it, never set it), ``messages`` the data messages among
    them (``raw`` frames count when their caller adds them). No view of a buffer that is reused
    is ever handed out: ``take`` gives bytes objects the outbox no longer touches.
    """

    __slots__ = ("_buffers", "encoder", "in_read", "messages", "open", "size")

    def __init__(self, encoder: Callable[[bytes, int], bytes] | None = None) -> None:
        # Mirrors the owning Connection's state (True exactly while it is OPEN); its one setter
        # is Connection._set_state.
        self.open = True
        self.in_read = False  # set while a read is handled: the owner flushes once at its end
        self.encoder = encoder
        self.size = 0
        self.messages = 0
        self._buffers: list[bytes] = []

    @property
    def pending(self) -> bool:
        """True when something is queued."""
        return self.size > 0

    def text(self, text: str) -> None:
        """Queue a text message."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        if self.open:
            payload = text.encode()
            if self.encoder is None and len(payload) < _SPLIT_FRAME_SIZE:  # the common case, inline
                frame = encode_frame(OP_TEXT, payload)
                self._buffers.append(frame)
                self.size += len(frame)
            else:
                self._data(OP_TEXT, payload)
            self.messages += 1

    def binary(self, data: bytes | bytearray | memoryview) -> None:
        """Queue a binary message; a mutable buffer is copied, since its owner may reuse it."""
        if self.open:
            if self.encoder is None and type(data) is bytes and len(data) < _SPLIT_FRAME_SIZE:
                frame = encode_frame(OP_BINARY, data)
                self._buffers.append(frame)
                self.size += len(frame)
            else:
                self._data(OP_BINARY, data)
            self.messages += 1

    def _data(self, opcode: int, payload: bytes | bytearray | memoryview) -> None:
        if self.encoder is not None:
            self.raw(self.encoder(payload, opcode))  # type: ignore[arg-type]
            return
        if not isinstance(payload, (bytes, bytearray)):
            payload = memoryview(payload).cast("B")
        n = len(payload)
        if n < _SPLIT_FRAME_SIZE:
            self.raw(encode_frame(opcode, payload))
            return
        self.raw(_pack_long(0x80 | opcode, 127, n))
        self.raw(payload if type(payload) is bytes else bytes(payload))

    def raw(self, frame: bytes) -> None:
        """Queue bytes that are already one or more whole frames."""
        if frame:
            self._buffers.append(frame)
            self.size += len(frame)

    def share(self, frame: bytes, fresh: Any) -> Any:
        """Queue a broadcast's frame as ``raw`` does; returns ``fresh``. (The extension's outbox
        shares the frames of a turn's broadcasts between their receivers; this one never copies a
        frame, so it has nothing to share.)"""
        self.raw(frame)
        return fresh

    def take(self) -> list[bytes]:
        """Everything queued, in order; the outbox is empty afterwards."""
        buffers = self._buffers
        self._buffers = []
        self.size = 0
        self.messages = 0
        return buffers

    def take_one(self) -> bytes | None:
        """What is queued when it is one buffer (the outbox is then empty, as after ``take``);
        otherwise None, and nothing is taken. A flush's usual case, without a list."""
        if len(self._buffers) != 1:
            return None
        self.size = 0
        self.messages = 0
        return self._buffers.pop()
