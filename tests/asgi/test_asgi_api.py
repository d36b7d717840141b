"""zzz's own ASGI API and the edges the cross-server suite can't see (issue 17): ``zzz.asgi.start``
and ``serve``, settings, lifespan failure, the CLI's ``--interface``, and what the WebSocket
path keeps from the core (ordering before a violation, backpressure, limits, the drain codes).

In-process servers on 127.0.0.1 port 0, on both loops (``tests/conftest.py``) and, run with
``ZZZ_NO_EXTENSIONS=1``, on the pure-Python core.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

import zzz.asgi
from tests.transports import CountingTransport
from zzz.asgi import AsgiServer, StartupFailed

ROOT = Path(__file__).resolve().parent.parent.parent


class EchoApp:
    """A raw ASGI app that records what it saw."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.sent = 0
        self.send_blocked = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.events.append(message["type"])
                if message["type"] == "lifespan.startup":
                    scope["state"]["token"] = "from-startup"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "http":
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            if scope["path"] == "/raise-after-start":
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"partial", "more_body": True})
                raise ValueError("fails half-way")
            answer = f"{scope['path']} {scope['state'].get('token')} {len(body)}".encode()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"echo")]})
            await send({"type": "http.response.body", "body": answer})
        else:
            assert (await receive())["type"] == "websocket.connect"
            await send({"type": "websocket.accept"})
            if scope["path"] == "/flood":
                chunk = b"x" * (1 << 20)
                while True:
                    task = asyncio.ensure_future(send({"type": "websocket.send", "bytes": chunk}))
                    done, _ = await asyncio.wait([task], timeout=0.5)
                    if not done:
                        self.send_blocked.set()
                    try:
                        await task
                    except OSError:
                        return
                    self.sent += 1
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    self.events.append(("disconnect", message["code"]))
                    return
                if message.get("text") == "bad-message":
                    try:
                        await send({"type": "websocket.send"})
                    except RuntimeError as exc:
                        self.events.append(("error", str(exc)))
                    continue
                await send(
                    {"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")}
                )


async def _started(app: Any, **settings: Any) -> AsgiServer:
    return await zzz.asgi.start(app, "127.0.0.1", 0, **settings)


# ---------------------------------------------------------------------------------------- the API


async def test_start_runs_lifespan_startup_before_returning_and_shutdown_on_close() -> None:
    app = EchoApp()
    server = await _started(app)
    try:
        assert app.events == ["lifespan.startup"]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as c:
            r = await c.post("/hello", content=b"12345")
        assert r.status_code == 200 and r.headers["x-app"] == "echo"
        assert r.text == "/hello from-startup 5"  # the state startup filled reaches the scope
    finally:
        await server.close()
    assert app.events == ["lifespan.startup", "lifespan.shutdown"]
    await server.close()  # a second close waits for the first: shutdown ran once
    assert app.events.count("lifespan.shutdown") == 1


async def test_unknown_setting_and_non_callable_app_raise_type_error() -> None:
    with pytest.raises(TypeError, match="max_mesage_size"):
        await zzz.asgi.start(EchoApp(), "127.0.0.1", 0, max_mesage_size=10)
    with pytest.raises(TypeError, match="callable"):
        await zzz.asgi.start(object(), "127.0.0.1", 0)


async def test_failed_startup_raises_and_binds_nothing() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    with pytest.raises(StartupFailed, match="no database"):
        await zzz.asgi.start(app, "127.0.0.1", 0)


async def test_app_without_lifespan_is_served() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError("no lifespan here")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    server = await _started(app)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as c:
            assert (await c.get("/")).status_code == 204
    finally:
        await server.close()


def _run(code: str, timeout: float = 30) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def test_serve_exits_3_when_startup_fails() -> None:
    proc = _run(
        """
        import zzz.asgi
        async def app(scope, receive, send):
            await receive()
            await send({"type": "lifespan.startup.failed", "message": "the reason"})
        zzz.asgi.serve(app, port=0)
        """
    )
    try:
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == zzz.asgi.STARTUP_FAILED_EXIT == 3
    assert "the reason" in out and "serving on" not in out


