"""What the docs say about ``drain()`` is what it does (issue 12, item 7): with room in the write
buffer it returns at once but still yields to the loop once, on the server handle and the client.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from server.helpers import recorder, serve, url

import zzz

ROOT = Path(__file__).resolve().parents[2]


async def _yields_once(drain: object) -> bool:
    """True when awaiting ``drain()`` let a callback scheduled just before it run."""
    ran: list[bool] = []
    asyncio.get_running_loop().call_soon(ran.append, True)
    await drain()  # type: ignore[operator]
    return bool(ran)


async def test_drain_with_room_yields_to_the_loop_once_on_both_ends() -> None:
    results: list[bool] = []
    done = asyncio.Event()

    async def on_open(ws: zzz.WebSocket) -> None:
        assert ws.buffered_amount == 0
        results.append(await _yields_once(ws.drain))
        done.set()

    _seen, config = recorder()
    config = zzz.WsConfig(on_open=on_open, on_message=config.on_message)
    async with (
        serve(zzz.App([zzz.Router.ws("/ws", config)])) as server,
        zzz.connect(url(server, "/ws")) as ws,
    ):
        await asyncio.wait_for(done.wait(), 5)
        results.append(await _yields_once(ws.drain))
    assert results == [True, True]


def test_the_examples_say_that_drain_yields_when_there_is_room() -> None:
    for name in ("examples/README.md", "examples/backpressure.py", "README.md"):
        text = " ".join((ROOT / name).read_text(encoding="utf-8").split())
        assert not re.search(r"without yielding|does not yield|doesn't yield", text), name
        if name != "README.md":
            assert "yield" in text and "once" in text, name
