"""The sans-I/O connection: reassembly, control frames, close handshake and error mapping."""

from __future__ import annotations

import pytest

from zzz import core
from zzz.errors import MessageTooBig, WebSocketError
from zzz.frames import Binary, Text, encode_close
from zzz.protocol import CloseReceived, Connection, ConnectionFailed, Ping, Pong, ReadStop, State
from zzz.settings import WsLimits

KEY = b"\x01\x02\x03\x04"


def frame(opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False) -> bytes:
    return core.encode_frame(opcode, payload, fin, rsv1, KEY)


def server_frames(data: bytes) -> list[tuple[int, bool, bool, bytes | str]]:
    return core.FrameReader(require_mask=False).feed(data)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return code.to_bytes(2, "big") + reason


def test_text_and_binary_messages() -> None:
    conn = Connection()
    conn.receive_data(frame(1, "héllo".encode()) + frame(2, b"\x00\xff"))
    assert conn.events_received() == [Text("héllo"), Binary(b"\x00\xff")]


def test_fragmented_text_with_interleaved_ping_is_reassembled_and_ping_answered() -> None:
    conn = Connection()
    data = (
        frame(1, "héllo ".encode()[:2], fin=False)
        + frame(9, b"p")
        + frame(0, "héllo ".encode()[2:], fin=False)
    )
    data += frame(0, b"world")
    conn.receive_data(data)
    events = conn.events_received()
    assert events == [Ping(b"p"), Text("héllo world")]
    assert server_frames(conn.data_to_send()) == [(10, True, False, b"p")]


def test_invalid_utf8_split_across_fragments_fails_with_1007_before_the_message_ends() -> None:
    conn = Connection()
    conn.receive_data(frame(1, b"ok", fin=False) + frame(0, b"\xce", fin=False))
    assert conn.events_received() == []
    conn.receive_data(frame(0, b"\xff", fin=False))
    assert conn.events_received() == [ConnectionFailed(1007, "invalid UTF-8")]
    assert conn.state is State.CLOSED
    (sent,) = server_frames(conn.data_to_send())
    assert sent[0] == 8 and int.from_bytes(sent[3][:2], "big") == 1007


@pytest.mark.parametrize(
    "code",
    [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000],
)
def test_invalid_close_codes_fail_with_1002(code: int) -> None:
    conn = Connection()
    conn.receive_data(frame(8, close_payload(code)))
    assert conn.events_received() == [ConnectionFailed(1002, f"invalid close code {code}")]


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1014, 3000, 4999])
def test_valid_close_code_is_echoed(code: int) -> None:
    conn = Connection()
    conn.receive_data(frame(8, close_payload(code, b"bye")))
    assert conn.events_received() == [CloseReceived(code, "bye")]
    assert server_frames(conn.data_to_send()) == [(8, True, False, close_payload(code, b"bye"))]
    assert conn.state is State.CLOSED


def test_close_without_code_reports_1005_and_echoes_empty() -> None:
    conn = Connection()
    conn.receive_data(frame(8, b""))
    assert conn.events_received() == [CloseReceived(1005, "")]
    assert server_frames(conn.data_to_send()) == [(8, True, False, b"")]


def test_one_byte_close_payload_and_bad_reason() -> None:
    conn = Connection()
    conn.receive_data(frame(8, b"\x03"))
    assert conn.events_received() == [ConnectionFailed(1002, "close frame too short")]
    conn = Connection()
    conn.receive_data(frame(8, close_payload(1000, b"\xff")))
    assert conn.events_received() == [ConnectionFailed(1007, "invalid UTF-8 in close reason")]


def test_messages_before_an_error_in_the_same_read_are_delivered_first() -> None:
    conn = Connection()
    conn.receive_data(frame(1, b"first") + core.encode_frame(1, b"unmasked"))
    assert conn.events_received() == [Text("first"), ConnectionFailed(1002, "frame not masked")]


def test_message_size_limit_across_fragments_exact_and_over() -> None:
    conn = Connection(limits=WsLimits(max_message_size=10))
    conn.receive_data(frame(2, b"12345", fin=False) + frame(0, b"67890"))
    assert conn.events_received() == [Binary(b"1234567890")]
    conn = Connection(limits=WsLimits(max_message_size=10))
    conn.receive_data(frame(2, b"12345", fin=False) + frame(0, b"678901"))
    assert conn.events_received() == [ConnectionFailed(1009, "message too big")]


