"""The byte core's buffers for the per-read path: ``Outbox`` (frames queued in order, built in one
buffer) and ``FrameReader(messages=True)`` (whole messages as ``Text``/``Binary``). The loop that
uses them is tested in ``tests/driver/test_readloop.py``.

Every test runs on both cores; what goes out is checked by parsing it back with a reader.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def parse(impl: ModuleType, buffers: list[bytes]) -> list[tuple[int, bool, bool, Any]]:
    """The frames in what an outbox handed over (server frames: unmasked)."""
    for buf in buffers:
        assert type(buf) is bytes, "an outbox hands over immutable bytes only"
    reader = impl.FrameReader(require_mask=False)
    return reader.feed(b"".join(buffers))  # type: ignore[no-any-return]


# Outbox


def test_frames_come_out_in_order_of_every_kind(impl: ModuleType) -> None:
    box = impl.Outbox()
    box.text("héllo")
    box.binary(b"\x00\x01")
    box.raw(impl.encode_frame(impl.OP_PING, b"p"))
    box.text("")
    box.binary(bytearray(b"ba"))
    box.binary(memoryview(b"mv"))
    frames = parse(impl, box.take())
    assert frames == [
        (1, True, False, "héllo"),
        (2, True, False, b"\x00\x01"),
        (9, True, False, b"p"),
        (1, True, False, ""),
        (2, True, False, b"ba"),
        (2, True, False, b"mv"),
    ]
    assert box.take() == []
    assert not box.pending and box.size == 0


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000, 300_000])
def test_every_length_encoding_and_the_split_size(impl: ModuleType, size: int) -> None:
    box = impl.Outbox()
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    box.binary(payload)
    box.text("a" * size)
    box.text("é" * (size // 2))
    buffers = box.take()
    expected = [(2, True, False, payload), (1, True, False, "a" * size), (1, True, False, "é" * (size // 2))]
    assert parse(impl, buffers) == expected
    assert box.size == 0 and not box.pending


def test_a_big_bytes_payload_is_queued_without_a_copy(impl: ModuleType) -> None:
    box = impl.Outbox()
    box.text("before")
    payload = bytes(100_000)
    box.binary(payload)
    box.text("after")
    buffers = box.take()
    assert any(buf is payload for buf in buffers)
    assert [f[3] for f in parse(impl, buffers)] == ["before", payload, "after"]


def test_queued_payloads_are_released_once_taken_and_dropped(impl: ModuleType) -> None:
    box = impl.Outbox()
    payload = bytes(100_000)
    before = sys.getrefcount(payload)
    box.binary(payload)
    box.raw(payload)  # not a valid frame, but raw bytes are the caller's business
    assert sys.getrefcount(payload) == before + 2
    buffers = box.take()
    del buffers
    assert sys.getrefcount(payload) == before
    box.text("x" * 50_000)
    del box  # a box dropped with data queued frees it too (nothing to assert but no crash)


def test_a_mutable_buffer_is_copied_at_once(impl: ModuleType) -> None:
    box = impl.Outbox()
    small, big = bytearray(b"abc"), bytearray(100_000)
    box.binary(small)
    box.binary(big)
    small[0] = ord("X")
    big[0] = 1
    assert [f[3] for f in parse(impl, box.take())] == [b"abc", bytes(100_000)]


def drain(box: Any) -> list[bytes]:
    """What a flush takes: the one buffer when ``take_one`` has it, else the list."""
    size = box.size
    one = box.take_one()
    buffers = [one] if one is not None else box.take()
    assert box.size == 0 and box.messages == 0 and box.take_one() is None and box.take() == []
    assert sum(map(len, buffers)) == size
    return buffers


def test_a_frame_queued_alone_is_handed_over_as_it_is(impl: ModuleType) -> None:
    frame = impl.encode_frame(impl.OP_TEXT, b"broadcast")
    box = impl.Outbox()
    box.raw(frame)
    assert box.size == len(frame)
    assert box.take_one() is frame  # a broadcast's frame is not copied per receiver
    box.raw(frame)
    assert box.take() == [frame]


@pytest.mark.parametrize(
    "after",
    [
        lambda impl, box: box.raw(impl.encode_frame(impl.OP_TEXT, b"second")),
        lambda impl, box: box.text("th\u00efrd"),
        lambda impl, box: box.binary(b"\x00" * 70_000),  # a payload big enough to be its own buffer
        lambda impl, box: box.raw(impl.encode_frame(impl.OP_BINARY, b"\x01" * 70_000)),
        lambda impl, box: [box.raw(impl.encode_frame(impl.OP_TEXT, b"%d" % i)) for i in range(300)],
    ],
)
def test_what_follows_a_held_frame_comes_after_it(impl: ModuleType, after: Any) -> None:
    frame = impl.encode_frame(impl.OP_TEXT, b"first")
    box = impl.Outbox()
    box.raw(frame)
    after(impl, box)
    box.text("last")
    frames = parse(impl, drain(box))
    assert frames[0] == (1, True, False, "first") and frames[-1] == (1, True, False, "last")
    reference = impl.Outbox()
    reference.text("first")
    after(impl, reference)
    reference.text("last")
    assert frames == parse(impl, reference.take())
    assert frame == impl.encode_frame(impl.OP_TEXT, b"first")  # the held frame was never written to


def test_take_one_takes_nothing_from_several_buffers(impl: ModuleType) -> None:
    box = impl.Outbox()
    box.binary(b"\x02" * 70_000)  # a payload big enough to be its own buffer, then a frame after it
    box.text("tail")
    size = box.size
    assert box.take_one() is None
    assert box.size == size and box.messages == 2
    assert [f[0] for f in parse(impl, box.take())] == [2, 1]


def test_size_counts_what_is_queued(impl: ModuleType) -> None:
    box = impl.Outbox()
    assert not box.pending
    box.text("abc")  # 2 + 3
    box.binary(bytes(200))  # 4 + 200
    assert box.pending and box.size == 5 + 204
    assert sum(map(len, box.take())) == 209


def test_messages_counts_the_data_messages_queued(impl: ModuleType) -> None:
    box = impl.Outbox()
    box.text("abc")
    box.text("é" * 70_000)  # not ASCII, and big
    box.binary(bytearray(3))
    box.binary(bytes(300_000))  # queued as its own buffer
    box.raw(impl.encode_frame(impl.OP_PING, b""))  # not a data message (unless its caller says)
    with pytest.raises(TypeError):
        box.text(b"not text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        box.binary("not bytes")  # type: ignore[arg-type]
    assert box.messages == 4
    box.messages += 1  # a broadcast's raw data frame
    box.take()
    assert box.messages == 0
    box.open = False
    box.text("dropped")
    box.binary(b"dropped")
    assert box.messages == 0
    encoded = impl.Outbox(lambda payload, opcode: impl.encode_frame(opcode, payload))
    encoded.text("a")
    encoded.binary(b"b")
    assert encoded.messages == 2


def test_data_is_ignored_unless_open_but_raw_frames_are_not(impl: ModuleType) -> None:
    box = impl.Outbox()
    box.open = False
    box.text("dropped")
    box.binary(b"dropped")
    close = impl.encode_frame(impl.OP_CLOSE, b"\x03\xe8")
    box.raw(close)
    assert box.take() == [close]


def test_an_encoder_builds_the_data_frames(impl: ModuleType) -> None:
    calls: list[tuple[bytes, int]] = []

    def encoder(payload: Any, opcode: int) -> bytes:
        calls.append((bytes(payload), opcode))
        return impl.encode_frame(opcode, payload, True, False, b"abcd")

    box = impl.Outbox(encoder)
    box.text("é")
    box.binary(bytearray(b"xy"))
    assert calls == [("é".encode(), impl.OP_TEXT), (b"xy", impl.OP_BINARY)]
    frames = impl.FrameReader(require_mask=True).feed(b"".join(box.take()))
    assert frames == [(1, True, False, "é"), (2, True, False, b"xy")]


@pytest.mark.parametrize("bad", [b"bytes", 1, None])
def test_text_takes_only_str(impl: ModuleType, bad: Any) -> None:
    with pytest.raises(TypeError, match="text must be a str, not"):
        impl.Outbox().text(bad)


def test_many_frames_grow_the_buffer_without_losing_any(impl: ModuleType) -> None:
    box = impl.Outbox()
    texts = [str(i) * (i % 300) for i in range(2000)]
    for text in texts:
        box.text(text)
    assert [f[3] for f in parse(impl, box.take())] == texts


# FrameReader(messages=True)


def test_reader_delivers_whole_messages_as_text_and_binary(impl: ModuleType) -> None:
    key = b"\x01\x02\x03\x04"
    stream = b"".join(
        [
            impl.encode_frame(1, "é".encode(), True, False, key),
            impl.encode_frame(2, b"\x00", True, False, key),
            impl.encode_frame(1, b"frag", False, False, key),
            impl.encode_frame(9, b"ping", True, False, key),
            impl.encode_frame(0, b"ment", True, False, key),
            impl.encode_frame(1, b"", True, True, key),
            impl.encode_frame(2, bytes(70_000), True, False, key),
        ]
    )
    reader = impl.FrameReader(require_mask=True, allow_rsv1=True, messages=True)
    assert reader.messages is True
    frames = reader.feed(stream[:7]) + reader.feed(stream[7:])
    assert frames == [
        impl.Text("é"),
        impl.Binary(b"\x00"),
        (1, False, False, b"frag"),
        (9, True, False, b"ping"),
        (0, True, False, b"ment"),
        (1, True, True, b""),
        impl.Binary(bytes(70_000)),
    ]
    assert type(frames[0]) is impl.Text and type(frames[0].data) is str
    assert type(frames[1]) is impl.Binary and type(frames[1].data) is bytes


def test_reader_without_messages_keeps_tuples(impl: ModuleType) -> None:
    reader = impl.FrameReader(require_mask=False)
    assert reader.messages is False
    assert reader.feed(impl.encode_frame(1, b"a")) == [(1, True, False, "a")]


# Received text sent on (an echo, a relay): the compiled core keeps the bytes it decoded from


TEXTS = [
    "plain ascii",
    "é" * 300,  # one byte per character in the str (latin-1), two in UTF-8
    "h\u00e9llo \u20acuro " * 40,  # two bytes per character in the str
    "\U0001d11e clef " * 50,  # four bytes per character in the str
    "na\u00efve \u65e5\u672c \U0001f600 " * 7000,  # over the outbox's 64 KiB split size
    "\u00e9",  # one character: CPython's shared latin-1 singleton
]


def _received(impl: ModuleType, text: str, *, split: int | None = None) -> str:
    """``text`` as a server's reader delivers it: a masked frame, fed whole or in two reads."""
    frame = impl.encode_frame(1, text.encode(), True, False, b"\x0a\x0b\x0c\x0d")
    reader = impl.FrameReader(require_mask=True, messages=True)
    cut = len(frame) if split is None else split
    (msg,) = reader.feed(frame[:cut]) + reader.feed(frame[cut:])
    assert type(msg) is impl.Text and type(msg.data) is str
    return msg.data  # type: ignore[no-any-return]


