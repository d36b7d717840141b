"""RedisPubSub with a real redis-server: two "processes" (two backends) in one event loop, fake sockets.

The multi-process test with real servers is in test_server_e2e.py; this one checks the backend itself.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.channels.conftest import RedisServer
from tests.channels.fakes import Client, endpoint
from zzz.channels import ChannelConfig, ChannelDef, ChannelSocket, Presence, RedisPubSub


async def until(cond: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = cond()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def config(pubsub: RedisPubSub) -> ChannelConfig:
    def join(socket: ChannelSocket, topic: str, payload: Any) -> bool:
        if "user" in payload:
            socket.track(topic, payload["user"], {"node": socket.get_assign("node")})
        return True

    def shout(socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
        socket.broadcast(topic, "shout", payload)
        return {}

    def whisper(socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
        socket.push_to(payload["to"], topic, "whisper", {"text": payload["text"]})
        return {}

    room = ChannelDef("room:*", join=join, handlers={"shout": shout, "whisper": whisper})
    return ChannelConfig(channels=[room], pubsub=pubsub)


def frames_of(client: Client, event: str) -> list[dict[str, Any]]:
    return [f for f in client.ws.take() if f["event"] == event]


async def test_broadcast_and_presence_cross_processes(redis_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    pa, pb = RedisPubSub(redis_url, prefix=prefix), RedisPubSub(redis_url, prefix=prefix)
    ea, eb = endpoint(config(pa)), endpoint(config(pb))
    try:
        a = await Client.open(ea, assigns={"node": "a"})
        b = await Client.open(eb, assigns={"node": "b"})
        assert pa.node_id != pb.node_id
        await a.join("room:1", {"user": "ann"})
        a.ws.take()
        reply = await b.join("room:1", {"user": "bob"})
        assert reply["status"] == "ok"
        # Across processes presence is eventually consistent: ann reaches b in its presence_state or,
        # when her diff was still on its way through Redis, in a presence_diff right after.
        seen: set[str] = set()

        def b_sees_ann() -> bool:
            for f in b.ws.take():
                if f["event"] == "presence_state":
                    seen.update(f["payload"])
                elif f["event"] == "presence_diff":
                    seen.update(f["payload"]["joins"])
            return seen == {"ann", "bob"}

        await until(b_sees_ann)
        diff = await until(lambda: frames_of(a, "presence_diff"))
        assert list(diff[0]["payload"]["joins"]) == ["bob"]
        assert diff[0]["payload"]["joins"]["bob"]["metas"][0]["node"] == "b"
        assert set(Presence.list("room:1", pa)) == {"ann", "bob"} == set(Presence.list("room:1", pb))

        b.ws.take()
        await b.send("room:1", "shout", {"n": 1})
        got = await until(lambda: frames_of(a, "shout"))
        assert got == [
            {"topic": "room:1", "event": "shout", "payload": {"n": 1}, "ref": None, "join_ref": None}
        ]
        assert (
            len(frames_of(b, "shout")) == 1
        )  # the sender's own copy comes locally, once, not back via Redis

        # push_to by socket id across processes
        b_id = eb.sockets[0].id
        await a.send("room:1", "whisper", {"to": b_id, "text": "psst"})
        got = await until(lambda: frames_of(b, "whisper"))
        assert got[0]["payload"] == {"text": "psst"}

        # a process started later finds the stored presences
        pc = RedisPubSub(redis_url, prefix=prefix)
        await pc.start()
        assert set(Presence.list("room:1", pc)) == {"ann", "bob"}
        await pc.close()

        # a disconnect becomes a leave everywhere
        await b.close()
        diff = await until(lambda: frames_of(a, "presence_diff"))
        assert list(diff[0]["payload"]["leaves"]) == ["bob"]
        await until(lambda: set(Presence.list("room:1", pa)) == {"ann"})
        await a.close()
    finally:
        await pa.close()
        await pb.close()


async def test_presences_of_a_dead_process_expire(redis_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    pa = RedisPubSub(redis_url, prefix=prefix, node_ttl=0.6)
    pb = RedisPubSub(redis_url, prefix=prefix, node_ttl=0.6)
    ea, eb = endpoint(config(pa)), endpoint(config(pb))
    try:
        a = await Client.open(ea)
        b = await Client.open(eb)
        await a.join("room:x", {"user": "ann"})
        await b.join("room:x", {"user": "bob"})
        await until(lambda: set(Presence.list("room:x", pa)) == {"ann", "bob"})
        a.ws.take()

        # Simulate a crash of b's process: its tasks stop and its client goes away, with no goodbye.
        async def no_goodbye(client: Any) -> None:
            pass

        pb._goodbye = no_goodbye  # type: ignore[method-assign]
        for task in pb._tasks:
            task.cancel()
        await asyncio.gather(*pb._tasks, return_exceptions=True)
        pb._tasks = []
        pb._client = None

        diff = await until(lambda: frames_of(a, "presence_diff"), timeout=6)
        assert diff[0]["payload"] == {"joins": {}, "leaves": {"bob": diff[0]["payload"]["leaves"]["bob"]}}
        assert set(Presence.list("room:x", pa)) == {"ann"}
        check = aioredis.from_url(redis_url, decode_responses=True)
        stored = await check.hgetall(f"{prefix}:p:room:x")
        await check.aclose()
        assert [v for v in stored.values() if "bob" in v] == []
        await a.close()
    finally:
        await pa.close()


async def test_graceful_close_withdraws_presence(redis_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    pa, pb = RedisPubSub(redis_url, prefix=prefix), RedisPubSub(redis_url, prefix=prefix)
    ea, eb = endpoint(config(pa)), endpoint(config(pb))
    try:
        a = await Client.open(ea)
        b = await Client.open(eb)
        await a.join("room:y", {"user": "ann"})
        await b.join("room:y", {"user": "bob"})
        await until(lambda: "bob" in Presence.list("room:y", pa))
        await pb.close()
        await until(lambda: "bob" not in Presence.list("room:y", pa))
        await a.close()
    finally:
        await pa.close()


def test_missing_redis_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(ImportError, match="pip install 'zzz\\[redis\\]'"):
        RedisPubSub("redis://127.0.0.1:1/0")


async def test_survives_a_redis_restart(own_redis: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    pa, pb = RedisPubSub(own_redis.url, prefix=prefix), RedisPubSub(own_redis.url, prefix=prefix)
    ea, eb = endpoint(config(pa)), endpoint(config(pb))
    try:
        a = await Client.open(ea)
        b = await Client.open(eb)
        await a.join("room:r", {"user": "ann"})
        await b.join("room:r", {"user": "bob"})
        await until(lambda: set(Presence.list("room:r", pa)) == {"ann", "bob"})
        own_redis.stop()
        await asyncio.sleep(0.3)
        own_redis.start()  # empty: no persistence

        # Broadcasts flow again once both processes have resubscribed.
        def a_heard() -> bool:
            eb.sockets[0].broadcast("room:r", "shout", {"n": "again"})
            return any('"again"' in t for t in a.ws.sent)

        await until(a_heard, timeout=10)
        # Each process wrote its own presences back, so a newcomer sees both.
        pc = RedisPubSub(own_redis.url, prefix=prefix)
        for _ in range(50):
            await pc.start()
            if set(Presence.list("room:r", pc)) == {"ann", "bob"}:
                break
            await pc.close()
            await asyncio.sleep(0.1)
        assert set(Presence.list("room:r", pc)) == {"ann", "bob"}
        await pc.close()
        await a.close()
        await b.close()
    finally:
        await pa.close()
        await pb.close()
