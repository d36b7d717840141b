"""Exceptions that carry the answer a failure maps to: a WebSocket close code (``CloseCode``), or
an HTTP status (``HttpRefusal``).

Shared by the compiled core, its pure-Python twin and the protocol layer, so both cores raise
the very same classes. ``CloseCode`` lives here, at the bottom of the house, so that every layer
names codes by their RFC names (``zzz.frames`` re-exports it).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from zzz._grammar import reason_phrase

__all__ = [
    "CloseCode",
    "ConnectionClosed",
    "HttpRefusal",
    "InvalidPayload",
    "InvalidUtf8",
    "MessageTooBig",
    "PolicyViolation",
    "ProtocolError",
    "WebSocketError",
]


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


class WebSocketError(Exception):
    """A peer broke the protocol; ``close_code`` is what we answer with."""

    close_code: int = CloseCode.PROTOCOL_ERROR

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        # Frames that were complete before the failure, in order (set by FrameReader.feed).
        self.frames: list[tuple[int, bool, bool, bytes | str]] = []

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.args == other.args

    def __hash__(self) -> int:
        return hash((type(self), self.args))


class ProtocolError(WebSocketError):
    """RFC 6455 violation: close code 1002."""

    close_code = CloseCode.PROTOCOL_ERROR


class InvalidPayload(WebSocketError):
    """Payload inconsistent with its message type (e.g. a corrupt deflate stream): close code 1007."""

    close_code = CloseCode.INVALID_FRAME_PAYLOAD_DATA


class InvalidUtf8(InvalidPayload):
    """Text payload or close reason is not valid UTF-8: close code 1007."""


class PolicyViolation(WebSocketError):
    """A documented server policy was broken (e.g. too many fragments): close code 1008."""

    close_code = CloseCode.POLICY_VIOLATION


class MessageTooBig(WebSocketError):
    """A frame or message is over its size limit: close code 1009."""

    close_code = CloseCode.MESSAGE_TOO_BIG


class ConnectionClosed(Exception):
    """Raised by client-side receive calls once the connection is closed."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed: code={code} reason={reason!r}")
        self.code = code
        self.reason = reason


class HttpRefusal(Exception):
    """A request zzz (or the application) answers with an error status instead of serving it.

    The base of ``zzz.http.HttpError`` (parser, router, handlers) and
    ``zzz.handshake.HandshakeError`` (the opening handshake), so the server renders both the
    same way (``zzz.http.error_response``). ``message`` must never hold request bytes: it is
    sent as the response body.

    Attributes:
        status: the HTTP status code.
        message: text for the response body (defaults to the reason phrase).
        headers: extra response headers the status calls for, e.g. ``[("Allow", "GET")]``.
    """

    def __init__(self, status: int, message: str = "", headers: Iterable[tuple[str, str]] = ()) -> None:
        self.status = int(status)
        self.message = message or reason_phrase(self.status)
        self.headers: list[tuple[str, str]] = list(headers)
        super().__init__(self.status, self.message)

    def __str__(self) -> str:
        return f"{self.status} {self.message}"
