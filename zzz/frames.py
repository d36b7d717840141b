"""RFC 6455 vocabulary: opcodes, close codes, the two message kinds, and close-frame payloads.

Pure data and small checks; no I/O, no state. ``CloseCode`` is defined in ``zzz.errors`` (the
exceptions carry its members) and re-exported here.
"""

from __future__ import annotations

import enum
import struct

from zzz import core
from zzz.errors import CloseCode, InvalidUtf8, ProtocolError

__all__ = [
    "Binary",
    "CloseCode",
    "Opcode",
    "Text",
    "WsMessage",
    "encode_close",
    "is_valid_close_code",
    "parse_close",
]


class Opcode(enum.IntEnum):
    """Frame opcodes (RFC 6455 §5.2)."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


# The message classes come from the core: extension types when it is compiled (they are made once
# per received message and matched by user code), frozen dataclasses in the pure-Python twin.
Text = core.Text
Binary = core.Binary

WsMessage = Text | Binary

# 1004-1006 and 1015 (TLS handshake failure, not in the enum: nothing here could report it) only
# report what happened and must never be sent (RFC 6455 §7.4.1).
_RESERVED_CODES = frozenset((CloseCode.RESERVED, CloseCode.NO_STATUS_RCVD, CloseCode.ABNORMAL_CLOSURE, 1015))
# Codes a peer may put on the wire: the registry's others (1000-1003, 1007-1014); 3000-4999 are
# for libraries and applications.
_WIRE_CODES = frozenset(int(code) for code in CloseCode if code not in _RESERVED_CODES)
_pack_code = struct.Struct("!H").pack


def is_valid_close_code(code: int) -> bool:
    """True when ``code`` may appear in a close frame."""
    return code in _WIRE_CODES or 3000 <= code <= 4999


def parse_close(payload: bytes) -> tuple[int, str]:
    """Decode a close frame's payload into ``(code, reason)``; 1005 when it carries no code.

    Raises:
        ProtocolError: a 1-byte payload or a code that may not be sent.
        InvalidUtf8: the reason is not valid UTF-8.
    """
    if not payload:
        return CloseCode.NO_STATUS_RCVD, ""
    if len(payload) == 1:
        raise ProtocolError("close frame too short")
    code = int.from_bytes(payload[:2], "big")
    if not is_valid_close_code(code):
        raise ProtocolError(f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidUtf8("invalid UTF-8 in close reason") from None
    return code, reason


def encode_close(code: int, reason: str = "") -> bytes:
    """Encode a close payload: the code, then the reason in UTF-8.

    1005 (no code), 1006 (connection dropped) and 1015 (TLS failure) only report what happened
    and must not be sent (RFC 6455 §7.4.1), so they are refused like any other unsendable code;
    only echoing a peer's close frame that had no code sends an empty payload, and that is the
    protocol's doing, not a caller's.

    Raises:
        ValueError: the code may not be sent or the reason is over 123 bytes of UTF-8.
    """
    if not is_valid_close_code(code):
        if code in _RESERVED_CODES:
            raise ValueError(f"close code {code} is reserved and may not be sent (RFC 6455 §7.4.1)")
        raise ValueError(f"invalid close code {code}")
    data = reason.encode("utf-8")
    if len(data) > 123:
        raise ValueError("close reason is over 123 bytes of UTF-8")
    return _pack_code(code) + data