def test_our_close_then_peer_echo_completes_handshake_and_discards_data() -> None:
    conn = Connection()
    conn.send_close(1000, "done")
    assert conn.state is State.CLOSING
    assert server_frames(conn.data_to_send()) == [(8, True, False, close_payload(1000, b"done"))]
    conn.send_text("ignored after close")
    assert conn.data_to_send() == b""
    conn.receive_data(frame(1, b"late") + frame(8, close_payload(1000)))
    assert conn.events_received() == [CloseReceived(1000, "")]
    assert conn.data_to_send() == b""  # no second close frame
    assert conn.state is State.CLOSED


def test_pong_event_and_ping_payload_limit() -> None:
    conn = Connection()
    conn.receive_data(frame(10, b"x"))
    assert conn.events_received() == [Pong(b"x")]
    with pytest.raises(ValueError):
        conn.send_ping(b"x" * 126)


def test_client_side_masks_and_expects_unmasked() -> None:
    client = Connection(is_server=False)
    client.send_text("hi")
    data = client.data_to_send()
    assert data[1] & 0x80  # masked
    server = Connection()
    server.receive_data(data)
    assert server.events_received() == [Text("hi")]
    server.send_binary(b"yo")
    client.receive_data(server.data_to_send())
    assert client.events_received() == [Binary(b"yo")]
    client.receive_data(frame(1, b"masked by server"))
    assert client.events_received() == [ConnectionFailed(1002, "frame masked by server")]


def test_send_close_validates_code_and_reason() -> None:
    conn = Connection()
    with pytest.raises(ValueError):
        conn.send_close(1006)
    with pytest.raises(ValueError):
        conn.send_close(1000, "x" * 124)


@pytest.mark.parametrize("code", [1004, 1005, 1006, 1015])
def test_reserved_close_codes_are_never_sent(code: int) -> None:
    # RFC 6455 §7.4.1: 1005 and 1006 (and 1015) report what happened; they must not be sent.
    with pytest.raises(ValueError, match=f"close code {code} is reserved"):
        encode_close(code)
    conn = Connection()
    with pytest.raises(ValueError, match="reserved"):
        conn.send_close(code)
    assert conn.state is State.OPEN and conn.data_to_send() == b""
    # Echoing a peer's close frame without a code is still an empty close frame.
    conn.receive_data(frame(8, b""))
    assert conn.events_received() == [CloseReceived(1005, "")]
    assert server_frames(conn.data_to_send()) == [(8, True, False, b"")]


def fast_read(conn: Connection, data: bytes) -> list[object]:
    """What a driver's fast path does with one read: feed the connection's reader itself, take
    the whole messages at the front, and hand the rest (and any violation) back with resume."""
    reader, outbox = conn.fast_path()
    assert outbox.open, "the fast path runs only while the connection is open"
    error = None
    try:
        frames = reader.feed(data)
    except WebSocketError as exc:
        frames, error = exc.frames, exc
    pos = 0
    while pos < len(frames) and type(frames[pos]) is not tuple:
        pos += 1
    conn.resume(ReadStop(frames, pos, error, False, None))
    return frames[:pos]


def test_a_fast_read_resumed_gives_the_events_of_receive_data() -> None:
    data = (
        frame(1, b"a")
        + frame(2, b"b")
        + frame(9, b"p")
        + frame(1, b"c", fin=False)
        + frame(0, b"d")
        + frame(1, b"e")
        + frame(8, close_payload(1000))
        + frame(1, b"after close")
    )
    one_by_one = Connection()
    one_by_one.receive_data(data)
    fast = Connection()
    batch = fast_read(fast, data)
    assert batch == [Text("a"), Binary(b"b")]  # up to the first frame that needs more
    assert fast.data_to_send() == b""  # nothing answered yet: the batch's replies go first
    events = batch + fast.events_received()
    assert events == one_by_one.events_received()
    assert events == [Text("a"), Binary(b"b"), Ping(b"p"), Text("cd"), Text("e"), CloseReceived(1000, "")]
    assert fast.data_to_send() == one_by_one.data_to_send()


def test_a_fast_read_hands_its_violation_back_after_the_messages_before_it() -> None:
    conn = Connection()
    events = fast_read(conn, frame(1, b"ok") + frame(1, b"\xff") + frame(1, b"never"))
    assert events == [Text("ok")]
    assert conn.data_to_send() == b""  # the close frame waits until the message was handled
    assert conn.events_received() == [ConnectionFailed(1007, "invalid UTF-8")]
    assert conn.state is State.CLOSED


def test_resume_keeps_order_behind_frames_still_pending_and_the_first_error() -> None:
    conn = Connection()
    conn.receive_data(frame(9, b"first"))  # pending: not turned into an event yet
    reader, _ = conn.fast_path()
    frames = reader.feed(frame(1, b"x") + frame(9, b"second"))
    conn.resume(ReadStop(frames, 1, None, False, None))
    assert conn.events_received() == [Ping(b"first"), Ping(b"second")]
    first, second = MessageTooBig("first"), MessageTooBig("second")
    conn.resume(ReadStop([], 0, first, False, None))
    conn.resume(ReadStop([], 0, second, False, None))
    assert conn.events_received() == [ConnectionFailed(1009, "first")]