def test_serve_stops_on_sigterm_runs_shutdown_and_exits_0() -> None:
    proc = _run(
        """
        import zzz.asgi
        async def app(scope, receive, send):
            while scope["type"] == "lifespan":
                m = await receive()
                if m["type"] == "lifespan.shutdown":
                    print("SHUTDOWN RAN", flush=True)
                    await send({"type": "lifespan.shutdown.complete"})
                    return
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"up"})
        zzz.asgi.serve(app, port=0)
        """
    )
    try:
        assert proc.stdout is not None
        line = ""
        for line in proc.stdout:  # the banner line is what we wait for
            if "serving on" in line:
                break
        assert "serving on http://127.0.0.1:" in line
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        # An answer means the loop runs, and with it the signal handlers (the banner comes before them).
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).text == "up"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:  # a failed assertion must not leave the server running
            proc.kill()
            proc.wait()
    assert "SHUTDOWN RAN" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["m:app", "--interface", "wsgi"], "--interface"),
        (["--interface", "asgi"], "--interface asgi needs MODULE:ATTR"),
        (["asgi_api_target:native", "--interface", "asgi"], "not an ASGI app"),
        (["asgi_api_target:number"], "is an int, not a zzz.App nor an ASGI app"),
        (
            ["asgi_api_target:factory"],
            "not a zzz.App nor an ASGI 3 app (scope, receive, send) (with --factory",
        ),
        (["asgi_api_target:asgi", "--redis", "redis://127.0.0.1:1"], "--redis"),
    ],
)
def test_cli_interface_errors_are_one_line_and_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    (tmp_path / "asgi_api_target.py").write_text(
        "import zzz\nnative = zzz.App()\nnumber = 42\nasync def asgi(scope, receive, send):\n    pass\n"
        "def factory():\n    return native\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "zzz", *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=30,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr


# ---------------------------------------------------------------------------------------- WebSocket


def _frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    mask = b"\x01\x02\x03\x04"
    head = bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)])
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    b0, b1 = await reader.readexactly(2)
    size = b1 & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", await reader.readexactly(2))
    elif size == 127:
        (size,) = struct.unpack("!Q", await reader.readexactly(8))
    return b0 & 0x0F, await reader.readexactly(size)


async def test_answer_to_a_message_goes_out_before_the_close_of_a_violation_behind_it() -> None:
    server = await _started(EchoApp())
    try:
        reader, writer = await _raw_websocket(server.port, "/ws")
        # One write: a text message, then a frame with a reserved opcode (a protocol error).
        writer.write(_frame(0x1, b"answer me") + _frame(0x3, b""))
        first = await asyncio.wait_for(_read_frame(reader), 10)
        second = await asyncio.wait_for(_read_frame(reader), 10)
        writer.close()
    finally:
        await server.close()
    assert first == (0x1, b"answer me")  # the app's echo, before...
    assert second[0] == 0x8 and struct.unpack("!H", second[1][:2])[0] == 1002  # ...the 1002 close


async def test_answers_to_pipelined_messages_go_out_in_a_few_writes_not_one_each() -> None:
    server = await _started(EchoApp())
    try:
        reader, writer = await _raw_websocket(server.port, "/ws")
        for _ in range(200):
            if server._hub.websockets:
                break
            await asyncio.sleep(0.01)
        (ws,) = server._hub.websockets
        counting = CountingTransport(ws.transport)
        ws._writer.attach(counting)  # the connection's one flush writes through it
        writer.write(b"".join(_frame(0x1, b"message %d" % i) for i in range(100)))
        echoes = [await asyncio.wait_for(_read_frame(reader), 10) for _ in range(100)]
        writer.close()
    finally:
        await server.close()
    assert echoes == [(0x1, b"message %d" % i) for i in range(100)]
    # The app answers each message with a send; they are written once per loop turn (one read
    # of the 100 may arrive in a few pieces), not once per message.
    assert 1 <= len(counting.writes) <= 10


