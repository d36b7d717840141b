"""RedisPubSub across Redis outages, in-process: two backends ("processes") on one private redis-server.

Each test cuts Redis off in one way (shut down, restarted with or without its data, a lost reply, a
deaf reader, a full outage buffer) while broadcasts flow, and checks that every broadcast arrives
exactly once and in order, or that what was dropped is reported. The multi-process versions with real
servers are in test_redis_faults.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.channels.conftest import RedisServer
from tests.channels.fakes import Client, endpoint
from zzz.channels import ChannelConfig, ChannelDef, ChannelEndpoint, RedisPubSub


async def until(cond: Callable[[], Any], timeout: float = 10.0, step: float = 0.02) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = cond()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


def ns(client: Client, event: str = "n") -> list[int]:
    """The payload numbers of the ``event`` frames ``client`` got so far (frames stay recorded)."""
    return [json.loads(t)["payload"]["n"] for t in client.ws.sent if json.loads(t)["event"] == event]


class Pair:
    """Two backends on one Redis, each with one endpoint and one client joined to ``room:1``."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        prefix = f"t{uuid.uuid4().hex[:8]}"
        self.pa = RedisPubSub(url, prefix=prefix, **kwargs)
        self.pb = RedisPubSub(url, prefix=prefix, **kwargs)
        self.ea: ChannelEndpoint = endpoint(ChannelConfig([ChannelDef("room:*")], pubsub=self.pa))
        self.eb: ChannelEndpoint = endpoint(ChannelConfig([ChannelDef("room:*")], pubsub=self.pb))

    async def open(self) -> tuple[Client, Client]:
        a = await Client.open(self.ea)
        b = await Client.open(self.eb)
        await a.join("room:1")
        await b.join("room:1")
        a.ws.sent.clear()
        b.ws.sent.clear()
        return a, b

    async def close(self) -> None:
        await self.pa.close()
        await self.pb.close()


async def test_settings_are_checked() -> None:
    for kwargs in ({"outage_buffer": 0}, {"heartbeat": 0}, {"heartbeat": -1.0}, {"bus_length": 0}):
        with pytest.raises(ValueError):
            RedisPubSub("redis://127.0.0.1:1/0", **kwargs)
    assert RedisPubSub("redis://127.0.0.1:1/0").outage_buffer == 10_000
    assert RedisPubSub("redis://127.0.0.1:1/0").heartbeat == 5.0


async def test_stats_count_the_traffic(redis_url: str) -> None:
    pair = Pair(redis_url, heartbeat=0.3)
    try:
        a, b = await pair.open()
        for n in range(10):
            pair.pa.broadcast("room:1", "n", {"n": n})
        await until(lambda: ns(b) == list(range(10)))
        await asyncio.sleep(0.7)  # a probe or two went round
        sa, sb = pair.pa.stats(), pair.pb.stats()
        for key in ("published", "received", "buffered", "dropped", "reconnects", "lag_seconds"):
            assert key in sa, key
        assert sa["published"] >= 10 and sa["buffered"] == 0 and sa["dropped"] == 0
        assert sb["received"] >= 10 and sb["reconnects"] == 0 and sb["connected"] is True
        assert 0 < sa["lag_seconds"] < 1.0
        assert ns(a) == list(range(10))  # its own copy, once, at once
    finally:
        await pair.close()


async def test_outage_buffers_then_delivers_once_in_order(aof_redis: RedisServer) -> None:
    pair = Pair(aof_redis.url, heartbeat=0.5)
    try:
        a, b = await pair.open()
        pair.pa.broadcast("room:1", "n", {"n": 0})
        await until(lambda: ns(b) == [0])
        aof_redis.stop()
        for n in range(1, 31):
            pair.pa.broadcast("room:1", "n", {"n": n})
            pair.pb.broadcast("room:1", "m", {"n": n})
        # Local subscribers have them at once, Redis or not.
        assert ns(a) == list(range(31)) and ns(b, "m") == list(range(1, 31))
        await until(lambda: pair.pa.stats()["buffered"] >= 30)
        await asyncio.sleep(0.5)
        assert ns(b) == [0] and ns(a, "m") == []
        aof_redis.start()
        await until(lambda: len(ns(b)) >= 31 and len(ns(a, "m")) >= 30, timeout=15)
        await asyncio.sleep(0.5)  # a duplicate would arrive by now
        assert ns(b) == list(range(31))
        assert ns(a, "m") == list(range(1, 31))
        assert ns(a) == list(range(31)) and ns(b, "m") == list(range(1, 31))
        assert pair.pa.stats()["buffered"] == 0 and pair.pb.stats()["reconnects"] >= 1
    finally:
        await pair.close()


