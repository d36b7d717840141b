"""``on_close`` is called exactly once for a connection whose async ``on_open`` or ``on_message``
is still running at shutdown, whether the callback is cancelled or finishes (issue 12, item 14).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import zzz

from .helpers import RawClient


def _app(where: str, ending: str, seen: dict[str, Any], async_close: bool = False) -> zzz.App:
    async def slow(*_args: Any) -> None:
        seen["started"].set()
        try:
            if ending == "cancelled":
                await asyncio.Event().wait()  # never finishes: shutdown cancels it
            else:
                await asyncio.sleep(0.8)  # finishes after the connection was aborted
        except asyncio.CancelledError:
            seen["cancelled"] += 1
            raise
        seen["finished"] += 1

    def on_close(ws: zzz.WebSocket, code: int, reason: str) -> None:
        seen["close"].append(code)

    async def on_close_async(ws: zzz.WebSocket, code: int, reason: str) -> None:
        await asyncio.sleep(0.05)
        seen["close"].append(code)

    callbacks: dict[str, Any] = {where: slow, "on_close": on_close_async if async_close else on_close}
    return zzz.App([zzz.Router.ws("/ws", zzz.WsConfig(**callbacks))], close_timeout=0.5)


@pytest.mark.parametrize("on_close", ["sync", "async"])
@pytest.mark.parametrize("ending", ["cancelled", "finished"])
@pytest.mark.parametrize("where", ["on_open", "on_message"])
async def test_on_close_is_called_once_for_a_callback_running_at_shutdown(
    where: str, ending: str, on_close: str
) -> None:
    seen: dict[str, Any] = {"started": asyncio.Event(), "close": [], "cancelled": 0, "finished": 0}
    server = await _app(where, ending, seen, async_close=on_close == "async").start(host="127.0.0.1", port=0)
    client = await RawClient.connect(server.port)
    try:
        client.send_frame(1, b"hello")
        await asyncio.wait_for(seen["started"].wait(), 5)
        await asyncio.wait_for(server.close(), 10)
        # No waiting here: when server.close() returns, on_close has run (an async one too).
    finally:
        client.close()
    if ending == "cancelled":
        assert (seen["cancelled"], seen["finished"]) == (1, 0)
    else:
        assert (seen["cancelled"], seen["finished"]) == (0, 1)
    # The peer never answered the 1001: 1006 (or 1001 if it is reported before the close timer).
    assert len(seen["close"]) == 1 and seen["close"][0] in (1001, 1006), seen["close"]


async def test_on_close_is_called_once_when_the_peer_leaves_while_a_callback_runs() -> None:
    # Not a shutdown: the peer drops, the callback finishes later, then on_close comes (once).
    seen: dict[str, Any] = {"started": asyncio.Event(), "close": [], "cancelled": 0, "finished": 0}
    server = await _app("on_message", "finished", seen).start(host="127.0.0.1", port=0)
    try:
        client = await RawClient.connect(server.port)
        client.send_frame(1, b"hello")
        await asyncio.wait_for(seen["started"].wait(), 5)
        client.writer.transport.abort()
        for _ in range(100):
            if seen["close"]:
                break
            await asyncio.sleep(0.02)
        assert seen["finished"] == 1
        await asyncio.sleep(0.1)
    finally:
        await server.close()
    assert seen["close"] == [1006]
