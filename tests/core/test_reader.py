"""FrameReader: each RFC 6455 §5.2 check, limits at their boundaries, chunking, UTF-8 fail-fast.

Every test runs against both cores through the ``impl`` fixture.
"""

from __future__ import annotations

import os
import tracemalloc
from types import ModuleType

import pytest
from _core_frames import frame, header, xor

from zzz.errors import InvalidUtf8, MessageTooBig, PolicyViolation, ProtocolError, WebSocketError

KEY = b"\x01\x02\x03\x04"


def feed_bytewise(reader: object, data: bytes) -> list[tuple[int, bool, bool, bytes | str]]:
    out = []
    for i in range(len(data)):
        out += reader.feed(data[i : i + 1])  # type: ignore[attr-defined]
    return out


# --- header checks: (fed bytes, reader options, exception, message) ---------------------------

HEADER_ERRORS = [
    pytest.param(bytes((0x80 | 0x20 | 1, 0x80)), {}, ProtocolError, "reserved bits set", id="rsv2"),
    pytest.param(bytes((0x80 | 0x10 | 1, 0x80)), {}, ProtocolError, "reserved bits set", id="rsv3"),
    pytest.param(
        bytes((0x80 | 0x40 | 1, 0x80)), {}, ProtocolError, "reserved bits set", id="rsv1-not-negotiated"
    ),
    pytest.param(
        bytes((0x80 | 0x40 | 9, 0x80)),
        {"allow_rsv1": True},
        ProtocolError,
        "reserved bits set",
        id="rsv1-on-control",
    ),
    pytest.param(bytes((0x09, 0x80)), {}, ProtocolError, "fragmented control frame", id="fragmented-ping"),
    pytest.param(bytes((0x88, 0x80 | 126)), {}, ProtocolError, "control frame too long", id="close-126"),
    pytest.param(bytes((0x8A, 0x80 | 127)), {}, ProtocolError, "control frame too long", id="pong-127"),
    pytest.param(bytes((0x80, 0x80)), {}, ProtocolError, "unexpected continuation frame", id="lone-cont"),
    pytest.param(bytes((0x81, 0x00)), {}, ProtocolError, "frame not masked", id="unmasked-from-client"),
    pytest.param(
        bytes((0x81, 0x80)),
        {"require_mask": False},
        ProtocolError,
        "frame masked by server",
        id="masked-from-server",
    ),
    pytest.param(
        header(2, 1 << 63, width=8)[:10], {}, ProtocolError, "invalid frame length", id="length-msb"
    ),
    pytest.param(
        header(2, (1 << 64) - 1, width=8)[:10],
        {},
        ProtocolError,
        "invalid frame length",
        id="length-all-ones",
    ),
]


@pytest.mark.parametrize("data, options, error, message", HEADER_ERRORS)
def test_header_checks(impl: ModuleType, data: bytes, options: dict, error: type, message: str) -> None:
    reader = impl.FrameReader(**options)
    with pytest.raises(error) as info:
        reader.feed(data)
    assert type(info.value) is error
    assert info.value.args == (message,)
    assert info.value.close_code == 1002
    assert info.value.frames == []


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
def test_unknown_opcodes_refused_on_two_bytes(impl: ModuleType, opcode: int) -> None:
    reader = impl.FrameReader()
    with pytest.raises(ProtocolError, match=f"^invalid opcode {opcode}$"):
        reader.feed(bytes((0x80 | opcode, 0x80 | 5)))


def test_first_byte_alone_is_not_judged(impl: ModuleType) -> None:
    reader = impl.FrameReader()
    assert reader.feed(bytes((0x83,))) == []  # opcode 3, but a header needs two bytes
    with pytest.raises(ProtocolError, match="invalid opcode 3"):
        reader.feed(b"\x80")


def test_rsv1_on_continuation(impl: ModuleType) -> None:
    reader = impl.FrameReader(allow_rsv1=True)
    assert reader.feed(frame(1, b"a", fin=False, rsv=4)) == [(1, False, True, b"a")]
    with pytest.raises(ProtocolError, match="^RSV1 set on continuation frame$"):
        reader.feed(bytes((0x80 | 0x40, 0x80)))


