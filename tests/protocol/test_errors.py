"""``zzz.errors``: each failure carries its close code as a ``CloseCode`` member, and the
``CloseCode`` of ``zzz.frames`` and ``zzz`` is the one defined there."""

from __future__ import annotations

import pytest

import zzz
import zzz.frames
from zzz.errors import (
    CloseCode,
    InvalidPayload,
    InvalidUtf8,
    MessageTooBig,
    PolicyViolation,
    ProtocolError,
    WebSocketError,
)
from zzz.protocol import Connection, ConnectionFailed


def test_close_code_lives_in_errors_and_is_re_exported() -> None:
    assert zzz.frames.CloseCode is CloseCode and zzz.CloseCode is CloseCode
    assert CloseCode.__module__ == "zzz.errors"


@pytest.mark.parametrize(
    "cls, code",
    [
        (WebSocketError, CloseCode.PROTOCOL_ERROR),
        (ProtocolError, CloseCode.PROTOCOL_ERROR),
        (InvalidPayload, CloseCode.INVALID_FRAME_PAYLOAD_DATA),
        (InvalidUtf8, CloseCode.INVALID_FRAME_PAYLOAD_DATA),
        (PolicyViolation, CloseCode.POLICY_VIOLATION),
        (MessageTooBig, CloseCode.MESSAGE_TOO_BIG),
    ],
)
def test_each_failure_carries_its_code_by_name(cls: type[WebSocketError], code: CloseCode) -> None:
    assert type(cls.close_code) is CloseCode and cls.close_code is code


def test_a_failed_connection_reports_the_member() -> None:
    conn = Connection()
    conn.receive_data(zzz.frames.core.encode_frame(1, b"\xff", True, False, b"abcd"))
    (event,) = conn.events_received()
    assert event == ConnectionFailed(1007, "invalid UTF-8")
    assert event.code is CloseCode.INVALID_FRAME_PAYLOAD_DATA


def test_only_sendable_codes_go_on_the_wire() -> None:
    sendable = [c for c in range(999, 5001) if zzz.frames.is_valid_close_code(c)]
    assert sendable == [1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)]
    for reserved in (1004, 1005, 1006, 1015):
        with pytest.raises(ValueError, match=f"close code {reserved} is reserved"):
            zzz.frames.encode_close(reserved)
