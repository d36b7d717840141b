"""Atheris target: the frame reader of both cores, fed the same bytes in the same chunks, must
return the same frames and raise the same errors (class and message); so must the encoder.

Half the inputs are raw bytes, half are frames built from the fuzzer's choices (then possibly
corrupted), which reaches deeper states such as fragmented text and streamed UTF-8.
"""

from __future__ import annotations

import sys

import _util
import atheris

with atheris.instrument_imports():
    from zzz import _purepy

from zzz import _speedups

# What feed may raise: the close-code carrying errors of zzz.errors, nothing else.
DOCUMENTED = {"ProtocolError", "InvalidPayload", "InvalidUtf8", "MessageTooBig", "PolicyViolation"}
SIZES = (None, 0, 1, 2, 125, 126, 127, 200, 65535, 65536, 1 << 20)
FRAGMENTS = (None, 1, 2, 3, 16)


def _structured(fdp: atheris.FuzzedDataProvider, masked: bool) -> bytes:
    out = bytearray()
    for _ in range(fdp.ConsumeIntInRange(1, 8)):
        opcode = fdp.ConsumeIntInRange(0, 15)
        fin = fdp.ConsumeBool()
        rsv1 = fdp.ConsumeBool() and fdp.ConsumeBool()
        payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300))
        key = fdp.ConsumeBytes(4) if masked else None
        if key is not None and len(key) != 4:
            key = b"\x00\x00\x00\x00"
        a = _purepy.encode_frame(opcode, payload, fin, rsv1, key)
        b = _speedups.encode_frame(opcode, payload, fin, rsv1, key)
        assert a == b, (opcode, fin, rsv1, payload, key)
        out += a
    if fdp.ConsumeBool() and out:
        pos = fdp.ConsumeIntInRange(0, len(out) - 1)
        out[pos] ^= fdp.ConsumeIntInRange(1, 255)
    return bytes(out)


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    options = dict(  # noqa: C408 - keyword arguments, as the reader takes them
        require_mask=fdp.ConsumeBool(),
        allow_rsv1=fdp.ConsumeBool(),
        max_frame_size=_util.limit(fdp, SIZES),
        max_message_size=_util.limit(fdp, SIZES),
        max_fragments=_util.limit(fdp, FRAGMENTS),
        messages=fdp.ConsumeBool(),
    )
    if fdp.ConsumeBool():
        stream = _structured(fdp, options["require_mask"])
    else:
        stream = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4096))
    pieces = _util.chunks(fdp, stream)
    ours = _purepy.FrameReader(**options)
    theirs = _speedups.FrameReader(**options)
    for piece in pieces:
        a = _util.outcome(ours.feed, piece)
        b = _util.outcome(theirs.feed, piece)
        assert a == b, f"cores differ on {stream!r} split {[len(p) for p in pieces]} {options}: {a} != {b}"
        if a[0] == "error":
            assert a[1] in DOCUMENTED, f"undocumented exception {a}"
            break


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
