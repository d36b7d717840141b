"""HTTP details every zzz app meets: conditional requests for ``/__zzz/zzz.js``, the ``Host``
header rules of RFC 9112 section 3.2, and upgrade requests that carry a body."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import zzz

from .helpers import KEY, raw_request, read_head, recorder, serve


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
            status, headers, body = await raw_request(
                server.port, _get("/__zzz/zzz.js", f"If-None-Match: {value}\r\n")
            )
            assert (status, body) == (304, b""), value
            assert headers["etag"] == etag
        # The same list split over two field lines.
        two_lines = f'If-None-Match: "nope"\r\nIf-None-Match: W/{etag}\r\n'
        status, _h, _b = await raw_request(server.port, _get("/__zzz/zzz.js", two_lines))
        assert status == 304
        for value in ['"nope"', etag.strip('"'), f"w/{etag}", f'"nope" {etag}', f"{etag[:-1]}"]:
            status, _h, body = await raw_request(
                server.port, _get("/__zzz/zzz.js", f"If-None-Match: {value}\r\n")
            )
            assert status == 200 and body, value


def _host_app(seen: dict[str, Any], config: zzz.WsConfig) -> zzz.App:
    async def note(req: zzz.Request, call_next: Any) -> zzz.Response:
        seen["middleware"] = seen.get("middleware", 0) + 1
        response: zzz.Response = await call_next(req)
        return response

    async def echo(req: zzz.Request) -> zzz.Response:
        return zzz.Response(req.body or b"empty", status=201)

    return zzz.App(
        [
            zzz.Router.ws("/ws", config),
            zzz.Router.get("/", lambda req: zzz.Response("hi")),
            zzz.Router.post("/echo", echo),
        ],
        middleware=[note],
    )


def _ws_head(hosts: list[str], extra: str = "") -> bytes:
    lines = "".join(f"Host: {h}\r\n" for h in hosts)
    return (
        f"GET /ws HTTP/1.1\r\n{lines}Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


async def _answer_then_eof(port: int, data: bytes) -> tuple[int, bytes]:
    """Status and body of the response, after checking the server closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        status, headers, body = await read_head(reader)
        if status != 101:
            assert headers.get("connection") == "close", headers
            assert await asyncio.wait_for(reader.read(), 5) == b""
        return status, body
    finally:
        writer.close()


@pytest.mark.parametrize("hosts", [[], ["127.0.0.1", "127.0.0.1"], ["a", "b"], ["a b"], ["x/y"], ["[::1"]])
async def test_upgrade_without_exactly_one_valid_host_is_400(hosts: list[str]) -> None:
    seen, config = recorder()
    async with serve(_host_app(seen, config)) as server:
        status, _body = await _answer_then_eof(server.port, _ws_head(hosts))
        assert status == 400
        assert seen["open"] == 0 and "middleware" not in seen  # refused before the middleware
        status, _body = await _answer_then_eof(server.port, _ws_head(["127.0.0.1:80"]))
        assert status == 101


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n",
        b"GET /nowhere HTTP/1.1\r\n\r\n",  # 400 before routing, not 404
    ],
)
async def test_plain_request_without_exactly_one_valid_host_is_400(head: bytes) -> None:
    seen, config = recorder()
    async with serve(_host_app(seen, config)) as server:
        status, _body = await _answer_then_eof(server.port, head)
        assert status == 400
        assert "middleware" not in seen


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost:\r\n\r\n",  # empty: allowed when the target has no authority
        b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",  # Host is an HTTP/1.1 requirement: HTTP/1.0 may omit it
    ],
)
async def test_a_single_valid_host_or_http_1_0_without_one_is_served(head: bytes) -> None:
    seen, config = recorder()
    async with serve(_host_app(seen, config)) as server:
        status, _headers, body = await raw_request(server.port, head)
        assert (status, body) == (200, b"hi")


def _smuggled() -> bytes:
    from zzz import core

    return core.encode_frame(1, b"smuggled", True, False, b"\x01\x02\x03\x04")


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_upgrade_request_with_a_body_is_400_and_no_frame_gets_through(framing: str) -> None:
    seen, config = recorder()
    frame = _smuggled()
    if framing == "length":
        data = _ws_head(["127.0.0.1"], f"Content-Length: {len(frame)}\r\n") + frame
    else:
        data = _ws_head(["127.0.0.1"], "Transfer-Encoding: chunked\r\n") + b"%x\r\n%s\r\n0\r\n\r\n" % (
            len(frame),
            frame,
        )
    async with serve(_host_app(seen, config)) as server:
        status, _body = await _answer_then_eof(server.port, data)
        assert status == 400
        await asyncio.sleep(0.05)
        assert seen["open"] == 0 and seen["messages"] == [] and "middleware" not in seen


async def test_upgrade_with_content_length_zero_is_accepted() -> None:
    seen, config = recorder()
    async with serve(_host_app(seen, config)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(_ws_head(["127.0.0.1"], "Content-Length: 0\r\n") + _smuggled())
        status, _headers, _body = await read_head(reader)
        assert status == 101
        head = await asyncio.wait_for(reader.readexactly(2), 5)
        assert head == b"\x81\x08" and await asyncio.wait_for(reader.readexactly(8), 5) == b"smuggled"
        writer.close()


async def test_plain_route_upgrade_request_with_a_body_is_400_not_an_empty_body() -> None:
    # llhttp skips the body of any upgrade request: the handler would have seen b"".
    seen, config = recorder()
    async with serve(_host_app(seen, config)) as server:
        head = (
            b"POST /echo HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
            b"Content-Length: 3\r\n\r\nabc"
        )
        status, _body = await _answer_then_eof(server.port, head)
        assert status == 400
        assert "middleware" not in seen
        plain = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
        status, _headers, body = await raw_request(server.port, plain)
        assert (status, body) == (201, b"abc")
