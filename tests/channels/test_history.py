"""History and recovery through the channel layer, without a server: positions, since, the wire meta.

The same behaviour over real sockets (both wire forms, concurrent broadcasts, reconnects) is in
test_history_e2e.py.
"""

from __future__ import annotations

import json
import math
import threading
import time
from typing import Any

import pytest

import zzz
from tests.channels.fakes import Client, endpoint
from zzz.channels import ChannelConfig, ChannelDef, History, InMemoryPubSub
from zzz.channels import history as history_module
from zzz.channels.history import LocalHistory, Position
from zzz.channels.wire import decode, encode_raw


def config(**history: Any) -> ChannelConfig:
    room = ChannelDef("h:*", history=History(**(history or {"size": 100})))
    plain = ChannelDef("p:*")
    return ChannelConfig(channels=[room, plain])


def test_history_validates_its_arguments() -> None:
    assert zzz.History(1) == History(1, None)
    assert History(5, ttl=0.5).ttl == 0.5
    for bad in (
        {"size": 0},
        {"size": -3},
        {"size": 10, "ttl": 0},
        {"size": 10, "ttl": -1.0},
        {"size": 10, "ttl": math.nan},
    ):
        with pytest.raises(ValueError):
            History(**bad)
    with pytest.raises(TypeError):
        History(2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ChannelDef("x", history=10)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ChannelDef("x", intercept={"ev": "not callable"})  # type: ignore[dict-item]


def test_local_history_offsets_size_and_epoch() -> None:
    store = LocalHistory()
    h = History(3)
    start = store.position("t")
    assert start == Position(0, store.base)
    positions = [store.append("t", "e", str(i), None, h) for i in range(1, 6)]
    assert [p.offset for p in positions] == [1, 2, 3, 4, 5]
    assert {p.epoch for p in positions} == {start.epoch}  # the epoch a position taken before carried
    assert store.position("other") == Position(0, store.base)
    ok, missed, current = store.since("t", h, Position(2, start.epoch))
    assert (ok, [p.body for p in missed], current) == (True, ["3", "4", "5"], Position(5, start.epoch))
    # offset 2 (the one after 1) was pushed out by size=3: a hard cap
    assert store.since("t", h, Position(1, start.epoch)) == (False, [], current)
    assert store.since("t", h, Position(5, start.epoch)) == (True, [], current)
    assert store.since("t", h, Position(2, "other-epoch")) == (False, [], current)
    assert store.since("t", h, Position(9, start.epoch)) == (False, [], current)  # ahead of the stream
    # another backend instance: another epoch for the same topic
    assert LocalHistory().position("t").epoch != start.epoch


def test_local_history_ttl_and_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(history_module.time, "time", lambda: now[0])
    store = LocalHistory()
    h = History(100, ttl=10)
    epoch = store.base
    store.append("t", "e", "1", None, h)
    now[0] += 6
    store.append("t", "e", "2", None, h)
    assert store.since("t", h, Position(0, epoch))[0] is True
    now[0] += 6  # offset 1 is 12 s old: expired
    ok, missed, current = store.since("t", h, Position(1, epoch))
    assert ok and [p.body for p in missed] == ["2"]
    assert store.since("t", h, Position(0, epoch)) == (False, [], current)
    now[0] += 10  # everything expired: the sweep frees the stream and moves to a new epoch
    store.sweep()
    fresh = store.position("t")
    assert fresh.offset == 0 and fresh.epoch != epoch
    assert store.since("t", h, Position(2, epoch))[0] is False
    assert store.append("t", "e", "3", None, h) == Position(1, fresh.epoch)


async def test_join_reply_carries_the_position_and_replays_what_was_missed() -> None:
    ep = endpoint(config())
    sub = await Client.open(ep)
    reply_ref = await sub.send("h:1", "phx_join", {"a": 1})
    frames = sub.ws.take()
    assert frames[0]["event"] == "phx_reply" and frames[0]["ref"] == reply_ref
    meta = frames[0]["meta"]
    assert meta["recovered"] is False and meta["offset"] == 0 and isinstance(meta["epoch"], str)
    assert [f["event"] for f in frames[1:]] == ["presence_state"]
    epoch = meta["epoch"]
    for i in range(1, 4):
        ep.pubsub.broadcast("h:1", "m", {"i": i})
    got = sub.ws.take()
    assert [(f["payload"], f["meta"]) for f in got] == [
        ({"i": i}, {"offset": i, "epoch": epoch}) for i in (1, 2, 3)
    ]
    await sub.close()
    for i in range(4, 8):
        ep.pubsub.broadcast("h:1", "m", {"i": i})
    again = await Client.open(ep)
    await again.send_raw(
        json.dumps(
            {
                "topic": "h:1",
                "event": "phx_join",
                "payload": {},
                "ref": "1",
                "meta": {"recover": {"offset": 3, "epoch": epoch}},
            }
        )
    )
    frames = again.ws.take()
    assert frames[0]["meta"] == {"recovered": True, "offset": 7, "epoch": epoch}
    assert [f["payload"]["i"] for f in frames[1:5]] == [4, 5, 6, 7]
    assert [f["meta"]["offset"] for f in frames[1:5]] == [4, 5, 6, 7]
    assert frames[5]["event"] == "presence_state" and len(frames) == 6


async def test_recover_is_not_part_of_the_payload_and_bad_recover_is_not_recovered() -> None:
    seen: list[Any] = []
    room = ChannelDef("h:*", join=lambda s, t, p: seen.append(p) or True, history=History(10))
    ep = endpoint(ChannelConfig(channels=[room]))
    c = await Client.open(ep)
    payload = {"meta": 1, "offset": 2, "epoch": "x", "recover": {"offset": 0, "epoch": "y"}}
    for i, recover in enumerate(
        [
            {"offset": "1", "epoch": "e"},
            7,
            {"offset": -1, "epoch": "e"},
            {"offset": True, "epoch": "e"},
            {"offset": 0, "epoch": "wrong"},
        ]
    ):
        await c.send_raw(
            json.dumps(
                {
                    "topic": f"h:{i}",
                    "event": "phx_join",
                    "payload": payload,
                    "ref": str(i),
                    "meta": {"recover": recover},
                }
            )
        )
        reply = c.ws.take()[0]
        assert reply["payload"]["status"] == "ok"
        assert reply["meta"]["recovered"] is False, recover
    assert seen == [payload] * 5


async def test_topics_without_history_carry_no_meta() -> None:
    ep = endpoint(config())
    obj = await Client.open(ep)
    arr = await Client.open(ep, query={"vsn": "2.0.0"})
    await obj.join("p:1")
    await arr.send_raw(json.dumps(["1", "1", "p:1", "phx_join", {}]))
    ep.pubsub.broadcast("p:1", "m", {"meta": {"offset": 1}, "epoch": "e", "recover": None, "offset": 3})
    for c in (obj, arr):
        assert all("meta" not in text for text in c.ws.sent[:-1])  # replies, presence_state
    body = '{"meta":{"offset":1},"epoch":"e","recover":null,"offset":3}'
    assert obj.ws.sent[-1] == (
        '{"topic":"p:1","event":"m","payload":' + body + ',"ref":null,"join_ref":null}'
    )
    assert arr.ws.sent[-1] == '[null,null,"p:1","m",' + body + "]"


def test_wire_meta_in_both_forms() -> None:
    assert encode_raw(True, "t", "e", "{}", None, None, '{"offset":1,"epoch":"x"}') == (
        '[null,null,"t","e",{},{"offset":1,"epoch":"x"}]'
    )
    assert encode_raw(False, "t", "e", "{}", None, None, '{"offset":1,"epoch":"x"}') == (
        '{"topic":"t","event":"e","payload":{},"ref":null,"join_ref":null,"meta":{"offset":1,"epoch":"x"}}'
    )
    msg = decode('["1","1","t","phx_join",{"a":1},{"recover":{"offset":1,"epoch":"x"}}]')
    assert msg.payload == {"a": 1} and msg.meta == {"recover": {"offset": 1, "epoch": "x"}}
    msg = decode('{"topic":"t","event":"phx_join","payload":{"meta":2},"ref":"1","meta":{"recover":null}}')
    assert msg.payload == {"meta": 2} and msg.meta == {"recover": None}
    assert decode('["1","1","t","e",{},null]').meta is None
    assert decode('["1","1","t","e",{}]').meta is None


async def test_intercept_filters_and_rewrites_per_subscriber() -> None:
    calls: list[str] = []

    def only_for_admins(socket: Any, topic: str, event: str, payload: Any) -> Any:
        calls.append(socket.get_assign("user"))
        if socket.get_assign("role") != "admin":
            return None
        return dict(payload, seen_by=socket.get_assign("user"))

    def join(socket: Any, topic: str, payload: Any) -> bool:
        socket.assign("user", payload["user"])
        socket.assign("role", payload.get("role"))
        return True

    for history in (None, History(10)):
        room = ChannelDef("r:*", join=join, intercept={"secret": only_for_admins}, history=history)
        ep = endpoint(ChannelConfig(channels=[room]))
        ann, bob = await Client.open(ep), await Client.open(ep)
        await ann.join("r:1", {"user": "ann", "role": "admin"})
        await bob.join("r:1", {"user": "bob"})
        ann.ws.take(), bob.ws.take()
        calls.clear()
        ep.pubsub.broadcast("r:1", "secret", {"code": 42})
        ep.pubsub.broadcast("r:1", "public", {"hello": 1})
        assert sorted(calls) == ["ann", "bob"]  # once per subscriber, only for the intercepted event
        got_ann, got_bob = ann.ws.take(), bob.ws.take()
        assert [f["payload"] for f in got_ann] == [{"code": 42, "seen_by": "ann"}, {"hello": 1}]
        assert [f["payload"] for f in got_bob] == [{"hello": 1}]
        if history is not None:
            # bob skipped offset 1: his next broadcast simply has a higher one
            assert [f["meta"]["offset"] for f in got_ann] == [1, 2]
            assert [f["meta"]["offset"] for f in got_bob] == [2]


async def test_replay_passes_through_the_intercept() -> None:
    def hide(socket: Any, topic: str, event: str, payload: Any) -> Any:
        return None if payload["n"] % 2 else {"n": payload["n"], "to": socket.id[:4]}

    room = ChannelDef("r:*", intercept={"m": hide}, history=History(100))
    ep = endpoint(ChannelConfig(channels=[room]))
    c = await Client.open(ep)
    epoch = await c.join("r:1")  # the reply payload; the meta is on the frame
    del epoch
    await c.close()
    for n in range(1, 7):
        ep.pubsub.broadcast("r:1", "m", {"n": n})
    again = await Client.open(ep)
    pos = await ep.pubsub.position("r:1", History(100))
    await again.send_raw(
        json.dumps(
            {
                "topic": "r:1",
                "event": "phx_join",
                "payload": {},
                "ref": "1",
                "meta": {"recover": {"offset": 0, "epoch": pos.epoch}},
            }
        )
    )
    frames = again.ws.take()
    assert frames[0]["meta"]["recovered"] is True
    replayed = [f for f in frames if f["event"] == "m"]
    assert [(f["payload"]["n"], f["meta"]["offset"]) for f in replayed] == [(2, 2), (4, 4), (6, 6)]
    assert all(f["payload"]["to"] == again.endpoint.sockets[0].id[:4] for f in replayed)


async def test_broadcasts_during_the_join_are_neither_lost_nor_doubled() -> None:
    """A backend whose history read takes time: broadcasts arriving meanwhile are held, deduplicated."""
    pubsub = InMemoryPubSub()
    real_since = pubsub.since
    during: list[int] = []

    async def slow_since(topic: str, history: History, pos: Position) -> Any:
        # Two broadcasts land while the read is in flight: one before the read, one after it.
        pubsub.broadcast(topic, "m", {"n": "before-read"})
        during.append(1)
        result = await real_since(topic, history, pos)
        pubsub.broadcast(topic, "m", {"n": "after-read"})
        return result

    pubsub.since = slow_since  # type: ignore[method-assign]
    room = ChannelDef("h:*", history=History(100), handlers={})
    ep = endpoint(ChannelConfig(channels=[room], pubsub=pubsub))
    first = await Client.open(ep)
    await first.join("h:1")
    epoch = (await pubsub.position("h:1", History(100))).epoch
    pubsub.broadcast("h:1", "m", {"n": "old"})
    await first.close()
    c = await Client.open(ep)
    await c.send_raw(
        json.dumps(
            {
                "topic": "h:1",
                "event": "phx_join",
                "payload": {},
                "ref": "1",
                "meta": {"recover": {"offset": 0, "epoch": epoch}},
            }
        )
    )
    frames = c.ws.take()
    assert frames[0]["meta"] == {"recovered": True, "offset": 2, "epoch": epoch}
    got = [(f["payload"]["n"], f["meta"]["offset"]) for f in frames if f["event"] == "m"]
    assert got == [("old", 1), ("before-read", 2), ("after-read", 3)]
    assert [f["event"] for f in frames].index("presence_state") == 3  # after the replay, before live
    # and live afterwards, once
    pubsub.broadcast("h:1", "m", {"n": "live"})
    assert [f["meta"]["offset"] for f in c.ws.take()] == [4]


async def test_late_delivery_of_a_replayed_offset_is_dropped() -> None:
    """A backend may deliver a broadcast after the history read returned it (Redis reads the bus apart)."""
    pubsub = InMemoryPubSub()
    room = ChannelDef("h:*", history=History(100))
    ep = endpoint(ChannelConfig(channels=[room], pubsub=pubsub))
    c = await Client.open(ep)
    await c.join("h:1")
    epoch = (await pubsub.position("h:1", History(100))).epoch
    await c.close()
    store_only = pubsub._history.append("h:1", "m", '{"n":1}', None, History(100))  # stored, not delivered
    c = await Client.open(ep)
    await c.send_raw(
        json.dumps(
            {
                "topic": "h:1",
                "event": "phx_join",
                "payload": {},
                "ref": "1",
                "meta": {"recover": {"offset": 0, "epoch": epoch}},
            }
        )
    )
    assert [f["meta"]["offset"] for f in c.ws.take() if f["event"] == "m"] == [1]
    pubsub._deliver("h:1", "m", '{"n":1}', None, store_only)  # the late delivery
    assert c.ws.take() == []
    pubsub.broadcast("h:1", "m", {"n": 2})
    assert [f["meta"]["offset"] for f in c.ws.take()] == [2]
    assert pubsub._recovering == {}


async def test_history_unavailable_refuses_the_join(caplog: pytest.LogCaptureFixture) -> None:
    pubsub = InMemoryPubSub()

    async def broken(topic: str, history: History) -> Position:
        raise ConnectionError("down")

    pubsub.position = broken  # type: ignore[method-assign]
    left: list[str] = []
    room = ChannelDef("h:*", history=History(10), leave=lambda s, t: left.append(t))
    ep = endpoint(ChannelConfig(channels=[room], pubsub=pubsub))
    c = await Client.open(ep)
    reply = await c.join("h:1")
    assert reply == {"status": "error", "response": {"reason": "history unavailable"}}
    assert left == ["h:1"] and pubsub.subscriber_count("h:1") == 0
    assert not ep.sockets[0].is_joined("h:1")


async def test_recovery_buffer_overflow_closes_the_socket() -> None:
    pubsub = InMemoryPubSub()
    real_position = pubsub.position

    async def flooded(topic: str, history: History) -> Position:
        for n in range(1200):  # more than max(size, 1000) while the join is reading
            pubsub.broadcast(topic, "m", {"n": n})
        return await real_position(topic, history)

    pubsub.position = flooded  # type: ignore[method-assign]
    ep = endpoint(ChannelConfig(channels=[ChannelDef("h:*", history=History(10))], pubsub=pubsub))
    c = await Client.open(ep)
    await c.send("h:1", "phx_join")
    assert c.ws.close_code == 1013 and c.ws.close_reason == "recovery overflow"


def test_many_topics_do_not_grow_the_store() -> None:
    store = LocalHistory()
    for i in range(10_000):
        store.position(f"t:{i}")
    assert store._streams == {}
    t0 = time.monotonic()
    h = History(10)
    for i in range(10_000):
        store.append("one", "e", "{}", None, h)
    assert len(store._streams["one"].entries) == 10
    assert time.monotonic() - t0 < 5


async def test_offsets_arrive_in_order_when_threads_broadcast() -> None:
    ep = endpoint(config())
    c = await Client.open(ep)
    await c.join("h:t")
    c.ws.take()
    per_thread, threads = 3000, 4

    def publish(k: int) -> None:
        for n in range(per_thread):
            ep.pubsub.broadcast("h:t", "m", {"k": k, "n": n})

    workers = [threading.Thread(target=publish, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    frames = c.ws.take()
    assert [f["meta"]["offset"] for f in frames] == list(range(1, per_thread * threads + 1))
    for k in range(threads):  # and each thread's broadcasts in the order it made them
        assert [f["payload"]["n"] for f in frames if f["payload"]["k"] == k] == list(range(per_thread))


async def test_an_intercept_that_broadcasts_keeps_the_offsets_in_order() -> None:
    pubsub = InMemoryPubSub()

    def echo_once(socket: Any, topic: str, event: str, payload: Any) -> Any:
        if payload.get("first"):
            pubsub.broadcast(topic, "m", {"second": True})  # delivered after this one, to everybody
        return payload

    room = ChannelDef("h:*", history=History(10), intercept={"m": echo_once})
    ep = endpoint(ChannelConfig(channels=[room], pubsub=pubsub))
    a, b = await Client.open(ep), await Client.open(ep)
    await a.join("h:1")
    await b.join("h:1")
    a.ws.take(), b.ws.take()
    pubsub.broadcast("h:1", "m", {"first": True})
    for c in (a, b):
        assert [f["meta"]["offset"] for f in c.ws.take()] == [1, 2, 3]
