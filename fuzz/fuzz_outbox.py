"""Atheris target: the compiled outbox's shared broadcast frames (``Outbox.share``) against frames
queued one by one.

Four receivers' outboxes get a fuzzer-chosen sequence of broadcasts (to any subset, in either
order, a receiver sometimes twice), sends of their own (text, binary, raw frames, payloads big
enough to be buffers of their own) and flushes (``take_one``, else ``take``). Beside each one, a
reference outbox of the pure-Python twin gets the same frames with ``raw``. Every flush of a
receiver must hand over immutable bytes, as many as its ``size`` said, and in the end the bytes
each receiver was handed must be the reference's, byte for byte.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from zzz import _purepy

from zzz import _speedups

RECEIVERS = 4


def _drain(box: _speedups.Outbox) -> bytes:
    size = box.size
    one = box.take_one()
    buffers = [one] if one is not None else box.take()
    assert all(type(b) is bytes for b in buffers), buffers
    assert sum(map(len, buffers)) == size and box.size == 0, (size, buffers)
    return b"".join(buffers)


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    boxes = [_speedups.Outbox() for _ in range(RECEIVERS)]
    references = [_purepy.Outbox() for _ in range(RECEIVERS)]
    got = [b""] * RECEIVERS
    want = [b""] * RECEIVERS
    for step in range(fdp.ConsumeIntInRange(0, 60)):
        kind = fdp.ConsumeIntInRange(0, 5)
        targets = [k for k in range(RECEIVERS) if fdp.ConsumeBool()]
        if fdp.ConsumeBool():
            targets.reverse()
        if kind <= 1:  # a broadcast (more often than the rest); kind 1 past the split size
            size = fdp.ConsumeIntInRange(0, 200) + (70_000 if kind == 1 and fdp.ConsumeBool() else 0)
            frame = _speedups.encode_frame(1, b"%d:" % step + b"b" * size)
            fresh = None
            for k in targets + targets[: fdp.ConsumeIntInRange(0, 1)]:
                fresh = boxes[k].share(frame, fresh)
                references[k].raw(frame)
        elif kind == 2:
            for k in targets:
                boxes[k].text(f"t{step}")
                references[k].text(f"t{step}")
        elif kind == 3:
            payload = bytes([step % 256]) * fdp.ConsumeIntInRange(0, 80_000)
            for k in targets:
                boxes[k].binary(payload)
                references[k].binary(payload)
        elif kind == 4:
            frame = _speedups.encode_frame(2, b"r%d" % step)
            for k in targets:
                boxes[k].raw(frame)
                references[k].raw(frame)
        else:
            for k in targets:
                got[k] += _drain(boxes[k])
                want[k] += b"".join(references[k].take())
    for k in range(RECEIVERS):
        got[k] += _drain(boxes[k])
        want[k] += b"".join(references[k].take())
        assert got[k] == want[k], (k, len(got[k]), len(want[k]))


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
