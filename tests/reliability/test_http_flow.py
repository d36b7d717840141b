"""Flow control on the HTTP side: a client that pipelines requests and never reads the answers,
and a client that floods bytes after an upgrade request while middleware decides it.

Both must cost the server bounded memory (tracemalloc sees the server's buffers: it runs in this
process), and nothing may be lost once the client reads, or once the upgrade goes through.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
from server.helpers import read_head, serve, upgrade_request

import zzz

from .hostile import frame, traced

MiB = 1 << 20
# What the server may hold for one such client: its write buffer high water and one answer,
# a queue of parsed requests, the bytes kept after an upgrade request, Python's own noise.
BOUND = 5 * MiB


async def _send_for(sock: socket.socket, data: memoryview, seconds: float) -> int:
    """Send as much of ``data`` as the peer takes within ``seconds``; return how much."""
    sent = 0
    deadline = time.monotonic() + seconds
    while sent < len(data) and time.monotonic() < deadline:
        try:
            sent += sock.send(data[sent : sent + 65536])
        except BlockingIOError:
            await asyncio.sleep(0.01)
    return sent


async def _connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def test_pipelined_requests_never_read_hold_bounded_memory_and_are_all_answered() -> None:
    # The case: 4,000 GET /__zzz/zzz.js (every app has the route), about 24 KB out for
    # 40 B in, and a client that doesn't read. The server grew by 92 MB.
    loop = asyncio.get_running_loop()
    count = 4000
    request = b"GET /__zzz/zzz.js HTTP/1.1\r\nHost: x\r\n\r\n"
    async with serve(zzz.App([])) as server:
        status, _headers, body = await asyncio.wait_for(_one(server.port, request), 10)
        assert status == 200
        one = len(body)
        sock = await _connect(server.port, rcvbuf=4096)
        try:
            data = memoryview(request * count)
            with traced() as memory:
                sent = await _send_for(sock, data, 2.0)
                await asyncio.sleep(1.0)  # let the server do all it is going to do
                growth = memory.growth()
            assert growth < BOUND, f"server grew by {growth / MiB:.1f} MiB for an unread pipeline"
            # Now read: every request is answered, in order, none lost to the pause.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MiB)
            rest = loop.create_task(loop.sock_sendall(sock, data[sent:]))
            reader = _Responses(one)
            deadline = time.monotonic() + 60
            while reader.count < count:
                assert time.monotonic() < deadline, f"{reader.count} of {count} answers"
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 10)
                assert chunk, f"closed after {reader.count} answers"
                reader.feed(chunk)
            await asyncio.wait_for(rest, 10)
            assert reader.count == count and reader.statuses == {200}
        finally:
            sock.close()


async def _one(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        return await read_head(reader)
    finally:
        writer.close()


class _Responses:
    """Counts pipelined responses whose bodies all have ``body_len`` bytes."""

    def __init__(self, body_len: int) -> None:
        self.body_len = body_len
        self.buf = bytearray()
        self.count = 0
        self.statuses: set[int] = set()

    def feed(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0 or len(self.buf) < end + 4 + self.body_len:
                return
            self.statuses.add(int(self.buf[9:12]))
            del self.buf[: end + 4 + self.body_len]
            self.count += 1


async def test_many_small_pipelined_requests_in_one_read_are_answered_in_order() -> None:
    # One read of thousands of tiny requests: parsed a slice at a time, answered in order.
    seen: list[str] = []

    def handler(req: zzz.Request) -> zzz.Response:
        seen.append(req.path)
        return zzz.Response(req.path)

    app = zzz.App([zzz.Router.get("/*rest", handler)])
    count = 3000
    data = b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(count))
    async with serve(app) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(data)
        for i in range(count):
            status, _headers, body = await read_head(reader)
            assert (status, body) == (200, b"/%d" % i)
        writer.close()
    assert seen == [f"/{i}" for i in range(count)]


async def test_bad_request_behind_pipelined_ones_is_answered_after_them() -> None:
    # The error used to be written as soon as it was parsed, ahead of (or between) the answers
    # to the requests before it when they came in earlier reads. Now answers come in order and
    # the 400 last. (Requests in the same parser feed as the bad bytes are dropped with them, as
    # RequestParser documents, so only a prefix is answered.)
    app = zzz.App([zzz.Router.get("/*rest", lambda req: zzz.Response(req.path))])
    count = 5000
    good = b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(count))
    async with serve(app) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(good + b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n")
        answered = 0
        while True:
            status, headers, body = await read_head(reader)
            if status != 200:
                break
            assert body == b"/%d" % answered
            answered += 1
        assert status == 400 and headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 5) == b""  # nothing after the 400
        assert answered > count // 2  # the earlier slices were answered
        writer.close()


async def test_bytes_flooded_after_an_upgrade_request_are_bounded_and_all_delivered() -> None:
    # While an async middleware decides the upgrade, the client keeps sending frames. The server
    # used to keep all of them (160 MB in 3 s); now it keeps 64 KiB and stops reading, and every
    # frame still reaches on_message, in order, once the upgrade goes through.
    loop = asyncio.get_running_loop()
    deciding = asyncio.Event()
    decide = asyncio.Event()
    received: list[int] = []
    done = asyncio.Event()
    count = 1000
    payload = 16 * 1024

    async def slow(req: zzz.Request, call_next: Any) -> zzz.Response:
        deciding.set()
        await decide.wait()
        response: zzz.Response = await call_next(req)
        return response

    def on_message(ws: zzz.WebSocket, msg: zzz.WsMessage) -> None:
        assert isinstance(msg, zzz.Binary)
        received.append(int.from_bytes(msg.data[:4], "big"))
        if len(received) == count:
            done.set()

    app = zzz.App([zzz.Router.ws("/ws", zzz.WsConfig(on_message=on_message))], middleware=[slow])
    flood = memoryview(b"".join(frame(2, i.to_bytes(4, "big") + b"x" * (payload - 4)) for i in range(count)))
    async with serve(app) as server:
        sock = await _connect(server.port)
        try:
            await loop.sock_sendall(sock, upgrade_request("/ws"))
            await asyncio.wait_for(deciding.wait(), 10)
            with traced() as memory:
                sent = await _send_for(sock, flood, 2.0)
                await asyncio.sleep(0.3)
                growth = memory.growth()
            assert sent > 1 * MiB  # the flood really got going (kernel buffers alone take that)
            assert growth < BOUND, f"server kept {growth / MiB:.1f} MiB of {sent / MiB:.1f} MiB flooded"
            decide.set()
            await asyncio.wait_for(loop.sock_sendall(sock, flood[sent:]), 30)
            await asyncio.wait_for(done.wait(), 30)
            assert received == list(range(count))
            head = b""
            while b"\r\n\r\n" not in head:
                head += await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
            assert head.startswith(b"HTTP/1.1 101 ")
        finally:
            sock.close()


@pytest.mark.parametrize("refuse", [True, False])
async def test_upgrade_refused_by_middleware_after_a_flood_gets_its_answer(refuse: bool) -> None:
    # The paused connection must read again to linger after the refusal (or to run the socket).
    loop = asyncio.get_running_loop()

    async def gate(req: zzz.Request, call_next: Any) -> zzz.Response:
        await asyncio.sleep(0.5)
        if refuse:
            return zzz.Response("no", status=401)
        response: zzz.Response = await call_next(req)
        return response

    echo = zzz.WsConfig(on_message=lambda ws, msg: ws.send_binary(msg.data[:4]))
    app = zzz.App([zzz.Router.ws("/ws", echo)], middleware=[gate])
    flood = memoryview(b"".join(frame(2, i.to_bytes(4, "big") * 1024) for i in range(200)))  # 800 KiB
    async with serve(app) as server:
        sock = await _connect(server.port)
        try:
            await loop.sock_sendall(sock, upgrade_request("/ws"))
            sender = loop.create_task(loop.sock_sendall(sock, flood))
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 10)
                assert chunk, head
                head += chunk
            if refuse:
                assert head.startswith(b"HTTP/1.1 401 "), head[:40]
                await asyncio.wait_for(sender, 10)  # the server drains the rest while lingering
            else:
                assert head.startswith(b"HTTP/1.1 101 "), head[:40]
                await asyncio.wait_for(sender, 10)
                rest = head[head.index(b"\r\n\r\n") + 4 :]
                while len(rest) < 200 * 6:
                    rest += await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
                assert [int.from_bytes(rest[i + 2 : i + 6], "big") for i in range(0, 1200, 6)] == list(
                    range(200)
                )
        finally:
            sock.close()