async def test_a_full_outage_buffer_drops_the_oldest_and_says_how_many(
    aof_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    pair = Pair(aof_redis.url, heartbeat=0.5, outage_buffer=20)
    try:
        a, b = await pair.open()
        aof_redis.stop()
        with caplog.at_level(logging.WARNING, logger="zzz"):
            for n in range(50):
                pair.pa.broadcast("room:1", "n", {"n": n})
            assert pair.pa.stats()["dropped"] == 30
            assert pair.pa.stats()["buffered"] == 20
            assert any("outage_buffer full" in r.getMessage() for r in caplog.records)
            aof_redis.start()
            await until(lambda: len(ns(b)) >= 20, timeout=15)
            await until(lambda: any("30 message(s) were dropped" in r.getMessage() for r in caplog.records))
        await asyncio.sleep(0.3)
        assert ns(b) == list(range(30, 50))  # the newest 20, in order
        assert ns(a) == list(range(50))
    finally:
        await pair.close()


async def test_publishers_wait_while_redis_answers_and_go_on_when_it_does_not(
    aof_redis: RedisServer,
) -> None:
    pair = Pair(aof_redis.url, heartbeat=0.5, outage_buffer=20)  # backlogged from 10 queued to 5
    try:
        a, b = await pair.open()
        assert not pair.pa.backlogged
        for n in range(15):
            pair.pa.broadcast("room:1", "n", {"n": n})
        assert pair.pa.backlogged and pair.pa.stats()["backpressure"] == 1
        await asyncio.wait_for(pair.pa.drain(), 5)  # the writer sends them, then lets publishers go
        assert not pair.pa.backlogged and pair.pa.stats()["buffered"] <= 5
        await until(lambda: ns(b) == list(range(15)))
        assert pair.pa.stats()["dropped"] == 0
        # Unreachable: waiting would hold publishers for the whole outage; the buffer takes over.
        aof_redis.stop()
        for n in range(15, 30):
            pair.pa.broadcast("room:1", "n", {"n": n})
        assert pair.pa.backlogged
        await asyncio.wait_for(pair.pa.drain(), 5)
        assert not pair.pa.backlogged and pair.pa.stats()["buffered"] == 15
        assert ns(a) == list(range(30))
        aof_redis.start()
        await until(lambda: ns(b) == list(range(30)), timeout=15)
    finally:
        await pair.close()
    assert not pair.pa.backlogged


async def test_the_in_process_backend_never_holds_publishers_back() -> None:
    from zzz.channels import InMemoryPubSub

    pubsub = InMemoryPubSub()
    for n in range(100_000):
        pubsub.broadcast("room:1", "n", {"n": n})
    assert pubsub.backlogged is False
    await asyncio.wait_for(pubsub.drain(), 1)


async def test_a_lost_reply_does_not_publish_twice(redis_url: str) -> None:
    # Redis applied the batch but the reply was lost (the connection died right after): the writer
    # sends the batch again, and Redis must not append it a second time.
    pair = Pair(redis_url, heartbeat=0.5)
    try:
        _a, b = await pair.open()
        client = pair.pa._client
        real_pipeline = client.pipeline
        lost = {"n": 0}

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = real_pipeline(*args, **kwargs)
            real_execute = pipe.execute

            async def execute(*a: Any, **k: Any) -> Any:
                result = await real_execute(*a, **k)
                if lost["n"] < 3:
                    lost["n"] += 1
                    from redis.exceptions import ConnectionError

                    raise ConnectionError("reply lost (test)")
                return result

            pipe.execute = execute
            return pipe

        client.pipeline = pipeline
        for n in range(40):
            pair.pa.broadcast("room:1", "n", {"n": n})
            if n % 10 == 0:
                await asyncio.sleep(0.05)
        await until(lambda: len(ns(b)) >= 40)
        await asyncio.sleep(0.5)
        assert lost["n"] == 3
        assert ns(b) == list(range(40))
        bus = await pair.pa._client.xrange(pair.pa._bus)
        assert len([e for e in bus if not e[1]["m"].startswith("h\n")]) == 40  # stored once each
    finally:
        await pair.close()


async def test_a_deaf_reader_heals_within_two_heartbeats(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # python-socketio had a worker whose subscription went deaf: the connection looked alive but
    # nothing arrived. Here b's reads come back empty until its reader reconnects.
    heartbeat = 0.5
    pair = Pair(redis_url, heartbeat=heartbeat)
    try:
        _a, b = await pair.open()
        reader = pair.pb._reader
        real_xread, real_disconnect = reader.xread, reader.connection_pool.disconnect
        state = {"deaf": False, "since": 0.0, "healed": 0.0}

        async def xread(*args: Any, **kwargs: Any) -> Any:
            if state["deaf"]:
                await asyncio.sleep(0.05)
                return []
            return await real_xread(*args, **kwargs)

        async def disconnect(*args: Any, **kwargs: Any) -> Any:
            if state["deaf"]:
                state["deaf"], state["healed"] = False, time.monotonic()
            return await real_disconnect(*args, **kwargs)

        reader.xread = xread
        reader.connection_pool.disconnect = disconnect
        pair.pa.broadcast("room:1", "n", {"n": 0})
        await until(lambda: ns(b) == [0])
        with caplog.at_level(logging.WARNING, logger="zzz"):
            state["deaf"], state["since"] = True, time.monotonic()
            for n in range(1, 21):
                pair.pa.broadcast("room:1", "n", {"n": n})
                await asyncio.sleep(0.02)
            await until(lambda: state["healed"], timeout=4 * heartbeat + 3)
            await until(lambda: len(ns(b)) >= 21)
        took = state["healed"] - state["since"]
        assert took < 2 * heartbeat + 1.0, took  # 2 heartbeats, plus a probe's period and slack
        assert any("probes" in r.getMessage() for r in caplog.records)
        await asyncio.sleep(0.3)
        assert ns(b) == list(range(21))
        assert pair.pb.stats()["deaf"] == 1 and pair.pb.stats()["reconnects"] == 1
    finally:
        await pair.close()


async def test_a_killed_reader_connection_resumes_without_loss(redis_url: str) -> None:
    pair = Pair(redis_url, heartbeat=0.5)
    admin = aioredis.from_url(redis_url, decode_responses=True)
    try:
        _a, b = await pair.open()
        name = f"{pair.pb.prefix}:{pair.pb.node_id}:reader"
        # The reader may still be connecting (or, on a loaded machine, reconnecting) when the join
        # returns: wait for its one connection rather than list the clients once.
        ids: list[str] = []
        deadline = asyncio.get_running_loop().time() + 10
        while len(ids) != 1:
            assert asyncio.get_running_loop().time() < deadline, await admin.client_list()
            await asyncio.sleep(0.05)
            ids = [c["id"] for c in await admin.client_list() if c.get("name") == name]
        before = pair.pb.stats()["reconnects"]
        sent = 0
        for n in range(10):
            pair.pa.broadcast("room:1", "n", {"n": n})
        sent = 10
        await admin.client_kill_filter(_id=ids[0])
        for n in range(sent, sent + 30):
            pair.pa.broadcast("room:1", "n", {"n": n})
            await asyncio.sleep(0.01)
        await until(lambda: len(ns(b)) >= 40)
        await asyncio.sleep(0.3)
        assert ns(b) == list(range(40))
        assert pair.pb.stats()["reconnects"] == before + 1
    finally:
        await admin.aclose()
        await pair.close()


async def test_a_restart_without_data_resends_what_may_be_lost(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Redis took 0-19 but is restarted empty when b has read only 0-9: the sender resends its recent
    # messages (b drops the copies of what it had read), then what it buffered during the outage.
    pair = Pair(own_redis.url, heartbeat=1.0)
    try:
        a, b = await pair.open()
        reader = pair.pb._reader
        real_xread = reader.xread
        paused = {"on": False}

        async def xread(*args: Any, **kwargs: Any) -> Any:
            while paused["on"]:
                await asyncio.sleep(0.02)  # b is slow: it has not read these yet
            return await real_xread(*args, **kwargs)

        reader.xread = xread
        for n in range(10):
            pair.pa.broadcast("room:1", "n", {"n": n})
        await until(lambda: len(ns(b)) == 10)
        paused["on"] = True
        await asyncio.sleep(0.8)  # the read under way ends (it blocks for heartbeat / 2 at most)
        for n in range(10, 20):
            pair.pa.broadcast("room:1", "n", {"n": n})
        await until(lambda: pair.pa.stats()["published"] >= 20)
        with caplog.at_level(logging.WARNING, logger="zzz"):
            own_redis.stop()
            for n in range(20, 30):
                pair.pa.broadcast("room:1", "n", {"n": n})
            own_redis.start()  # empty
            paused["on"] = False
            await until(lambda: len(ns(b)) >= 30, timeout=15)
            await asyncio.sleep(0.5)
        assert ns(b) == list(range(30))
        assert ns(a) == list(range(30))
        assert any("lost its data" in r.getMessage() for r in caplog.records)
        assert pair.pa.stats()["resent"] >= 20
    finally:
        await pair.close()


async def test_a_process_away_longer_than_the_bus_keeps_counts_what_it_missed(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # b's reader is cut off while a publishes far more than bus_length: the oldest entries are trimmed
    # before b comes back. It gets what is left, in order, once, and says how many it lost.
    pair = Pair(redis_url, heartbeat=1.0, bus_length=50)
    try:
        _a, b = await pair.open()
        pair.pa.broadcast("room:1", "n", {"n": -1})
        await until(lambda: ns(b) == [-1])
        b.ws.sent.clear()
        reader = pair.pb._reader
        real_xread = reader.xread
        state = {"away": True}

        async def xread(*args: Any, **kwargs: Any) -> Any:
            if state["away"]:
                await asyncio.sleep(0.05)
                from redis.exceptions import ConnectionError

                raise ConnectionError("cut off (test)")
            return await real_xread(*args, **kwargs)

        reader.xread = xread
        await asyncio.sleep(0.8)  # the read under way ends (it blocks for heartbeat / 2 at most)
        for n in range(1000):
            pair.pa.broadcast("room:1", "n", {"n": n})
        await until(lambda: pair.pa.stats()["published"] >= 1000)
        with caplog.at_level(logging.WARNING, logger="zzz"):
            state["away"] = False
            await until(lambda: ns(b) and ns(b)[-1] == 999)
        got = ns(b)
        assert got == list(range(1000 - len(got), 1000)) and len(got) < 1000
        assert any("never reached this one" in r.getMessage() for r in caplog.records)
        assert pair.pb.stats()["missed"] == 1000 - len(got)
    finally:
        await pair.close()


class Sub:
    """A bare subscriber for presence tests."""

    array_form = False

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex

    def send_text(self, text: str) -> None:
        pass


async def test_presence_writes_dropped_by_a_full_buffer_are_repaired(aof_redis: RedisServer) -> None:
    pair = Pair(aof_redis.url, heartbeat=0.5, outage_buffer=5)
    check = aioredis.from_url(aof_redis.url, decode_responses=True)
    try:
        await pair.open()
        aof_redis.stop()
        subs = [Sub() for _ in range(10)]
        for i, sub in enumerate(subs):
            pair.pa.track(sub, "room:1", f"u{i}", {})
        pair.pa.untrack(subs[0], "room:1")
        assert pair.pa.stats()["dropped"] > 0
        aof_redis.start()
        want = {f"u{i}" for i in range(1, 10)}
        await until(lambda: set(pair.pb.presence_list("room:1")) == want, timeout=15)

        async def stored() -> set[str]:
            return {json.loads(v)[1] for v in (await check.hgetall(f"{pair.pa.prefix}:p:room:1")).values()}

        for _ in range(100):
            if await stored() == want:
                break
            await asyncio.sleep(0.05)
        assert await stored() == want
    finally:
        await check.aclose()
        await pair.close()
