"""``close(1005)`` and the other codes RFC 6455 §7.4.1 reserves for reporting are refused with
``ValueError`` everywhere a caller passes a code (issue 12, item 7): the server handle on and off
the loop's thread, the client, and ``Server.close``. Nothing is sent and the connection goes on.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect

import zzz

from .helpers import RawClient, recorder, serve, url

RESERVED = [1005, 1006, 1015]


def _raised_in_thread(fn: Any) -> BaseException | None:
    caught: list[BaseException] = []

    def call() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            caught.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(5)
    return caught[0] if caught else None


@pytest.mark.parametrize("code", RESERVED)
async def test_handle_close_with_a_reserved_code_raises_and_sends_nothing(code: int) -> None:
    errors: list[str] = []
    seen, config = recorder()
    echo = config.on_message

    def on_message(ws: zzz.WebSocket, msg: Any) -> None:
        try:
            ws.close(code)
        except ValueError as exc:
            errors.append(f"loop: {exc}")
        exc = _raised_in_thread(lambda: ws.close(code))
        if isinstance(exc, ValueError):
            errors.append(f"thread: {exc}")
        assert echo is not None
        echo(ws, msg)

    config = zzz.WsConfig(on_message=on_message, on_close=config.on_close)
    async with serve(zzz.App([zzz.Router.ws("/ws", config)])) as server:
        client = await RawClient.connect(server.port)
        client.send_frame(1, b"hi")
        # The connection is still open: the echo comes, not a close frame.
        assert await client.read_frame() == (1, b"hi")
        client.send_frame(8, (1000).to_bytes(2, "big"))
        assert await client.read_close() == (1000, "")
        client.close()
        await asyncio.wait_for(seen["closed"].wait(), 5)
    assert [e.split(":")[0] for e in errors] == ["loop", "thread"]
    assert all("reserved" in e for e in errors)
    assert seen["close"] == [(1000, "")]


@pytest.mark.parametrize("code", RESERVED)
async def test_client_close_with_a_reserved_code_raises(code: int) -> None:
    _seen, config = recorder()
    async with (
        serve(zzz.App([zzz.Router.ws("/ws", config)])) as server,
        zzz.connect(url(server, "/ws")) as ws,
    ):
        with pytest.raises(ValueError, match="reserved"):
            ws.close(code)
        exc = _raised_in_thread(lambda: ws.close(code))
        assert isinstance(exc, ValueError) and "reserved" in str(exc)
        assert not ws.closed
        ws.send("still open")
        assert await asyncio.wait_for(ws.recv(), 5) == zzz.Text("still open")


async def test_server_close_with_a_reserved_code_raises_before_shutting_down() -> None:
    seen, config = recorder()
    server = await zzz.App([zzz.Router.ws("/ws", config)]).start(host="127.0.0.1", port=0)
    try:
        with pytest.raises(ValueError, match="reserved"):
            await server.close(1005)
        async with ws_connect(url(server, "/ws"), compression=None) as client:  # still serving
            await client.send("hi")
            assert await client.recv() == "hi"
    finally:
        await server.close()
    await asyncio.wait_for(seen["closed"].wait(), 5)