@pytest.mark.parametrize("text", TEXTS, ids=lambda t: f"{len(t)}-chars")
@pytest.mark.parametrize("split", [None, 9])
def test_received_text_sent_on_is_the_same_text(impl: ModuleType, text: str, split: int | None) -> None:
    got = _received(impl, text, split=split)
    assert got == text
    box = impl.Outbox()
    box.text(got)
    box.text(got)  # twice: the first send changes nothing in the str
    assert parse(impl, box.take()) == [(1, True, False, text), (1, True, False, text)]


@pytest.mark.skipif(sys.version_info >= (3, 14), reason="the UTF-8 form is kept on CPython 3.11-3.13 only")
@pytest.mark.parametrize("split", [None, 9])
def test_the_compiled_core_keeps_the_utf8_of_received_text(speedups: ModuleType, split: int | None) -> None:
    # CPython counts a str's UTF-8 form in its size once the str has one; a str decoded the
    # usual way has none until something asks for it.
    text = "h\u00e9llo \u20acuro " * 40
    fresh = text.encode().decode()
    got = _received(speedups, text, split=split)
    assert sys.getsizeof(got) == sys.getsizeof(fresh) + len(text.encode()) + 1
    assert sys.getsizeof(_received(speedups, "ascii only")) == sys.getsizeof(b"ascii only".decode())


