"""The sending half of the core: ``Outbox`` (frames queued in order, built in one buffer), its
``dispatch`` loop, ``Sender`` (the handle's send methods) and ``FrameReader(messages=True)``.

Every test runs on both cores; what goes out is checked by parsing it back with a reader.
"""

from __future__ import annotations

import sys
import threading
from types import ModuleType
from typing import Any

import pytest


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


def test_size_counts_what_is_queued(impl: ModuleType) -> None:
    box = impl.Outbox()
    assert not box.pending
    box.text("abc")  # 2 + 3
    box.binary(bytes(200))  # 4 + 200
    assert box.pending and box.size == 5 + 204
    assert sum(map(len, box.take())) == 209


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


# dispatch


def test_dispatch_calls_back_for_each_message_up_to_a_frame_tuple(impl: ModuleType) -> None:
    box = impl.Outbox()
    seen: list[Any] = []
    frames = [impl.Text("a"), impl.Binary(b"b"), (9, True, False, b""), impl.Text("c")]
    assert box.dispatch(frames, 0, lambda ws, msg: seen.append((ws, msg)), "ws") == (2, False, None)
    assert seen == [("ws", impl.Text("a")), ("ws", impl.Binary(b"b"))]
    assert box.dispatch(frames, 3, lambda ws, msg: seen.append(msg), None) == (4, False, None)
    assert seen[-1] == impl.Text("c")
    assert box.dispatch(frames, 4, lambda ws, msg: seen.append(msg), None) == (4, False, None)


def test_dispatch_stops_at_an_exception_and_at_a_result(impl: ModuleType) -> None:
    box = impl.Outbox()
    frames = [impl.Text("a"), impl.Text("boom"), impl.Text("c"), impl.Text("d")]
    error = ValueError("boom")

    def on_message(ws: Any, msg: Any) -> Any:
        if msg.data == "boom":
            raise error
        if msg.data == "c":
            return "a result"
        return None

    assert box.dispatch(frames, 0, on_message, None) == (2, True, error)
    assert box.dispatch(frames, 2, on_message, None) == (3, False, "a result")
    assert box.dispatch(frames, 3, on_message, None) == (4, False, None)


def test_dispatch_lets_base_exceptions_through(impl: ModuleType) -> None:
    def on_message(ws: Any, msg: Any) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        impl.Outbox().dispatch([impl.Text("a")], 0, on_message, None)


def test_dispatch_skips_messages_once_the_outbox_is_closed(impl: ModuleType) -> None:
    box = impl.Outbox()
    seen: list[str] = []

    def on_message(ws: Any, msg: Any) -> None:
        seen.append(msg.data)
        if msg.data == "close":
            box.open = False

    frames = [impl.Text("a"), impl.Text("close"), impl.Text("late"), impl.Text("later")]
    assert box.dispatch(frames, 0, on_message, None) == (4, False, None)
    assert seen == ["a", "close"]


# Sender


class Flushes:
    def __init__(self, box: Any) -> None:
        self.box = box
        self.written: list[bytes] = []

    def __call__(self) -> None:
        self.written.extend(self.box.take())


class FakeLoop:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def call_soon_threadsafe(self, *args: Any) -> None:
        self.calls.append(args)


def make_sender(impl: ModuleType) -> tuple[Any, Any, Flushes, FakeLoop, list[Any]]:
    box = impl.Outbox()
    flush = Flushes(box)
    loop = FakeLoop()
    later: list[Any] = []
    sender = impl.Sender(
        box, flush, loop, lambda t: later.append(("text", t)), lambda b: later.append(("binary", b))
    )
    return sender, box, flush, loop, later


def test_send_flushes_at_once_outside_a_read(impl: ModuleType) -> None:
    sender, box, flush, _, _ = make_sender(impl)
    sender.send("hi")
    assert parse(impl, flush.written) == [(1, True, False, "hi")]
    sender.send_binary(b"\x01")
    assert parse(impl, flush.written)[-1] == (2, True, False, b"\x01")


