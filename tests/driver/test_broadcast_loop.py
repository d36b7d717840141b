"""``broadcast``'s loop on every build of ``_readloop`` (the text over the twin, the compiled loop,
the text over the compiled core), with handles over fake transports and a fake loop: what is queued,
counted and skipped, the one ``call_soon`` per turn, a receiver in a read, the early flush, the
hand-off to another thread's loop and a closed loop.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.driver.conftest import Build
from tests.driver.test_readloop import parse
from tests.transports import CountingTransport


class Loop:
    """A loop that only records what is scheduled on it."""

    def __init__(self, closed: bool = False) -> None:
        self.soon: list[tuple[Any, ...]] = []
        self.threadsafe: list[tuple[Any, ...]] = []
        self.closed = closed

    def call_soon(self, *args: Any) -> None:
        if self.closed:
            raise RuntimeError("Event loop is closed")
        self.soon.append(args)

    def call_soon_threadsafe(self, *args: Any) -> None:
        if self.closed:
            raise RuntimeError("Event loop is closed")
        self.threadsafe.append(args)

    def is_closed(self) -> bool:
        return self.closed

    def run_soon(self) -> None:
        calls, self.soon = self.soon, []
        for fn, *args in calls:
            fn(*args)


class Receiver:
    """A handle of the build over its own outbox and writer; ``flush.written`` is what went out."""

    def __init__(self, build: Build, loop: Loop, buffered: int = 0) -> None:
        self.box = build.core.Outbox()
        self.flush = CountingTransport(buffered=buffered)
        self.writer = build.loop.Writer(self.box, self.flush, None, print)
        self.handle = build.loop.SendHandle(self.writer, loop, print, print)

    def frames(self, build: Build) -> list[Any]:
        return [f[3] for f in parse(build, self.flush.written)]


def test_many_broadcasts_in_a_turn_are_one_call_soon_and_one_flush_each(build: Build) -> None:
    loop = Loop()
    rs = [Receiver(build, loop) for _ in range(3)]
    handles = [r.handle for r in rs]
    for i in range(10):
        assert build.loop.broadcast(handles, f"m{i}") == 3
    assert len(loop.soon) == 1 and all(r.flush.written == [] for r in rs)
    loop.run_soon()
    for r in rs:
        assert len(r.flush.writes) == 1 and r.frames(build) == [f"m{i}" for i in range(10)]
    build.loop.broadcast(handles, b"next turn")
    assert len(loop.soon) == 1  # a new turn, a new call_soon
    loop.run_soon()
    assert rs[0].frames(build)[-1] == b"next turn"


def test_a_burst_is_one_buffer_written_to_every_receiver(build: Build) -> None:
    """The compiled outbox shares a turn's broadcast frames between their receivers: one joined
    buffer, the same object in every receiver's write. Receivers that got other things between
    the broadcasts, or missed one, still get exactly their own frames in order."""
    loop = Loop()
    rs = [Receiver(build, loop) for _ in range(5)]
    everyone = [r.handle for r in rs[:3]]
    for i in range(10):
        assert build.loop.broadcast(everyone + ([rs[3].handle] if i % 2 else []), f"m{i}") == 3 + i % 2
        if i == 4:
            rs[4].handle.send("own")  # a send of its own, outside any read: written at once
            build.loop.broadcast([rs[2].handle, rs[4].handle], "two")
    loop.run_soon()
    writes = [r.flush.written[-1] for r in rs[:2]]
    if build.name == "cython":
        assert writes[0] is writes[1]
    for r in rs[:2]:
        assert len(r.flush.writes) == 1 and r.frames(build) == [f"m{i}" for i in range(10)]
    assert rs[2].frames(build) == [*(f"m{i}" for i in range(5)), "two", *(f"m{i}" for i in range(5, 10))]
    assert rs[3].frames(build) == [f"m{i}" for i in range(1, 10, 2)]
    assert rs[4].frames(build) == ["own", "two"]


def test_closed_and_gone_receivers_are_not_counted(build: Build) -> None:
    loop = Loop()
    open_, closing, gone = Receiver(build, loop), Receiver(build, loop), Receiver(build, loop)
    closing.box.open = False  # the Connection is closing or closed
    gone.writer.detach()  # connection_lost came
    assert build.loop.broadcast([open_.handle, closing.handle, gone.handle], "x") == 1
    loop.run_soon()
    assert open_.frames(build) == ["x"] and closing.flush.written == gone.flush.written == []


def test_skip_reads_the_transport_and_the_outbox(build: Build) -> None:
    loop = Loop()
    fast, slow = Receiver(build, loop), Receiver(build, loop, buffered=100)
    handles = [fast.handle, slow.handle]
    assert build.loop.broadcast(handles, "a", skip_if_buffered_over=100) == 2  # not over: queued
    assert build.loop.broadcast(handles, "b", skip_if_buffered_over=100) == 1  # slow: 100 + 3 queued
    assert build.loop.broadcast(handles, "c", skip_if_buffered_over=2) == 0  # fast has 6 queued now
    assert build.loop.broadcast(handles, "d") == 2
    loop.run_soon()
    assert fast.frames(build) == ["a", "b", "d"] and slow.frames(build) == ["a", "d"]


@pytest.mark.parametrize("bad", [-1, -(10**30)])
def test_a_negative_threshold_is_a_value_error(build: Build, bad: int) -> None:
    r = Receiver(build, Loop())
    with pytest.raises(ValueError, match="skip_if_buffered_over must be >= 0"):
        build.loop.broadcast([r.handle], "x", skip_if_buffered_over=bad)
    assert not r.box.pending


@pytest.mark.parametrize("bad", [1.0, "1", True, None.__class__])
def test_a_threshold_that_is_not_an_int_is_a_type_error(build: Build, bad: Any) -> None:
    r = Receiver(build, Loop())
    with pytest.raises(TypeError, match="skip_if_buffered_over must be an int or None"):
        build.loop.broadcast([r.handle], "x", skip_if_buffered_over=bad)


def test_a_receiver_in_a_read_sends_with_the_reads_write(build: Build) -> None:
    loop = Loop()
    reading, idle = Receiver(build, loop), Receiver(build, loop)
    reading.box.in_read = True
    assert build.loop.broadcast([reading.handle, idle.handle], "x") == 2
    loop.run_soon()
    assert idle.frames(build) == ["x"]
    assert reading.flush.written == [] and reading.box.size == 3  # the read's end writes it
    assert build.loop.broadcast([reading.handle], "y") == 1
    assert loop.soon == []  # nothing to schedule for a receiver in a read


def test_early_flush_at_the_threshold(build: Build) -> None:
    loop = Loop()
    r = Receiver(build, loop)
    chunk = b"z" * 100_000
    for _ in range(2):
        build.loop.broadcast([r.handle], chunk)
    assert r.flush.written == []
    build.loop.broadcast([r.handle], chunk)  # 300 kB queued: past EARLY_FLUSH_SIZE
    assert len(r.flush.writes) == 1 and not r.box.pending
    build.loop.broadcast([r.handle], chunk)
    loop.run_soon()
    assert len(r.flush.writes) == 2 and r.frames(build) == [chunk] * 4


def test_one_frame_object_for_the_receivers_that_do_not_compress(build: Build) -> None:
    loop = Loop()
    rs = [Receiver(build, loop) for _ in range(3)]
    big = b"q" * (1 << 20)  # past the outbox's split size: queued as it is, not copied
    build.loop.broadcast([r.handle for r in rs], big)
    loop.run_soon()
    buffers = [r.flush.written[-1] for r in rs]
    assert buffers[0] is buffers[1] is buffers[2]
    assert all(r.frames(build) == [big] for r in rs)


def test_other_threads_hand_the_receivers_to_their_loop_in_one_call(build: Build) -> None:
    loop = Loop()
    rs = [Receiver(build, loop) for _ in range(3)]
    rs[2].box.open = False
    handles = [r.handle for r in rs]
    counts: list[Any] = []
    buf = bytearray(b"mutable")
    thread = threading.Thread(target=lambda: counts.append(build.loop.broadcast(handles, buf)))
    thread.start()
    thread.join(10)
    buf[0] = ord("X")  # copied before the hand-off
    assert counts == [2] and loop.soon == [] and all(not r.box.pending for r in rs)
    assert len(loop.threadsafe) == 1
    fn, *args = loop.threadsafe[0]
    fn(*args)  # what the loop does with it, on its own thread
    loop.run_soon()
    assert rs[0].frames(build) == rs[1].frames(build) == [b"mutable"]


def test_other_threads_after_the_loop_closed_send_and_count_nothing(build: Build) -> None:
    loop = Loop(closed=True)
    r = Receiver(build, loop)
    result: list[Any] = []

    def work() -> None:
        try:
            result.append(build.loop.broadcast([r.handle], "late"))
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            result.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)
    assert result == [0] and not r.box.pending


def test_a_turn_left_by_a_loop_that_stopped_does_not_hold_up_the_next(build: Build) -> None:
    first, second = Loop(), Loop()
    old = Receiver(build, first)
    build.loop.broadcast([old.handle], "never flushed")  # first never runs its turn
    new = Receiver(build, second)
    assert build.loop.broadcast([new.handle], "x") == 1
    assert len(second.soon) == 1
    second.run_soon()
    assert new.frames(build) == ["x"]


def test_a_closed_loop_on_its_own_thread_raises_nothing(build: Build) -> None:
    loop = Loop(closed=True)
    r = Receiver(build, loop)
    assert build.loop.broadcast([r.handle], "x") == 1  # queued; its loop will never write it
