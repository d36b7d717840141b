"""The channel protocol against fake WebSockets: joins, replies, routing, broadcasts, presence, limits.

No server and no network: ``ChannelEndpoint`` callbacks are driven directly, as the server would.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from tests.channels.fakes import Client, FakeWebSocket, endpoint
from zzz.channels import ChannelConfig, ChannelDef, ChannelSocket, History, JoinResult, Presence, Reply
from zzz.frames import Text


def join_ok(socket: ChannelSocket, topic: str, payload: Any) -> bool:
    return payload.get("password") != "wrong"


def on_new_msg(socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
    socket.broadcast(topic, "new_msg", payload)
    return {"accepted": True}


async def on_slow(socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
    await asyncio.sleep(0)
    return Reply.error("slow no")


def on_boom(socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
    raise RuntimeError("boom")


def on_quiet(socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
    return None


def on_others(socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
    socket.broadcast_from(topic, "others", payload)
    return Reply.ok()


def make_config(**kwargs: Any) -> ChannelConfig:
    room = ChannelDef(
        "room:*",
        join=join_ok,
        handlers={
            "new_msg": on_new_msg,
            "slow": on_slow,
            "boom": on_boom,
            "quiet": on_quiet,
            "others": on_others,
        },
    )
    return ChannelConfig(channels=[room], **kwargs)


def replies(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in frames if f["event"] == "phx_reply"]


async def test_join_replies_ok_then_pushes_presence_state() -> None:
    ep = endpoint(make_config())
    c = await Client.open(ep)
    ref = await c.send("room:lobby", "phx_join", {})
    frames = c.ws.take()
    assert frames[0] == {
        "topic": "room:lobby",
        "event": "phx_reply",
        "payload": {"status": "ok", "response": {}},
        "ref": ref,
        "join_ref": ref,
    }
    assert frames[1]["event"] == "presence_state" and frames[1]["payload"] == {}
    assert frames[1]["join_ref"] == ref and frames[1]["ref"] is None
    assert ep.sockets[0].is_joined("room:lobby")


async def test_join_rejections() -> None:
    def join(socket: ChannelSocket, topic: str, payload: Any) -> Any:
        kind = payload["kind"]
        if kind == "result":
            return JoinResult.error("banned")
        if kind == "payload":
            return JoinResult.error({"reason": "x", "retry": False})
        if kind == "ok":
            return JoinResult.ok({"hello": 1})
        if kind == "none":
            return None
        raise ValueError("crash")

    ep = endpoint(ChannelConfig(channels=[ChannelDef("a:*", join=join)]))
    c = await Client.open(ep)
    assert await c.join("a:1", {"kind": "result"}) == {"status": "error", "response": {"reason": "banned"}}
    assert (await c.join("a:1", {"kind": "payload"}))["response"] == {"reason": "x", "retry": False}
    assert await c.join("a:1", {"kind": "none"}) == {
        "status": "error",
        "response": {"reason": "join crashed"},
    }
    assert await c.join("a:1", {"kind": "crash"}) == {
        "status": "error",
        "response": {"reason": "join crashed"},
    }
    assert not ep.sockets[0].is_joined("a:1")
    assert await c.join("a:1", {"kind": "ok"}) == {"status": "ok", "response": {"hello": 1}}
    assert await c.join("nope", {}) == {"status": "error", "response": {"reason": "no such channel"}}


async def test_false_join_is_rejected_and_exact_pattern() -> None:
    ep = endpoint(ChannelConfig(channels=[ChannelDef("lobby", join=join_ok)]))
    c = await Client.open(ep)
    assert (await c.join("lobby", {"password": "wrong"}))["response"] == {"reason": "join rejected"}
    assert (await c.join("lobby:x", {}))["response"] == {"reason": "no such channel"}
    assert (await c.join("lobby", {}))["status"] == "ok"


async def test_push_replies_and_broadcast_includes_sender() -> None:
    ep = endpoint(make_config())
    a, b = await Client.open(ep), await Client.open(ep)
    await a.join("room:1")
    await b.join("room:1")
    a.ws.take(), b.ws.take()
    ref = await a.send("room:1", "new_msg", {"body": "hi"})
    fa, fb = a.ws.take(), b.ws.take()
    assert {
        "topic": "room:1",
        "event": "new_msg",
        "payload": {"body": "hi"},
        "ref": None,
        "join_ref": None,
    } in fa
    assert fb == [
        {"topic": "room:1", "event": "new_msg", "payload": {"body": "hi"}, "ref": None, "join_ref": None}
    ]
    assert replies(fa) == [
        {
            "topic": "room:1",
            "event": "phx_reply",
            "payload": {"status": "ok", "response": {"accepted": True}},
            "ref": ref,
            "join_ref": None,
        }
    ]


async def test_broadcast_frame_is_encoded_once_for_all_receivers() -> None:
    ep = endpoint(make_config())
    clients = [await Client.open(ep) for _ in range(3)]
    for c in clients:
        await c.join("room:1")
        c.ws.take()
    ep.sockets[0].broadcast("room:1", "tick", {"n": 1})
    texts = [c.ws.sent[0] for c in clients]
    assert all(t is texts[0] for t in texts)  # the very same str object: serialised once


async def test_lone_surrogates_from_a_client_cannot_break_frames() -> None:
    ep = endpoint(make_config())
    a, b = await Client.open(ep), await Client.open(ep)
    await a.join("room:1")
    await b.join("room:1")
    a.ws.take(), b.ws.take()
    await a.send_raw(
        '{"topic":"room:1","event":"new_msg","payload":{"body":"x\\ud800y","ok":"\u00e9"},"ref":"9"}'
    )
    assert b.ws.take() == [
        {
            "topic": "room:1",
            "event": "new_msg",
            "payload": {"body": "x\ud800y", "ok": "é"},
            "ref": None,
            "join_ref": None,
        }
    ]
    assert replies(a.ws.take())[0]["payload"]["status"] == "ok"


async def test_broadcast_from_excludes_sender() -> None:
    ep = endpoint(make_config())
    a, b = await Client.open(ep), await Client.open(ep)
    await a.join("room:1")
    await b.join("room:1")
    a.ws.take(), b.ws.take()
    await a.send("room:1", "others", {"x": 1})
    assert [f["event"] for f in a.ws.take()] == ["phx_reply"]
    assert [f["event"] for f in b.ws.take()] == ["others"]


async def test_handler_replies_error_async_none_and_crash(caplog: pytest.LogCaptureFixture) -> None:
    ep = endpoint(make_config())
    c = await Client.open(ep)
    await c.join("room:1")
    c.ws.take()
    await c.send("room:1", "slow")
    assert c.ws.take()[0]["payload"] == {"status": "error", "response": {"reason": "slow no"}}
    await c.send("room:1", "quiet")
    assert c.ws.take() == []
    with caplog.at_level(logging.ERROR, logger="zzz"):
        await c.send("room:1", "boom")
    assert c.ws.take()[0]["payload"] == {"status": "error", "response": {"reason": "internal error"}}
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)
    await c.send("room:1", "nope")
    assert c.ws.take()[0]["payload"] == {"status": "error", "response": {"reason": "unknown event"}}


async def test_events_on_unjoined_topics_are_refused() -> None:
    ep = endpoint(make_config())
    c = await Client.open(ep)
    ref = await c.send("room:9", "new_msg", {"body": "x"})
    assert c.ws.take() == [
        {
            "topic": "room:9",
            "event": "phx_reply",
            "payload": {"status": "error", "response": {"reason": "unmatched topic"}},
            "ref": ref,
            "join_ref": None,
        }
    ]
    await c.send("room:9", "new_msg", {"body": "x"}, ref=None)
    assert c.ws.take()[0]["event"] == "phx_error"


async def test_heartbeat_and_leave() -> None:
    left: list[str] = []
    room = ChannelDef("room:*", leave=lambda s, t: left.append(t))
    ep = endpoint(ChannelConfig(channels=[room]))
    c = await Client.open(ep)
    ref = await c.send("phoenix", "heartbeat")
    assert c.ws.take() == [
        {
            "topic": "phoenix",
            "event": "phx_reply",
            "payload": {"status": "ok", "response": {}},
            "ref": ref,
            "join_ref": None,
        }
    ]
    await c.join("room:1")
    await c.send("room:1", "phx_leave")
    assert replies(c.ws.take())[-1]["payload"]["status"] == "ok"
    assert left == ["room:1"] and not ep.sockets[0].is_joined("room:1")
    assert ep.pubsub.subscriber_count("room:1") == 0
    await c.send("room:2", "phx_leave")  # leaving what was never joined is fine, as in Phoenix
    assert c.ws.take()[0]["payload"]["status"] == "ok"


async def test_array_form_by_vsn_and_by_message() -> None:
    ep = endpoint(make_config())
    a = await Client.open(ep, query={"vsn": "2.0.0"})
    await a.send_raw(json.dumps(["1", "1", "room:1", "phx_join", {}]))
    assert a.ws.take()[0] == ["1", "1", "room:1", "phx_reply", {"status": "ok", "response": {}}]
    await a.send_raw(json.dumps(["1", "2", "room:1", "new_msg", {"b": 1}]))
    frames = a.ws.take()
    assert [None, None, "room:1", "new_msg", {"b": 1}] in frames
    assert ["1", "2", "room:1", "phx_reply", {"status": "ok", "response": {"accepted": True}}] in frames
    b = await Client.open(ep)  # no vsn: the message's form decides
    await b.send_raw(json.dumps([None, "7", "phoenix", "heartbeat", {}]))
    assert b.ws.take() == [[None, "7", "phoenix", "phx_reply", {"status": "ok", "response": {}}]]


async def test_vsn2_socket_is_answered_in_the_array_form_whatever_it_sends() -> None:
    # phoenix.js with vsn=2.0.0 parses every frame as an array: a message in the object form on such a
    # socket must not switch its replies, pushes or broadcasts to the object form.
    ep = endpoint(make_config())
    a = await Client.open(ep, query={"vsn": "2.0.0"})
    await a.send_raw(json.dumps(["1", "1", "room:1", "phx_join", {}]))
    a.ws.take()
    await a.send("phoenix", "heartbeat", ref="2")
    assert a.ws.take() == [[None, "2", "phoenix", "phx_reply", {"status": "ok", "response": {}}]]
    await a.send("room:1", "new_msg", {"b": 2}, ref="3", join_ref="1")
    frames = a.ws.take()
    assert [None, None, "room:1", "new_msg", {"b": 2}] in frames
    assert ["1", "3", "room:1", "phx_reply", {"status": "ok", "response": {"accepted": True}}] in frames
    await a.send("room:2", "phx_join", ref="4", join_ref="4")
    assert a.ws.take()[1] == ["4", None, "room:2", "presence_state", {}]
    await a.send_raw(json.dumps({"topic": "room:1", "ref": "5"}))  # malformed, with a ref
    assert a.ws.take() == [
        [None, "5", "room:1", "phx_reply", {"status": "error", "response": {"reason": "malformed message"}}]
    ]
    other = await Client.open(ep)
    await other.join("room:1")
    other.ws.take()
    await other.send("room:1", "new_msg", {"b": 3}, ref=None)
    assert a.ws.take() == [[None, None, "room:1", "new_msg", {"b": 3}]]


async def test_vsn1_or_no_vsn_follows_the_client_messages() -> None:
    ep = endpoint(make_config())
    for query in ({"vsn": "1.0.0"}, {}):
        c = await Client.open(ep, query=query)
        await c.join("room:1")
        frames = c.ws.take()
        assert frames and all(isinstance(f, dict) for f in frames)  # the object form, as zzz.js speaks
        await c.send_raw(json.dumps([None, "8", "phoenix", "heartbeat", {}]))
        assert c.ws.take() == [[None, "8", "phoenix", "phx_reply", {"status": "ok", "response": {}}]]
        await c.send("phoenix", "heartbeat", ref="9")
        assert c.ws.take()[0]["ref"] == "9"


async def test_mixed_forms_get_their_own_encoding_of_one_broadcast() -> None:
    ep = endpoint(make_config())
    a = await Client.open(ep, query={"vsn": "2.0.0"})
    b = await Client.open(ep)
    await a.send_raw(json.dumps(["1", "1", "room:1", "phx_join", {}]))
    await b.join("room:1")
    a.ws.take(), b.ws.take()
    await b.send("room:1", "new_msg", {"z": "é"}, ref=None)
    assert a.ws.take() == [[None, None, "room:1", "new_msg", {"z": "é"}]]
    assert b.ws.take()[0]["payload"] == {"z": "é"}


async def test_malformed_input() -> None:
    ep = endpoint(make_config())
    c = await Client.open(ep)
    await c.send_raw(json.dumps({"topic": "room:1", "ref": "5"}))  # no event: the ref still gets an answer
    assert c.ws.take() == [
        {
            "topic": "room:1",
            "event": "phx_reply",
            "payload": {"status": "error", "response": {"reason": "malformed message"}},
            "ref": "5",
            "join_ref": None,
        }
    ]
    await c.send_raw(json.dumps([None, "6", "room:1"]))
    assert c.ws.take()[0] == [
        None,
        "6",
        "room:1",
        "phx_reply",
        {"status": "error", "response": {"reason": "malformed message"}},
    ]
    assert not c.ws.closed
    await c.send_raw("42")
    assert c.ws.close_code == 1007

    c = await Client.open(ep)
    await c.send_raw("{not json")
    assert c.ws.close_code == 1007

    c = await Client.open(ep)
    await c.send_raw(b"\x00\x01")
    assert c.ws.close_code == 1003


async def test_rejoin_closes_old_channel() -> None:
    calls: list[str] = []
    room = ChannelDef(
        "room:*", join=lambda s, t, p: calls.append("join") or True, leave=lambda s, t: calls.append("leave")
    )
    ep = endpoint(ChannelConfig(channels=[room]))
    c = await Client.open(ep)
    first = await c.send("room:1", "phx_join", {})
    c.ws.take()
    second = await c.send("room:1", "phx_join", {})
    frames = c.ws.take()
    assert frames[0] == {
        "topic": "room:1",
        "event": "phx_close",
        "payload": {},
        "ref": None,
        "join_ref": first,
    }
    assert frames[1]["event"] == "phx_reply" and frames[1]["join_ref"] == second
    assert calls == ["join", "leave", "join"]
    assert ep.pubsub.subscriber_count("room:1") == 1
    # A push still carrying the first join's join_ref belongs to a channel that is gone.
    await c.send("room:1", "x", {}, join_ref=first)
    assert c.ws.take()[0]["payload"]["response"] == {"reason": "unmatched topic"}


async def test_too_many_topics() -> None:
    ep = endpoint(make_config(max_topics_per_socket=2))
    c = await Client.open(ep)
    assert (await c.join("room:1"))["status"] == "ok"
    assert (await c.join("room:2"))["status"] == "ok"
    assert await c.join("room:3") == {"status": "error", "response": {"reason": "too many topics"}}
    assert (await c.join("room:1"))["status"] == "ok"  # a rejoin does not count twice


async def test_rate_limit_drop() -> None:
    ep = endpoint(make_config(rate_limit=(3, 0.001)))
    c = await Client.open(ep)
    await c.join("room:1")
    c.ws.take()
    for _ in range(4):
        await c.send("room:1", "quiet")
    limited = c.ws.take()
    assert len(limited) == 2  # burst 3: join + 2 quiet pass (no reply), then 2 refused
    assert all(f["payload"]["response"] == {"reason": "rate_limited"} for f in limited)
    await c.send("phoenix", "heartbeat")  # heartbeats are never limited
    assert c.ws.take()[0]["payload"]["status"] == "ok"
    assert not c.ws.closed


async def test_rate_limit_disconnect() -> None:
    ep = endpoint(make_config(rate_limit=(2, 0.001), rate_limit_action="disconnect"))
    c = await Client.open(ep)
    for _ in range(3):
        await c.send("room:1", "x")
    assert c.ws.close_code == 1008


async def test_heartbeat_timeout_closes_silent_sockets() -> None:
    ep = endpoint(make_config(heartbeat_timeout=0.3))
    quiet, chatty = await Client.open(ep), await Client.open(ep)
    for _ in range(12):
        await asyncio.sleep(0.05)
        await chatty.send("phoenix", "heartbeat")
    assert quiet.ws.close_code == 1000 and quiet.ws.close_reason == "heartbeat timeout"
    assert not chatty.ws.closed
    await quiet.close()
    await chatty.close()


async def test_push_to_one_subscriber() -> None:
    ep = endpoint(make_config())
    a, b, c = await Client.open(ep), await Client.open(ep), await Client.open(ep)
    for x in (a, b, c):
        await x.join("room:1")
        x.ws.take()
    sa, sb, _ = ep.sockets
    sa.push_to(sb, "room:1", "dm", {"t": 1})
    sa.push_to(sb.id, "room:1", "dm", {"t": 2})
    sa.push_to(sb.id, "room:2", "dm", {"t": 3})  # b has not joined room:2: nothing
    assert [f["payload"] for f in b.ws.take()] == [{"t": 1}, {"t": 2}]
    assert a.ws.take() == [] and c.ws.take() == []
    sa.push("room:1", "self", {"me": True})
    assert a.ws.take()[0]["event"] == "self"


async def test_close_leaves_every_channel() -> None:
    left: list[str] = []
    room = ChannelDef("room:*", leave=lambda s, t: left.append(t))
    ep = endpoint(ChannelConfig(channels=[room]))
    c = await Client.open(ep)
    await c.join("room:1")
    await c.join("room:2")
    await c.close()
    assert sorted(left) == ["room:1", "room:2"]
    assert ep.sockets == [] and ep.pubsub.subscriber_count("room:1") == 0


# -- presence --------------------------------------------------------------------------------------------


def presence_config() -> ChannelConfig:
    def join(socket: ChannelSocket, topic: str, payload: Any) -> bool:
        socket.track(topic, payload["user"], {"name": payload["user"].title()})
        return True

    def rename(socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
        socket.track(topic, payload["user"], {"name": payload["name"]})
        return {}

    return ChannelConfig(channels=[ChannelDef("room:*", join=join, handlers={"rename": rename})])


async def test_presence_state_diff_and_cleanup() -> None:
    config = presence_config()
    ep = endpoint(config)
    a = await Client.open(ep)
    await a.join("room:1", {"user": "ann"})
    state = a.ws.take()[0]
    assert state["event"] == "presence_state"
    ref_a = state["payload"]["ann"]["metas"][0]["phx_ref"]
    assert state["payload"] == {"ann": {"metas": [{"name": "Ann", "phx_ref": ref_a}]}}

    b = await Client.open(ep)
    await b.join("room:1", {"user": "bob"})
    diff = a.ws.take()
    assert len(diff) == 1 and diff[0]["event"] == "presence_diff"
    assert list(diff[0]["payload"]["joins"]) == ["bob"] and diff[0]["payload"]["leaves"] == {}
    assert set(b.ws.take()[0]["payload"]) == {"ann", "bob"}
    assert set(Presence.list("room:1", config.pubsub)) == {"ann", "bob"}

    await a.send("room:1", "rename", {"user": "ann", "name": "Annie"})
    diff = b.ws.take()[0]["payload"]
    assert diff["leaves"] == {"ann": {"metas": [{"name": "Ann", "phx_ref": ref_a}]}}
    assert diff["joins"]["ann"]["metas"][0]["name"] == "Annie"
    assert diff["joins"]["ann"]["metas"][0]["phx_ref_prev"] == ref_a
    assert [m["name"] for m in Presence.list("room:1", config.pubsub)["ann"]["metas"]] == ["Annie"]

    await a.close()
    diff = b.ws.take()[0]["payload"]
    assert diff["joins"] == {} and list(diff["leaves"]) == ["ann"]
    assert list(Presence.list("room:1", config.pubsub)) == ["bob"]

    await b.send("room:1", "phx_leave")
    assert Presence.list("room:1", config.pubsub) == {}


async def test_presence_of_a_rejected_join_is_withdrawn() -> None:
    def join(socket: ChannelSocket, topic: str, payload: Any) -> bool:
        socket.track(topic, "x", {})
        return False

    config = ChannelConfig(channels=[ChannelDef("r", join=join)])
    c = await Client.open(endpoint(config))
    assert (await c.join("r"))["status"] == "error"
    assert Presence.list("r", config.pubsub) == {}


async def test_two_sockets_same_key_have_two_metas() -> None:
    config = presence_config()
    ep = endpoint(config)
    a, b = await Client.open(ep), await Client.open(ep)
    await a.join("room:1", {"user": "ann"})
    await b.join("room:1", {"user": "ann"})
    assert len(Presence.list("room:1", config.pubsub)["ann"]["metas"]) == 2
    await a.close()
    assert len(Presence.list("room:1", config.pubsub)["ann"]["metas"]) == 1


# -- what must be awaited, and what need not ----------------------------------------------------------


async def test_plain_callbacks_are_handled_without_a_coroutine() -> None:
    """Only what involves an ``async`` callback (or the backend's start, or a history read) returns
    something to await; the rest is done when ``on_message`` returns, as the server's fast path needs."""
    left: list[str] = []

    async def async_join(socket: ChannelSocket, topic: str, payload: Any) -> bool:
        await asyncio.sleep(0)
        return True

    async def async_leave(socket: ChannelSocket, topic: str) -> None:
        await asyncio.sleep(0)
        left.append(topic)

    def echo(socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
        return payload

    room = ChannelDef(
        "room:*", join=join_ok, leave=lambda s, t: left.append(t), handlers={"echo": echo, "slow": on_slow}
    )
    lazy = ChannelDef("lazy:*", join=async_join, leave=async_leave)
    hist = ChannelDef("hist:*", history=History(10))
    ep = endpoint(ChannelConfig(channels=[room, lazy, hist]))
    ws = FakeWebSocket()

    def frame(topic: str, event: str, ref: str, payload: Any = None) -> Text:
        return Text(json.dumps({"topic": topic, "event": event, "payload": payload or {}, "ref": ref}))

    starting = ep.on_open(ws)
    assert starting is not None  # the backend's first start is awaited
    await starting
    assert ep.on_open(FakeWebSocket()) is None  # started: nothing to await

    def run(msg: Text) -> Any:
        return ep.on_message(ws, msg)

    assert run(frame("phoenix", "heartbeat", "1")) is None
    assert run(frame("room:1", "phx_join", "2")) is None
    assert run(frame("room:1", "echo", "3", {"n": 3})) is None
    assert run(frame("room:1", "nope", "4")) is None
    assert run(frame("room:9", "echo", "5")) is None  # unmatched topic
    assert [f["ref"] for f in replies(ws.take())] == ["1", "2", "3", "4", "5"]  # all answered already

    pending = run(frame("room:1", "slow", "6"))
    assert pending is not None and replies(ws.take()) == []  # the async handler's reply comes later
    await pending
    assert [f["ref"] for f in replies(ws.take())] == ["6"]

    pending = run(frame("lazy:1", "phx_join", "7"))
    assert pending is not None
    await pending
    pending = run(frame("hist:1", "phx_join", "8"))  # a history read is I/O for other backends
    assert pending is not None
    await pending
    assert [f["payload"]["status"] for f in replies(ws.take())] == ["ok", "ok"]

    assert run(frame("room:1", "phx_leave", "9")) is None and left == ["room:1"]
    pending = run(frame("room:1", "phx_join", "10"))
    assert pending is None
    pending = ep.on_close(ws, 1000, "")  # leaves lazy:1 (async), then hist:1 and room:1, in join order
    assert pending is not None and left == ["room:1"]
    await pending
    assert left == ["room:1", "lazy:1", "room:1"]
    assert ep.pubsub.subscriber_count("hist:1") == 0 and ep.pubsub.subscriber_count("room:1") == 0


async def test_an_exception_in_an_awaited_callback_is_answered_like_a_sync_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def boom(socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
        await asyncio.sleep(0)
        raise RuntimeError("late boom")

    async def bad_join(socket: ChannelSocket, topic: str, payload: Any) -> Any:
        await asyncio.sleep(0)
        raise RuntimeError("join boom")

    ep = endpoint(
        ChannelConfig(channels=[ChannelDef("a", handlers={"boom": boom}), ChannelDef("b", join=bad_join)])
    )
    c = await Client.open(ep)
    await c.join("a")
    with caplog.at_level(logging.ERROR, logger="zzz"):
        await c.send("a", "boom")
        assert replies(c.ws.take())[0]["payload"] == {
            "status": "error",
            "response": {"reason": "internal error"},
        }
        assert (await c.join("b")) == {"status": "error", "response": {"reason": "join crashed"}}
    assert "late boom" in caplog.text and "join boom" in caplog.text
    assert not c.ws.closed


# -- slow subscribers ------------------------------------------------------------------------------------


def test_slow_subscriber_settings_are_checked() -> None:
    room = ChannelDef("room:*")
    assert ChannelConfig(channels=[room]).slow_subscriber == "close"
    with pytest.raises(ValueError, match="slow_subscriber"):
        ChannelConfig(channels=[room], slow_subscriber="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="skip_if_buffered_over"):
        ChannelConfig(channels=[room], skip_if_buffered_over=-1)
    with pytest.raises(TypeError, match="skip_if_buffered_over"):
        ChannelConfig(channels=[room], skip_if_buffered_over=1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("intercepted", [False, True])
async def test_skip_leaves_out_subscribers_over_the_threshold(intercepted: bool) -> None:
    """With ``slow_subscriber="skip"`` a broadcast skips a subscriber whose unsent bytes are over
    ``skip_if_buffered_over`` (at the threshold it is sent); replies, ``push_to`` and
    ``presence_diff`` still reach it; intercepted events are skipped before the intercept runs."""
    calls: list[str] = []

    def through(socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
        calls.append(socket.id)
        return payload

    def join(socket: ChannelSocket, topic: str, payload: Any) -> bool:
        if payload.get("user"):
            socket.track(topic, payload["user"], {})
        return True

    room = ChannelDef(
        "room:*",
        join=join,
        handlers={"new_msg": on_new_msg},
        intercept={"new_msg": through} if intercepted else None,
    )
    ep = endpoint(ChannelConfig(channels=[room], slow_subscriber="skip", skip_if_buffered_over=100))
    a, b = await Client.open(ep), await Client.open(ep)
    for c in (a, b):
        await c.join("room:1")
        c.ws.take()
    b.ws.buffered_amount = 101
    await a.send("room:1", "new_msg", {"n": 1})
    assert [f["event"] for f in a.ws.take()] == ["new_msg", "phx_reply"]
    assert b.ws.take() == []  # skipped
    if intercepted:
        assert calls == [ep.sockets[0].id]
    await b.send("room:1", "new_msg", {"n": 2})  # its own reply is not a broadcast: never skipped
    assert [f["event"] for f in b.ws.take()] == ["phx_reply"]
    ep.sockets[0].push_to(ep.sockets[1], "room:1", "direct", {})
    assert [f["event"] for f in b.ws.take()] == ["direct"]
    c = await Client.open(ep)
    await c.join("room:1", {"user": "cy"})
    assert [f["event"] for f in b.ws.take()] == ["presence_diff"]  # presence is never skipped
    b.ws.buffered_amount = 100  # at the threshold: sent
    await a.send("room:1", "new_msg", {"n": 3})
    assert [f["payload"] for f in b.ws.take()] == [{"n": 3}]


async def test_close_policy_queues_for_slow_subscribers() -> None:
    """The default: a broadcast is queued whatever is waiting (the server closes at max_backpressure)."""
    ep = endpoint(make_config())
    a, b = await Client.open(ep), await Client.open(ep)
    for c in (a, b):
        await c.join("room:1")
        c.ws.take()
    b.ws.buffered_amount = 1 << 40
    await a.send("room:1", "new_msg", {"n": 1})
    assert [f["payload"] for f in b.ws.take()] == [{"n": 1}]


RESULTS: dict[str, Any] = {
    "dict": {"seq": 1, "body": "caf\u00e9"},
    "list": [1, "x", None],
    "str": "s",
    "int": 3,
    "tuple": ("t", 1),
    "ok": Reply.ok({"r": 1}),
    "err": Reply.error("nope"),
    "surrogate": {"s": "\ud800"},
    "notjson": {1j},
}


def on_result(socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
    return RESULTS[payload["kind"]]


@pytest.mark.parametrize("form", ["object", "array", "vsn2"])
@pytest.mark.parametrize("kind", sorted(RESULTS))
@pytest.mark.parametrize("with_join_ref", [False, True])
async def test_push_replies_are_byte_for_byte_the_general_encoding(
    form: str, kind: str, with_join_ref: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # The push path writes ok replies from parts prepared at the join; every other answer goes the
    # general way. Either way the frame is exactly what encode() makes of the reply.
    from zzz.channels.wire import encode, reply_payload

    config = ChannelConfig(channels=[ChannelDef('q"\u00e9:*', handlers={"r": on_result})])
    client = await Client.open(endpoint(config), query={"vsn": "2.0.0"} if form == "vsn2" else {})
    topic = 'q"\u00e9:1'
    join_ref = "j1"
    push_join_ref = join_ref if with_join_ref else None
    if form == "array":
        await client.send_raw(json.dumps([join_ref, join_ref, topic, "phx_join", {}]))
        client.ws.sent.clear()
        await client.send_raw(json.dumps([push_join_ref, "7", topic, "r", {"kind": kind}]))
    else:
        await client.send(topic, "phx_join", {}, ref=join_ref, join_ref=join_ref)
        client.ws.sent.clear()
        await client.send(topic, "r", {"kind": kind}, ref="7", join_ref=push_join_ref)
    assert json.loads(client.ws.sent[0]) is not None
    (text,) = client.ws.sent
    result = RESULTS[kind]
    if kind == "notjson":
        status, response = "error", {"reason": "internal error"}
    elif isinstance(result, Reply):
        status, response = result.status, result.response
    else:
        status, response = "ok", result
    expected = encode(
        form != "object", topic, "phx_reply", reply_payload(status, response), "7", push_join_ref
    )
    assert text == expected
    assert ("is not JSON" in caplog.text) is (kind == "notjson")
