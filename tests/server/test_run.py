"""``App.run`` as users start it: worker processes sharing the port, TLS, and signals."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from websockets.asyncio.client import connect as ws_connect

import zzz

from .helpers import self_signed_cert, serve

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(code: str, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code).format(port=port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def _wait_for_port(port: int) -> None:
    for _ in range(200):
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


@pytest.mark.asyncio_only
async def test_workers_share_the_port_and_stop_on_sigterm() -> None:
    port = _free_port()
    proc = _start(
        """
        import os, zzz
        app = zzz.App([zzz.Router.ws("/pid", zzz.WsConfig(on_open=lambda ws: ws.send(str(os.getpid()))))])
        app.run(host="127.0.0.1", port={port}, workers=2)
    """,
        port,
    )
    try:
        await _wait_for_port(port)
        pids = set()
        for _ in range(60):
            async with ws_connect(f"ws://127.0.0.1:{port}/pid") as client:
                pids.add(await client.recv())
            if len(pids) == 2:
                break
        assert len(pids) == 2, pids  # two processes answered on one port
        assert str(proc.pid) not in pids  # the parent only supervises
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


@pytest.mark.asyncio_only
async def test_sigint_is_a_graceful_shutdown_with_1001() -> None:
    port = _free_port()
    proc = _start(
        """
        import zzz
        zzz.App([zzz.Router.ws("/ws", zzz.WsConfig())]).run(host="127.0.0.1", port={port}, loop="asyncio")
    """,
        port,
    )
    try:
        await _wait_for_port(port)
        async with ws_connect(f"ws://127.0.0.1:{port}/ws") as client:
            proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(client.wait_closed(), 10)
            assert client.close_code == 1001
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_wss_with_an_ssl_context(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    def on_message(ws: zzz.WebSocket, msg: zzz.WsMessage) -> None:
        ws.send(f"secure {msg.data}")

    app = zzz.App([zzz.Router.ws("/ws", zzz.WsConfig(on_message=on_message))])
    server = await app.start(host="127.0.0.1", port=0, ssl=server_ctx)
    try:
        async with zzz.connect(f"wss://127.0.0.1:{server.port}/ws", ssl=client_ctx) as ws:
            ws.send("hi")
            assert await ws.recv() == zzz.Text("secure hi")
        async with ws_connect(f"wss://127.0.0.1:{server.port}/ws", ssl=client_ctx) as client:
            await client.send("there")
            assert await client.recv() == "secure there"
    finally:
        await server.close()


async def test_app_rejects_unknown_settings_and_loops() -> None:
    with pytest.raises(TypeError, match="unknown App setting"):
        zzz.App([], max_mesage_size=10)
    with pytest.raises(ValueError):
        zzz.App([]).run(loop="tokio")
    async with serve(zzz.App([])) as server:
        assert server.port > 0
