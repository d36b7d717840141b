"""The per-read fast path: ``ReadLoop`` (a read, its callbacks, one write) and ``SendHandle`` (the
handle's ``send`` and ``send_binary``), on every build: the text over the twin, the compiled loop
over the compiled core, and the text over the compiled core (the fallback of a partial build).

Transport, loop and keepalive are recorders; what goes out is parsed back with a reader.
"""

from __future__ import annotations

import inspect
import threading
from typing import Any

import pytest

from tests.driver.conftest import Build
from zzz.protocol import ReadStop


def parse(build: Build, buffers: list[bytes]) -> list[tuple[int, bool, bool, Any]]:
    """The frames in what was written (server frames: unmasked)."""
    for buf in buffers:
        assert type(buf) is bytes, "an outbox hands over immutable bytes only"
    return build.core.FrameReader(require_mask=False).feed(b"".join(buffers))  # type: ignore[no-any-return]


def masked(build: Build, opcode: int, payload: bytes, fin: bool = True) -> bytes:
    return build.core.encode_frame(opcode, payload, fin, False, b"\x0a\x0b\x0c\x0d")  # type: ignore[no-any-return]


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


class Rig:
    """A ReadLoop wired to recorders: what went the slow way, what was finished by the driver,
    what it wrote and whether it called over_limit."""

    def __init__(self, build: Build, on_message: Any = None, max_buffer: int | None = None) -> None:
        self.build = build
        self.reader = build.core.FrameReader(require_mask=True, messages=True, max_message_size=1000)
        self.box = build.core.Outbox()
        self.slow: list[bytes] = []
        self.finished: list[ReadStop] = []
        self.transport = FakeTransport()
        self.over_limit: list[bool] = []
        self.keepalive = Keepalive()
        self.seen: list[Any] = []
        self.counters = build.loop.Counters()
        self.writer = build.loop.Writer(
            self.box, self.transport, max_buffer, lambda: self.over_limit.append(True), self.counters
        )
        self.loop = build.loop.ReadLoop(
            self.reader,
            self.writer,
            on_message or self.echo,
            "ws",
            self.slow.append,
            self.finished.append,
            self.keepalive,
        )

    def echo(self, ws: Any, msg: Any) -> None:
        self.seen.append(msg)
        assert self.box.in_read, "replies wait for the end of the read"
        if type(msg) is self.build.core.Text:
            self.box.text(msg.data)
        else:
            self.box.binary(msg.data)


# ReadLoop.feed


def test_a_read_of_whole_messages_is_handled_and_written_once(build: Build) -> None:
    rig = Rig(build)
    rig.loop.feed(masked(build, 1, b"one") + masked(build, 2, b"two") + masked(build, 1, "é".encode()))
    core = build.core
    assert rig.seen == [core.Text("one"), core.Binary(b"two"), core.Text("é")]
    assert rig.keepalive.received is True and not rig.box.in_read
    assert len(rig.transport.calls) == 1  # one write (or writelines) for the whole read
    expected = [(1, True, False, "one"), (2, True, False, b"two"), (1, True, False, "é")]
    assert parse(build, rig.transport.written) == expected
    assert rig.slow == [] and rig.finished == [] and rig.over_limit == [] and not rig.box.pending


def test_big_payloads_are_written_as_their_own_buffers(build: Build) -> None:
    big = bytes(range(256)) * 400  # 100 KiB

    def on_message(ws: Any, msg: Any) -> None:
        rig.box.text("small")
        rig.box.binary(big)

    rig = Rig(build, on_message=on_message)
    rig.loop.feed(masked(build, 1, b"go"))
    ((kind, buffers),) = rig.transport.calls
    assert kind == "writelines" and any(buf is big for buf in buffers)
    assert [f[3] for f in parse(build, buffers)] == ["small", big]


@pytest.mark.parametrize("buffered, called", [(100, False), (101, True)])
def test_over_limit_is_called_past_max_buffer(build: Build, buffered: int, called: bool) -> None:
    rig = Rig(build, max_buffer=100)
    rig.transport.buffered = buffered
    rig.loop.feed(masked(build, 1, b"x"))
    assert rig.over_limit == ([True] if called else [])


def test_nothing_is_written_when_nothing_was_sent(build: Build) -> None:
    rig = Rig(build, on_message=lambda ws, msg: None)
    rig.loop.feed(masked(build, 1, b"quiet"))
    rig.loop.feed(masked(build, 1, b"par")[:4])  # half a frame: nothing to deliver
    assert rig.transport.calls == [] and rig.finished == [] and rig.slow == []


