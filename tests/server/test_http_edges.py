"""HTTP details every zzz app meets: conditional requests for ``/__zzz/zzz.js``, the ``Host``
header rules of RFC 9112 section 3.2, and upgrade requests that carry a body."""

from __future__ import annotations

import asyncio

import pytest

import zzz

from .helpers import raw_request, read_head, recorder, serve, upgrade_request


def _get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


async def test_zzz_js_revalidates_weak_list_and_star_if_none_match() -> None:
    async with serve(zzz.App([])) as server:
        status, headers, body = await raw_request(server.port, _get("/__zzz/zzz.js"))
        assert status == 200 and body
        etag = headers["etag"]
        assert etag.startswith('"') and etag.endswith('"')
        matching = [
            etag,
            f"W/{etag}",  # weak comparison for If-None-Match (RFC 9110 section 13.1.2)
            f'"nope", {etag}',
            f'"nope",W/{etag}',
            f', "nope" ,  {etag}',  # empty list members are allowed
            "*",
        ]
        for value in matching:
            status, headers, body = await raw_request(server.port, _get("/__zzz/zzz.js", f"If-None-Match: {value}\r\n"))
            assert (status, body) == (304, b""), value
            assert headers["etag"] == etag
        # The same list split over two field lines.
        two_lines = f'If-None-Match: "nope"\r\nIf-None-Match: W/{etag}\r\n'
        status, _h, _b = await raw_request(server.port, _get("/__zzz/zzz.js", two_lines))
        assert status == 304
        for value in ['"nope"', etag.strip('"'), f"w/{etag}", f'"nope" {etag}', f"{etag[:-1]}"]:
            status, _h, body = await raw_request(server.port, _get("/__zzz/zzz.js", f"If-None-Match: {value}\r\n"))
            assert status == 200 and body, value