async def _raw_websocket(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket opened by hand (no compression), with a small receive buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    sock.connect(("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4 << 20)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def test_send_waits_while_the_client_does_not_read() -> None:
    app = EchoApp()
    server = await _started(app, max_message_size=None)
    try:
        reader, writer = await _raw_websocket(server.port, "/flood")
        await asyncio.wait_for(app.send_blocked.wait(), 20)
        await asyncio.sleep(0.5)
        blocked_at = app.sent
        await asyncio.sleep(0.5)
        assert app.sent == blocked_at  # the app's send waits, nothing piles up in memory
        assert blocked_at < 64  # far less than 64 MiB went out to a client reading nothing
        assert server.connections == 1  # not closed for backpressure either: the app waited
        for _ in range(3):
            opcode, payload = await asyncio.wait_for(_read_frame(reader), 10)
            assert opcode == 0x2 and len(payload) == 1 << 20  # the stream goes on once it reads
        writer.close()
    finally:
        await server.close()


async def test_oversized_message_closes_1009_and_the_app_gets_the_code() -> None:
    app = EchoApp()
    server = await _started(app, max_message_size=1000)
    try:
        async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            await ws.send("x" * 1001)
            with pytest.raises(ConnectionClosed) as caught:
                await asyncio.wait_for(ws.recv(), 10)
        assert caught.value.rcvd is not None and caught.value.rcvd.code == 1009
        for _ in range(100):
            if ("disconnect", 1009) in app.events:
                break
            await asyncio.sleep(0.05)
        assert ("disconnect", 1009) in app.events
    finally:
        await server.close()


async def test_malformed_send_raises_runtime_error_and_the_connection_lives_on() -> None:
    app = EchoApp()
    server = await _started(app)
    try:
        async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            await ws.send("bad-message")
            await ws.send("still here")
            assert await asyncio.wait_for(ws.recv(), 10) == "still here"
        assert app.events[1][0] == "error" and "neither" in app.events[1][1]
    finally:
        await server.close()


@pytest.mark.parametrize("code", [1001, 1012])
async def test_close_drains_websockets_with_its_code(code: int) -> None:
    app = EchoApp()
    server = await _started(app)
    async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
        await ws.send("hi")
        assert await asyncio.wait_for(ws.recv(), 10) == "hi"
        closing = asyncio.ensure_future(server.close(code, "bye"))
        with pytest.raises(ConnectionClosed) as caught:
            await asyncio.wait_for(ws.recv(), 10)
        await asyncio.wait_for(closing, 20)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == code
    assert ("disconnect", code) in app.events
    assert server.stats()["closes"] == {code: 1}
    assert app.events[-1] == "lifespan.shutdown"  # after the drain


# ---------------------------------------------------------------------------------------- HTTP


async def test_pipelined_requests_are_answered_in_order() -> None:
    server = await _started(EchoApp())
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"".join(b"GET /r%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(20)))
        data = b""
        while data.count(b"HTTP/1.1 200") < 20 or not data.endswith(b"/r19 from-startup 0"):
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            assert chunk
            data += chunk
        writer.close()
    finally:
        await server.close()
    order = [int(part.split(b" ", 1)[0]) for part in data.split(b"\r\n\r\n/r")[1:]]
    assert order == list(range(20))


async def test_app_raising_after_the_response_started_drops_the_connection() -> None:
    server = await _started(EchoApp())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as c:
            with pytest.raises(httpx.RemoteProtocolError):
                await c.get("/raise-after-start")  # half a response never passes for a whole one
            assert (await c.get("/after")).status_code == 200  # the server serves on
    finally:
        await server.close()
