"""Exceptions that carry the WebSocket close code a failure maps to.

Shared by the compiled core, its pure-Python twin and the protocol layer, so both cores raise
the very same classes.
"""

from __future__ import annotations

__all__ = [
    "WebSocketError",
    "ProtocolError",
    "InvalidPayload",
    "InvalidUtf8",
    "MessageTooBig",
    "PolicyViolation",
    "ConnectionClosed",
]


class WebSocketError(Exception):
    """A peer broke the protocol; ``close_code`` is what we answer with."""

    close_code: int = 1002

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

    close_code = 1002


class InvalidPayload(WebSocketError):
    """Payload inconsistent with its message type (e.g. a corrupt deflate stream): close code 1007."""

    close_code = 1007


class InvalidUtf8(InvalidPayload):
    """Text payload or close reason is not valid UTF-8: close code 1007."""


class PolicyViolation(WebSocketError):
    """A documented server policy was broken (e.g. too many fragments): close code 1008."""

    close_code = 1008


class MessageTooBig(WebSocketError):
    """A frame or message is over its size limit: close code 1009."""

    close_code = 1009


class ConnectionClosed(Exception):
    """Raised by client-side receive calls once the connection is closed."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed: code={code} reason={reason!r}")
        self.code = code
        self.reason = reason
