"""History, recovery and intercepts over real sockets: the zzz server and the ``websockets`` client.

Recovery after a dropped connection, recovery while broadcasts keep arriving (10,000 broadcasts, 20
reconnects), the cases that cannot recover, intercepts, and the bytes of frames on topics without history.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

import zzz
from zzz.channels import ChannelConfig, ChannelDef, ChannelSocket, History, InMemoryPubSub, channel_routes
from zzz.channels.history import Position, Publication


class SlowPubSub(InMemoryPubSub):
    """Reads the history as a networked backend does: it takes time, and broadcasts land meanwhile."""

    async def position(self, topic: str, history: History) -> Position:
        await asyncio.sleep(0.002)
        pos = await super().position(topic, history)
        await asyncio.sleep(0.002)
        return pos

    async def since(
        self, topic: str, history: History, pos: Position
    ) -> tuple[bool, list[Publication], Position]:
        await asyncio.sleep(0.002)
        result = await super().since(topic, history, pos)
        await asyncio.sleep(0.002)
        return result


def _join(socket: ChannelSocket, topic: str, payload: Any) -> bool:
    socket.assign("user", payload.get("user"))
    socket.assign("role", payload.get("role"))
    return True


def _pub(socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
    socket.broadcast(topic, "m", payload)
    return None if payload.get("quiet") else {}


def _only_admins(socket: Any, topic: str, event: str, payload: Any) -> Any:
    if socket.get_assign("role") != "admin":
        return None
    return dict(payload, to=socket.get_assign("user"))


def make_app(pubsub: InMemoryPubSub | None = None, **history: Any) -> tuple[zzz.App, ChannelConfig]:
    hist = History(**(history or {"size": 20_000}))
    handlers = {"pub": _pub}
    channels = [
        ChannelDef("h:*", join=_join, handlers=handlers, history=hist),
        ChannelDef("i:*", join=_join, handlers=handlers, history=hist, intercept={"m": _only_admins}),
        ChannelDef("p:*", join=_join, handlers=handlers),
    ]
    config = ChannelConfig(
        channels=channels, pubsub=pubsub, heartbeat_timeout=None, max_topics_per_socket=None
    )
    return zzz.App(channel_routes("/socket", config)), config


class Peer:
    """A channel client; ``array`` speaks the array form on a vsn=2.0.0 socket."""

    def __init__(self, ws: ClientConnection, array: bool = False) -> None:
        self.ws = ws
        self.array = array
        self.ref = 0
        self.inbox: list[Any] = []
        self.raw: list[str] = []
        self.join_refs: dict[str, str | None] = {}

    @classmethod
    async def open(cls, port: int, array: bool = False) -> Peer:
        path = "/socket/websocket?vsn=2.0.0" if array else "/socket"
        return cls(await connect(f"ws://127.0.0.1:{port}{path}", max_queue=None), array)

    async def send(
        self, topic: str, event: str, payload: Any = None, meta: Any = None, ref: bool = True
    ) -> str | None:
        self.ref += 1
        r = str(self.ref) if ref else None
        if event == "phx_join":
            self.join_refs[topic] = r
        jr = self.join_refs.get(topic)
        if self.array:
            frame: Any = [jr, r, topic, event, payload or {}]
            if meta is not None:
                frame.append(meta)
        else:
            frame = {"topic": topic, "event": event, "payload": payload or {}, "ref": r, "join_ref": jr}
            if meta is not None:
                frame["meta"] = meta
        await self.ws.send(json.dumps(frame))
        return r

    @staticmethod
    def norm(frame: Any) -> dict[str, Any]:
        if isinstance(frame, list):
            out = dict(zip(["join_ref", "ref", "topic", "event", "payload"], frame[:5]))
            if len(frame) == 6:
                out["meta"] = frame[5]
            return out
        return frame  # type: ignore[no-any-return]

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        if self.inbox:
            return self.inbox.pop(0)  # type: ignore[no-any-return]
        text = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(text, str)
        self.raw.append(text)
        return self.norm(json.loads(text))

    async def expect(self, pred: Any, timeout: float = 10.0) -> dict[str, Any]:
        for i, frame in enumerate(self.inbox):
            if pred(frame):
                return self.inbox.pop(i)  # type: ignore[no-any-return]
        while True:
            text = await asyncio.wait_for(self.ws.recv(), timeout)
            assert isinstance(text, str)
            self.raw.append(text)
            frame = self.norm(json.loads(text))
            if pred(frame):
                return frame
            self.inbox.append(frame)

    async def join(self, topic: str, payload: Any = None, recover: Position | None = None) -> dict[str, Any]:
        meta = None if recover is None else {"recover": {"offset": recover.offset, "epoch": recover.epoch}}
        ref = await self.send(topic, "phx_join", payload, meta)
        return await self.expect(lambda f: f["event"] == "phx_reply" and f["ref"] == ref)

    def drop(self) -> None:
        """Lose the connection without a closing handshake (a phone changing networks)."""
        transport = self.ws.transport
        transport.abort()


def position(reply: dict[str, Any]) -> Position:
    return Position(reply["meta"]["offset"], reply["meta"]["epoch"])


@pytest.mark.parametrize("array", [False, True], ids=["object", "array"])
async def test_recovery_after_a_dropped_connection(array: bool) -> None:
    app, _config = make_app()
    srv = await app.start(host="127.0.0.1", port=0)
    try:
        pub = await Peer.open(srv.port)
        sub = await Peer.open(srv.port, array)
        assert (await pub.join("h:room"))["payload"]["status"] == "ok"
        reply = await sub.join("h:room", {"user": "sub"})
        assert reply["meta"]["recovered"] is False and reply["meta"]["offset"] == 0
        seen = position(reply)
        ref = await pub.send("h:room", "pub", {"n": 0})
        frame = await sub.expect(lambda f: f["event"] == "m")
        assert frame["payload"] == {"n": 0} and frame["meta"] == {"offset": 1, "epoch": seen.epoch}
        seen = Position(frame["meta"]["offset"], frame["meta"]["epoch"])
        sub.drop()
        for n in range(1, 51):
            ref = await pub.send("h:room", "pub", {"n": n})
        await pub.expect(lambda f: f["event"] == "phx_reply" and f["ref"] == ref)

        sub = await Peer.open(srv.port, array)
        reply = await sub.join("h:room", {"user": "sub"}, recover=seen)
        assert reply["payload"] == {"status": "ok", "response": {}}
        assert reply["meta"] == {"recovered": True, "offset": 51, "epoch": seen.epoch}
        replayed = [await sub.next() for _ in range(51)]
        assert [f["event"] for f in replayed] == ["m"] * 50 + ["presence_state"]
        assert [f["payload"]["n"] for f in replayed[:50]] == list(range(1, 51))
        assert [f["meta"]["offset"] for f in replayed[:50]] == list(range(2, 52))
        await pub.send("h:room", "pub", {"n": 51})
        live = await sub.next()
        assert live["payload"] == {"n": 51} and live["meta"]["offset"] == 52
        with pytest.raises(asyncio.TimeoutError):
            await sub.next(timeout=0.3)  # nothing twice
        if array:
            assert all(len(json.loads(t)) == 6 for t in sub.raw if '"m"' in t)
    finally:
        await srv.close()


@pytest.mark.parametrize("backend", [InMemoryPubSub, SlowPubSub], ids=["memory", "slow-reads"])
async def test_no_gap_no_duplicate_while_broadcasts_keep_arriving(backend: type[InMemoryPubSub]) -> None:
    total, reconnects = 10_000, 20
    app, _config = make_app(backend())
    srv = await app.start(host="127.0.0.1", port=0)
    try:
        pub = await Peer.open(srv.port)
        await pub.join("h:flow")

        async def publish() -> None:
            for n in range(1, total + 1):
                await pub.send("h:flow", "pub", {"n": n, "quiet": True}, ref=False)
                if n % 20 == 0:
                    await asyncio.sleep(0.001)  # keep the flow going across the reconnects

        got: list[tuple[int, int]] = []  # (offset, n) in the order received, over every connection
        recovered: list[bool] = []
        sub = await Peer.open(srv.port)
        reply = await sub.join("h:flow")
        seen = position(reply)
        publisher = asyncio.get_running_loop().create_task(publish())
        per_connection = total // (reconnects + 1)
        for round_ in range(reconnects + 1):
            target = min(total, (round_ + 1) * per_connection) if round_ < reconnects else total
            while seen.offset < target:
                frame = await sub.next(timeout=20)
                if frame["event"] != "m":
                    continue
                meta = frame["meta"]
                got.append((meta["offset"], frame["payload"]["n"]))
                seen = Position(meta["offset"], meta["epoch"])
            if round_ < reconnects:
                sub.drop()
                sub = await Peer.open(srv.port)
                reply = await sub.join("h:flow", recover=seen)
                recovered.append(reply["meta"]["recovered"])
        await publisher
        assert recovered == [True] * reconnects
        assert [offset for offset, _n in got] == list(range(1, total + 1))  # every offset once, in order
        assert all(offset == n for offset, n in got)  # and each is the broadcast it says it is
        await sub.ws.close()
    finally:
        await srv.close()


async def test_trimmed_expired_or_other_epoch_is_not_recovered() -> None:
    pubsub = InMemoryPubSub()
    app, _config = make_app(pubsub, size=5, ttl=2.0)
    srv = await app.start(host="127.0.0.1", port=0)
    try:
        pub = await Peer.open(srv.port)
        await pub.join("h:t")
        sub = await Peer.open(srv.port)
        start = position(await sub.join("h:t"))
        sub.drop()
        for n in range(1, 11):  # 10 broadcasts, 5 kept: offsets 1..5 are gone
            ref = await pub.send("h:t", "pub", {"n": n})
        await pub.expect(lambda f: f["event"] == "phx_reply" and f["ref"] == ref)

        async def rejoin(at: Position) -> tuple[dict[str, Any], list[str]]:
            peer = await Peer.open(srv.port)
            reply = await peer.join("h:t", recover=at)
            events = [(await peer.next())["event"]]
            await peer.ws.close()
            return reply, events

        reply, after = await rejoin(start)  # trimmed by size
        assert reply["meta"] == {"recovered": False, "offset": 10, "epoch": start.epoch}
        assert after == ["presence_state"]  # nothing replayed
        reply, after = await rejoin(Position(5, start.epoch))  # the oldest still needed is kept
        assert reply["meta"]["recovered"] is True
        reply, _ = await rejoin(Position(5, "another-epoch"))  # wrong epoch
        assert reply["meta"] == {"recovered": False, "offset": 10, "epoch": start.epoch}
        await asyncio.sleep(2.2)  # past the ttl: expired
        reply, after = await rejoin(Position(5, start.epoch))
        assert reply["meta"]["recovered"] is False and after == ["presence_state"]
        reply, _ = await rejoin(Position(10, start.epoch))  # nothing missed: still recovered
        assert reply["meta"]["recovered"] is True
    finally:
        await srv.close()


async def test_a_new_backend_is_a_new_epoch() -> None:
    app, _ = make_app()
    srv = await app.start(host="127.0.0.1", port=0)
    try:
        p = await Peer.open(srv.port)
        await p.join("h:e")
        await p.send("h:e", "pub", {"n": 1})
        frame = await p.expect(lambda f: f["event"] == "m")
        old = Position(frame["meta"]["offset"], frame["meta"]["epoch"])
    finally:
        await srv.close()
    app, _ = make_app()  # a restarted process: a new InMemoryPubSub
    srv = await app.start(host="127.0.0.1", port=0)
    try:
        p = await Peer.open(srv.port)
        reply = await p.join("h:e", recover=old)
        assert reply["meta"]["recovered"] is False and reply["meta"]["epoch"] != old.epoch
        assert reply["meta"]["offset"] == 0
    finally:
        await srv.close()


@pytest.mark.parametrize("array", [False, True], ids=["object", "array"])
async def test_intercept_filters_and_rewrites_per_subscriber(array: bool) -> None:
    app, _ = make_app()
    srv = await app.start(host="127.0.0.1", port=0)
    try:
        admin, guest = await Peer.open(srv.port, array), await Peer.open(srv.port, array)
        await admin.join("i:x", {"user": "ann", "role": "admin"})
        guest_pos = position(await guest.join("i:x", {"user": "bob"}))
        ref = await guest.send("i:x", "pub", {"n": 1})
        await guest.expect(lambda f: f["event"] == "phx_reply" and f["ref"] == ref)
        frame = await admin.expect(lambda f: f["event"] == "m")
        assert frame["payload"] == {"n": 1, "to": "ann"} and frame["meta"]["offset"] == 1
        # The guest's intercept said no: offset 1 never reaches it; the guest's replay skips it too.
        guest.drop()
        ref = await admin.send("i:x", "pub", {"n": 2})
        await admin.expect(lambda f: f["event"] == "m" and f["payload"]["n"] == 2)
        guest = await Peer.open(srv.port, array)
        reply = await guest.join("i:x", {"user": "bob"}, recover=guest_pos)
        assert reply["meta"]["recovered"] is True and reply["meta"]["offset"] == 2
        assert (await guest.next())["event"] == "presence_state"  # both offsets were for admins only
        promoted = await Peer.open(srv.port, array)
        reply = await promoted.join("i:x", {"user": "cy", "role": "admin"}, recover=guest_pos)
        replayed = [await promoted.next() for _ in range(2)]
        assert [(f["payload"], f["meta"]["offset"]) for f in replayed] == [
            ({"n": 1, "to": "cy"}, 1),
            ({"n": 2, "to": "cy"}, 2),
        ]
    finally:
        await srv.close()


@pytest.mark.parametrize("array", [False, True], ids=["object", "array"])
async def test_topics_without_history_carry_no_meta_at_all(array: bool) -> None:
    app, _ = make_app()
    srv = await app.start(host="127.0.0.1", port=0)
    try:
        a = await Peer.open(srv.port, array)
        # a client asking to recover on a topic without history: nothing changes
        reply = await a.join("p:1", {"user": "ann"}, recover=Position(3, "e"))
        assert "meta" not in reply
        app_payload = {"meta": {"x": 1}, "offset": 5, "epoch": "E", "recover": {"offset": 1}}
        await a.send("p:1", "pub", app_payload)
        frame = await a.expect(lambda f: f["event"] == "m")
        assert frame["payload"] == app_payload
        await a.send("phoenix", "heartbeat")
        await a.expect(lambda f: f["topic"] == "phoenix")
        assert len(a.raw) >= 4
        for text in a.raw:
            assert '"meta"' not in text.replace('"meta":{"x":1}', "")
            if array:
                assert len(json.loads(text)) == 5
            else:
                assert set(json.loads(text)) == {"topic", "event", "payload", "ref", "join_ref"}
        body = '{"meta":{"x":1},"offset":5,"epoch":"E","recover":{"offset":1}}'
        expected = (
            f'[null,null,"p:1","m",{body}]'
            if array
            else f'{{"topic":"p:1","event":"m","payload":{body},"ref":null,"join_ref":null}}'
        )
        assert expected in a.raw
    finally:
        await srv.close()
