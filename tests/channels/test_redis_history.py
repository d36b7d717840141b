"""History on RedisPubSub: offsets shared by every process, the hard size cap, ttl, epochs, and outages.

Two backends ("processes") on one private redis-server, fake sockets; the join with recovery over
real sockets is tested with the endpoint (test_history*.py) and across processes in test_redis_faults.py.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import redis.asyncio as aioredis

from tests.channels.conftest import RedisServer
from tests.channels.fakes import Client, endpoint
from tests.channels.test_redis_backbone import until
from zzz.channels import ChannelConfig, ChannelDef, ChannelEndpoint, RedisPubSub
from zzz.channels.history import History, Position


def got(client: Client, topic: str = "hist:1") -> list[tuple[int, str, Any]]:
    """(offset, epoch, payload) of every broadcast ``client`` received on ``topic`` (frames stay recorded)."""
    out = []
    for text in client.ws.sent:
        frame = json.loads(text)
        if frame["topic"] == topic and frame["event"] == "n":
            out.append((frame["meta"]["offset"], frame["meta"]["epoch"], frame["payload"]))
    return out


class Pair:
    """Two backends on one Redis; ``hist:*`` topics keep ``history``, ``room:*`` topics none."""

    def __init__(self, url: str, history: History, **kwargs: Any) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:8]}"
        self.history = history
        self.pa = RedisPubSub(url, prefix=self.prefix, **kwargs)
        self.pb = RedisPubSub(url, prefix=self.prefix, **kwargs)
        channels = [ChannelDef("hist:*", history=history), ChannelDef("room:*")]
        self.ea: ChannelEndpoint = endpoint(ChannelConfig(list(channels), pubsub=self.pa))
        self.eb: ChannelEndpoint = endpoint(ChannelConfig(list(channels), pubsub=self.pb))

    async def open(self, topic: str = "hist:1") -> tuple[Client, Client]:
        a = await Client.open(self.ea)
        b = await Client.open(self.eb)
        await a.join(topic)
        await b.join(topic)
        a.ws.sent.clear()
        b.ws.sent.clear()
        return a, b

    async def close(self) -> None:
        await self.pa.close()
        await self.pb.close()


async def test_offsets_are_shared_and_delivered_in_order_everywhere(redis_url: str) -> None:
    pair = Pair(redis_url, History(size=1000), heartbeat=0.5)
    try:
        a, b = await pair.open()
        before = await pair.pa.position("hist:1", pair.history)
        assert before.offset == 0
        for n in range(100):
            pair.pa.broadcast("hist:1", "n", {"from": "a", "n": n})
            pair.pb.broadcast("hist:1", "n", {"from": "b", "n": n})
            if n % 25 == 0:
                await asyncio.sleep(0.01)
        # Nothing reaches even the local subscriber before Redis gave it its offset.
        await until(lambda: len(got(a)) >= 200 and len(got(b)) >= 200)
        await asyncio.sleep(0.3)
        ga, gb = got(a), got(b)
        assert ga == gb  # the same offset for the same broadcast, in the same order, in both processes
        assert [o for o, _e, _p in ga] == list(range(1, 201))
        assert {e for _o, e, _p in ga} == {before.epoch}  # the epoch a topic without broadcasts had
        for who in ("a", "b"):
            assert [p["n"] for _o, _e, p in ga if p["from"] == who] == list(range(100))
        assert await pair.pb.position("hist:1", pair.history) == Position(200, before.epoch)
    finally:
        await pair.close()


async def test_size_is_a_hard_cap_and_since_reads_what_is_kept(redis_url: str) -> None:
    pair = Pair(redis_url, History(size=5), heartbeat=0.5)
    check = aioredis.from_url(redis_url, decode_responses=True)
    try:
        a, _b = await pair.open()
        for n in range(1, 13):
            pair.pb.broadcast("hist:1", "n", {"n": n})
        await until(lambda: len(got(a)) == 12)
        assert await check.xlen(f"{pair.prefix}:h:hist:1") == 5
        epoch = got(a)[0][1]
        h = pair.history
        recovered, missed, current = await pair.pa.since("hist:1", h, Position(7, epoch))
        assert recovered and current == Position(12, epoch)
        assert [(p.offset, json.loads(p.body)["n"], p.event) for p in missed] == [
            (o, o, "n") for o in range(8, 13)
        ]
        assert await pair.pa.since("hist:1", h, Position(12, epoch)) == (True, [], current)
        # Offset 8 is the oldest kept: a client at 6 missed 7, which is gone.
        assert (await pair.pa.since("hist:1", h, Position(6, epoch)))[:2] == (False, [])
        assert (await pair.pa.since("hist:1", h, Position(7, "other")))[:2] == (False, [])
        assert (await pair.pa.since("hist:1", h, Position(13, epoch)))[:2] == (False, [])  # ahead
        # broadcast_from's exclusion is kept with the publication.
        pair.pb.broadcast("hist:1", "n", {"n": 13}, exclude="sock-x")
        await until(lambda: len(got(a)) == 13)
        _r, missed, _c = await pair.pa.since("hist:1", h, Position(12, epoch))
        assert [(p.offset, p.exclude) for p in missed] == [(13, "sock-x")]
    finally:
        await check.aclose()
        await pair.close()


async def test_a_topic_without_broadcasts_recovers_from_offset_zero(redis_url: str) -> None:
    pair = Pair(redis_url, History(size=10), heartbeat=0.5)
    try:
        h = pair.history
        start = await pair.pa.position("hist:quiet", h)
        assert start.offset == 0
        assert await pair.pb.position("hist:quiet", h) == start  # the same in every process
        assert await pair.pb.since("hist:quiet", h, start) == (True, [], start)
        a, _b = await pair.open("hist:quiet")
        pair.pb.broadcast("hist:quiet", "n", {"n": 1})
        await until(lambda: got(a, "hist:quiet"))
        assert got(a, "hist:quiet")[0][:2] == (1, start.epoch)
        recovered, missed, _ = await pair.pa.since("hist:quiet", h, start)
        assert recovered and [p.offset for p in missed] == [1]
    finally:
        await pair.close()


async def test_ttl_expires_the_history_and_its_epoch(redis_url: str) -> None:
    pair = Pair(redis_url, History(size=10, ttl=0.4), heartbeat=0.5)
    try:
        a, _b = await pair.open()
        pair.pa.broadcast("hist:1", "n", {"n": 1})
        await until(lambda: got(a))
        pos = Position(0, got(a)[0][1])
        h = pair.history
        recovered, missed, _ = await pair.pb.since("hist:1", h, pos)
        assert recovered and len(missed) == 1
        await asyncio.sleep(0.8)
        recovered, missed, current = await pair.pb.since("hist:1", h, pos)
        assert (recovered, missed) == (False, [])
        assert current.offset == 0 and current.epoch != pos.epoch  # a new stream
        pair.pa.broadcast("hist:1", "n", {"n": 2})
        await until(lambda: len(got(a)) == 2)
        assert got(a)[1][:2] == (1, current.epoch)
    finally:
        await pair.close()


async def test_a_flushed_redis_is_a_new_epoch(own_redis: RedisServer) -> None:
    pair = Pair(own_redis.url, History(size=100), heartbeat=0.5)
    admin = aioredis.from_url(own_redis.url, decode_responses=True)
    try:
        a, b = await pair.open()
        for n in range(5):
            pair.pa.broadcast("hist:1", "n", {"n": n})
        await until(lambda: len(got(a)) == 5 and len(got(b)) == 5)  # both read them before the loss
        old = Position(5, got(b)[0][1])
        await admin.flushall()
        for n in range(5, 10):
            pair.pa.broadcast("hist:1", "n", {"n": n})
        await until(lambda: len(got(b)) >= 10)
        await asyncio.sleep(0.3)
        new = got(b)[5:]
        assert [p["n"] for _o, _e, p in got(b)] == list(range(10))
        # The new stream starts at 1 with what a was still resending in case Redis had lost it (b had
        # read those: it drops the copies), then the new broadcasts.
        resent = pair.pa.stats()["resent"]
        assert [o for o, _e, _p in new] == list(range(resent + 1, resent + 6))
        assert len({e for _o, e, _p in new}) == 1 and new[0][1] != old.epoch
        assert got(a) == got(b)
        assert (await pair.pa.since("hist:1", pair.history, old))[:2] == (False, [])
    finally:
        await admin.aclose()
        await pair.close()


async def test_during_an_outage_history_broadcasts_wait_for_their_offset(aof_redis: RedisServer) -> None:
    pair = Pair(aof_redis.url, History(size=100), heartbeat=0.5)
    try:
        a, b = await pair.open()
        pair.pa.broadcast("hist:1", "n", {"n": 0})
        await until(lambda: len(got(a)) == 1 and len(got(b)) == 1)
        epoch = got(a)[0][1]
        aof_redis.stop()
        for n in range(1, 11):
            pair.pa.broadcast("hist:1", "n", {"n": n})
            pair.pa.broadcast("room:1", "n", {"n": n})
        await asyncio.sleep(0.5)
        assert len(got(a)) == 1  # no offset yet, so not even the local subscriber has it
        aof_redis.start()  # with its data: the same epoch, the next offsets
        await until(lambda: len(got(a)) == 11 and len(got(b)) == 11, timeout=15)
        await asyncio.sleep(0.3)
        assert got(a) == got(b) == [(o, epoch, {"n": o - 1}) for o in range(1, 12)]
    finally:
        await pair.close()


async def test_a_lost_reply_does_not_take_two_offsets(redis_url: str) -> None:
    pair = Pair(redis_url, History(size=100), heartbeat=0.5)
    try:
        a, b = await pair.open()
        client = pair.pa._client
        real_pipeline = client.pipeline
        lost = {"n": 0}

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = real_pipeline(*args, **kwargs)
            real_execute = pipe.execute

            async def execute(*a: Any, **k: Any) -> Any:
                result = await real_execute(*a, **k)
                if lost["n"] < 2:
                    lost["n"] += 1
                    from redis.exceptions import ConnectionError

                    raise ConnectionError("reply lost (test)")
                return result

            pipe.execute = execute
            return pipe

        client.pipeline = pipeline
        for n in range(20):
            pair.pa.broadcast("hist:1", "n", {"n": n})
        await until(lambda: len(got(b)) >= 20)
        await asyncio.sleep(0.3)
        assert [(o, p["n"]) for o, _e, p in got(b)] == [(n + 1, n) for n in range(20)]
        assert got(a) == got(b)
        assert lost["n"] == 2
    finally:
        await pair.close()


async def test_offsets_are_per_topic(redis_url: str) -> None:
    pair = Pair(redis_url, History(size=100), heartbeat=0.5)
    try:
        a = await Client.open(pair.ea)
        await pair.pb.start()
        for topic in ("hist:x", "hist:y", "room:z"):
            await a.join(topic)
        a.ws.sent.clear()
        for n in range(30):  # queued together: one script call holds both topics
            pair.pb.broadcast("hist:x", "n", {"n": n})
            pair.pb.broadcast("hist:y", "n", {"n": n})
            pair.pb.broadcast("room:z", "n", {"n": n})
        await until(lambda: len(got(a, "hist:x")) == 30 and len(got(a, "hist:y")) == 30)
        for topic in ("hist:x", "hist:y"):
            assert [(o, p["n"]) for o, _e, p in got(a, topic)] == [(n + 1, n) for n in range(30)]
        frames = [json.loads(t) for t in a.ws.sent if json.loads(t)["topic"] == "room:z"]
        assert [f["payload"]["n"] for f in frames] == list(range(30)) and all("meta" not in f for f in frames)
    finally:
        await pair.close()


async def test_a_broadcast_caught_by_a_data_loss_arrives_once_everywhere(own_redis: RedisServer) -> None:
    # b has read a's broadcasts, a's own reader has not (it is slow) when Redis loses its data: a
    # resends them, b drops the copies, a's subscribers get them once, in the new epoch.
    pair = Pair(own_redis.url, History(size=100), heartbeat=1.0)
    try:
        a, b = await pair.open()
        reader = pair.pa._reader
        real_xread = reader.xread
        paused = {"on": True}

        async def xread(*args: Any, **kwargs: Any) -> Any:
            while paused["on"]:
                await asyncio.sleep(0.02)
            return await real_xread(*args, **kwargs)

        reader.xread = xread
        await asyncio.sleep(0.8)  # the read under way ends (it blocks for heartbeat / 2 at most)
        for n in range(5):
            pair.pa.broadcast("hist:1", "n", {"n": n})
        await until(lambda: len(got(b)) == 5)
        assert got(a) == []
        own_redis.stop()
        own_redis.start()  # empty
        paused["on"] = False
        await until(lambda: len(got(a)) == 5, timeout=15)
        await asyncio.sleep(0.5)
        assert [p["n"] for _o, _e, p in got(a)] == [p["n"] for _o, _e, p in got(b)] == list(range(5))
        assert [o for o, _e, _p in got(a)] == [1, 2, 3, 4, 5] == [o for o, _e, _p in got(b)]
        assert got(a)[0][1] != got(b)[0][1]  # the new epoch here, the old one there
        assert pair.pb.stats()["duplicates"] == 5
    finally:
        await pair.close()