def test_send_waits_for_the_end_of_a_read_until_the_early_flush_size(impl: ModuleType) -> None:
    sender, box, flush, _, _ = make_sender(impl)
    box.in_read = True
    sender.send("a")
    sender.send_binary(b"b")
    assert flush.written == []
    assert box.size == 6
    chunk = "x" * 60_000
    while box.size < impl.EARLY_FLUSH_SIZE - 60_010:
        sender.send(chunk)
    assert flush.written == []
    sender.send(chunk)  # passes the threshold: everything goes out
    assert flush.written and not box.pending
    frames = parse(impl, flush.written)
    assert frames[:2] == [(1, True, False, "a"), (2, True, False, b"b")]
    assert all(f[3] == chunk for f in frames[2:])


def test_send_checks_its_argument_type(impl: ModuleType) -> None:
    sender, *_ = make_sender(impl)
    with pytest.raises(TypeError, match=r"send\(\) takes a str, not bytes; use send_binary\(\) for bytes"):
        sender.send(b"x")
    with pytest.raises(TypeError, match=r"send_binary\(\) takes bytes, bytearray or memoryview, not str"):
        sender.send_binary("x")


def test_send_from_another_thread_is_handed_to_the_loop(impl: ModuleType) -> None:
    sender, box, flush, loop, _ = make_sender(impl)
    buf = bytearray(b"mutable")

    def other() -> None:
        sender.send("from a thread")
        sender.send_binary(buf)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(5)
    buf[0] = ord("X")  # the sender copied it before handing it over
    assert not box.pending and flush.written == []
    assert len(loop.calls) == 2
    (text_later, text), (binary_later, data) = loop.calls
    assert text == "from a thread" and data == b"mutable" and type(data) is bytes
    text_later(text)
    binary_later(data)


def test_a_subclass_keeps_its_own_slots(impl: ModuleType) -> None:
    class Handle(impl.Sender):  # type: ignore[name-defined,misc]
        __slots__ = ("name", "__weakref__")

    box = impl.Outbox()
    flush = Flushes(box)
    handle = Handle(box, flush, FakeLoop(), print, print)
    handle.name = "n"
    handle.send("x")
    assert handle.name == "n" and parse(impl, flush.written) == [(1, True, False, "x")]


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


# Receiver


class Keepalive:
    received = False


