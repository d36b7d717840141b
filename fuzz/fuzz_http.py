"""Atheris target: HTTP request handling (``zzz.http_parser.RequestParser`` then
``zzz.handshake.validate_request`` on every request).

Only the documented exceptions may come out (``HttpError`` from the parser, ``HandshakeError``
from the validation, ``RuntimeError`` for feeding a parser stopped at an upgrade), and the
chunking must not matter: a head fed in pieces parses to the same requests as fed whole, and
fails when the whole fails (the status may differ: which limit is hit first depends on what has
arrived).
"""

from __future__ import annotations

import sys

import _util
import atheris

with atheris.instrument_imports():
    from zzz import handshake
    from zzz.http import HttpError
    from zzz.http_parser import RequestParser

LINE = (16, 64, 1024, 8192, None)
COUNT = (1, 2, 8, 128, None)
BODY = (0, 10, 1 << 20, None)

SEEDS = [
    (
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ),
    b"POST /x?a=1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
]


def _describe(requests: list) -> list:
    return [
        (r.method, r.target, r.headers.items(), r.body, r.http_version, r.keep_alive, r.upgrade)
        for r in requests
    ]


def _run(options: dict, pieces: list[bytes]) -> tuple[str, list, bytes]:
    parser = RequestParser(**options)
    got = []
    tail = b""
    for i, piece in enumerate(pieces):
        try:
            got += parser.feed(piece)
        except HttpError as exc:
            assert 400 <= exc.status <= 599, exc.status
            return ("error", _describe(got), b"")
        if got and got[-1].upgrade:
            # Bytes after an upgrade request are the new protocol's: upgrade_tail plus the rest.
            tail = parser.upgrade_tail + b"".join(pieces[i + 1 :])
            try:
                parser.feed(b"more")
            except RuntimeError:
                pass  # documented: the parser stopped at the upgrade
            else:
                raise AssertionError("feed after an upgrade did not raise")
            break
    for request in got:
        try:
            key = handshake.validate_request(request.method, request.http_version, request.headers.items())
        except handshake.HandshakeError as exc:
            assert exc.status in (400, 405, 426), exc.status
        else:
            assert handshake.accept_key(key)
            handshake.build_response(key)
    return ("ok", _describe(got), tail)


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    options = {
        "max_request_line": _util.limit(fdp, LINE),
        "max_header_size": _util.limit(fdp, LINE),
        "max_header_count": _util.limit(fdp, COUNT),
        "max_head_size": _util.limit(fdp, LINE),
        "max_body_size": _util.limit(fdp, BODY),
    }
    raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4096))
    if fdp.ConsumeBool():
        raw = SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)] + raw
    whole = _run(options, [raw])
    pieces = _util.chunks(fdp, raw)
    split = _run(options, pieces)
    context = (raw, [len(p) for p in pieces], options, whole, split)
    if whole[0] == "ok":
        assert split == whole, context
    else:
        assert split[0] == "error", context


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