def test_a_control_frame_and_what_follows_go_to_finish(build: Build) -> None:
    rig = Rig(build)
    rig.loop.feed(masked(build, 1, b"a") + masked(build, 9, b"ping") + masked(build, 1, b"b"))
    core = build.core
    assert rig.seen == [core.Text("a")]
    (stop,) = rig.finished
    assert type(stop) is ReadStop
    assert stop.frames == [core.Text("a"), (9, True, False, b"ping"), core.Text("b")]
    assert (stop.pos, stop.raised, stop.value, stop.error) == (1, False, None, None)
    assert rig.transport.calls == []  # finishing the read (and writing) is the driver's job then


def test_a_violation_goes_to_finish_after_the_messages_before_it(build: Build) -> None:
    rig = Rig(build)
    rig.loop.feed(masked(build, 1, b"ok") + masked(build, 1, b"x" * 1001))
    (stop,) = rig.finished
    assert (
        stop.frames == [build.core.Text("ok")]
        and stop.pos == 1
        and (stop.raised, stop.value) == (False, None)
    )
    assert type(stop.error).__name__ == "MessageTooBig" and stop.error.close_code == 1009
    rig.loop.feed(masked(build, 1, b"later"))  # the reader failed: the fast path is off
    assert rig.slow == [masked(build, 1, b"later")]


def test_a_raising_callback_goes_to_finish(build: Build) -> None:
    boom = RuntimeError("boom")

    def on_message(ws: Any, msg: Any) -> None:
        if msg.data == "boom":
            raise boom

    rig = Rig(build, on_message=on_message)
    rig.loop.feed(masked(build, 1, b"a") + masked(build, 1, b"boom") + masked(build, 1, b"c"))
    (stop,) = rig.finished
    assert (stop.pos, stop.raised, stop.value, stop.error) == (2, True, boom, None) and len(stop.frames) == 3


def test_a_callback_result_goes_to_finish_even_on_the_last_message(build: Build) -> None:
    rig = Rig(build, on_message=lambda ws, msg: "a result")
    rig.loop.feed(masked(build, 1, b"only"))
    (stop,) = rig.finished
    assert (stop.pos, stop.raised, stop.value) == (1, False, "a result")


def test_the_slow_way_when_disabled_or_closed(build: Build) -> None:
    rig = Rig(build)
    rig.loop.enabled = False
    rig.loop.feed(b"first")
    rig.loop.enabled = True
    rig.box.open = False
    rig.loop.feed(b"second")
    assert rig.slow == [b"first", b"second"] and rig.seen == [] and rig.keepalive.received is True


def test_base_exceptions_get_through(build: Build) -> None:
    def on_message(ws: Any, msg: Any) -> None:
        raise KeyboardInterrupt

    rig = Rig(build, on_message=on_message)
    with pytest.raises(KeyboardInterrupt):
        rig.loop.feed(masked(build, 1, b"a"))
    assert not rig.box.in_read


def test_it_needs_a_reader_and_a_writer(build: Build) -> None:
    writer = build.loop.Writer(build.core.Outbox(), FakeTransport(), None, print)
    reader = build.core.FrameReader(messages=True)
    with pytest.raises(TypeError):
        build.loop.ReadLoop(None, writer, print, None, print, print, Keepalive())
    with pytest.raises(TypeError):
        build.loop.ReadLoop(reader, build.core.Outbox(), print, None, print, print, Keepalive())


# Counting (zzz.metrics.Counters)


def counts(rig: Rig) -> tuple[int, int, int, int]:
    c = rig.counters
    return (c.bytes_in, c.messages_in, c.bytes_out, c.messages_out)


def test_a_read_counts_its_bytes_messages_and_write(build: Build) -> None:
    rig = Rig(build)
    data = masked(build, 1, b"one") + masked(build, 2, b"two")
    rig.loop.feed(data)
    written = sum(len(b) for b in rig.transport.written)
    assert counts(rig) == (len(data), 2, written, 2) == (18, 2, 10, 2)
    rig.loop.feed(masked(build, 1, b"x")[:3])  # a partial frame: bytes, no message, no write
    assert counts(rig) == (21, 2, 10, 2)
    assert not rig.box.messages and not rig.box.size  # take() reset the outbox's counts