def test_expected_continuation(impl: ModuleType) -> None:
    reader = impl.FrameReader()
    assert reader.feed(frame(2, b"ab", fin=False)) == [(2, False, False, b"ab")]
    with pytest.raises(ProtocolError, match="^expected continuation frame$"):
        reader.feed(frame(1, b"c"))


def test_length_msb_refused_before_mask_key(impl: ModuleType) -> None:
    reader = impl.FrameReader()
    with pytest.raises(ProtocolError, match="invalid frame length"):
        reader.feed(header(2, (1 << 63) + 5, width=8)[:10])


# --- limits -----------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, 1, 125, 126, 65535, 65536])
def test_frame_limit_boundary(impl: ModuleType, limit: int) -> None:
    payload = b"x" * limit
    reader = impl.FrameReader(max_frame_size=limit)
    assert reader.feed(frame(2, payload)) == [(2, True, False, payload)]
    reader = impl.FrameReader(max_frame_size=limit)
    with pytest.raises(MessageTooBig, match="^frame too big$") as info:
        reader.feed(header(2, limit + 1))  # header only: refused before any payload
    assert info.value.close_code == 1009


def test_frame_limit_applies_to_control_frames(impl: ModuleType) -> None:
    reader = impl.FrameReader(max_frame_size=3)
    assert reader.feed(frame(9, b"abc")) == [(9, True, False, b"abc")]
    with pytest.raises(MessageTooBig, match="frame too big"):
        reader.feed(frame(9, b"abcd"))


