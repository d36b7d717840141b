"""``zzz.broadcast`` end to end over real sockets: what it returns (open, closed and skipped
receivers), one write per receiver per loop turn whatever the number of broadcasts (counted on
the transports), the early flush past 256 KiB, the skip threshold and its validation, calls from
another thread, and compression once per window-bits group with ``server_no_context_takeover``
(decoded by websockets and aiohttp clients; Chromium is in ``tests/browser/test_broadcast.py``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

import zzz
import zzz.websocket
from tests.transports import CountingTransport
from zzz import deflate as deflate_module
from zzz.readloop import EARLY_FLUSH_SIZE

from .helpers import KEY, RawClient, _encode, raw_request, serve, upgrade_request, url


async def until(check: Callable[[], bool], timeout: float = 10) -> None:
    async def poll() -> None:
        while not check():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


def app_with(handles: dict[str, zzz.WebSocket], gone: list[str] | None = None, **settings: Any) -> zzz.App:
    """Receivers by their ``?n=`` query parameter; no on_message (reads take the general path)."""

    def on_open(ws: zzz.WebSocket) -> None:
        handles[ws.query_param("n") or ""] = ws

    def on_close(ws: zzz.WebSocket, code: int, reason: str) -> None:
        if gone is not None:
            gone.append(ws.query_param("n") or "")

    return zzz.App([zzz.Router.ws("/ws", zzz.WsConfig(on_open=on_open, on_close=on_close))], **settings)


def counted(handle: zzz.WebSocket) -> CountingTransport:
    proto = handle._proto
    counter = CountingTransport(proto.transport)
    proto.transport = counter  # type: ignore[assignment]
    proto._writer.attach(counter)  # the connection's one flush writes to it too
    return counter


async def recv_n(client: ClientConnection, n: int) -> list[Any]:
    return [await asyncio.wait_for(client.recv(), 10) for _ in range(n)]


async def test_it_returns_the_number_of_receivers_it_queued_for() -> None:
    handles: dict[str, zzz.WebSocket] = {}
    gone: list[str] = []
    async with (
        serve(app_with(handles, gone)) as server,
        ws_connect(url(server, "/ws?n=a"), compression=None) as a,
        ws_connect(url(server, "/ws?n=b"), compression=None) as b,
        ws_connect(url(server, "/ws?n=c"), compression=None) as c,
    ):
        raw = await RawClient.connect(server.port, "/ws?n=d")
        await until(lambda: len(handles) == 4)
        everyone = [handles[k] for k in "abcd"]
        assert zzz.broadcast(everyone, "one") == 4
        assert await recv_n(a, 1) == await recv_n(b, 1) == await recv_n(c, 1) == ["one"]
        await c.close()  # a close handshake: its connection is CLOSED
        raw.writer.transport.abort()  # vanished: the transport is gone, no close frame came
        await until(lambda: sorted(gone) == ["c", "d"])
        assert handles["d"].closed
        assert zzz.broadcast(everyone, b"two") == 2
        assert zzz.broadcast(everyone, bytearray(b"three")) == 2
        assert zzz.broadcast(everyone, memoryview(b"four")) == 2
        assert zzz.broadcast(iter(everyone), "five") == 2  # any iterable
        assert zzz.broadcast([], "none") == 0
        await asyncio.sleep(0)  # the turn's flush: the queues are empty again
        slow = counted(handles["b"])
        slow.extra = 1001
        assert zzz.broadcast(everyone, "six", skip_if_buffered_over=1000) == 1  # b is over it
        slow.extra = 1000
        assert zzz.broadcast(everyone, "seven", skip_if_buffered_over=1000) == 2  # not over it
        assert await recv_n(a, 6) == [b"two", b"three", b"four", "five", "six", "seven"]
        assert await recv_n(b, 5) == [b"two", b"three", b"four", "five", "seven"]


async def test_ten_broadcasts_in_one_turn_are_one_write_per_receiver() -> None:
    handles: dict[str, zzz.WebSocket] = {}
    async with (
        serve(app_with(handles)) as server,
        ws_connect(url(server, "/ws?n=0"), compression=None) as c0,
        ws_connect(url(server, "/ws?n=1"), compression=None) as c1,
        ws_connect(url(server, "/ws?n=2"), compression=None) as c2,
    ):
        await until(lambda: len(handles) == 3)
        receivers = [handles[k] for k in "012"]
        counters = [counted(ws) for ws in receivers]
        for i in range(10):
            assert zzz.broadcast(receivers, f"m{i}") == 3
        assert [c.writes for c in counters] == [[], [], []]  # nothing written during the turn
        assert receivers[0].buffered_amount >= 10 * 4  # the queued frames count as unsent
        await asyncio.sleep(0)  # the turn ends: the flush scheduled with call_soon runs first
        assert [len(c.writes) for c in counters] == [1, 1, 1]
        expected = [f"m{i}" for i in range(10)]
        for client in (c0, c1, c2):
            assert await recv_n(client, 10) == expected
        # The next turn's broadcasts are the next turn's one write; a send meanwhile keeps order.
        zzz.broadcast(receivers, "x")
        receivers[0].send("after x")  # outside a read a send writes at once: x goes with it
        zzz.broadcast(receivers, "y")
        await asyncio.sleep(0)
        assert [len(c.writes) for c in counters] == [3, 2, 2]
        assert await recv_n(c0, 3) == ["x", "after x", "y"]
        assert await recv_n(c1, 2) == await recv_n(c2, 2) == ["x", "y"]


async def test_a_read_that_broadcasts_writes_once_and_the_others_once_per_turn() -> None:
    """A sync on_message broadcasting to everyone: the sender's copies go out with the read's one
    write, every other receiver gets one write for the whole read."""
    counters: dict[int, CountingTransport] = {}
    handles: list[zzz.WebSocket] = []

    def on_open(ws: zzz.WebSocket) -> None:
        counters[id(ws)] = counted(ws)  # the per-read loop writes through the same Writer
        handles.append(ws)

    def on_message(ws: zzz.WebSocket, msg: Any) -> None:
        assert zzz.broadcast(handles, msg.data) == len(handles)

    app = zzz.App([zzz.Router.ws("/ws", zzz.WsConfig(on_open=on_open, on_message=on_message))])
    async with serve(app) as server, ws_connect(url(server, "/ws"), compression=None) as other:
        await until(lambda: len(handles) == 1)
        sender = await RawClient.connect(server.port)
        await until(lambda: len(handles) == 2)
        sender_counter = counters[id(handles[1])]
        other_counter = counters[id(handles[0])]
        sender.writer.write(b"".join(_encode(1, f"p{i}".encode(), True, b"abcd") for i in range(5)))
        got = [(await sender.read_frame())[1] for _ in range(5)]
        assert got == [f"p{i}".encode() for i in range(5)]
        assert await recv_n(other, 5) == [f"p{i}" for i in range(5)]
        assert len(sender_counter.writes) == 1  # the read's one write
        assert len(other_counter.writes) == 1  # the end of the turn's one write
        sender.close()


async def test_a_receiver_past_256_kib_is_flushed_at_once() -> None:
    handles: dict[str, zzz.WebSocket] = {}
    async with (
        serve(app_with(handles)) as server,
        ws_connect(url(server, "/ws?n=0"), compression=None, max_size=None) as c0,
        ws_connect(url(server, "/ws?n=1"), compression=None, max_size=None) as c1,
    ):
        await until(lambda: len(handles) == 2)
        receivers = [handles["0"], handles["1"]]
        counters = [counted(ws) for ws in receivers]
        chunk = "z" * (100 * 1024)  # a frame of 100 KiB + 4: the third passes EARLY_FLUSH_SIZE
        assert 2 * (len(chunk) + 4) < EARLY_FLUSH_SIZE <= 3 * (len(chunk) + 4)
        sizes = []
        for _ in range(5):
            zzz.broadcast(receivers, chunk)
            sizes.append([len(c.writes) for c in counters])
        assert sizes == [[0, 0], [0, 0], [1, 1], [1, 1], [1, 1]]
        await asyncio.sleep(0)
        assert [len(c.writes) for c in counters] == [2, 2]
        for client in (c0, c1):
            assert await recv_n(client, 5) == [chunk] * 5


async def test_the_backpressure_limit_is_checked_when_the_turn_flushes() -> None:
    handles: dict[str, zzz.WebSocket] = {}
    gone: list[str] = []
    async with (
        serve(app_with(handles, gone, max_backpressure=64 * 1024)) as server,
        ws_connect(url(server, "/ws?n=0"), compression=None) as client,
    ):
        await until(lambda: len(handles) == 1)
        counter = counted(handles["0"])
        counter.extra = 64 * 1024 + 1  # over max_backpressure as soon as anything is written
        assert zzz.broadcast([handles["0"]], "hello") == 1
        assert not handles["0"].closed  # queued; nothing written yet
        await asyncio.sleep(0)
        assert len(counter.writes) == 1
        await until(lambda: gone == ["0"])
        assert client.close_code in (1006, 1008, None)
        assert handles["0"]._proto.final_close == (1008, "backpressure limit exceeded")


async def test_skip_if_buffered_over_reads_the_transport_and_the_queue() -> None:
    handles: dict[str, zzz.WebSocket] = {}
    async with (
        serve(app_with(handles)) as server,
        ws_connect(url(server, "/ws?n=0"), compression=None) as c0,
    ):
        await until(lambda: len(handles) == 1)
        ws = handles["0"]
        assert zzz.broadcast([ws], "x" * 600) == 1  # queued until the end of the turn
        assert ws.buffered_amount >= 600
        assert zzz.broadcast([ws], "y", skip_if_buffered_over=599) == 0  # its queue is over it
        assert zzz.broadcast([ws], "z", skip_if_buffered_over=10**30) == 1  # huge is fine
        assert zzz.broadcast([ws], "w", skip_if_buffered_over=0) == 0
        await asyncio.sleep(0)
        assert await recv_n(c0, 2) == ["x" * 600, "z"]


async def test_bad_arguments_raise() -> None:
    handles: dict[str, zzz.WebSocket] = {}
    async with (
        serve(app_with(handles)) as server,
        ws_connect(url(server, "/ws?n=0"), compression=None) as c0,
    ):
        await until(lambda: len(handles) == 1)
        ws = [handles["0"]]
        with pytest.raises(ValueError, match="skip_if_buffered_over must be >= 0, got -1"):
            zzz.broadcast(ws, "x", skip_if_buffered_over=-1)
        for bad in (1.5, "10", True, [1]):
            with pytest.raises(TypeError, match="skip_if_buffered_over must be an int or None"):
                zzz.broadcast(ws, "x", skip_if_buffered_over=bad)  # type: ignore[arg-type]
        for message in (1, None, zzz.Text("x")):
            with pytest.raises(TypeError, match="takes a str or bytes-like message"):
                zzz.broadcast(ws, message)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"sends to zzz\.WebSocket handles, not str"):
            zzz.broadcast(["nope"], "x")  # type: ignore[list-item]
        with pytest.raises(TypeError):
            zzz.broadcast(ws, "x", 10)  # type: ignore[misc]  # the threshold is keyword-only
        assert zzz.broadcast(ws, "still fine") == 1
        assert await recv_n(c0, 1) == ["still fine"]


async def test_from_another_thread_it_is_handed_to_the_loop_in_order() -> None:
    handles: dict[str, zzz.WebSocket] = {}
    gone: list[str] = []
    async with (
        serve(app_with(handles, gone)) as server,
        ws_connect(url(server, "/ws?n=0"), compression=None) as c0,
        ws_connect(url(server, "/ws?n=1"), compression=None) as c1,
        ws_connect(url(server, "/ws?n=2"), compression=None) as c2,
    ):
        await until(lambda: len(handles) == 3)
        await c2.close()
        await until(lambda: gone == ["2"])
        receivers = [handles[k] for k in "012"]
        counters = [counted(ws) for ws in receivers[:2]]
        counts: list[int] = []

        def work() -> None:
            for i in range(30):
                counts.append(zzz.broadcast(receivers, f"b{i}"))
                receivers[0].send(f"s{i}")  # handed over too: the order is the thread's

        thread = threading.Thread(target=work)
        thread.start()
        await asyncio.get_running_loop().run_in_executor(None, thread.join, 10)
        assert counts == [2] * 30  # the open receivers at the time of each call
        got0 = await recv_n(c0, 60)
        assert got0 == [m for i in range(30) for m in (f"b{i}", f"s{i}")]
        assert await recv_n(c1, 30) == [f"b{i}" for i in range(30)]
        loop_thread = threading.get_ident()
        assert all(c.threads == {loop_thread} for c in counters)  # written on the loop only


class CompressCounter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = deflate_module.PerMessageDeflate.compress

        def compress(pmd: deflate_module.PerMessageDeflate, data: Any) -> bytes:
            self.calls += 1
            return real(pmd, data)

        monkeypatch.setattr(deflate_module.PerMessageDeflate, "compress", compress)


def _messages() -> list[str | bytes]:
    return [
        '{"event":"tick","price":101.25,"symbol":"ZZZ"}' * 8,
        "héllo wörld — ünïcode " * 20,
        bytes(range(256)) * 4,
        "",
        "x" * 70_000,  # a 64-bit length frame
        '{"event":"tick","price":101.25,"symbol":"ZZZ"}' * 8,  # the same again: no context kept
    ]


async def test_compressed_broadcast_encodes_once_per_window_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """``server_no_context_takeover``: one compress per negotiated window bits for all receivers of
    a broadcast, decoded by websockets and aiohttp; a receiver without compression gets the plain frame."""
    handles: dict[str, zzz.WebSocket] = {}
    config = deflate_module.DeflateConfig(server_no_context_takeover=True)
    messages = _messages()
    async with serve(app_with(handles, deflate=config)) as server:
        asked_10 = ClientPerMessageDeflateFactory(server_max_window_bits=10, client_max_window_bits=True)
        async with (
            ws_connect(url(server, "/ws?n=w12"), max_size=None) as w12,
            ws_connect(url(server, "/ws?n=w12b"), max_size=None) as w12b,
            ws_connect(url(server, "/ws?n=w10"), extensions=[asked_10], max_size=None) as w10,
            ws_connect(url(server, "/ws?n=plain"), compression=None, max_size=None) as plain,
            aiohttp.ClientSession() as session,
            session.ws_connect(url(server, "/ws?n=aio"), compress=15, max_msg_size=0) as aio,
        ):
            await until(lambda: len(handles) == 5)
            for name in ("w12", "w12b", "w10"):
                assert "server_no_context_takeover" in str(handles[name]._proto.conn._deflate.params)
            assert w10.response.headers["Sec-WebSocket-Extensions"].count("server_no_context_takeover") == 1
            assert aio._response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
            keys = {name: handles[name]._proto.conn.broadcast_key for name in handles}
            assert keys["plain"] is None
            assert keys["w12"] == keys["w12b"] == keys["aio"] != keys["w10"]
            counter = CompressCounter(monkeypatch)
            receivers = list(handles.values())
            for message in messages:
                assert zzz.broadcast(receivers, message) == 5
            assert counter.calls == 2 * len(messages)  # window 12 and window 10, once each
            for client in (w12, w12b, w10, plain):
                assert await recv_n(client, len(messages)) == messages
            got = []
            for _ in messages:
                msg = await asyncio.wait_for(aio.receive(), 10)
                got.append(msg.data)
            assert got == messages


async def test_with_context_takeover_each_receiver_still_compresses_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handles: dict[str, zzz.WebSocket] = {}
    messages = _messages()
    async with (
        serve(app_with(handles)) as server,  # the default DeflateConfig: context takeover
        ws_connect(url(server, "/ws?n=a"), max_size=None) as a,
        ws_connect(url(server, "/ws?n=b"), max_size=None) as b,
    ):
        await until(lambda: len(handles) == 2)
        assert handles["a"]._proto.conn.broadcast_key is None
        counter = CompressCounter(monkeypatch)
        for message in messages:
            assert zzz.broadcast(list(handles.values()), message) == 2
        assert counter.calls == 2 * len(messages)
        for client in (a, b):
            assert await recv_n(client, len(messages)) == messages


async def test_every_offer_is_answered_with_server_no_context_takeover() -> None:
    app = zzz.App(
        [zzz.Router.ws("/ws", zzz.WsConfig())],
        deflate=deflate_module.DeflateConfig(server_no_context_takeover=True),
    )
    async with serve(app) as server:
        for offer in (
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=10; client_no_context_takeover",
            "x-unknown, permessage-deflate; client_max_window_bits=9",
        ):
            request = upgrade_request("/ws", extra=f"Sec-WebSocket-Extensions: {offer}\r\n", key=KEY)
            status, headers, _ = await raw_request(server.port, request)
            assert status == 101
            answer = [p.strip() for p in headers["sec-websocket-extensions"].split(";")]
            assert answer[0] == "permessage-deflate" and "server_no_context_takeover" in answer, offer
