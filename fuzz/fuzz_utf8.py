"""Atheris target: UTF-8 validation of both cores against Python's own decoder.

``validate_utf8`` must agree between the cores and say -1 exactly when the bytes decode; the
incremental ``Utf8Validator`` fed the same chunks must agree between the cores, fail exactly when
the whole would not decode (a truncated end is "not complete", not a failure), and point at the
same byte.
"""

from __future__ import annotations

import sys

import _util
import atheris

with atheris.instrument_imports():
    from zzz import _purepy

from zzz import _speedups


def _valid(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    text = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 2048))
    if fdp.ConsumeBool():
        # Mostly-valid text with one edit reaches the interesting boundaries more often.
        text = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 256)).encode("utf-8") + text[:8]
    a = _purepy.validate_utf8(text)
    b = _speedups.validate_utf8(text)
    assert a == b, (text, a, b)
    assert (a == -1) == _valid(text), (text, a)
    assert -1 <= a <= len(text)
    ours, theirs = _purepy.Utf8Validator(), _speedups.Utf8Validator()
    failed = False
    for piece in _util.chunks(fdp, text):
        x, y = ours.feed(piece), theirs.feed(piece)
        assert x == y, (text, piece, x, y)
        assert ours.complete == theirs.complete
        if x >= 0:
            failed = True
    if not failed:
        assert ours.complete == _valid(text), text
    else:
        assert not _valid(text), text
    ours.reset()
    theirs.reset()
    assert ours.feed(b"ok") == theirs.feed(b"ok") == -1 and ours.complete and theirs.complete


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