def test_what_goes_back_to_the_driver_is_counted_up_to_where_delivery_stopped(build: Build) -> None:
    core = build.core
    rig = Rig(build)
    data = masked(build, 1, b"a") + masked(build, 9, b"") + masked(build, 1, b"b")
    rig.loop.feed(data)
    (stop,) = rig.finished
    # The loop delivered one message; the rest is the driver's to count, the reply its to write.
    assert counts(rig) == (len(data), 1, 0, 0) and rig.box.messages == 1
    rig.loop.deliver(ReadStop(stop.frames, 2, None, False, None))
    assert rig.counters.messages_in == 2
    rig.box.open = False
    rig.loop.deliver(ReadStop([core.Text("late")], 0, None, False, None))  # skipped: not counted
    assert rig.counters.messages_in == 2
    rig.box.open = True
    rig.loop.enabled = False
    rig.loop.feed(masked(build, 1, b"c"))  # the slow way: the driver's read counts it
    assert rig.slow and counts(rig)[:2] == (len(data), 2)


def test_a_raising_callback_counts_the_messages_delivered(build: Build) -> None:
    def on_message(ws: Any, msg: Any) -> None:
        if msg.data == "boom":
            raise ValueError(msg.data)

    rig = Rig(build, on_message=on_message)
    rig.loop.feed(masked(build, 1, b"a") + masked(build, 1, b"boom") + masked(build, 1, b"c"))
    assert rig.counters.messages_in == 2  # "a" and "boom"; "c" waits for the driver


def test_counters_default_to_a_private_one(build: Build) -> None:
    rig = Rig(build)
    writer = build.loop.Writer(rig.box, rig.transport, None, print)
    loop = build.loop.ReadLoop(rig.reader, writer, rig.echo, "ws", print, print, Keepalive())
    loop.feed(masked(build, 1, b"a"))
    assert rig.transport.calls and counts(rig) == (0, 0, 0, 0)


# ReadLoop.deliver


def start(frames: list[Any]) -> ReadStop:
    return ReadStop(frames, 0, None, False, None)


def test_deliver_calls_back_for_each_message_up_to_a_frame_tuple(build: Build) -> None:
    seen: list[Any] = []
    rig = Rig(build, on_message=lambda ws, msg: seen.append((ws, msg)))
    core = build.core
    frames = [core.Text("a"), core.Binary(b"b"), (9, True, False, b""), core.Text("c")]
    stop = rig.loop.deliver(start(frames))
    assert stop == ReadStop(frames, 2, None, False, None) and stop.frames is frames
    assert seen == [("ws", core.Text("a")), ("ws", core.Binary(b"b"))]
    assert rig.loop.deliver(ReadStop(frames, 3, None, False, None)).pos == 4
    assert seen[-1] == ("ws", core.Text("c"))
    assert rig.loop.deliver(ReadStop(frames, 4, None, False, None)).pos == 4


def test_deliver_stops_at_an_exception_and_at_a_result_and_keeps_the_error(build: Build) -> None:
    core = build.core
    frames = [core.Text("a"), core.Text("boom"), core.Text("c"), core.Text("d")]
    error = ValueError("boom")

    def on_message(ws: Any, msg: Any) -> Any:
        if msg.data == "boom":
            raise error
        if msg.data == "c":
            return "a result"
        return None

    rig = Rig(build, on_message=on_message)
    violation = RuntimeError("stands for the reader's error")
    stop = rig.loop.deliver(ReadStop(frames, 0, violation, False, None))  # type: ignore[arg-type]
    assert stop == ReadStop(frames, 2, violation, True, error)  # type: ignore[arg-type]
    stop = rig.loop.deliver(stop)
    assert stop == ReadStop(frames, 3, violation, False, "a result")  # type: ignore[arg-type]
    assert rig.loop.deliver(stop) == ReadStop(frames, 4, violation, False, None)  # type: ignore[arg-type]


def test_deliver_skips_messages_once_the_outbox_is_closed(build: Build) -> None:
    seen: list[str] = []

    def on_message(ws: Any, msg: Any) -> None:
        seen.append(msg.data)
        if msg.data == "close":
            rig.box.open = False

    rig = Rig(build, on_message=on_message)
    core = build.core
    frames = [core.Text("a"), core.Text("close"), core.Text("late"), core.Text("later")]
    assert rig.loop.deliver(start(frames)).pos == 4
    assert seen == ["a", "close"]


