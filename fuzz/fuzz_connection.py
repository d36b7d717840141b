"""Atheris target: the whole sans-I/O receive path (``zzz.protocol.Connection`` with
permessage-deflate and limits) on both cores. No exception may escape, every failure is a
``ConnectionFailed`` with a documented code, and both cores give the same events and bytes out.
"""

from __future__ import annotations

import sys
import zlib

import _util
import atheris

with atheris.instrument_imports():
    from zzz import _purepy, deflate
    from zzz.protocol import Connection, ConnectionFailed
    from zzz.settings import WsLimits

from zzz import _speedups

CODES = {1002, 1007, 1008, 1009}
SIZES = (None, 0, 10, 125, 1000, 65536)


def _stream(fdp: atheris.FuzzedDataProvider) -> bytes:
    out = bytearray()
    enc = zlib.compressobj(6, zlib.DEFLATED, -15)
    for _ in range(fdp.ConsumeIntInRange(1, 6)):
        opcode = (0, 1, 2, 8, 9, 10, 3)[fdp.ConsumeIntInRange(0, 6)]
        payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200))
        rsv1 = fdp.ConsumeBool()
        if rsv1 and fdp.ConsumeBool():
            payload = enc.compress(payload) + enc.flush(zlib.Z_SYNC_FLUSH)
            if payload.endswith(b"\x00\x00\xff\xff") and fdp.ConsumeBool():
                payload = payload[:-4]
        out += _purepy.encode_frame(opcode, payload, fdp.ConsumeBool(), rsv1, b"\x37\xfa\x21\x3d")
    if fdp.ConsumeBool():
        out += fdp.ConsumeBytes(64)
    return bytes(out)


def _events(conn: Connection, pieces: list[bytes]) -> list:
    got = []
    for piece in pieces:
        conn.receive_data(piece)
        while True:
            event = conn.next_event()
            if event is None:
                break
            if isinstance(event, ConnectionFailed):
                assert event.code in CODES, event
            got.append(_util.plain(event))
        got.append(conn.data_to_send())
    return got


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    compress = fdp.ConsumeBool()
    params = deflate.DeflateParams(
        client_no_context_takeover=fdp.ConsumeBool(), client_max_window_bits=fdp.ConsumeIntInRange(8, 15)
    )
    options = {
        "max_message_size": _util.limit(fdp, SIZES),
        "max_frame_size": _util.limit(fdp, SIZES),
        "max_fragments": _util.limit(fdp, (None, 1, 2, 4)),
    }
    stream = _stream(fdp) if fdp.ConsumeBool() else fdp.ConsumeBytes(2048)
    pieces = _util.chunks(fdp, stream)
    results = []
    for impl in (_purepy, _speedups):
        pmd = deflate.PerMessageDeflate(params, is_server=True) if compress else None
        conn = Connection(is_server=True, deflate=pmd, limits=WsLimits(**options))
        max_frame = options["max_frame_size"]
        conn._reader = impl.FrameReader(
            require_mask=True,
            allow_rsv1=pmd is not None,
            max_frame_size=max_frame if max_frame is not None else options["max_message_size"],
            max_message_size=options["max_message_size"],
            max_fragments=options["max_fragments"],
            messages=True,  # as Connection makes its own reader
        )
        results.append(_events(conn, pieces))
    assert results[0] == results[1], (stream, options, compress, results)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
