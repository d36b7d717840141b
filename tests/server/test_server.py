"""The server end to end over real sockets on 127.0.0.1, with independent clients
(websockets, aiohttp) and a raw client for what they won't send."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import threading
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import zzz
import zzz.core

from .helpers import KEY, RawClient, raw_request, read_head, recorder, serve, upgrade_request, url


async def test_echo_text_and_binary_with_websockets_client() -> None:
    seen, config = recorder()
    async with serve(zzz.App([zzz.Router.ws("/ws", config)])) as server:
        async with ws_connect(url(server, "/ws"), compression=None) as client:
            await client.send("héllo")
            assert await client.recv() == "héllo"
            await client.send(b"\x00\x01\xff")
            assert await client.recv() == b"\x00\x01\xff"
            big = "x" * 200_000
            await client.send(big)
            assert await client.recv() == big
        await asyncio.wait_for(seen["closed"].wait(), 5)
    assert seen["open"] == 1
    assert seen["messages"] == [zzz.Text("héllo"), zzz.Binary(b"\x00\x01\xff"), zzz.Text(big)]
    assert seen["close"] == [(1000, "")]


async def test_echo_with_aiohttp_client_and_compression() -> None:
    _seen, config = recorder()
    async with serve(zzz.App([zzz.Router.ws("/ws", config)])) as server:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url(server, "/ws"), compress=15) as client:
                assert client.compress  # permessage-deflate was negotiated
                for text in ("a", "compressible " * 1000, ""):
                    await client.send_str(text)
                    assert (await client.receive_str()) == text
                await client.send_bytes(b"\x00" * 70_000)
                assert (await client.receive_bytes()) == b"\x00" * 70_000


async def test_params_query_and_assigns_from_middleware() -> None:
    got: dict[str, Any] = {}

    async def auth(req: zzz.Request, call_next: Any) -> zzz.Response:
        if req.query_param("token") != "secret":
            return zzz.Response("unauthorized", status=401)
        req.assign("user_id", "u42")
        return await call_next(req)

    def on_open(ws: zzz.WebSocket) -> None:
        got.update(
            room=ws.param("room"),
            token=ws.query_param("token"),
            user=ws.get_assign("user_id"),
            missing=(ws.param("nope"), ws.query_param("nope"), ws.get_assign("nope")),
            path=ws.path,
        )
        ws.send("ready")

    chat = zzz.Controller.define(
        [zzz.Router.ws("/ws/chat/:room", zzz.WsConfig(on_open=on_open))], prefix="", middleware=[auth]
    )
    async with serve(zzz.App([chat])) as server:
        async with ws_connect(url(server, "/ws/chat/l%C3%B6bby?token=secret")) as client:
            assert await client.recv() == "ready"
        with pytest.raises(InvalidStatus) as info:
            async with ws_connect(url(server, "/ws/chat/lobby?token=wrong")):
                pass
        assert info.value.response.status_code == 401
    assert got == {
        "room": "löbby",
        "token": "secret",
        "user": "u42",
        "missing": (None, None, None),
        "path": "/ws/chat/löbby",
    }


@pytest.mark.parametrize(
    ("request_bytes", "status", "header"),
    [
        (upgrade_request("/ws").replace(b"GET", b"POST"), 405, ("allow", "GET")),
        (b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", 426, ("upgrade", "websocket")),
        (upgrade_request("/ws").replace(b"Connection: Upgrade", b"Connection: keep-alive"), 426, None),
        (upgrade_request("/ws", version="8"), 426, ("sec-websocket-version", "13")),
        (upgrade_request("/ws", key="c2hvcnQ="), 400, None),
        (upgrade_request("/ws", key="not base64!!"), 400, None),
        (upgrade_request("/ws", extra="Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"), 400, None),
        (upgrade_request("/nowhere"), 404, None),
        (upgrade_request("/ws", extra="X-Big: " + "a" * 70_000 + "\r\n"), 431, None),
    ],
    ids=[
        "post",
        "plain-get",
        "no-connection-upgrade",
        "version-8",
        "short-key",
        "bad-key",
        "two-keys",
        "unknown-path",
        "huge-header",
    ],
)
async def test_upgrade_validation(request_bytes: bytes, status: int, header: tuple[str, str] | None) -> None:
    _seen, config = recorder()
    async with serve(zzz.App([zzz.Router.ws("/ws", config)])) as server:
        got, headers, _body = await raw_request(server.port, request_bytes)
    assert got == status
    if header is not None:
        assert header[1].lower() in headers.get(header[0], "").lower()


async def test_accept_header_and_token_lists_any_case() -> None:
    _seen, config = recorder()
    async with serve(zzz.App([zzz.Router.ws("/ws", config)])) as server:
        req = (
            upgrade_request("/ws")
            .replace(b"Upgrade: websocket", b"upgrade: WebSocket")
            .replace(b"Connection: Upgrade", b"connection: keep-alive, UPGRADE")
        )
        status, headers, _ = await raw_request(server.port, req)
    assert status == 101
    expected = base64.b64encode(
        hashlib.sha1((KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    )
    assert headers["sec-websocket-accept"] == expected.decode()


async def test_subprotocol_negotiation() -> None:
    config = zzz.WsConfig(
        on_open=lambda ws: ws.send(ws.subprotocol or "none"), subprotocols=["chat.v2", "chat.v1"]
    )
    async with serve(zzz.App([zzz.Router.ws("/ws", config)])) as server:
        async with ws_connect(url(server, "/ws"), subprotocols=["chat.v1", "chat.v2"]) as client:
            assert client.subprotocol == "chat.v2"
            assert await client.recv() == "chat.v2"
        async with ws_connect(url(server, "/ws"), subprotocols=["other"]) as client:
            assert client.subprotocol is None


async def test_allowed_origins() -> None:
    _seen, config = recorder()
    app = zzz.App([zzz.Router.ws("/ws", config)], allowed_origins=["https://allowed.example"])
    async with serve(app) as server:
        for origin, status in [
            ("https://allowed.example", 101),
            ("https://allowed.example.evil.com", 403),
            ("http://allowed.example", 403),
            (None, 403),
        ]:
            extra = f"Origin: {origin}\r\n" if origin else ""
            got, _h, _b = await raw_request(server.port, upgrade_request("/ws", extra=extra))
            assert got == status, origin


async def test_peer_ping_is_answered_and_never_reaches_on_message() -> None:
    seen, config = recorder()
    async with serve(zzz.App([zzz.Router.ws("/ws", config)])) as server:
        async with ws_connect(url(server, "/ws")) as client:
            pong = await client.ping(b"hi")
            await asyncio.wait_for(pong, 5)
    assert seen["messages"] == []


@pytest.mark.parametrize(("code", "reason"), [(4000, "bye"), (1001, ""), (1005, "")])
async def test_peer_close_code_reaches_on_close(code: int, reason: str) -> None:
    seen, config = recorder()
    async with serve(zzz.App([zzz.Router.ws("/ws", config)])) as server:
        raw = await RawClient.connect(server.port)
        raw.send_frame(8, b"" if code == 1005 else code.to_bytes(2, "big") + reason.encode())
        echoed = await raw.read_close()
        assert await raw.at_eof()  # the server closes the TCP connection after the handshake
        raw.close()
        await asyncio.wait_for(seen["closed"].wait(), 5)
    assert echoed == (code, reason)
    assert seen["close"] == [(code, reason)]


async def test_dropped_connection_gives_1006() -> None:
    seen, config = recorder()
    async with serve(zzz.App([zzz.Router.ws("/ws", config)])) as server:
        raw = await RawClient.connect(server.port)
        raw.send_frame(1, b"half", fin=False)
        await raw.writer.drain()
        raw.writer.transport.abort()
        await asyncio.wait_for(seen["closed"].wait(), 5)
    assert seen["close"] == [(1006, "")]


async def test_server_close_and_close_timeout() -> None:
    seen: list[tuple[int, str]] = []
    done = asyncio.Event()

    def on_close(ws: zzz.WebSocket, code: int, reason: str) -> None:
        seen.append((code, reason))
        done.set()

    config = zzz.WsConfig(on_open=lambda ws: ws.close(4001, "go away"), on_close=on_close)
    app = zzz.App([zzz.Router.ws("/ws", config)], close_timeout=0.3)
    async with serve(app) as server:
        async with ws_connect(url(server, "/ws")) as client:
            with pytest.raises(ConnectionClosed):
                await client.recv()
            assert client.close_code == 4001 and client.close_reason == "go away"
        await asyncio.wait_for(done.wait(), 5)
        assert seen == [(4001, "go away")]
        # A peer that never answers the close frame is aborted after close_timeout: 1006.
        seen.clear()
        done.clear()
        raw = await RawClient.connect(server.port)
        assert await raw.read_close() == (4001, "go away")
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await raw.at_eof(timeout=5)
        assert loop.time() - start < 4
        await asyncio.wait_for(done.wait(), 5)
        assert seen == [(1006, "")]
        raw.close()


async def test_raising_callback_closes_with_1011_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    def on_message(ws: zzz.WebSocket, msg: Any) -> None:
        raise RuntimeError("boom")

    async with serve(zzz.App([zzz.Router.ws("/ws", zzz.WsConfig(on_message=on_message))])) as server:
        with caplog.at_level(logging.ERROR, logger="zzz"):
            async with ws_connect(url(server, "/ws")) as client:
                await client.send("x")
                with pytest.raises(ConnectionClosed):
                    await client.recv()
                assert client.close_code == 1011
    assert "boom" in caplog.text


async def test_async_callbacks_keep_order() -> None:
    got: list[str] = []

    async def on_open(ws: zzz.WebSocket) -> None:
        await asyncio.sleep(0.05)
        got.append("open")

    async def on_message(ws: zzz.WebSocket, msg: Any) -> None:
        await asyncio.sleep(0.001 * (5 - len(got) % 5))
        got.append(msg.data)
        ws.send(msg.data)

    async with (
        serve(
            zzz.App([zzz.Router.ws("/ws", zzz.WsConfig(on_open=on_open, on_message=on_message))])
        ) as server,
        ws_connect(url(server, "/ws")) as client,
    ):
        for i in range(20):
            await client.send(str(i))
        echoed = [await client.recv() for _ in range(20)]
    assert got == ["open"] + [str(i) for i in range(20)]
    assert echoed == [str(i) for i in range(20)]


async def test_shutdown_sends_1001_and_leaks_nothing() -> None:
    seen, config = recorder()
    before = asyncio.all_tasks()
    server = await zzz.App([zzz.Router.ws("/ws", config)]).start(port=0)
    clients = [await ws_connect(url(server, "/ws")) for _ in range(3)]
    await server.close()
    for client in clients:
        with pytest.raises(ConnectionClosed):
            await client.recv()
        assert client.close_code == 1001
        await client.close()
    await asyncio.sleep(0.05)
    assert server.connections == 0
    assert sorted(seen["close"]) == [(1001, "server shutting down")] * 3
    assert asyncio.all_tasks() - before == set()


async def test_send_from_eight_threads() -> None:
    per_thread = 200
    ready = asyncio.Event()
    handle: list[zzz.WebSocket] = []

    def on_open(ws: zzz.WebSocket) -> None:
        handle.append(ws)
        ready.set()

    async with serve(zzz.App([zzz.Router.ws("/ws", zzz.WsConfig(on_open=on_open))])) as server:
        async with ws_connect(url(server, "/ws"), max_size=None) as client:
            await asyncio.wait_for(ready.wait(), 5)
            ws = handle[0]

            def worker(n: int) -> None:
                for i in range(per_thread):
                    if i % 2:
                        ws.send(f"{n}:{i}:" + "é" * (i % 300))
                    else:
                        ws.send_binary(f"{n}:{i};".encode() * 50)

            threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
            for t in threads:
                t.start()
            got = [await asyncio.wait_for(client.recv(), 10) for _ in range(8 * per_thread)]
            for t in threads:
                t.join()
    last: dict[int, int] = {}
    for msg in got:
        if isinstance(msg, str):
            n, i, rest = msg.split(":", 2)
            assert rest == "é" * (int(i) % 300)
        else:
            n, i = msg.decode().split(";")[0].split(":")
            assert msg == f"{n}:{i};".encode() * 50
        assert int(i) > last.get(int(n), -1)  # each thread's messages arrive in its order
        last[int(n)] = int(i)
    assert len(got) == 8 * per_thread


async def test_handle_type_errors_and_sends_after_close_are_ignored() -> None:
    errors: list[str] = []
    closed = asyncio.Event()
    handle: list[zzz.WebSocket] = []

    def on_open(ws: zzz.WebSocket) -> None:
        handle.append(ws)
        for call in (lambda: ws.send(b"bytes"), lambda: ws.send_binary("text"), lambda: ws.close("1000")):
            try:
                call()
            except TypeError as exc:
                errors.append(str(exc))

    config = zzz.WsConfig(on_open=on_open, on_close=lambda ws, c, r: closed.set())
    async with serve(zzz.App([zzz.Router.ws("/ws", config)])) as server:
        async with ws_connect(url(server, "/ws")) as client:
            await client.close()
        await asyncio.wait_for(closed.wait(), 5)
        ws = handle[0]
        assert ws.closed
        ws.send("after close")
        ws.send_binary(b"after close")
        ws.close()
    assert len(errors) == 3


async def test_ping_timeout_with_a_client_that_never_answers() -> None:
    seen, config = recorder()
    app = zzz.App([zzz.Router.ws("/ws", config)], ping_interval=0.2, ping_timeout=0.3)
    async with serve(app) as server:
        raw = await RawClient.connect(server.port)
        opcode, _payload = await raw.read_frame(timeout=3)
        assert opcode == 9  # the server's ping, never answered
        await asyncio.wait_for(seen["closed"].wait(), 5)
        assert seen["close"] == [(1006, "")]
        raw.close()


async def test_message_too_big_and_max_connections() -> None:
    _seen, config = recorder()
    app = zzz.App([zzz.Router.ws("/ws", config)], max_message_size=1000, max_connections=2)
    async with serve(app) as server, ws_connect(url(server, "/ws"), compression=None) as client:
        await client.send("x" * 1000)
        assert await client.recv() == "x" * 1000
        async with ws_connect(url(server, "/ws")):
            status, _h, _b = await raw_request(server.port, upgrade_request("/ws"))
            assert status == 503
        await client.send("x" * 1001)
        with pytest.raises(ConnectionClosed):
            await client.recv()
        assert client.close_code == 1009


async def test_slow_reader_is_closed_at_max_backpressure() -> None:
    seen, config = recorder()
    handles: list[zzz.WebSocket] = []
    app = zzz.App(
        [zzz.Router.ws("/ws", zzz.WsConfig(on_open=handles.append, on_close=config.on_close))],
        max_backpressure=256 * 1024,
    )
    async with serve(app) as server:
        raw = await RawClient.connect(server.port)  # never reads
        async with ws_connect(url(server, "/ws"), max_size=None) as good:
            received: list[str] = []

            async def read_all() -> None:
                async for msg in good:
                    received.append(msg)  # type: ignore[arg-type]
                    if msg == "still here":
                        return

            reader = asyncio.create_task(read_all())
            while len(handles) < 2:
                await asyncio.sleep(0.01)
            chunk = "y" * 65536
            sent = 0
            for _ in range(2000):  # at most 128 MiB: far past any kernel socket buffer
                zzz.broadcast(handles, chunk)
                sent += 1
                await asyncio.sleep(0)
                if handles[0].closed:
                    break
            assert handles[0].closed
            zzz.broadcast(handles, "still here")
            await asyncio.wait_for(reader, 30)
            assert received[-1] == "still here" and len(received) == sent + 1
        await asyncio.wait_for(seen["closed"].wait(), 5)
        assert (1008, "backpressure limit exceeded") in seen["close"]
        raw.close()


async def test_plain_http_routes_with_keep_alive() -> None:
    async def echo_body(req: zzz.Request) -> zzz.Response:
        return zzz.Response(req.body, status=201)

    app = zzz.App(
        [
            zzz.Router.get("/", lambda req: zzz.Response("<h1>hi</h1>", content_type="text/html")),
            zzz.Router.post("/echo", echo_body),
        ]
    )
    async with serve(app) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        )
        status, headers, body = await read_head(reader)
        assert (status, body) == (200, b"<h1>hi</h1>")
        assert headers["content-type"].startswith("text/html")
        status, _headers, body = await read_head(reader)
        assert (status, body) == (201, b"abc")
        writer.close()
        status, _h, body = await raw_request(server.port, b"GET /__zzz/nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 404


async def test_unmasked_and_bad_utf8_frames_get_their_close_codes() -> None:
    _seen, config = recorder()
    async with serve(zzz.App([zzz.Router.ws("/ws", config)])) as server:
        raw = await RawClient.connect(server.port)
        raw.send_frame(1, b"x", masked=False)
        assert await raw.read_close() == (1002, "frame not masked")
        raw.close()
        raw = await RawClient.connect(server.port)
        raw.send_frame(1, b"\xff")
        assert (await raw.read_close())[0] == 1007
        raw.close()


async def test_encoded_slash_stays_inside_a_parameter() -> None:
    got: list[str | None] = []
    config = zzz.WsConfig(on_open=lambda ws: (got.append(ws.param("name")), ws.send("ok")))
    async with serve(zzz.App([zzz.Router.ws("/f/:name", config)])) as server:
        async with ws_connect(url(server, "/f/a%2Fb%2541")) as client:
            assert await client.recv() == "ok"
    assert got == ["a/b%41"]


async def test_sync_callback_returning_an_awaitable_keeps_the_order() -> None:
    got: list[str] = []

    async def later(ws: zzz.WebSocket, text: str) -> None:
        await asyncio.sleep(0.01)
        got.append(text)
        ws.send(text)

    def on_message(ws: zzz.WebSocket, msg: Any) -> Any:
        if msg.data.startswith("slow"):
            return later(ws, msg.data)  # a plain function that hands back a coroutine
        got.append(msg.data)
        ws.send(msg.data)
        return None

    async with serve(zzz.App([zzz.Router.ws("/ws", zzz.WsConfig(on_message=on_message))])) as server:
        raw = await RawClient.connect(server.port)
        names = ["a", "slow1", "b", "c", "slow2", "d"]
        raw.writer.write(b"".join(_frame(n) for n in names))  # one read, one batch
        echoed = [(await raw.read_frame())[1].decode() for _ in names]
        raw.close()
    assert got == names and echoed == names


def _frame(text: str) -> bytes:
    return zzz.core.encode_frame(1, text.encode(), True, False, b"\x01\x02\x03\x04")


@pytest.mark.parametrize("bad", [b"\xc1\x00", b"\x83\x80" + b"\x00" * 4], ids=["rsv-bits", "opcode-3"])
async def test_message_before_a_violation_in_one_read_is_echoed_before_the_close(bad: bytes) -> None:
    """Autobahn 3.2 / 4.1.3 strict: the echo of the valid message goes out before 1002."""
    _seen, config = recorder()
    async with serve(zzz.App([zzz.Router.ws("/ws", config)])) as server:
        raw = await RawClient.connect(server.port)
        raw.writer.write(_frame("hello") + bad)
        assert await raw.read_frame() == (1, b"hello")
        assert (await raw.read_close())[0] == 1002
        raw.close()


async def test_unanswered_close_with_1008_still_reports_1006() -> None:
    seen: list[tuple[int, str]] = []
    done = asyncio.Event()

    def on_close(ws: zzz.WebSocket, code: int, reason: str) -> None:
        seen.append((code, reason))
        done.set()

    config = zzz.WsConfig(on_open=lambda ws: ws.close(1008, "policy"), on_close=on_close)
    async with serve(zzz.App([zzz.Router.ws("/ws", config)], close_timeout=0.2)) as server:
        raw = await RawClient.connect(server.port)
        assert await raw.read_close() == (1008, "policy")  # and never answered
        await asyncio.wait_for(done.wait(), 5)
        raw.close()
    assert seen == [(1006, "")]


async def test_raising_callback_in_a_batch_closes_after_earlier_replies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    got: list[str] = []

    def on_message(ws: zzz.WebSocket, msg: Any) -> None:
        got.append(msg.data)
        if msg.data == "boom":
            raise RuntimeError("boom in a batch")
        ws.send(msg.data)

    async with serve(zzz.App([zzz.Router.ws("/ws", zzz.WsConfig(on_message=on_message))])) as server:
        with caplog.at_level(logging.ERROR, logger="zzz"):
            raw = await RawClient.connect(server.port)
            raw.writer.write(b"".join(_frame(n) for n in ["a", "boom", "after"]))  # one read, one batch
            assert await raw.read_frame() == (1, b"a")
            assert (await raw.read_close())[0] == 1011
            raw.close()
    assert got == ["a", "boom"]  # what came after the failure is not delivered
    assert "RuntimeError: boom in a batch" in caplog.text  # the traceback is logged