# SendHandle


class FakeLoop:
    def __init__(self, closed: bool = False) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.closed = closed

    def call_soon_threadsafe(self, *args: Any) -> None:
        if self.closed:
            raise RuntimeError("Event loop is closed")
        self.calls.append(args)

    def is_closed(self) -> bool:
        return self.closed


def make_handle(build: Build, loop: FakeLoop | None = None) -> tuple[Any, Any, FakeTransport, FakeLoop]:
    box = build.core.Outbox()
    transport = FakeTransport()
    loop = loop or FakeLoop()
    handle = build.loop.SendHandle(build.loop.Writer(box, transport, None, print), loop, print, print)
    return handle, box, transport, loop


def test_send_flushes_at_once_outside_a_read(build: Build) -> None:
    handle, _, flush, _ = make_handle(build)
    handle.send("hi")
    assert parse(build, flush.written) == [(1, True, False, "hi")]
    handle.send_binary(b"\x01")
    assert parse(build, flush.written)[-1] == (2, True, False, b"\x01")


def test_send_waits_for_the_end_of_a_read_until_the_early_flush_size(build: Build) -> None:
    handle, box, flush, _ = make_handle(build)
    box.in_read = True
    handle.send("a")
    handle.send_binary(b"b")
    assert flush.written == []
    assert box.size == 6
    chunk = "x" * 60_000
    while box.size < build.loop.EARLY_FLUSH_SIZE - 60_010:
        handle.send(chunk)
    assert flush.written == []
    handle.send(chunk)  # passes the threshold: everything goes out
    assert flush.written and not box.pending
    frames = parse(build, flush.written)
    assert frames[:2] == [(1, True, False, "a"), (2, True, False, b"b")]
    assert all(f[3] == chunk for f in frames[2:])


def test_send_checks_its_argument_type(build: Build) -> None:
    handle, *_ = make_handle(build)
    with pytest.raises(TypeError, match=r"send\(\) takes a str, not bytes; use send_binary\(\) for bytes"):
        handle.send(b"x")
    with pytest.raises(TypeError, match=r"send_binary\(\) takes bytes, bytearray or memoryview, not str"):
        handle.send_binary("x")


def test_send_from_another_thread_is_handed_to_the_loop(build: Build) -> None:
    box = build.core.Outbox()
    flush = FakeTransport()
    loop = FakeLoop()
    later: list[Any] = []
    handle = build.loop.SendHandle(
        build.loop.Writer(box, flush, None, print),
        loop,
        lambda t: later.append(("text", t)),
        lambda b: later.append(("binary", b)),
    )
    buf = bytearray(b"mutable")

    def other() -> None:
        handle.send("from a thread")
        handle.send_binary(buf)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(5)
    buf[0] = ord("X")  # the handle copied it before handing it over
    assert not box.pending and flush.written == []
    assert len(loop.calls) == 2
    (text_later, text), (binary_later, data) = loop.calls
    assert text == "from a thread" and data == b"mutable" and type(data) is bytes
    text_later(text)
    binary_later(data)
    assert later == [("text", "from a thread"), ("binary", b"mutable")]


def test_send_from_another_thread_after_the_loop_closed_does_nothing(build: Build) -> None:
    handle, box, _, loop = make_handle(build, FakeLoop(closed=True))
    errors: list[BaseException] = []

    def other() -> None:
        try:
            handle.send("late")
            handle.send_binary(b"late")
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(5)
    assert errors == [] and loop.calls == [] and not box.pending


def test_a_subclass_keeps_its_own_slots(build: Build) -> None:
    class Handle(build.loop.SendHandle):  # type: ignore[name-defined,misc]
        __slots__ = ("__weakref__", "name")

    flush = FakeTransport()
    handle = Handle(build.loop.Writer(build.core.Outbox(), flush, None, print), FakeLoop(), print, print)
    handle.name = "n"
    handle.send("x")
    assert handle.name == "n" and parse(build, flush.written) == [(1, True, False, "x")]
    assert not hasattr(handle, "__dict__")


def test_send_has_a_signature(build: Build) -> None:
    assert list(inspect.signature(build.loop.SendHandle.send).parameters) == ["self", "text"]
    assert list(inspect.signature(build.loop.SendHandle.send_binary).parameters) == ["self", "data"]