class FakeTransport:
    """Records writes; reports ``buffered`` as its write buffer size."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.buffered = 0

    @property
    def written(self) -> list[bytes]:
        out: list[bytes] = []
        for kind, arg in self.calls:
            out.extend([arg] if kind == "write" else arg)
        return out

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def writelines(self, buffers: list[bytes]) -> None:
        self.calls.append(("writelines", list(buffers)))

    def get_write_buffer_size(self) -> int:
        return self.buffered


class ReceiverRig:
    """A Receiver wired to recorders: what went the slow way, what was finished in Python,
    what it wrote and whether it called over_limit."""

    def __init__(self, impl: ModuleType, on_message: Any = None, max_buffer: int | None = None) -> None:
        self.impl = impl
        self.reader = impl.FrameReader(require_mask=True, messages=True, max_message_size=1000)
        self.box = impl.Outbox()
        self.slow: list[bytes] = []
        self.finished: list[tuple[Any, ...]] = []
        self.transport = FakeTransport()
        self.over_limit: list[bool] = []
        self.keepalive = Keepalive()
        self.seen: list[Any] = []
        self.receiver = impl.Receiver(
            self.reader,
            self.box,
            on_message or self.echo,
            "ws",
            self.slow.append,
            lambda *args: self.finished.append(args),
            self.transport,
            max_buffer,
            lambda: self.over_limit.append(True),
            self.keepalive,
        )

    def echo(self, ws: Any, msg: Any) -> None:
        self.seen.append(msg)
        assert self.box.in_read, "replies wait for the end of the read"
        if type(msg) is self.impl.Text:
            self.box.text(msg.data)
        else:
            self.box.binary(msg.data)


def masked(impl: ModuleType, opcode: int, payload: bytes, fin: bool = True) -> bytes:
    return impl.encode_frame(opcode, payload, fin, False, b"\x0a\x0b\x0c\x0d")  # type: ignore[no-any-return]


def test_receiver_handles_a_read_of_whole_messages_and_writes_once(impl: ModuleType) -> None:
    rig = ReceiverRig(impl)
    rig.receiver.feed(masked(impl, 1, b"one") + masked(impl, 2, b"two") + masked(impl, 1, "é".encode()))
    assert rig.seen == [impl.Text("one"), impl.Binary(b"two"), impl.Text("é")]
    assert rig.keepalive.received is True and not rig.box.in_read
    assert len(rig.transport.calls) == 1  # one write (or writelines) for the whole read
    expected = [(1, True, False, "one"), (2, True, False, b"two"), (1, True, False, "é")]
    assert parse(impl, rig.transport.written) == expected
    assert rig.slow == [] and rig.finished == [] and rig.over_limit == [] and not rig.box.pending


def test_receiver_writes_big_payloads_as_their_own_buffers(impl: ModuleType) -> None:
    big = bytes(range(256)) * 400  # 100 KiB

    def on_message(ws: Any, msg: Any) -> None:
        rig.box.text("small")
        rig.box.binary(big)

    rig = ReceiverRig(impl, on_message=on_message)
    rig.receiver.feed(masked(impl, 1, b"go"))
    ((kind, buffers),) = rig.transport.calls
    assert kind == "writelines" and any(buf is big for buf in buffers)
    assert [f[3] for f in parse(impl, buffers)] == ["small", big]


@pytest.mark.parametrize("buffered, called", [(100, False), (101, True)])
def test_receiver_calls_over_limit_past_max_buffer(impl: ModuleType, buffered: int, called: bool) -> None:
    rig = ReceiverRig(impl, max_buffer=100)
    rig.transport.buffered = buffered
    rig.receiver.feed(masked(impl, 1, b"x"))
    assert rig.over_limit == ([True] if called else [])


def test_receiver_does_not_write_when_nothing_was_sent(impl: ModuleType) -> None:
    rig = ReceiverRig(impl, on_message=lambda ws, msg: None)
    rig.receiver.feed(masked(impl, 1, b"quiet"))
    rig.receiver.feed(masked(impl, 1, b"par")[:4])  # half a frame: nothing to dispatch
    assert rig.transport.calls == [] and rig.finished == [] and rig.slow == []


def test_receiver_hands_a_control_frame_and_what_follows_to_finish(impl: ModuleType) -> None:
    rig = ReceiverRig(impl)
    rig.receiver.feed(masked(impl, 1, b"a") + masked(impl, 9, b"ping") + masked(impl, 1, b"b"))
    assert rig.seen == [impl.Text("a")]
    ((frames, pos, raised, value, error),) = rig.finished
    assert frames == [impl.Text("a"), (9, True, False, b"ping"), impl.Text("b")]
    assert (pos, raised, value, error) == (1, False, None, None)
    assert rig.transport.calls == []  # finishing the read (and writing) is Python's job then


def test_receiver_hands_a_violation_to_finish_after_the_messages_before_it(impl: ModuleType) -> None:
    rig = ReceiverRig(impl)
    rig.receiver.feed(masked(impl, 1, b"ok") + masked(impl, 1, b"x" * 1001))
    ((frames, pos, raised, value, error),) = rig.finished
    assert frames == [impl.Text("ok")] and pos == 1 and (raised, value) == (False, None)
    assert type(error).__name__ == "MessageTooBig" and error.close_code == 1009
    rig.receiver.feed(masked(impl, 1, b"later"))  # the reader failed: the fast path is off
    assert rig.slow == [masked(impl, 1, b"later")]


def test_receiver_hands_a_raising_callback_to_finish(impl: ModuleType) -> None:
    boom = RuntimeError("boom")

    def on_message(ws: Any, msg: Any) -> None:
        if msg.data == "boom":
            raise boom

    rig = ReceiverRig(impl, on_message=on_message)
    rig.receiver.feed(masked(impl, 1, b"a") + masked(impl, 1, b"boom") + masked(impl, 1, b"c"))
    ((frames, pos, raised, value, error),) = rig.finished
    assert (pos, raised, value, error) == (2, True, boom, None) and len(frames) == 3


def test_receiver_goes_the_slow_way_when_disabled_or_closed(impl: ModuleType) -> None:
    rig = ReceiverRig(impl)
    rig.receiver.enabled = False
    rig.receiver.feed(b"first")
    rig.receiver.enabled = True
    rig.box.open = False
    rig.receiver.feed(b"second")
    assert rig.slow == [b"first", b"second"] and rig.seen == [] and rig.keepalive.received is True
