"""server.stats() / App.stats() after scripted sessions over real sockets, and /metrics in the
Prometheus text format (parsed with prometheus-client's own parser)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import zzz
from server.helpers import RawClient, raw_request, read_head, upgrade_request
from zzz.channels import ChannelConfig, ChannelDef, JoinResult, channel_routes
from zzz.metrics import METRICS
from zzz.testing import ChannelClient, serve


async def wait_for(condition: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def echo(ws: zzz.WebSocket, msg: Any) -> None:
    ws.send(msg.data) if isinstance(msg, zzz.Text) else ws.send_binary(msg.data)


async def refuse(request: zzz.Request, call_next: Any) -> Any:
    return zzz.Response("no", status=401)


FLOOD = 256 * 1024


def flood(ws: zzz.WebSocket) -> None:
    for _ in range(64):  # 16 MiB to a client that reads nothing: over max_backpressure
        ws.send_binary(b"x" * FLOOD)


def session_app(**settings: Any) -> zzz.App:
    closes: list[int] = []

    def on_close(ws: zzz.WebSocket, code: int, reason: str) -> None:
        closes.append(code)

    app = zzz.App(
        [
            zzz.Router.ws("/ws", zzz.WsConfig(on_message=echo, on_close=on_close)),
            zzz.Router.ws("/guarded", zzz.WsConfig(on_message=echo), middleware=[refuse]),
            zzz.Router.ws("/flood", zzz.WsConfig(on_open=flood, on_close=on_close)),
            zzz.Router.get("/plain", lambda request: "plain"),
        ],
        max_backpressure=1 << 20,
        **settings,
    )
    app.closes = closes  # type: ignore[attr-defined]
    return app


async def run_session(port: int, app: zzz.App) -> None:
    """Four WebSockets ending with 1000, 4001, 1006 (abort) and 1008 (backpressure); five refused
    upgrades; a 404 and a plain HTTP request that are no handshake failures."""
    url = f"ws://127.0.0.1:{port}"
    before = len(app.closes)  # type: ignore[attr-defined]
    async with zzz.connect(url + "/ws") as a:
        a.send("hello")
        assert await asyncio.wait_for(a.recv(), 5) == zzz.Text("hello")
    async with zzz.connect(url + "/ws") as b:
        b.close(4001, "bye")
    c = await RawClient.connect(port, "/ws")
    c.writer.transport.abort()  # vanishes: 1006
    slow = await RawClient.connect(port, "/flood")  # never reads
    await wait_for(lambda: len(app.closes) == before + 4)  # type: ignore[attr-defined]
    slow.close()
    statuses = [
        (await raw_request(port, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"))[0],  # not an upgrade: 426
        (await raw_request(port, upgrade_request("/ws", version="12")))[0],  # 426
        (await raw_request(port, upgrade_request("/ws", key="short")))[0],  # 400
        (await raw_request(port, upgrade_request("/guarded")))[0],  # the middleware's 401
        (await raw_request(port, upgrade_request("/guarded")))[0],
        (await raw_request(port, upgrade_request("/nowhere")))[0],  # 404: no WebSocket route
        (await raw_request(port, b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n"))[0],
    ]
    assert statuses == [426, 426, 400, 401, 401, 404, 200]


EXPECTED = {
    "connections_open": 0,
    "connections_total": 4,
    "closes": {1000: 1, 4001: 1, 1006: 1, 1008: 1},
    "handshake_failures": {426: 2, 400: 1, 401: 2},
    "backpressure_closes": 1,
    "channel_joins": 0,
    "topics": 0,
    "subscribers": 0,
}


async def test_stats_after_a_scripted_session() -> None:
    app = session_app()
    assert app.stats()["connections_total"] == 0  # before any start: zeros, every key
    assert set(app.stats()) == {m.key for m in METRICS}
    async with serve(app) as srv:
        async with zzz.connect(srv.ws_url + "/ws"):
            await wait_for(lambda: srv.stats()["connections_open"] == 1)
            assert srv.stats()["connections_total"] == 1
        await wait_for(lambda: srv.stats()["connections_open"] == 0)
        await run_session(srv.port, app)
        stats = srv.stats()
        assert app.stats() == stats  # the app's only server
    assert sorted(app.closes) == [1000, 1000, 1006, 1008, 4001]  # type: ignore[attr-defined]
    expected = dict(EXPECTED, connections_total=5, closes={1000: 2, 4001: 1, 1006: 1, 1008: 1})
    assert {k: stats[k] for k in expected} == expected


async def test_app_stats_sum_the_servers_it_started() -> None:
    app = session_app()
    async with serve(app) as one, serve(app) as two:
        for srv in (one, two):
            async with zzz.connect(srv.ws_url + "/ws") as ws:
                ws.close(4000)
        await wait_for(lambda: sum(app.stats()["closes"].values()) == 2)
        total = app.stats()
        assert total["connections_total"] == 2
        assert one.stats()["connections_total"] == two.stats()["connections_total"] == 1
        assert total["closes"] == {4000: 2}


async def test_messages_and_bytes_count_data_messages_and_wire_bytes() -> None:
    async with serve(session_app()) as srv:
        async with zzz.connect(srv.ws_url + "/ws", compression=False) as ws:
            for text in ("a", "bb" * 100, "c" * 200):
                ws.send(text)
                assert (await asyncio.wait_for(ws.recv(), 5)).data == text
            await ws.ping(b"p")  # control frames are bytes, not messages
        await wait_for(lambda: srv.stats()["connections_open"] == 0)
        stats = srv.stats()
    assert stats["messages_in"] == 3 and stats["messages_out"] == 3
    # Client frames are masked (4 bytes); 200 bytes need the 2-byte extended length.
    data_in = (2 + 4 + 1) + (2 + 2 + 4 + 200) + (2 + 2 + 4 + 200)
    data_out = (2 + 1) + (2 + 2 + 200) + (2 + 2 + 200)
    ping_in, pong_out = 2 + 4 + 1, 2 + 1
    close_in, close_out = 2 + 4 + 2, 2 + 2
    assert stats["bytes_in"] == data_in + ping_in + close_in
    assert stats["bytes_out"] == data_out + pong_out + close_out


async def async_echo(ws: zzz.WebSocket, msg: Any) -> None:
    echo(ws, msg)


@pytest.mark.parametrize("handler", [echo, async_echo], ids=["sync", "async"])
async def test_the_slow_path_counts_too(handler: Any) -> None:
    """Fragments, control frames and the bytes read with the upgrade request go through the
    Connection (with an async handler, everything does): counted all the same."""
    app = zzz.App([zzz.Router.ws("/ws", zzz.WsConfig(on_message=handler))])
    async with serve(app) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        raw = RawClient(reader, writer)
        writer.write(upgrade_request("/ws") + masked_frame(1, b"ab", fin=False))  # early data
        assert (await read_head(reader))[0] == 101
        raw.send_frame(0, b"cd")
        raw.send_frame(2, b"xyz")
        raw.send_frame(9, b"p")
        assert await raw.read_frame() == (1, b"abcd")
        assert await raw.read_frame() == (2, b"xyz")
        assert await raw.read_frame() == (10, b"p")
        raw.send_frame(8, (1000).to_bytes(2, "big"))
        assert await raw.read_close() == (1000, "")
        raw.close()
        await wait_for(lambda: srv.stats()["connections_open"] == 0)
        stats = srv.stats()
    assert (stats["messages_in"], stats["messages_out"]) == (2, 2)
    assert stats["bytes_in"] == (2 + 4 + 2) * 2 + (2 + 4 + 3) + (2 + 4 + 1) + (2 + 4 + 2)
    assert stats["bytes_out"] == (2 + 4) + (2 + 3) + (2 + 1) + (2 + 2)


@pytest.mark.parametrize("handler", [echo, async_echo], ids=["sync", "async"])
async def test_compressed_messages_count_as_messages_and_compressed_bytes(handler: Any) -> None:
    text = "compress me " * 100
    app = zzz.App([zzz.Router.ws("/ws", zzz.WsConfig(on_message=handler))])
    async with serve(app) as srv:
        async with zzz.connect(srv.ws_url + "/ws", compression=True) as ws:
            for _ in range(3):
                ws.send(text)
                assert (await asyncio.wait_for(ws.recv(), 5)).data == text
            ws.close()
            await ws.wait_closed()
        await wait_for(lambda: srv.stats()["connections_open"] == 0)
        stats = srv.stats()
    assert (stats["messages_in"], stats["messages_out"]) == (3, 3)
    # What the wire carried: compressed, far less than the text itself (and more than nothing).
    assert 3 * 8 < stats["bytes_in"] < len(text) and 3 * 4 < stats["bytes_out"] < len(text)


async def test_a_broadcast_counts_one_message_per_receiver() -> None:
    members: list[zzz.WebSocket] = []

    def on_open(ws: zzz.WebSocket) -> None:
        members.append(ws)

    def on_message(ws: zzz.WebSocket, msg: Any) -> None:
        zzz.broadcast(members, msg.data)

    app = zzz.App([zzz.Router.ws("/ws", zzz.WsConfig(on_open=on_open, on_message=on_message))])
    async with serve(app) as srv:
        url = srv.ws_url + "/ws"
        async with zzz.connect(url, compression=False) as a, zzz.connect(url, compression=False) as b:
            await wait_for(lambda: len(members) == 2)
            a.send("hi")
            assert (await asyncio.wait_for(a.recv(), 5)).data == "hi"
            assert (await asyncio.wait_for(b.recv(), 5)).data == "hi"
            stats = srv.stats()
    assert (stats["messages_in"], stats["messages_out"]) == (1, 2)
    assert stats["bytes_out"] == 2 * (2 + 2)


def masked_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    return zzz.core.encode_frame(opcode, payload, fin, False, b"\x01\x02\x03\x04")


def chat_app() -> zzz.App:
    def join(socket: Any, topic: str, payload: Any) -> JoinResult:
        return JoinResult.ok() if payload.get("ok", True) else JoinResult.error("no")

    rooms = ChannelDef("room:*", join=join)
    return zzz.App(channel_routes("/socket", ChannelConfig(channels=[rooms])), metrics_path="/metrics")


async def test_channel_joins_topics_and_subscribers() -> None:
    async with serve(chat_app()) as srv:
        url = srv.ws_url + "/socket"
        async with ChannelClient(url) as ann, ChannelClient(url) as bob:
            assert (await ann.join("room:a"))["status"] == "ok"
            assert (await bob.join("room:a"))["status"] == "ok"
            assert (await bob.join("room:b"))["status"] == "ok"
            assert (await bob.join("room:c", {"ok": False}))["status"] == "error"  # refused: not a join
            stats = srv.stats()
            assert (stats["channel_joins"], stats["topics"], stats["subscribers"]) == (3, 2, 3)
            assert (await bob.leave("room:b"))["status"] == "ok"
            stats = srv.stats()
            assert (stats["channel_joins"], stats["topics"], stats["subscribers"]) == (3, 1, 2)
        await wait_for(lambda: srv.stats()["subscribers"] == 0)
        stats = srv.stats()
        assert (stats["channel_joins"], stats["topics"], stats["connections_open"]) == (3, 0, 0)
        assert stats["connections_total"] == 2


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


async def test_metrics_endpoint_in_the_prometheus_text_format() -> None:
    app = session_app(metrics_path="/metrics")
    async with serve(app) as srv:
        await run_session(srv.port, app)
        async with zzz.connect(srv.ws_url + "/ws"):
            await wait_for(lambda: srv.stats()["connections_open"] == 1)
            status, headers, body = await raw_request(
                srv.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=")
    found = families(body.decode())
    # Every key, under its name and type (the parser names a counter family without _total).
    for metric in METRICS:
        family_name = metric.name.removesuffix("_total") if metric.kind == "counter" else metric.name
        assert found[family_name].type == metric.kind, metric.name
        for sample in found[family_name].samples:
            assert sample.name == metric.name

    def value(name: str, **labels: str) -> float:
        family = found[name.removesuffix("_total")]
        return next(s.value for s in family.samples if s.name == name and s.labels == labels)

    assert value("zzz_connections_open") == 1
    assert value("zzz_connections_total") == 5
    assert value("zzz_closes_total", code="1000") == 1
    assert value("zzz_closes_total", code="4001") == 1
    assert value("zzz_closes_total", code="1006") == 1
    assert value("zzz_closes_total", code="1008") == 1
    assert value("zzz_handshake_failures_total", status="426") == 2
    assert value("zzz_handshake_failures_total", status="400") == 1
    assert value("zzz_handshake_failures_total", status="401") == 2
    assert value("zzz_backpressure_closes_total") == 1
    assert value("zzz_channel_joins_total") == 0
    assert value("zzz_topics") == 0
    # The scrape itself is an HTTP request, not a WebSocket: it counts nowhere.
    assert {s.labels["status"] for s in found["zzz_handshake_failures"].samples} == {"400", "401", "426"}


async def test_metrics_go_through_app_middleware() -> None:
    async def guard(request: zzz.Request, call_next: Any) -> Any:
        if request.path == "/metrics" and request.headers.get("authorization") != "Bearer ops":
            return zzz.Response("", status=403)
        return await call_next(request)

    app = zzz.App([], middleware=[guard], metrics_path="/metrics")
    async with serve(app) as srv:
        denied = await raw_request(srv.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        allowed = await raw_request(
            srv.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ops\r\n\r\n"
        )
    assert denied[0] == 403
    assert allowed[0] == 200 and b"zzz_connections_open 0.0" in allowed[2]


async def test_no_metrics_route_without_metrics_path() -> None:
    async with serve(zzz.App([])) as srv:
        assert (await raw_request(srv.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))[0] == 404


def test_metrics_path_without_prometheus_client_is_a_clear_import_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # what a missing package looks like
    with pytest.raises(ImportError, match=r"prometheus-client.*zzz\[metrics\]"):
        zzz.App([], metrics_path="/metrics")
    zzz.App([])  # without metrics_path nothing needs it


async def test_multiprocess_mode_in_this_process(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # prometheus-client was imported long before the variable was set (as when an app module
    # imports it before a supervisor sets it): zzz's series still go to the directory.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    app = session_app(metrics_path="/metrics")
    async with serve(app) as srv, zzz.connect(srv.ws_url + "/ws") as kept:
        async with zzz.connect(srv.ws_url + "/ws") as ws:
            ws.close(4002)
        await wait_for(lambda: srv.stats()["closes"].get(4002) == 1)
        status, _headers, body = await raw_request(
            srv.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        kept.close()
    assert status == 200
    samples = {
        (s.name, tuple(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert samples[("zzz_connections_total", ())] == 2
    assert samples[("zzz_connections_open", ())] == 1
    assert samples[("zzz_closes_total", (("code", "4002"),))] == 1
    assert list(tmp_path.glob("counter_*.db")) and list(tmp_path.glob("gauge_livesum_*.db"))


async def test_a_bad_multiprocess_directory_is_a_500_not_a_stop(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    async with serve(session_app(metrics_path="/metrics")) as srv:
        status = (await raw_request(srv.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))[0]
        async with zzz.connect(srv.ws_url + "/ws") as ws:  # still serving
            ws.send("ok")
            assert await asyncio.wait_for(ws.recv(), 5) == zzz.Text("ok")
    assert status == 500