def test_resume_after_the_close_changes_nothing() -> None:
    conn = Connection()
    conn.receive_data(frame(8, close_payload(1000)))
    assert conn.events_received() == [CloseReceived(1000, "")]
    conn.resume(ReadStop([(9, True, False, b"late")], 0, MessageTooBig("late"), False, None))
    assert conn.events_received() == [] and conn.state is State.CLOSED


# The outbox mirrors the state: ``outbox.open is (state is State.OPEN)`` after every operation.


def mirrored(conn: Connection) -> Connection:
    _, outbox = conn.fast_path()
    assert outbox.open is (conn.state is State.OPEN), (conn.state, outbox.open)
    return conn


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param(["send_close"], id="we close"),
        pytest.param(["send_close", "peer_close"], id="we close, the peer answers"),
        pytest.param(["peer_close"], id="the peer closes"),
        pytest.param(["bad_utf8"], id="the peer breaks the protocol"),
        pytest.param(["fast_bad_utf8"], id="the peer breaks the protocol in a fast read"),
        pytest.param(["abandon"], id="the transport is gone"),
        pytest.param(["send_close", "abandon"], id="gone while closing"),
        pytest.param(["ping", "send_close", "bad_utf8", "peer_close"], id="everything after the close"),
    ],
)
def test_the_outbox_is_open_exactly_while_the_connection_is(steps: list[str]) -> None:
    conn = mirrored(Connection())
    for step in steps:
        if step == "send_close":
            conn.send_close(1000)
        elif step == "peer_close":
            conn.receive_data(frame(8, close_payload(1000)))
            mirrored(conn)  # received but not processed: nothing changed yet
            conn.events_received()
        elif step == "bad_utf8":
            conn.receive_data(frame(1, b"\xff"))
            conn.events_received()
        elif step == "fast_bad_utf8":
            fast_read(conn, frame(1, b"\xff"))
            mirrored(conn)
            conn.events_received()
        elif step == "ping":
            conn.receive_data(frame(9, b"p"))
            conn.events_received()
        elif step == "abandon":
            conn.abandon()
        mirrored(conn)
    assert conn.state is not State.OPEN
    _, outbox = conn.fast_path()
    conn.data_to_send()
    outbox.text("dropped")  # what a handle's send does: nothing once the connection is not open
    assert conn.data_to_send() == b""


def test_compressed_message_of_exactly_the_limit_is_accepted_even_if_incompressible() -> None:
    import os
    import zlib

    from zzz.deflate import DeflateParams, PerMessageDeflate

    limit = 200_000
    data = os.urandom(limit)  # deflate makes it a little longer
    compressor = zlib.compressobj(wbits=-15)
    payload = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert len(payload) > limit
    conn = Connection(
        deflate=PerMessageDeflate(DeflateParams(), is_server=True), limits=WsLimits(max_message_size=limit)
    )
    conn.receive_data(frame(2, payload[:-4], rsv1=True))
    assert conn.events_received() == [Binary(data)]
    conn = Connection(
        deflate=PerMessageDeflate(DeflateParams(), is_server=True),
        limits=WsLimits(max_message_size=limit - 1),
    )
    conn.receive_data(frame(2, payload[:-4], rsv1=True))
    assert conn.events_received() == [ConnectionFailed(1009, "message too big")]


def test_held_pongs_answer_only_the_latest_ping_once_released() -> None:
    conn = Connection()
    conn.hold_pongs(True)
    conn.receive_data(b"".join(frame(9, b"ping %d" % i) for i in range(1000)))
    assert len(conn.events_received()) == 1000
    assert conn.data_to_send() == b""  # nothing queued however many pings came
    conn.send_text("still sent")
    conn.hold_pongs(False)
    assert server_frames(conn.data_to_send()) == [
        (1, True, False, "still sent"),
        (10, True, False, b"ping 999"),
    ]
    conn.hold_pongs(False)
    assert conn.data_to_send() == b""  # released once
    conn.receive_data(frame(9, b"again"))
    conn.events_received()
    assert server_frames(conn.data_to_send()) == [(10, True, False, b"again")]


def test_a_held_pong_is_dropped_once_the_connection_closes() -> None:
    conn = Connection()
    conn.hold_pongs(True)
    conn.receive_data(frame(9, b"p"))
    conn.events_received()
    conn.send_close(1000)
    conn.hold_pongs(False)
    assert [f[0] for f in server_frames(conn.data_to_send())] == [8]