def test_it_needs_a_writer(build: Build) -> None:
    with pytest.raises(TypeError, match="SendHandle needs a connection's Writer, not Outbox"):
        build.loop.SendHandle(build.core.Outbox(), FakeLoop(), print, print)


# Writer: the connection's one flush


def make_writer(
    build: Build, max_buffer: int | None = None
) -> tuple[Any, Any, FakeTransport, list[bool], Any]:
    box = build.core.Outbox()
    transport = FakeTransport()
    over: list[bool] = []
    counters = build.loop.Counters()
    writer = build.loop.Writer(box, transport, max_buffer, lambda: over.append(True), counters)
    return writer, box, transport, over, counters


def test_a_flush_is_one_call_and_counts_what_it_wrote(build: Build) -> None:
    writer, box, transport, over, counters = make_writer(build)
    writer.flush()
    assert transport.calls == []  # nothing queued: no write at all
    box.text("a")
    writer.flush()
    box.text("b")
    box.binary(b"cc")
    box.raw(b"\x89\x00")  # a ping: bytes, not a message
    writer.flush()
    assert len(transport.calls) == 2  # one call per flush (write or writelines: the core decides)
    assert parse(build, transport.written) == [
        (1, True, False, "a"),
        (1, True, False, "b"),
        (2, True, False, b"cc"),
        (9, True, False, b""),
    ]
    assert (counters.bytes_out, counters.messages_out) == (sum(map(len, transport.written)), 3) == (12, 3)
    assert not box.pending and over == []


def test_a_flush_past_max_buffer_calls_over_limit(build: Build) -> None:
    writer, box, transport, over, _ = make_writer(build, max_buffer=10)
    transport.buffered = 10
    box.text("x")
    writer.flush()
    assert over == []  # at the limit is not over it
    transport.buffered = 11
    box.text("y")
    writer.flush()
    assert over == [True] and len(transport.calls) == 2


def test_buffered_is_the_transport_and_the_outbox(build: Build) -> None:
    writer, box, transport, _, _ = make_writer(build)
    transport.buffered = 100
    box.text("abc")
    assert writer.buffered() == 105 and writer.attached


def test_a_detached_writer_discards_and_counts_nothing(build: Build) -> None:
    writer, box, transport, over, counters = make_writer(build, max_buffer=0)
    box.text("queued before the loss")
    writer.detach()
    assert not writer.attached and writer.buffered() == 0
    writer.flush()
    box.text("after")
    writer.flush()
    assert transport.calls == [] and not box.pending and over == []
    assert (counters.bytes_out, counters.messages_out) == (0, 0)
    assert not build.loop.Writer(box, None, None, print).attached


def test_a_writer_needs_an_outbox(build: Build) -> None:
    with pytest.raises(TypeError, match="Writer needs a connection's outbox"):
        build.loop.Writer(None, FakeTransport(), None, print)


class Overriding(FakeTransport):
    """A subclass's own write is the one the writer calls."""

    def write(self, data: bytes) -> None:
        self.calls.append(("own write", data))


def test_a_writer_calls_what_the_transport_has_now_its_class_or_its_own(build: Build) -> None:
    # The writer keeps the functions of the transport's class (one for all connections), so it
    # must still call a subclass's override, and an attribute set on the transport itself.
    box = build.core.Outbox()
    sub = Overriding()
    writer = build.loop.Writer(box, sub, 5, print)
    box.text("a")
    writer.flush()
    assert [kind for kind, _ in sub.calls] == ["own write"]

    instance = FakeTransport()
    instance.write = lambda data: instance.calls.append(("instance write", data))  # type: ignore[method-assign]
    sizes: list[int] = []
    instance.get_write_buffer_size = lambda: sizes.append(7) or 7  # type: ignore[method-assign]
    over: list[bool] = []
    writer = build.loop.Writer(box, instance, 5, lambda: over.append(True))
    box.text("b")
    writer.flush()
    assert [kind for kind, _ in instance.calls] == ["instance write"]
    assert sizes == [7] and over == [True]  # its own get_write_buffer_size said 7 > 5
    box.text("c")
    assert writer.buffered() == 7 + box.size == 10  # a 3-byte frame queued
    box.take()

    other = FakeTransport()
    writer.attach(other)  # a new transport: its functions, not the first one's
    box.text("d")
    writer.flush()
    assert [kind for kind, _ in other.calls] == ["write"] and len(instance.calls) == 1
