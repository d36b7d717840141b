"""A topic's broadcasts go out with ``zzz.broadcast``'s once-per-turn flush: pipelined sync pushes
whose handler broadcasts are one write for every other subscriber (and one, the read's, for the
publisher), and the order of the broadcasts stays the same for everyone, whatever the mix of sync
handlers and async ones on other connections. Counted on the server's transports; both cores, both
loops.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import connect

import zzz
import zzz.websocket
from tests.channels.test_server_e2e import Peer
from tests.server.helpers import RawClient
from tests.transports import CountingTransport
from zzz import core
from zzz.channels import ChannelConfig, ChannelDef, ChannelEndpoint, ChannelSocket


def _frame(topic: str, event: str, payload: Any, ref: str) -> bytes:
    text = json.dumps({"topic": topic, "event": event, "payload": payload, "ref": ref})
    return core.encode_frame(core.OP_TEXT, text.encode(), True, False, b"\x01\x02\x03\x04")


async def _read_json(client: RawClient, timeout: float = 10) -> Any:
    opcode, payload = await client.read_frame(timeout)
    assert opcode == core.OP_TEXT
    return json.loads(payload)


async def test_sync_handler_broadcasts_are_one_write_per_subscriber_and_keep_order_with_async_ones() -> None:
    counters: dict[int, CountingTransport] = {}

    def pub(sock: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
        sock.broadcast(topic, "tick", {"n": payload["n"]})
        return {"n": payload["n"]}

    async def slow_pub(sock: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
        await asyncio.sleep(0.01)
        sock.broadcast(topic, "tick", {"n": payload["n"]})
        return {"n": payload["n"]}

    endpoint = ChannelEndpoint(
        ChannelConfig(
            channels=[ChannelDef("feed:*", handlers={"pub": pub, "slow": slow_pub})], heartbeat_timeout=None
        )
    )
    config = endpoint.ws_config()
    handles: dict[str, zzz.WebSocket] = {}

    def on_open(ws: zzz.WebSocket) -> Any:
        counters[id(ws)] = counter = CountingTransport(ws._proto.transport)
        ws._proto.transport = counter  # type: ignore[assignment]
        ws._proto._writer.attach(counter)  # the one flush: reads, sends and broadcasts write here
        handles[ws.query_param("n") or ""] = ws
        return config.on_open(ws)  # type: ignore[misc]

    wrapped = zzz.WsConfig(on_open=on_open, on_message=config.on_message, on_close=config.on_close)
    srv = await zzz.App([zzz.Router.ws("/socket", wrapped)]).start(host="127.0.0.1", port=0)
    base = f"ws://127.0.0.1:{srv.port}/socket"
    try:
        async with (
            connect(base + "?n=s1") as w1,
            connect(base + "?vsn=2.0.0&n=s2") as w2,
            connect(base + "?n=q") as wq,
        ):
            s1, s2, q = Peer(w1), Peer(w2, array=True), Peer(wq)
            for peer in (s1, s2, q):
                ref = await peer.send("feed:1", "phx_join", {}, join_ref="1" if peer.array else None)
                assert (await peer.reply(ref))["status"] == "ok"
            publisher = await RawClient.connect(srv.port, "/socket?n=p")
            publisher.writer.write(_frame("feed:1", "phx_join", {}, "j"))
            assert (await _read_json(publisher))["payload"]["status"] == "ok"
            while (await _read_json(publisher))["event"] != "presence_state":
                pass
            await asyncio.sleep(0.1)  # let every join's own traffic settle
            subscribers = [counters[id(handles[name])] for name in ("s1", "s2", "q")]
            publisher_counter = counters[id(handles["p"])]
            for c in (*subscribers, publisher_counter):
                c.writes.clear()
            pushes = 10
            publisher.writer.write(b"".join(_frame("feed:1", "pub", {"n": n}, str(n)) for n in range(pushes)))

            async def ticks(peer: Peer, n: int) -> list[Any]:
                return [(await peer.expect(lambda f: f["event"] == "tick"))["payload"]["n"] for _ in range(n)]

            for peer in (s1, s2, q):
                assert await ticks(peer, pushes) == list(range(pushes))
            frames = [await _read_json(publisher) for _ in range(2 * pushes)]
            assert [f["event"] for f in frames] == ["tick", "phx_reply"] * pushes
            # One read on the publisher's side: every other subscriber had one write for all ten.
            assert [len(c.writes) for c in subscribers] == [1, 1, 1]
            assert len(publisher_counter.writes) == 1  # its replies and ticks: the read's one write
            # Async handlers on one connection, sync ones on another, interleaved: the broadcasts
            # reach every subscriber in one order, and each connection's own in the order it sent them.
            for n in range(5):
                await q.send("feed:1", "slow", {"n": f"q{n}"})
                publisher.writer.write(_frame("feed:1", "pub", {"n": f"p{n}"}, f"p{n}"))
                await asyncio.sleep(0.004)
            orders = [await ticks(peer, 10) for peer in (s1, s2, q)]
            assert orders[0] == orders[1] == orders[2]
            assert [t for t in orders[0] if t.startswith("q")] == [f"q{n}" for n in range(5)]
            assert [t for t in orders[0] if t.startswith("p")] == [f"p{n}" for n in range(5)]
            publisher.close()
    finally:
        await srv.close()
