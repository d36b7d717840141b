"""Channels over the real zzz server, with the independent ``websockets`` client.

In-process server for the protocol (both wire forms, errors, heartbeat timeout); two server processes
sharing one redis-server for cross-process broadcasts and presence.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import zzz
from tests.channels.chat_app import build_app
from tests.channels.procs import AppProcess
from zzz.channels import ChannelConfig, ChannelDef, ChannelSocket, Reply, channel_routes
from zzz.channels.wire import MAX_DEPTH


class Peer:
    """A channel client on a ``websockets`` connection, object form unless ``array`` is set."""

    def __init__(self, ws: ClientConnection, array: bool = False) -> None:
        self.ws = ws
        self.array = array
        self.ref = 0
        self.inbox: list[Any] = []

    async def send(self, topic: str, event: str, payload: Any = None, join_ref: str | None = None) -> str:
        self.ref += 1
        ref = str(self.ref)
        if self.array:
            await self.ws.send(json.dumps([join_ref, ref, topic, event, payload or {}]))
        else:
            await self.ws.send(
                json.dumps({"topic": topic, "event": event, "payload": payload or {}, "ref": ref})
            )
        return ref

    def _norm(self, frame: Any) -> dict[str, Any]:
        if isinstance(frame, list):
            return {
                "join_ref": frame[0],
                "ref": frame[1],
                "topic": frame[2],
                "event": frame[3],
                "payload": frame[4],
            }
        return frame  # type: ignore[no-any-return]

    async def expect(self, pred: Any, timeout: float = 5.0) -> dict[str, Any]:
        """The first frame (received now or later) for which ``pred(frame)`` holds; raw form in ["raw"]."""

        async def wait() -> dict[str, Any]:
            while True:
                for i, raw in enumerate(self.inbox):
                    frame = self._norm(raw)
                    if pred(frame):
                        del self.inbox[i]
                        return dict(frame, raw=raw)
                self.inbox.append(json.loads(await self.ws.recv()))

        return await asyncio.wait_for(wait(), timeout)

    async def reply(self, ref: str) -> dict[str, Any]:
        frame = await self.expect(lambda f: f["event"] == "phx_reply" and f["ref"] == ref)
        return frame["payload"]  # type: ignore[no-any-return]

    async def event(self, event: str) -> Any:
        return (await self.expect(lambda f: f["event"] == event))["payload"]


async def start(app: zzz.App) -> zzz.Server:
    return await app.start(host="127.0.0.1", port=0)


async def test_object_form_join_push_broadcast_presence() -> None:
    srv = await start(build_app())
    try:
        url = f"ws://127.0.0.1:{srv.port}/socket"
        async with connect(url) as w1, connect(url) as w2:
            a, b = Peer(w1), Peer(w2)
            ref = await a.send("room:lobby", "phx_join", {"user": "ann"})
            assert await a.reply(ref) == {"status": "ok", "response": {"joined": "room:lobby"}}
            state = await a.event("presence_state")
            assert list(state) == ["ann"]
            ref = await b.send("room:lobby", "phx_join", {"user": "bob"})
            assert (await b.reply(ref))["status"] == "ok"
            assert list((await a.event("presence_diff"))["joins"]) == ["bob"]

            ref = await b.send("room:lobby", "new_msg", {"body": "hello"})
            assert await b.reply(ref) == {"status": "ok", "response": {"accepted": True}}
            for peer in (a, b):
                frame = await peer.expect(lambda f: f["event"] == "new_msg")
                assert frame["raw"] == {
                    "topic": "room:lobby",
                    "event": "new_msg",
                    "payload": {"user": "bob", "body": "hello"},
                    "ref": None,
                    "join_ref": None,
                }
            ref = await a.send("room:lobby", "who")
            assert (await a.reply(ref))["response"] == ["ann", "bob"]
            ref = await a.send("room:lobby", "fail")
            assert await a.reply(ref) == {"status": "error", "response": {"reason": "nope"}}
            ref = await a.send("room:other", "new_msg", {"body": "x"})
            assert await a.reply(ref) == {"status": "error", "response": {"reason": "unmatched topic"}}
            ref = await a.send("room:x", "phx_join", {"password": "wrong"})
            assert await a.reply(ref) == {"status": "error", "response": {"reason": "join rejected"}}
            ref = await a.send("nope", "phx_join")
            assert await a.reply(ref) == {"status": "error", "response": {"reason": "no such channel"}}
            ref = await a.send("phoenix", "heartbeat")
            assert await a.reply(ref) == {"status": "ok", "response": {}}
        # the disconnects removed their presences
        for _ in range(100):
            if not zzz.channels.Presence.list("room:lobby"):
                break
            await asyncio.sleep(0.02)
        assert zzz.channels.Presence.list("room:lobby") == {}
    finally:
        await srv.close()


async def test_array_form_on_the_phoenix_path() -> None:
    srv = await start(build_app())
    try:
        async with connect(f"ws://127.0.0.1:{srv.port}/socket/websocket?vsn=2.0.0") as w:
            p = Peer(w, array=True)
            ref = await p.send("room:1", "phx_join", {"user": "cy"}, join_ref="1")
            frame = await p.expect(lambda f: f["event"] == "phx_reply" and f["ref"] == ref)
            assert frame["raw"] == [
                "1",
                ref,
                "room:1",
                "phx_reply",
                {"status": "ok", "response": {"joined": "room:1"}},
            ]
            state = await p.expect(lambda f: f["event"] == "presence_state")
            assert state["raw"][0] == "1" and list(state["raw"][4]) == ["cy"]
            ref = await p.send("room:1", "new_msg", {"body": "b"}, join_ref="1")
            frame = await p.expect(lambda f: f["event"] == "new_msg")
            assert frame["raw"] == [None, None, "room:1", "new_msg", {"user": "cy", "body": "b"}]
            assert (await p.reply(ref))["response"] == {"accepted": True}
    finally:
        await srv.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [("{oops", 1007), (b"\x01\x02", 1003), ("[]", 1007), ("42", 1007), ('"just a string"', 1007)],
)
async def test_bad_frames_close_the_connection(frame: str | bytes, code: int) -> None:
    srv = await start(build_app())
    try:
        async with connect(f"ws://127.0.0.1:{srv.port}/socket") as w:
            await w.send(frame)
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(w.recv(), 5)
            assert info.value.rcvd is not None and info.value.rcvd.code == code
    finally:
        await srv.close()


async def test_malformed_with_ref_is_answered_not_closed() -> None:
    srv = await start(build_app())
    try:
        async with connect(f"ws://127.0.0.1:{srv.port}/socket") as w:
            await w.send(json.dumps({"topic": "room:1", "ref": "9"}))
            reply = json.loads(await asyncio.wait_for(w.recv(), 5))
            assert reply["ref"] == "9" and reply["payload"]["response"] == {"reason": "malformed message"}
            p = Peer(w)
            p.ref = 10
            ref = await p.send("phoenix", "heartbeat")
            assert (await p.reply(ref))["status"] == "ok"
    finally:
        await srv.close()


async def test_silent_socket_is_closed_after_heartbeat_timeout() -> None:
    srv = await start(build_app(heartbeat_timeout=0.5))
    try:
        async with connect(f"ws://127.0.0.1:{srv.port}/socket") as w:
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(w.recv(), 5)
            assert info.value.rcvd is not None and info.value.rcvd.reason == "heartbeat timeout"
    finally:
        await srv.close()


async def test_rate_limit_disconnect_over_the_wire() -> None:
    config = ChannelConfig(channels=[ChannelDef("r:*")], rate_limit=(5, 0.01), rate_limit_action="disconnect")
    srv = await start(zzz.App(channel_routes("/socket", config)))
    try:
        async with connect(f"ws://127.0.0.1:{srv.port}/socket") as w:
            p = Peer(w)
            for _ in range(6):
                await p.send("r:1", "x")
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await asyncio.wait_for(w.recv(), 5)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    finally:
        await srv.close()


async def test_router_channel_mounts_both_paths_behind_its_middleware() -> None:
    seen: list[str] = []

    def token(req: zzz.Request, call_next: Any) -> Any:
        seen.append(req.path)
        if req.query_param("token") != "t":
            return zzz.Response("no token", status=401)
        return call_next(req)

    config = ChannelConfig(channels=[ChannelDef("r:*")])
    mounted = zzz.Router.channel("/socket", config, middleware=[token])
    assert [r.pattern for r in mounted.routes] == ["/socket", "/socket/websocket"]  # type: ignore[union-attr]
    srv = await start(zzz.App([mounted]))
    try:
        for path in ("/socket", "/socket/websocket"):
            async with connect(f"ws://127.0.0.1:{srv.port}{path}?token=t&vsn=2.0.0") as w:
                p = Peer(w, array=True)
                ref = await p.send("r:1", "phx_join")
                assert (await p.reply(ref))["status"] == "ok"
        with pytest.raises(Exception, match="401"):
            async with connect(f"ws://127.0.0.1:{srv.port}/socket/websocket"):
                pass
    finally:
        await srv.close()
    assert seen == ["/socket", "/socket/websocket", "/socket/websocket"]


# -- two processes, one Redis --------------------------------------------------------------------------


@pytest.fixture
def two_nodes(redis_url: str) -> Iterator[tuple[AppProcess, AppProcess]]:
    one = AppProcess(redis_url=redis_url, node_ttl=1.5).start()
    two = AppProcess(redis_url=redis_url, node_ttl=1.5)
    try:
        two.start()
        yield one, two
    finally:
        one.stop()
        two.stop()


@pytest.mark.asyncio_only
async def test_two_processes_share_broadcasts_and_presence(two_nodes: tuple[AppProcess, AppProcess]) -> None:
    one, two = two_nodes
    async with connect(f"{one.ws}/socket") as w1, connect(f"{two.ws}/socket") as w2:
        a, b = Peer(w1), Peer(w2)
        ref = await a.send("room:multi", "phx_join", {"user": "ann"})
        assert (await a.reply(ref))["status"] == "ok"
        ref = await b.send("room:multi", "phx_join", {"user": "bob"})
        assert (await b.reply(ref))["status"] == "ok"
        assert list((await a.event("presence_diff"))["joins"]) == ["bob"]

        ref = await a.send("room:multi", "new_msg", {"body": "from one"})
        assert (await a.reply(ref))["status"] == "ok"
        assert await b.event("new_msg") == {"user": "ann", "body": "from one"}
        ref = await b.send("room:multi", "new_msg", {"body": "from two"})
        frame = await a.expect(lambda f: f["event"] == "new_msg" and f["payload"]["user"] == "bob")
        assert frame["payload"] == {"user": "bob", "body": "from two"}

        ref = await a.send("room:multi", "who")
        assert (await a.reply(ref))["response"] == ["ann", "bob"]

        # Process two dies without a goodbye: its presences expire and one announces the leave.
        two.stop(kill=True)
        diff = await a.expect(lambda f: f["event"] == "presence_diff" and f["payload"]["leaves"], timeout=10)
        assert list(diff["payload"]["leaves"]) == ["bob"]
        ref = await a.send("room:multi", "who")
        assert (await a.reply(ref))["response"] == ["ann"]


# -- nesting too deep to decode or encode (issue 12, item 15) ----------------------------------------


DEEP = 10_000


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    "frame",
    [
        nested(DEEP),
        '{"a":' * DEEP + "1" + "}" * DEEP,
        '["1","1","room:1","x",' + nested(DEEP) + "]",
        # decodes, but over MAX_DEPTH: a handler echoing it could fail to encode it again
        '["1","1","room:1","x",' + nested(MAX_DEPTH) + "]",
    ],
    ids=["array", "object", "payload", "over-limit"],
)
async def test_deeply_nested_message_is_malformed(frame: str, caplog: pytest.LogCaptureFixture) -> None:
    srv = await start(build_app())
    try:
        url = f"ws://127.0.0.1:{srv.port}/socket"
        async with connect(url) as bystander, connect(url) as w:
            for _ in range(3):
                await w.send(frame)
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await asyncio.wait_for(w.recv(), 5)
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (1007, "JSON nested too deeply")
            p = Peer(bystander)
            ref = await p.send("phoenix", "heartbeat")
            assert (await p.reply(ref))["status"] == "ok"
    finally:
        await srv.close()
    errors = [r for r in caplog.records if r.name == "zzz" and r.levelno >= logging.ERROR]
    assert errors == []


def deep_value(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def bad_values_app() -> zzz.App:
    """Handlers that return or track what cannot be encoded (the app's bugs), and an echo."""
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic

    def reply_with(value: Any) -> Any:
        return lambda socket, topic, event, payload: value

    def track_bad(socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
        socket.track(topic, "bad", {"at": object()})
        return {}

    def echo(socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
        return Reply.ok(payload)

    handlers = {
        "cyclic": reply_with(cyclic),
        "deep": reply_with(deep_value(DEEP)),
        "track_bad": track_bad,
        "echo": echo,
    }
    room = ChannelDef("room:*", join=lambda socket, topic, payload: True, handlers=handlers)
    return zzz.App(channel_routes("/socket", ChannelConfig(channels=[room])))


@pytest.mark.parametrize("event", ["cyclic", "deep", "track_bad"])
async def test_unencodable_app_values_harm_no_other_connection(
    event: str, caplog: pytest.LogCaptureFixture
) -> None:
    srv = await start(bad_values_app())
    try:
        url = f"ws://127.0.0.1:{srv.port}/socket"
        async with connect(url) as w1, connect(url) as w2:
            a, b = Peer(w1), Peer(w2)
            for peer in (a, b):
                assert (await peer.reply(await peer.send("room:1", "phx_join")))["status"] == "ok"
            # The app's bug: logged with its traceback, answered as any handler failure.
            reply = await a.reply(await a.send("room:1", event))
            assert reply == {"status": "error", "response": {"reason": "internal error"}}
            assert any(r.exc_info for r in caplog.records if r.levelno >= logging.ERROR)
            # Both connections carry on; a newcomer joins the topic and gets a presence_state.
            for peer in (a, b):
                assert (await peer.reply(await peer.send("phoenix", "heartbeat")))["status"] == "ok"
            async with connect(url) as w3:
                c = Peer(w3)
                assert (await c.reply(await c.send("room:1", "phx_join")))["status"] == "ok"
                assert await c.event("presence_state") == {}
    finally:
        await srv.close()


async def test_nesting_within_the_limit_is_answered() -> None:
    srv = await start(bad_values_app())
    try:
        async with connect(f"ws://127.0.0.1:{srv.port}/socket") as w:
            p = Peer(w)
            assert (await p.reply(await p.send("room:1", "phx_join")))["status"] == "ok"
            payload = deep_value(MAX_DEPTH - 1)  # the message adds one level
            assert await p.reply(await p.send("room:1", "echo", payload)) == {
                "status": "ok",
                "response": payload,
            }
    finally:
        await srv.close()
