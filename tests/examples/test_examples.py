"""Every program in examples/ does what its docstring says, over real sockets on 127.0.0.1.

The examples are loaded by path (examples/ is not a package) and started in-process with
``build_app().start(port=0)``; one test also runs echo.py as a script and stops it with SIGTERM.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import socket
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from server.helpers import raw_request, serve, upgrade_request, url

import zzz

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` under a private module name."""
    spec = importlib.util.spec_from_file_location(f"zzz_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


async def wait_for(condition: Any, timeout: float = 5.0) -> None:
    """Poll ``condition()`` until true, at most ``timeout`` seconds."""
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


# echo.py


async def test_echo_keeps_text_as_text_and_binary_as_binary() -> None:
    async with serve(load("echo").build_app()) as server:
        async with zzz.connect(url(server, "/ws/echo")) as ws:
            ws.send("héllo")
            assert await asyncio.wait_for(ws.recv(), 5) == zzz.Text("héllo")
            ws.send_binary(b"\x00\xff" * 1000)
            assert await asyncio.wait_for(ws.recv(), 5) == zzz.Binary(b"\x00\xff" * 1000)
            ws.send("")
            assert await asyncio.wait_for(ws.recv(), 5) == zzz.Text("")
        assert ws.close_code == 1000


# broadcast.py


async def test_broadcast_ticks_reach_every_client_in_order() -> None:
    module = load("broadcast")
    ticker = module.Ticker()  # the example's own 100 ms interval
    async with serve(module.build_app(ticker)) as server:
        async with zzz.connect(url(server, "/ws/ticks")) as first:
            one = json.loads((await asyncio.wait_for(first.recv(), 5)).data)
            async with zzz.connect(url(server, "/ws/ticks")) as second:
                await wait_for(lambda: len(ticker.clients) == 2)
                assert ticker.running
                seconds = [json.loads((await asyncio.wait_for(second.recv(), 5)).data) for _ in range(3)]
                firsts = [one]
                while firsts[-1]["tick"] < seconds[-1]["tick"] and len(firsts) < 100:
                    firsts.append(json.loads((await asyncio.wait_for(first.recv(), 5)).data))
        await wait_for(lambda: not ticker.clients)
        assert not ticker.running  # the last client left: the ticker stopped
    assert set(one) == {"tick", "time", "clients"}
    ticks_1 = [t["tick"] for t in firsts]
    ticks_2 = [t["tick"] for t in seconds]
    # Each client sees every tick once, in order, and both see the same ticks while both listen.
    assert ticks_1 == list(range(ticks_1[0], ticks_1[0] + len(ticks_1)))
    assert ticks_2 == list(range(ticks_2[0], ticks_2[0] + 3))
    assert set(ticks_2) <= set(ticks_1[1:])
    assert [t["clients"] for t in seconds] == [2, 2, 2]


# backpressure.py


async def test_drained_stream_keeps_the_buffer_bounded_for_a_slow_reader() -> None:
    module = load("backpressure")
    stats = module.Stats()
    app = module.build_app(stats)
    high_water = app.settings.write_high_water
    async with serve(app) as server:
        async with zzz.connect(url(server, "/ws/stream"), max_queue=4, close_timeout=2) as ws:
            await asyncio.sleep(0.3)  # not reading at all: kernel buffers fill, then drain() waits
            assert stats.peak_buffered > high_water  # backpressure really happened
            assert stats.closes == []  # a drained stream is never cut off, however slow the reader
            for _ in range(40):  # now read, slowly
                msg = await asyncio.wait_for(ws.recv(), 5)
                assert msg == zzz.Binary(module.CHUNK)
                await asyncio.sleep(0.002)
            sent_while_reading = stats.sent
            # Close, and keep reading what was already on its way until the server's close frame:
            # the server reads nothing (our close included) while its writes are paused.
            ws.close()
            leftover = 0
            async for _msg in ws:
                leftover += 1
                assert leftover < 10_000
        assert ws.close_code == 1000
    # After the send that crossed write_high_water the producer waited: at most one frame over it.
    assert stats.peak_buffered <= high_water + len(module.CHUNK) + 14
    assert sent_while_reading > app.settings.max_backpressure  # it streamed more than the limit
    assert stats.closes == [("/ws/stream", 1000, "")]


async def test_firehose_that_ignores_drain_gets_a_non_reader_closed_with_1008() -> None:
    module = load("backpressure")
    stats = module.Stats()
    async with serve(module.build_app(stats, max_backpressure=256 * 1024)) as server:
        async with zzz.connect(url(server, "/ws/firehose"), max_queue=1, close_timeout=1) as ws:
            await wait_for(lambda: bool(stats.closes), timeout=20)  # never reads
        # The server aborted the connection (its close frame was behind megabytes it won't send).
        assert ws.close_code == 1006
    assert stats.closes == [("/ws/firehose", 1008, "backpressure limit exceeded")]


# auth_middleware.py

GOOD_ORIGIN = "Origin: http://127.0.0.1:8080\r\n"


async def test_auth_refuses_missing_and_wrong_tokens_with_401() -> None:
    async with serve(load("auth_middleware").build_app()) as server:
        for path in ("/ws/me", "/ws/me?token=nope", "/ws/me?token=t%C3%B6ken", "/ws/me?token="):
            status, headers, body = await raw_request(server.port, upgrade_request(path, extra=GOOD_ORIGIN))
            assert (status, body) == (401, b"unauthorized"), path
            assert headers["www-authenticate"] == "Bearer"
        wrong_header = GOOD_ORIGIN + "Authorization: Bearer ada-tokenx\r\n"
        status, _headers, _body = await raw_request(
            server.port, upgrade_request("/ws/me", extra=wrong_header)
        )
        assert status == 401


async def test_auth_assigns_the_user_id_the_callbacks_read() -> None:
    origin = {"Origin": "http://127.0.0.1:8080"}
    async with serve(load("auth_middleware").build_app()) as server:
        async with zzz.connect(url(server, "/ws/me?token=ada-token"), extra_headers=origin) as ws:
            assert json.loads((await asyncio.wait_for(ws.recv(), 5)).data) == {"hello": "ada"}
            ws.send("hi")
            assert json.loads((await asyncio.wait_for(ws.recv(), 5)).data) == {"user_id": "ada", "said": "hi"}
        headers = {**origin, "Authorization": "Bearer bob-token"}
        async with zzz.connect(url(server, "/ws/me"), extra_headers=headers) as ws:
            assert json.loads((await asyncio.wait_for(ws.recv(), 5)).data) == {"hello": "bob"}


async def test_auth_answers_403_to_a_foreign_or_missing_origin_even_with_a_good_token() -> None:
    async with serve(load("auth_middleware").build_app()) as server:
        for extra in ("Origin: http://evil.example\r\n", "Origin: http://127.0.0.1:9999\r\n", ""):
            status, _headers, _body = await raw_request(
                server.port, upgrade_request("/ws/me?token=ada-token", extra=extra)
            )
            assert status == 403, extra


# client.py


async def test_client_example_against_the_echo_app(capsys: pytest.CaptureFixture[str]) -> None:
    client = load("client")
    async with serve(load("echo").build_app()) as server:
        got = await client.main(url(server, "/ws/echo"))
    expected = ["hello", b"\x00\x01\xfe\xff", "message 0", "message 1", "message 2"]
    assert got == expected
    assert capsys.readouterr().out.splitlines() == [repr(item) for item in expected]


# echo.py as a script


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.asyncio_only
async def test_echo_script_serves_then_shuts_down_gracefully_on_sigterm() -> None:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / "echo.py"), "--port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=str(ROOT),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 15)
        assert f":{port}" in line.decode(), line
        async with zzz.connect(f"ws://127.0.0.1:{port}/ws/echo") as ws:
            ws.send("ping?")
            assert await asyncio.wait_for(ws.recv(), 5) == zzz.Text("ping?")
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(zzz.ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 5)
            assert info.value.code == 1001  # the server said goodbye before exiting
        assert await asyncio.wait_for(proc.wait(), 5) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# The set as a whole


def test_every_example_is_listed_documented_and_runnable_as_a_script() -> None:
    import ast

    readme = (EXAMPLES / "README.md").read_text()
    scripts = sorted(EXAMPLES.glob("*.py"))
    assert {p.name for p in scripts} >= {"echo.py", "broadcast.py", "backpressure.py", "auth_middleware.py"}
    for path in scripts:
        tree = ast.parse(path.read_text())
        assert f"[`{path.name}`]({path.name})" in readme, f"{path.name} is not listed in examples/README.md"
        assert ast.get_docstring(tree), f"{path.name} has no module docstring"
        if path.name.startswith("test_"):
            continue  # an example test (run by tests/examples/test_testing_example.py), not a server
        functions = {
            node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        }
        assert "build_app" in functions or "main" in functions, path.name
        main_blocks = [
            node
            for node in tree.body
            if isinstance(node, ast.If)
            and "__main__" in ast.unparse(node.test)
            and "--port" in ast.unparse(node)
        ]
        assert main_blocks, f"{path.name} has no `if __name__ == '__main__':` block taking --port"
