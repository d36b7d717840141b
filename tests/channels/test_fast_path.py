"""Channels on the server's fast path: sync handlers inside the read, async ones pausing only their
connection, broadcasts through ``zzz.broadcast``, and ``slow_subscriber`` skip versus close.

Real in-process servers; run on both cores (``ZZZ_NO_EXTENSIONS=1`` for the twin) and both loops.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from typing import Any

import pytest
from websockets.asyncio.client import connect

import zzz
from tests.channels.test_server_e2e import Peer
from tests.server.helpers import RawClient, read_head, upgrade_request
from zzz import core
from zzz.channels import ChannelConfig, ChannelDef, ChannelEndpoint, ChannelSocket


async def _serve(config: ChannelConfig, **settings: Any) -> tuple[zzz.Server, ChannelEndpoint]:
    endpoint = ChannelEndpoint(config)
    app = zzz.App([zzz.Router.ws("/socket", endpoint.ws_config())], **settings)
    return await app.start(host="127.0.0.1", port=0), endpoint


def _frame(topic: str, event: str, payload: Any, ref: str) -> bytes:
    text = json.dumps({"topic": topic, "event": event, "payload": payload, "ref": ref})
    return core.encode_frame(core.OP_TEXT, text.encode(), True, False, b"\x01\x02\x03\x04")


async def _read_json(client: RawClient, timeout: float = 10) -> Any:
    opcode, payload = await client.read_frame(timeout)
    assert opcode == core.OP_TEXT, (opcode, payload[:40])
    return json.loads(payload)


async def test_pipelined_sync_pushes_are_handled_inside_the_read() -> None:
    """A read of many pushes to a sync handler is handled without a task and without a loop turn
    between the pushes (the old async ``on_message`` ran each one in a task, a turn apart)."""
    loop = asyncio.get_running_loop()
    seen: list[tuple[bool, int]] = []
    turn = [0, False]  # [loop turns seen so far, a bump is scheduled]

    def bump() -> None:
        turn[0] += 1  # type: ignore[operator]
        turn[1] = False

    def echo(sock: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
        seen.append((asyncio.current_task() is None, turn[0]))  # type: ignore[arg-type]
        if not turn[1]:
            turn[1] = True
            loop.call_soon(bump)  # runs at the next loop turn, wherever it comes
        return {"n": payload["n"]}

    config = ChannelConfig(channels=[ChannelDef("room:*", handlers={"echo": echo})], heartbeat_timeout=None)
    srv, _ = await _serve(config)
    try:
        client = await RawClient.connect(srv.port, "/socket")
        client.writer.write(_frame("room:1", "phx_join", {}, "j"))
        assert (await _read_json(client))["payload"]["status"] == "ok"
        assert (await _read_json(client))["event"] == "presence_state"
        await asyncio.sleep(0.05)  # the connection is idle: the next read starts afresh
        pushes = 40
        client.writer.write(b"".join(_frame("room:1", "echo", {"n": n}, str(n)) for n in range(pushes)))
        replies = [await _read_json(client) for _ in range(pushes)]
        assert [r["ref"] for r in replies] == [str(n) for n in range(pushes)]
        assert [r["payload"]["response"]["n"] for r in replies] == list(range(pushes))
        assert len(seen) == pushes
        assert all(outside_task for outside_task, _ in seen), "a sync handler ran inside a task"
        # One read (a few if TCP split the write) handled all of them: hardly any turn in between.
        assert len({t for _, t in seen}) <= 3, sorted({t for _, t in seen})
        client.close()
    finally:
        await srv.close()


async def test_sync_and_async_handlers_keep_order_on_one_connection_and_across_connections() -> None:
    """An async handler pauses only its connection: others' sync pushes go on and broadcast meanwhile;
    its own later (sync) pushes wait, so their replies and broadcasts never overtake it; every
    subscriber sees the broadcasts in the same order, whatever its wire form."""
    gate = asyncio.Event()

    async def gated(sock: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
        await asyncio.wait_for(gate.wait(), 10)
        sock.broadcast(topic, "a", {"n": 0})
        return {"n": "a"}

    def sync_pub(sock: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
        sock.broadcast(topic, payload["kind"], {"n": payload["n"]})
        if payload.get("release"):
            gate.set()
        return {"n": payload["n"]}

    channel = ChannelDef("room:*", handlers={"gated": gated, "pub": sync_pub})
    srv, _ = await _serve(ChannelConfig(channels=[channel], heartbeat_timeout=None))
    base = f"ws://127.0.0.1:{srv.port}/socket"
    try:
        async with (
            connect(base) as wx,
            connect(base) as wy,
            connect(base) as w1,
            connect(base + "?vsn=2.0.0") as w2,
        ):
            x, y, s1, s2 = Peer(wx), Peer(wy), Peer(w1), Peer(w2, array=True)
            for peer in (x, y, s1, s2):
                ref = await peer.send("room:1", "phx_join", {}, join_ref="1" if peer.array else None)
                assert (await peer.reply(ref))["status"] == "ok"
            gated_ref = await x.send("room:1", "gated")
            after = [await x.send("room:1", "pub", {"kind": "c", "n": n}) for n in range(5)]
            await asyncio.sleep(0.05)
            assert not gate.is_set()
            for n in range(10):  # Y's sync pushes are answered while X's async handler waits
                ref = await y.send("room:1", "pub", {"kind": "b", "n": n, "release": n == 9})
                assert (await y.reply(ref))["response"] == {"n": n}
            # X, in arrival order: Y's broadcasts, then its async push's broadcast and reply, then each
            # later sync push's broadcast and reply: nothing of the later pushes overtook the async one.
            seq: list[tuple[str, Any]] = []
            pending = list(x.inbox)
            x.inbox.clear()
            while len(seq) < 10 + 2 + 5 * 2:
                frame = x._norm(
                    pending.pop(0) if pending else json.loads(await asyncio.wait_for(wx.recv(), 10))
                )
                if frame["event"] == "phx_reply":
                    seq.append(("reply", frame["ref"]))
                elif frame["event"] in ("a", "b", "c"):
                    seq.append((frame["event"], frame["payload"]["n"]))
            expected_x = [("b", n) for n in range(10)] + [("a", 0), ("reply", gated_ref)]
            for n, ref in enumerate(after):
                expected_x += [("c", n), ("reply", ref)]
            assert seq == expected_x
            expected = [("b", n) for n in range(10)] + [("a", 0)] + [("c", n) for n in range(5)]
            for peer in (y, s1, s2):
                got = []
                while len(got) < len(expected):
                    f = await peer.expect(lambda f: f["event"] in ("a", "b", "c"))
                    got.append((f["event"], f["payload"]["n"]))
                assert got == expected
    finally:
        await srv.close()


async def test_broadcast_from_and_a_wire_form_switch_through_the_fan_out() -> None:
    """``broadcast_from`` leaves out the sender on the batched path, and a client that switches wire
    forms gets the next broadcasts in its new form (the topic's fan-out lists are made again)."""

    def shout(sock: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
        sock.broadcast_from(topic, "shout", payload)
        return {}

    def tell(sock: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
        sock.broadcast(topic, "tell", payload)
        return {}

    channel = ChannelDef("room:*", handlers={"shout": shout, "tell": tell})
    srv, _ = await _serve(ChannelConfig(channels=[channel], heartbeat_timeout=None))
    url = f"ws://127.0.0.1:{srv.port}/socket"
    try:
        async with connect(url) as wa, connect(url) as wb:
            a, b = Peer(wa), Peer(wb)
            for peer in (a, b):
                assert (await peer.reply(await peer.send("room:1", "phx_join")))["status"] == "ok"
            await a.reply(await a.send("room:1", "tell", {"n": 1}))  # builds the topic's fan-out lists
            for peer in (a, b):
                assert (await peer.expect(lambda f: f["event"] == "tell"))["raw"]["payload"] == {"n": 1}
            await a.reply(await a.send("room:1", "shout", {"n": 2}))
            assert (await b.expect(lambda f: f["event"] == "shout"))["payload"] == {"n": 2}
            b.array = True  # b's next message is in the array form: so are its broadcasts from then on
            await b.reply(await b.send("room:1", "tell", {"n": 3}, join_ref=None))
            frame = await b.expect(lambda f: f["event"] == "tell")
            assert frame["raw"] == [None, None, "room:1", "tell", {"n": 3}]
            frame = await a.expect(lambda f: f["event"] == "tell")
            assert frame["raw"]["payload"] == {"n": 3}  # a still speaks the object form
            await a.reply(await a.send("room:1", "tell", {"n": 4}))
            assert (await b.expect(lambda f: f["event"] == "tell"))["raw"][4] == {"n": 4}
            assert not any(a._norm(f)["event"] == "shout" for f in a.inbox)
            with pytest.raises(TimeoutError):
                await a.expect(lambda f: f["event"] == "shout", timeout=0.2)
    finally:
        await srv.close()


async def _slow_subscriber(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw client with a tiny receive buffer that joins ``feed:1`` and then reads nothing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=16 * 1024)
    writer.write(upgrade_request("/socket"))
    status, _headers, _ = await read_head(reader)
    assert status == 101
    client = RawClient(reader, writer)
    writer.write(_frame("feed:1", "phx_join", {}, "j"))
    assert (await _read_json(client))["payload"]["status"] == "ok"
    assert (await _read_json(client))["event"] == "presence_state"
    return reader, writer


@pytest.mark.parametrize("mode", ["close", "skip"])
async def test_slow_subscriber_is_closed_or_skipped(mode: str) -> None:
    """``"close"``: a subscriber that stops reading is closed with 1008 at ``max_backpressure``.
    ``"skip"``: broadcasts skip it while it is over ``skip_if_buffered_over``, it stays open, and
    once it reads again it gets the later broadcasts, in order; the fast subscriber gets them all."""
    closes: list[int] = []
    body = "x" * 32 * 1024

    def pub(sock: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
        sock.broadcast(topic, "tick", {"n": payload["n"], "body": body})
        return {}

    config = ChannelConfig(
        channels=[ChannelDef("feed:*", handlers={"pub": pub})],
        heartbeat_timeout=None,
        slow_subscriber=mode,  # type: ignore[arg-type]
        skip_if_buffered_over=256 * 1024,
    )
    endpoint = ChannelEndpoint(config)
    ws_config = endpoint.ws_config()

    def on_close(ws: zzz.WebSocket, code: int, reason: str) -> Any:
        closes.append(code)
        return endpoint.on_close(ws, code, reason)

    wrapped = zzz.WsConfig(on_open=ws_config.on_open, on_message=ws_config.on_message, on_close=on_close)
    app = zzz.App([zzz.Router.ws("/socket", wrapped)], max_backpressure=2 << 20)
    srv = await app.start(host="127.0.0.1", port=0)
    try:
        reader, writer = await _slow_subscriber(srv.port)
        total = 600  # 19 MiB: well past the kernel's buffers and max_backpressure
        async with connect(f"ws://127.0.0.1:{srv.port}/socket", max_size=None) as wf:
            fast = Peer(wf)
            assert (await fast.reply(await fast.send("feed:1", "phx_join")))["status"] == "ok"
            ticks = 0
            for n in range(total):
                await fast.reply(await fast.send("feed:1", "pub", {"n": n}))
                while fast.inbox:  # keep the fast subscriber's own buffer empty
                    frame = fast._norm(fast.inbox.pop())
                    ticks += frame["event"] == "tick"
            if mode == "close":
                for _ in range(100):
                    if closes:
                        break
                    await asyncio.sleep(0.05)
                assert closes == [1008]
                writer.close()
                return
            assert closes == []
            # The slow one reads again: it got a prefix, then (skipped ones missing) later ticks in order.
            client = RawClient(reader, writer)
            got: list[int] = []
            while True:
                try:
                    frame = await _read_json(client, timeout=1.0)
                except (TimeoutError, asyncio.TimeoutError):
                    break
                got.append(frame["payload"]["n"])
            assert got == sorted(got) and len(set(got)) == len(got)
            assert 0 < len(got) < total, len(got)
            await fast.reply(await fast.send("feed:1", "pub", {"n": total}))
            assert (await _read_json(client))["payload"]["n"] == total  # read again: not skipped any more
            while ticks < total + 1:
                await fast.expect(lambda f: f["event"] == "tick")
                ticks += 1
            assert closes == []
            writer.close()
    finally:
        await srv.close()


async def test_broadcasts_from_another_thread_reach_real_sockets_in_order() -> None:
    """A broadcast made off the loop's thread is handed to the loop per subscriber (zzz.broadcast
    runs on the loop's thread only), and keeps its order with the loop's own broadcasts."""
    threads: list[threading.Thread] = []

    def from_thread(sock: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
        def work() -> None:
            for n in range(50):
                sock.broadcast(topic, "t", {"n": n})

        thread = threading.Thread(target=work)
        threads.append(thread)
        thread.start()
        return {}

    def here(sock: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
        sock.broadcast(topic, "t", {"n": "here"})
        return {}

    channel = ChannelDef("room:*", handlers={"thread": from_thread, "here": here})
    srv, _ = await _serve(ChannelConfig(channels=[channel], heartbeat_timeout=None))
    url = f"ws://127.0.0.1:{srv.port}/socket"
    try:
        async with connect(url) as wa, connect(url + "?vsn=2.0.0") as wb:
            a, b = Peer(wa), Peer(wb, array=True)
            for peer in (a, b):
                ref = await peer.send("room:1", "phx_join", {}, join_ref="1" if peer.array else None)
                assert (await peer.reply(ref))["status"] == "ok"
            await a.reply(await a.send("room:1", "thread"))
            await asyncio.get_running_loop().run_in_executor(None, threads[0].join, 10)
            await a.reply(await a.send("room:1", "here"))
            for peer in (a, b):
                got = [(await peer.expect(lambda f: f["event"] == "t"))["payload"]["n"] for _ in range(51)]
                assert got == [*range(50), "here"]
    finally:
        await srv.close()
