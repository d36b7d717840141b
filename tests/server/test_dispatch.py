"""One request dispatch (``RouteTable.handle``) serves everything, through a real socket: the app's
middleware sees 404s and 405s, and the opening handshake is still checked before any middleware."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import zzz

from .helpers import read_head, recorder, serve, upgrade_request


def _app(seen: list[str], config: zzz.WsConfig, **settings: Any) -> zzz.App:
    async def stamp(req: zzz.Request, call_next: Any) -> zzz.Response:
        seen.append(f"{req.method} {req.path}")
        response: zzz.Response = await call_next(req)
        if response.status == 101:
            return response
        response.headers.set("X-Seen-By", "app")
        if response.status == 404:  # an app's own "not found" page
            return zzz.Response(f"no page at {req.path}", status=404, headers=[("X-Seen-By", "app")])
        return response

    return zzz.App(
        [zzz.Router.get("/", lambda req: "home"), zzz.Router.ws("/ws", config)],
        middleware=[stamp],
        **settings,
    )


async def _exchange(port: int, *requests: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Send ``requests`` one after the other on one connection, reading each answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        answers = []
        for data in requests:
            writer.write(data)
            answers.append(await read_head(reader))
        return answers
    finally:
        writer.close()


async def test_app_middleware_sees_404_and_405_on_a_kept_alive_connection() -> None:
    seen: list[str] = []
    _rec, config = recorder()
    async with serve(_app(seen, config)) as server:
        not_found, not_allowed, home = await _exchange(
            server.port,
            b"GET /nowhere HTTP/1.1\r\nHost: h\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
        )
    assert not_found[0] == 404 and not_found[2] == b"no page at /nowhere"
    assert not_found[1]["x-seen-by"] == "app" and not_found[1]["connection"] == "keep-alive"
    assert not_allowed[0] == 405 and not_allowed[1]["allow"] == "GET, HEAD"
    assert not_allowed[1]["x-seen-by"] == "app"
    assert home[0] == 200 and home[2] == b"home" and home[1]["x-seen-by"] == "app"
    assert seen == ["GET /nowhere", "POST /", "GET /"]


async def test_app_middleware_sees_a_405_for_a_websocket_route() -> None:
    seen: list[str] = []
    _rec, config = recorder()
    async with serve(_app(seen, config)) as server:
        ((status, headers, _body),) = await _exchange(
            server.port, b"POST /ws HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
        )
    assert (status, headers["allow"], headers["x-seen-by"]) == (405, "GET", "app")
    assert seen == ["POST /ws"]


async def test_app_middleware_sees_an_upgrade_to_an_unknown_path_and_the_connection_closes() -> None:
    seen: list[str] = []
    _rec, config = recorder()
    async with serve(_app(seen, config)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(upgrade_request("/nope"))
            status, headers, body = await read_head(reader)
            assert (status, body, headers["x-seen-by"]) == (404, b"no page at /nope", "app")
            assert headers["connection"] == "close"
            assert await asyncio.wait_for(reader.read(), 5) == b""
        finally:
            writer.close()
    assert seen == ["GET /nope"]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /ws HTTP/1.1\r\nHost: h\r\n\r\n", 426),
        (upgrade_request("/ws", version="8"), 426),
        (upgrade_request("/ws", key="short"), 400),
        (upgrade_request("/ws", extra="Origin: https://evil.example\r\n"), 403),
    ],
)
async def test_handshake_refusals_come_before_any_middleware(request_bytes: bytes, status: int) -> None:
    seen: list[str] = []
    _rec, config = recorder()
    async with serve(_app(seen, config, allowed_origins=["https://good.example"])) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(request_bytes)
            got, headers, _body = await read_head(reader)
            assert got == status and "x-seen-by" not in headers
            assert await asyncio.wait_for(reader.read(), 5) == b""  # and this connection is done
        finally:
            writer.close()
        ok = upgrade_request("/ws", extra="Origin: https://good.example\r\n")
        ((up, _h, _b),) = await _exchange(server.port, ok)
        assert up == 101
    assert seen == ["GET /ws"]  # only the upgrade that passed the checks met the middleware


async def test_a_raising_app_middleware_on_a_404_is_a_500_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(req: zzz.Request, call_next: Any) -> zzz.Response:
        raise RuntimeError("middleware bug")

    async with serve(zzz.App([], middleware=[broken])) as server:
        ((status, _h, _b),) = await _exchange(server.port, b"GET /nowhere HTTP/1.1\r\nHost: h\r\n\r\n")
    assert status == 500
    assert any("handler raised for GET /nowhere" in r.getMessage() for r in caplog.records)