def test_huge_declared_length_refused_without_allocation(impl: ModuleType) -> None:
    reader = impl.FrameReader(max_frame_size=1 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(MessageTooBig) as info:
            reader.feed(header(2, (1 << 63) - 1))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.close_code == 1009
    assert peak < 1 << 20


def test_huge_declared_length_with_message_limit(impl: ModuleType) -> None:
    reader = impl.FrameReader(max_message_size=1000)
    with pytest.raises(MessageTooBig, match="^message too big$"):
        reader.feed(header(2, (1 << 63) - 1))


def test_unlimited_huge_frame_buffers_only_what_arrives(impl: ModuleType) -> None:
    reader = impl.FrameReader()
    tracemalloc.start()
    try:
        assert reader.feed(header(2, (1 << 63) - 1)) == []
        for _ in range(4):
            assert reader.feed(b"z" * 4096) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


@pytest.mark.parametrize("limit", [1, 10, 200, 70000])
def test_message_limit_across_fragments(impl: ModuleType, limit: int) -> None:
    first = limit // 2
    rest = limit - first
    stream = frame(2, b"a" * first, fin=False) + frame(9, b"ping") + frame(0, b"b" * rest)
    reader = impl.FrameReader(max_message_size=limit)
    frames = reader.feed(stream)
    assert [f[0] for f in frames] == [2, 9, 0]
    reader = impl.FrameReader(max_message_size=limit)
    reader.feed(frame(2, b"a" * first, fin=False) + frame(9, b"ping"))
    with pytest.raises(MessageTooBig, match="^message too big$"):
        reader.feed(header(0, rest + 1))


def test_message_limit_resets_per_message(impl: ModuleType) -> None:
    reader = impl.FrameReader(max_message_size=5)
    for _ in range(3):
        assert reader.feed(frame(2, b"12345")) == [(2, True, False, b"12345")]


def test_compressed_messages_skip_the_message_limit(impl: ModuleType) -> None:
    # The inflater enforces it on the decompressed size instead.
    reader = impl.FrameReader(allow_rsv1=True, max_message_size=4)
    stream = frame(1, b"123456", fin=False, rsv=4) + frame(0, b"789")
    assert reader.feed(stream) == [(1, False, True, b"123456"), (0, True, False, b"789")]
    reader = impl.FrameReader(allow_rsv1=True, max_message_size=4, max_frame_size=5)
    with pytest.raises(MessageTooBig, match="frame too big"):
        reader.feed(frame(2, b"123456", rsv=4))


@pytest.mark.parametrize("limit", [1, 2, 5])
def test_fragment_limit_boundary(impl: ModuleType, limit: int) -> None:
    frames = [frame(1 if i == 0 else 0, b"a", fin=i == limit - 1) for i in range(limit)]
    reader = impl.FrameReader(max_fragments=limit)
    assert len(reader.feed(b"".join(frames) + frame(9) + frames[0])) == limit + 2
    reader = impl.FrameReader(max_fragments=limit)
    unfinished = [frame(1 if i == 0 else 0, b"a", fin=False) for i in range(limit)]
    reader.feed(b"".join(unfinished) + frame(10, b"pong"))  # control frames do not count
    with pytest.raises(PolicyViolation, match="^too many fragments$") as info:
        reader.feed(header(0, 1, fin=True))
    assert info.value.close_code == 1008


def test_zero_fragments_refuses_every_data_frame(impl: ModuleType) -> None:
    reader = impl.FrameReader(max_fragments=0)
    assert reader.feed(frame(9, b"x")) == [(9, True, False, b"x")]
    with pytest.raises(PolicyViolation):
        reader.feed(frame(2, b"x"))


def test_limits_are_attributes(impl: ModuleType) -> None:
    reader = impl.FrameReader(max_frame_size=10)
    assert reader.max_frame_size == 10
    assert reader.max_message_size == 1 << 64
    assert reader.max_fragments == 1 << 64
    reader.max_frame_size = 2
    with pytest.raises(MessageTooBig):
        reader.feed(frame(2, b"abc"))
    reader = impl.FrameReader()
    assert reader.require_mask and not reader.allow_rsv1
    reader.allow_rsv1 = True  # negotiated after construction
    assert reader.feed(frame(1, b"x", rsv=4)) == [(1, True, True, b"x")]


def test_negative_limits_refuse_everything(impl: ModuleType) -> None:
    reader = impl.FrameReader(max_message_size=-1)
    with pytest.raises(MessageTooBig, match="message too big"):
        reader.feed(frame(2))
    reader = impl.FrameReader(max_frame_size=-1)
    with pytest.raises(MessageTooBig, match="frame too big"):
        reader.feed(frame(9))


def test_lowered_message_limit_mid_message(impl: ModuleType) -> None:
    reader = impl.FrameReader(max_message_size=100)
    reader.feed(frame(2, b"x" * 50, fin=False))
    reader.max_message_size = 10  # already over: any further fragment is refused
    with pytest.raises(MessageTooBig, match="message too big"):
        reader.feed(frame(0, b""))


# --- payloads ---------------------------------------------------------------------------------


def test_payload_types(impl: ModuleType) -> None:
    reader = impl.FrameReader(allow_rsv1=True)
    stream = (
        frame(1, "héllo".encode())
        + frame(2, b"\x00\xff")
        + frame(1, b"frag", fin=False)
        + frame(9, b"p")
        + frame(0, "ment 日本".encode())
        + frame(1, b"\xff\xfe compressed", rsv=4)
        + frame(8, b"\x03\xe8bye")
        + frame(10)
        + frame(1)
    )
    assert reader.feed(stream) == [
        (1, True, False, "héllo"),
        (2, True, False, b"\x00\xff"),
        (1, False, False, b"frag"),
        (9, True, False, b"p"),
        (0, True, False, "ment 日本".encode()),
        (1, True, True, b"\xff\xfe compressed"),
        (8, True, False, b"\x03\xe8bye"),
        (10, True, False, b""),
        (1, True, False, ""),
    ]
    assert all(type(f[1]) is bool and type(f[2]) is bool and type(f[0]) is int for f in reader.feed(stream))


@pytest.mark.parametrize("n", [0, 1, 3, 125, 126, 127, 65535, 65536, 100_000])
@pytest.mark.parametrize("opcode", [1, 2])
def test_each_length_encoding(impl: ModuleType, n: int, opcode: int) -> None:
    payload = os.urandom(n) if opcode == 2 else ("a" * n).encode()
    expected = payload if opcode == 2 else payload.decode()
    data = frame(opcode, payload)
    assert impl.FrameReader().feed(data) == [(opcode, True, False, expected)]
    chunked = impl.FrameReader()
    out = []
    for i in range(0, len(data), 997):
        out += chunked.feed(data[i : i + 997])
    assert out == [(opcode, True, False, expected)]
    client = impl.FrameReader(require_mask=False)
    assert client.feed(frame(opcode, payload, key=None)) == [(opcode, True, False, expected)]


def test_non_minimal_length_encoding_is_accepted(impl: ModuleType) -> None:
    reader = impl.FrameReader()
    stream = frame(2, b"abc", width=2) + frame(2, b"de", width=8)
    assert reader.feed(stream) == [(2, True, False, b"abc"), (2, True, False, b"de")]


def test_chunking_down_to_one_byte(impl: ModuleType) -> None:
    text = "smile 🎉 and ünïcode".encode()
    stream = (
        frame(1, text)
        + frame(2, os.urandom(300))
        + frame(1, text[:7], fin=False)
        + frame(9, b"ping!")
        + frame(0, text[7:20], fin=False)
        + frame(0, text[20:])
        + frame(2, os.urandom(70000))
        + frame(8, b"\x03\xe8")
    )
    whole = impl.FrameReader().feed(stream)
    assert len(whole) == 8 and whole[0] == (1, True, False, text.decode())
    assert feed_bytewise(impl.FrameReader(), stream) == whole
    for size in (2, 3, 5, 13, 14, 15, 127, 4096):
        reader = impl.FrameReader()
        out = []
        for i in range(0, len(stream), size):
            out += reader.feed(memoryview(stream)[i : i + size])
        assert out == whole, size


def test_accepts_bytes_like_and_keeps_no_reference(impl: ModuleType) -> None:
    data = bytearray(frame(2, b"hello") + frame(1, b"wor"))
    reader = impl.FrameReader()
    frames = reader.feed(memoryview(data)[:11])
    assert frames == [(2, True, False, b"hello")]
    tail = data[11:]
    data[:] = b"\x00" * len(data)  # the caller reuses its buffer
    assert reader.feed(bytearray(tail)) == [(1, True, False, "wor")]


def test_partial_payload_survives_buffer_reuse(impl: ModuleType) -> None:
    data = bytearray(frame(2, b"0123456789"))
    reader = impl.FrameReader()
    assert reader.feed(data[:9]) == []
    rest = bytes(data[9:])
    data[:] = b"\xee" * len(data)
    assert reader.feed(rest) == [(2, True, False, b"0123456789")]


def test_empty_feed(impl: ModuleType) -> None:
    reader = impl.FrameReader()
    assert reader.feed(b"") == []
    reader.feed(frame(2, b"abc")[:3])
    assert reader.feed(b"") == []
    assert reader.feed(frame(2, b"abc")[3:]) == [(2, True, False, b"abc")]


def test_feed_refuses_text(impl: ModuleType) -> None:
    reader = impl.FrameReader()
    with pytest.raises(TypeError, match="^can't concat str to bytearray$"):
        reader.feed("text")
    assert reader.feed(frame(2, b"ok")) == [(2, True, False, b"ok")]  # not a protocol failure


# --- UTF-8 --------------------------------------------------------------------------------------


def test_invalid_text_frame(impl: ModuleType) -> None:
    reader = impl.FrameReader()
    with pytest.raises(InvalidUtf8, match="^invalid UTF-8$") as info:
        reader.feed(frame(2, b"ok") + frame(1, b"bad \xff"))
    assert info.value.close_code == 1007
    assert info.value.frames == [(2, True, False, b"ok")]


def test_text_cut_at_the_end_of_a_message(impl: ModuleType) -> None:
    reader = impl.FrameReader()
    with pytest.raises(InvalidUtf8):
        reader.feed(frame(1, b"\xe2\x82"))
    reader = impl.FrameReader()
    reader.feed(frame(1, b"a\xe2", fin=False))
    with pytest.raises(InvalidUtf8):
        reader.feed(frame(0, b"\x82"))


def test_characters_split_across_fragments(impl: ModuleType) -> None:
    text = "🎉€é".encode()
    reader = impl.FrameReader()
    stream = b"".join(
        frame(1 if i == 0 else 0, text[i : i + 1], fin=i == len(text) - 1) for i in range(len(text))
    )
    frames = reader.feed(stream)
    assert b"".join(f[3] for f in frames) == text


def test_fail_fast_in_fragmented_text(impl: ModuleType) -> None:
    reader = impl.FrameReader()
    with pytest.raises(InvalidUtf8) as info:
        reader.feed(frame(1, b"fine", fin=False) + frame(0, b"\xed\xa0", fin=False))
    assert info.value.frames == [(1, False, False, b"fine")]


def test_fail_fast_in_network_chunked_text(impl: ModuleType) -> None:
    payload = b"a" * 10 + b"\xc0" + b"b" * 10_000
    data = frame(1, payload)
    reader = impl.FrameReader()
    assert reader.feed(data[:12]) == []  # header (6) + 6 valid bytes
    with pytest.raises(InvalidUtf8):
        reader.feed(data[12:20])  # the bad byte arrives: fail now, not at the end of the frame
    # The same inside a fragmented message, and a bad byte split from its lead.
    reader = impl.FrameReader()
    data = frame(1, b"ok", fin=False) + frame(0, b"xx\xf0\x9f" + b"\x41" + b"z" * 1000)
    assert reader.feed(data[:20]) == [(1, False, False, b"ok")]
    with pytest.raises(InvalidUtf8):
        reader.feed(data[20:21])


def test_control_frames_inside_text_are_not_text(impl: ModuleType) -> None:
    reader = impl.FrameReader()
    stream = frame(1, b"\xe2\x82", fin=False) + frame(9, b"\xff") + frame(0, b"\xac")
    assert reader.feed(stream) == [
        (1, False, False, b"\xe2\x82"),
        (9, True, False, b"\xff"),
        (0, True, False, b"\xe2\x82\xac"[2:]),
    ]


def test_binary_is_not_validated(impl: ModuleType) -> None:
    reader = impl.FrameReader()
    assert reader.feed(frame(2, b"\xff", fin=False) + frame(0, b"\xfe")) == [
        (2, False, False, b"\xff"),
        (0, True, False, b"\xfe"),
    ]


# --- failure is sticky ----------------------------------------------------------------------------


def test_error_carries_earlier_frames_and_sticks(impl: ModuleType) -> None:
    reader = impl.FrameReader()
    with pytest.raises(ProtocolError) as info:
        reader.feed(frame(2, b"a") + frame(9, b"b") + bytes((0x83, 0x80)))
    first = info.value
    assert first.frames == [(2, True, False, b"a"), (9, True, False, b"b")]
    with pytest.raises(ProtocolError) as again:
        reader.feed(frame(2, b"c"))
    assert again.value is first
    assert again.value.frames == []
    assert isinstance(first, WebSocketError)


def test_client_reader_unmasked(impl: ModuleType) -> None:
    reader = impl.FrameReader(require_mask=False)
    text = "日本語".encode()
    assert feed_bytewise(reader, frame(1, text, key=None) + frame(2, b"\x00", key=None)) == [
        (1, True, False, "日本語"),
        (2, True, False, b"\x00"),
    ]


def test_masked_payload_is_unmasked(impl: ModuleType) -> None:
    key = b"\xaa\xbb\xcc\xdd"
    payload = os.urandom(1000)
    raw = header(2, 1000, key=key) + xor(payload, key)
    assert impl.FrameReader().feed(raw) == [(2, True, False, payload)]


@pytest.mark.parametrize("n", [1, 63, 64, 65, 511, 512, 513, 4096])
@pytest.mark.parametrize("unit", ["a", "é", "日", "🎉"])
def test_text_sizes_around_internal_thresholds(impl: ModuleType, n: int, unit: str) -> None:
    whole = unit.encode()
    text = whole * (n // len(whole)) + b"a" * (n % len(whole))  # exactly n bytes, valid
    expected = text.decode()
    for key in (KEY, None):
        reader = impl.FrameReader(require_mask=key is not None)
        assert reader.feed(frame(1, text, key=key)) == [(1, True, False, expected)]
        bad = text[:-1] + b"\xff"
        with pytest.raises(InvalidUtf8):
            impl.FrameReader(require_mask=key is not None).feed(frame(1, bad, key=key))
