"""``Server.close`` as a drain, in one process on both loops: WebSockets closed in rounds of
``drain_batch``, a connection accepted just before the close still answered, the health path."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from websockets.asyncio.client import connect as ws_connect

import zzz
from tests.server.helpers import raw_request, read_head, url


def _app(**settings: object) -> zzz.App:
    return zzz.App(
        [zzz.Router.get("/", lambda r: "hi"), zzz.Router.ws("/ws", zzz.WsConfig())],
        health_path="/healthz",
        close_timeout=5,
        **settings,
    )


async def test_close_goes_in_rounds_with_the_code_given() -> None:
    server = await _app(drain_batch=2, drain_interval=0.15).start(host="127.0.0.1", port=0)
    clients = [await ws_connect(url(server, "/ws")) for _ in range(5)]
    closed_at: list[float] = []

    async def watch(client: object) -> None:
        await client.wait_closed()  # type: ignore[attr-defined]
        closed_at.append(time.monotonic())

    watchers = [asyncio.ensure_future(watch(c)) for c in clients]
    await asyncio.wait_for(server.close(1012, "service restart"), 10)
    await asyncio.wait_for(asyncio.gather(*watchers), 10)
    assert {c.close_code for c in clients} == {1012}
    assert {c.close_reason for c in clients} == {"service restart"}
    closed_at.sort()
    gaps = [b - a for a, b in itertools.pairwise(closed_at)]
    assert sum(gap > 0.1 for gap in gaps) == 2, gaps  # 2 + 2 + 1: three rounds, two pauses


async def test_one_round_when_the_batch_holds_them_all() -> None:
    server = await _app(drain_interval=5.0).start(host="127.0.0.1", port=0)
    clients = [await ws_connect(url(server, "/ws")) for _ in range(3)]
    start = time.monotonic()
    await asyncio.wait_for(server.close(), 10)
    assert time.monotonic() - start < 2.0  # no interval waited after the last (only) round
    assert {c.close_code for c in clients} == {1001}


@pytest.mark.parametrize("with_websocket", [False, True])
async def test_a_connection_accepted_before_the_close_gets_its_answer(with_websocket: bool) -> None:
    server = await _app(drain_batch=1, drain_interval=0.3).start(host="127.0.0.1", port=0)
    client = await ws_connect(url(server, "/ws")) if with_websocket else None
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    while server.connections < (2 if with_websocket else 1):  # accepted, nothing sent yet
        await asyncio.sleep(0.01)
    closing = asyncio.ensure_future(server.close())
    await asyncio.sleep(0.05)
    assert server.draining
    writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # its request comes after the close began
    status, headers, body = await read_head(reader)
    assert (status, body, headers["connection"]) == (200, b"hi", "close")
    writer.close()
    await asyncio.wait_for(closing, 10)
    if client is not None:
        assert client.close_code == 1001


async def test_a_silent_connection_does_not_hold_the_close() -> None:
    server = await _app().start(host="127.0.0.1", port=0)
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    while server.connections < 1:
        await asyncio.sleep(0.01)
    start = time.monotonic()
    await asyncio.wait_for(server.close(), 10)
    assert time.monotonic() - start < 3.0  # the grace (1 s), not close_timeout (5 s)
    writer.close()


async def test_health_path_answers_before_routing() -> None:
    async def refuse_everything(request: zzz.Request, call_next: object) -> zzz.Response:
        return zzz.Response("no", status=401)

    app = zzz.App([zzz.Router.get("/", lambda r: "hi")], middleware=[refuse_everything], health_path="/up")
    server = await app.start(host="127.0.0.1", port=0)
    try:
        status, headers, body = await raw_request(server.port, b"GET /up HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (status, body, headers["cache-control"]) == (200, b"ok\n", "no-store")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"HEAD /up HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\n"), answer  # no body
        status, headers, _b = await raw_request(
            server.port, b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
        )
        assert (status, headers["allow"]) == (405, "GET, HEAD")
        status, _h, _b = await raw_request(server.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status == 401  # everything else goes through the middleware
        status, _h, _b = await raw_request(server.port, b"GET /up HTTP/1.1\r\n\r\n")
        assert status == 400  # the Host rules still come first
    finally:
        await server.close()


async def test_no_health_path_by_default() -> None:
    server = await zzz.App([]).start(host="127.0.0.1", port=0)
    try:
        status, _h, _b = await raw_request(server.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status == 404
    finally:
        await server.close()
