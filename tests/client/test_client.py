"""The Python client against the zzz server and against an independent server (websockets)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from server.helpers import recorder, serve, url
from websockets.asyncio.server import serve as ws_serve

import zzz
import zzz.core
from zzz.handshake import InvalidHandshake


async def test_echo_roundtrip_with_and_without_compression() -> None:
    _seen, config = recorder()
    async with serve(zzz.App([zzz.Router.ws("/ws", config)])) as server:
        for compression in (True, False):
            async with zzz.connect(url(server, "/ws"), compression=compression) as ws:
                ws.send("héllo")
                assert await ws.recv() == zzz.Text("héllo")
                ws.send_binary(b"\x00" * 100_000)
                assert await ws.recv() == zzz.Binary(b"\x00" * 100_000)
            assert ws.close_code == 1000


async def test_against_websockets_server_with_subprotocol_and_iteration() -> None:
    async def handler(conn: Any) -> None:
        await conn.send("one")
        await conn.send(b"two")
        await conn.close(1000, "done")

    async with ws_serve(handler, "127.0.0.1", 0, subprotocols=["v1"]) as srv:
        port = srv.sockets[0].getsockname()[1]
        async with zzz.connect(f"ws://127.0.0.1:{port}/", subprotocols=["v1"]) as ws:
            assert ws.subprotocol == "v1"
            got = [msg async for msg in ws]
    assert got == [zzz.Text("one"), zzz.Binary(b"two")]
    assert (ws.close_code, ws.close_reason) == (1000, "done")


async def test_abnormal_close_raises_connection_closed() -> None:
    def on_message(ws: zzz.WebSocket, msg: Any) -> None:
        ws.close(4003, "nope")

    async with serve(zzz.App([zzz.Router.ws("/ws", zzz.WsConfig(on_message=on_message))])) as server:
        async with zzz.connect(url(server, "/ws")) as ws:
            ws.send("x")
            with pytest.raises(zzz.ConnectionClosed) as info:
                async for _ in ws:
                    pass
            assert (info.value.code, info.value.reason) == (4003, "nope")
            with pytest.raises(zzz.ConnectionClosed):
                await ws.recv()


async def test_rejected_handshake_and_bad_url() -> None:
    async with serve(zzz.App([])) as server:
        with pytest.raises(InvalidHandshake):
            await zzz.connect(url(server, "/missing"))
    with pytest.raises(ValueError):
        await zzz.connect("http://127.0.0.1/")


async def test_message_limit_on_the_client() -> None:
    config = zzz.WsConfig(on_open=lambda ws: ws.send("x" * 2000))
    async with serve(zzz.App([zzz.Router.ws("/ws", config)])) as server:
        async with zzz.connect(url(server, "/ws"), max_message_size=1000) as ws:
            with pytest.raises(zzz.ConnectionClosed) as info:
                await ws.recv()
            assert info.value.code == 1009


async def test_thread_safe_send_from_client() -> None:
    _seen, config = recorder()
    async with serve(zzz.App([zzz.Router.ws("/ws", config)])) as server:
        async with zzz.connect(url(server, "/ws")) as ws:
            threads = [
                threading.Thread(target=lambda n=n: [ws.send(f"{n}-{i}") for i in range(100)])
                for n in range(4)
            ]
            for t in threads:
                t.start()
            got = [(await asyncio.wait_for(ws.recv(), 5)).data for _ in range(400)]
            for t in threads:
                t.join()
    for n in range(4):
        assert [m for m in got if m.startswith(f"{n}-")] == [f"{n}-{i}" for i in range(100)]


async def test_close_finishes_while_the_receive_queue_is_full() -> None:
    async def flood(ws: zzz.WebSocket) -> None:
        for _ in range(5000):
            if ws.closed:
                return
            ws.send("z" * 1024)
            await ws.drain()

    config = zzz.WsConfig(on_open=lambda ws: asyncio.get_running_loop().create_task(flood(ws)))
    async with serve(zzz.App([zzz.Router.ws("/ws", config)])) as server:
        loop = asyncio.get_running_loop()
        async with zzz.connect(url(server, "/ws"), max_queue=4, close_timeout=5) as ws:
            await ws.recv()
            await asyncio.sleep(0.2)  # the queue fills and reading pauses
            start = loop.time()
        assert loop.time() - start < 3  # the handshake finished; no wait for close_timeout
        assert ws.close_code == 1000


async def test_messages_before_a_protocol_error_are_read_and_answered_first() -> None:
    """A valid message and a broken frame in one read: the app reads and echoes the message
    before the client fails the connection (Autobahn 3.x/4.x strict)."""
    import base64
    import hashlib

    echoed: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            ln.split(b":", 1)[1].strip()
            for ln in head.split(b"\r\n")
            if ln.lower().startswith(b"sec-websocket-key")
        )
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        writer.write(zzz.core.encode_frame(1, b"hello") + bytes([0x80 | 5, 0]))  # then opcode 5: reserved
        data = await reader.read(65536)
        echoed.set_result(data)
        await reader.read(65536)
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with zzz.connect(f"ws://127.0.0.1:{port}/", compression=False) as ws:
        msg = await ws.recv()
        ws.send(msg.data)
        with pytest.raises(zzz.ConnectionClosed) as info:
            await ws.recv()
        assert info.value.code == 1002
    first = zzz.core.FrameReader(require_mask=True).feed(await asyncio.wait_for(echoed, 5))
    assert first[0][0] == 1 and first[0][3] == "hello"  # the echo went out before the close frame
    srv.close()


async def test_client_heartbeat_pings_a_silent_server_and_gives_up() -> None:
    """A server that accepts and then never answers: the client pings after ping_interval and
    aborts after ping_timeout (close code 1006, like the server side)."""
    import base64
    import hashlib

    pings: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            ln.split(b":", 1)[1].strip()
            for ln in head.split(b"\r\n")
            if ln.lower().startswith(b"sec-websocket-key")
        )
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        while data := await reader.read(65536):
            pings.append(data)

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    ws = await zzz.connect(f"ws://127.0.0.1:{port}/", compression=False, ping_interval=0.1, ping_timeout=0.2)
    with pytest.raises(zzz.ConnectionClosed) as info:
        await asyncio.wait_for(ws.recv(), 5)
    assert info.value.code == 1006
    frames = zzz.core.FrameReader(require_mask=True).feed(b"".join(pings))
    assert frames[0][0] == 9  # a ping went out first
    srv.close()