# Broadcast frames shared between receivers (``Outbox.share``): what each receiver is handed is what
# it would be handed had every frame been queued with ``raw``, in every interleaving.

SHARE_OPS = st.lists(
    st.tuples(
        st.sampled_from(["broadcast", "text", "raw", "big", "flush"]),
        st.sets(st.integers(0, 3), min_size=1),  # the receivers it goes to (a flush: those flushed)
        st.integers(0, 40),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=SHARE_OPS)
def test_shared_broadcast_frames_come_out_as_raw_ones_would(impl: ModuleType, ops: Any) -> None:
    boxes = [impl.Outbox() for _ in range(4)]
    references = [impl.Outbox() for _ in range(4)]
    got: list[list[bytes]] = [[] for _ in range(4)]
    want: list[list[bytes]] = [[] for _ in range(4)]
    for step, (kind, targets, n) in enumerate(ops):
        order = sorted(targets, reverse=step % 2 == 1)  # receivers in either order
        if kind == "broadcast":
            frame = impl.encode_frame(impl.OP_TEXT, b"b%d-" % step + b"x" * n)
            fresh = None
            for k in order + order[: n % 2]:  # sometimes a receiver twice, as in a list with repeats
                fresh = boxes[k].share(frame, fresh)
                references[k].raw(frame)
        elif kind == "big":  # past the split size: queued as it is, never in a run
            frame = impl.encode_frame(impl.OP_BINARY, bytes([step % 256]) * (70_000 + n))
            fresh = None
            for k in order:
                fresh = boxes[k].share(frame, fresh)
                references[k].raw(frame)
        elif kind == "text":
            for k in order:
                boxes[k].text(f"t{step}")
                references[k].text(f"t{step}")
        elif kind == "raw":
            for k in order:
                boxes[k].raw(impl.encode_frame(impl.OP_BINARY, b"r%d" % step))
                references[k].raw(impl.encode_frame(impl.OP_BINARY, b"r%d" % step))
        else:
            for k in order:
                assert boxes[k].size == references[k].size
                got[k] += drain(boxes[k])
                want[k] += references[k].take()
    for k in range(4):
        got[k] += drain(boxes[k])
        want[k] += references[k].take()
        assert b"".join(got[k]) == b"".join(want[k]), k
        parse(impl, got[k])  # whole frames, immutable bytes


def test_a_burst_to_the_same_receivers_is_one_buffer_for_all_of_them(impl: ModuleType) -> None:
    boxes = [impl.Outbox() for _ in range(3)]
    frames = [impl.encode_frame(impl.OP_TEXT, b"message %d" % i) for i in range(10)]
    for frame in frames:
        fresh = None
        for box in boxes:
            fresh = box.share(frame, fresh)
    assert all(box.size == sum(map(len, frames)) for box in boxes)
    out = [drain(box) for box in boxes]
    assert all(b"".join(o) == b"".join(frames) for o in out)
    if impl.__name__ == "zzz._speedups":  # the twin queues frames by reference, never joined
        assert len(out[0]) == 1 and out[0][0] is out[1][0] is out[2][0]
    # A receiver that missed one of them, then one that got something else between two of them.
    late, other = impl.Outbox(), impl.Outbox()
    fresh = None
    for box in (boxes[0], late, other):
        fresh = box.share(frames[0], fresh)
    other.text("between")
    fresh = None
    for box in (boxes[0], other):
        fresh = box.share(frames[1], fresh)
    fresh = None
    for box in (boxes[0], late, other):
        fresh = box.share(frames[2], fresh)
    assert b"".join(drain(boxes[0])) == b"".join(frames[:3])
    assert b"".join(drain(late)) == frames[0] + frames[2]
    assert [f[3] for f in parse(impl, drain(other))] == ["message 0", "between", "message 1", "message 2"]
