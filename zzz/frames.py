"""RFC 6455 vocabulary: opcodes, close codes, the two message kinds, and close-frame payloads.

Pure data and small checks; no I/O, no state.
"""

from __future__ import annotations

import enum
import struct
from typing import Union

from zzz import core
from zzz.errors import InvalidUtf8, ProtocolError

__all__ = [
    "Opcode",
    "CloseCode",
    "Text",
    "Binary",
    "WsMessage",
    "is_valid_close_code",
    "parse_close",
    "encode_close",
]


class Opcode(enum.IntEnum):
    """Frame opcodes (RFC 6455 §5.2)."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(enum.IntEnum):
    """Close status codes (RFC 6455 §7.4.1 and the IANA registry up to 1014)."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    RESERVED = 1004
    NO_STATUS_RCVD = 1005
    ABNORMAL_CLOSURE = 1006
    INVALID_FRAME_PAYLOAD_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014


# The message classes come from the core: extension types when it is compiled (they are made once
# per received message and matched by user code), frozen dataclasses in the pure-Python twin.
Text = core.Text
Binary = core.Binary

WsMessage = Union[Text, Binary]

# Codes a peer may put on the wire: 1000-1003 and 1007-1014 are assigned, 3000-4999 are for
# libraries and applications; 1004-1006 and 1015 must never be sent.
_WIRE_CODES = frozenset((1000, 1001, 1002, 1003, *range(1007, 1015)))
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


_RESERVED_CODES = frozenset((1004, 1005, 1006, 1015))


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
