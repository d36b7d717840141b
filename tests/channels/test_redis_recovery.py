"""A client that reconnects to another server process recovers what it missed, through Redis (issue #15).

Two ``tests.channels.fault_app`` processes on one redis-server keep publishing on ``feed:r`` (a topic
with history). A client follows it on process A, drops its connection, and rejoins on process B with
``meta.recover`` = the last position it saw, while both keep publishing: it must get ``recovered:
true``, then every broadcast it missed and every later one, once each, in offset order.

Needs the join with recovery of the history work (branch c-history, commit 290c331): on this branch
alone the join reply has no ``meta`` and the test fails; it passes once both are merged.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.channels.conftest import RedisServer
from tests.channels.procs import AppProcess

pytestmark = pytest.mark.asyncio_only

COUNT = 400  # broadcasts per process
INTERVAL = 0.01


class Follower:
    """Joins ``feed:r`` (optionally recovering) and records (offset, epoch, publisher, n) of each ``msg``."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.got: list[tuple[int, str, str, int]] = []
        self.reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for text in self.ws:
            frame = json.loads(text)
            if frame["event"] == "phx_reply" and frame["ref"] == "1" and not self.reply.done():
                self.reply.set_result(frame)
            elif frame["event"] == "msg":
                m, p = frame["meta"], frame["payload"]
                self.got.append((m["offset"], m["epoch"], p["from"], p["n"]))

    async def join(self, recover: tuple[int, str] | None = None) -> dict[str, Any]:
        msg: dict[str, Any] = {"topic": "feed:r", "event": "phx_join", "payload": {}, "ref": "1"}
        if recover is not None:
            msg["meta"] = {"recover": {"offset": recover[0], "epoch": recover[1]}}
        await self.ws.send(json.dumps(msg))
        reply = await asyncio.wait_for(self.reply, 10)
        assert reply["payload"]["status"] == "ok", reply
        return reply  # type: ignore[no-any-return]

    async def pub(self) -> None:
        await self.ws.send(
            json.dumps(
                {
                    "topic": "feed:r",
                    "event": "pub",
                    "payload": {"count": COUNT, "interval": INTERVAL},
                    "ref": "2",
                }
            )
        )

    async def close(self) -> None:
        self.task.cancel()
        await self.ws.close()


async def test_a_client_that_reconnects_to_the_other_process_recovers(own_redis: RedisServer) -> None:
    a = AppProcess(redis_url=own_redis.url, module="tests.channels.fault_app", args=["--name", "A"]).start()
    b = AppProcess(redis_url=own_redis.url, module="tests.channels.fault_app", args=["--name", "B"]).start()
    try:
        first = Follower(await connect(f"{a.ws}/socket"))
        reply = await first.join()
        start = reply["meta"]
        assert start["offset"] == 0 and start["recovered"] is False
        # Both processes publish (the publishers are their own connections, which stay).
        pa = Follower(await connect(f"{a.ws}/socket"))
        pb = Follower(await connect(f"{b.ws}/socket"))
        await pa.join()
        await pb.join()
        await pa.pub()
        await pb.pub()
        await asyncio.sleep(1.0)
        await first.close()  # the client's connection drops
        assert first.got, "nothing arrived before the drop"
        last = first.got[-1]
        await asyncio.sleep(1.0)  # broadcasts go on meanwhile
        second = Follower(await connect(f"{b.ws}/socket"))  # it comes back through the other process
        reply = await second.join(recover=(last[0], last[1]))
        assert reply["meta"]["recovered"] is True, reply
        assert reply["meta"]["epoch"] == last[1] and reply["meta"]["offset"] > last[0]
        deadline = time.monotonic() + 30
        while len(first.got) + len(second.got) < 2 * COUNT and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # a duplicate would have come by now
        await second.close()
        await pa.close()
        await pb.close()
        seen = first.got + second.got
        assert [o for o, _e, _w, _n in seen] == list(range(1, 2 * COUNT + 1))  # no gap, no duplicate
        assert {e for _o, e, _w, _n in seen} == {start["epoch"]}
        for name in ("A", "B"):
            assert [n for _o, _e, w, n in seen if w == name] == list(range(COUNT))
        # The recovering client got the offsets the processes gave, the same as a live follower.
        assert seen == pb.got == pa.got
    finally:
        a.stop()
        b.stop()
