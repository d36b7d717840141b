"""/metrics with two worker processes: one scrape, whichever worker answers it, sums both
(prometheus-client's multiprocess mode in PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import zzz
from zzz.metrics import SYNC_INTERVAL

REPO = Path(__file__).resolve().parents[2]

APP = """
import os, sys, zzz
app = zzz.App(
    [zzz.Router.ws("/pid", zzz.WsConfig(on_open=lambda ws: ws.send(str(os.getpid()))))],
    metrics_path="/metrics",
)
app.run(host="127.0.0.1", port=int(sys.argv[1]), workers=2)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for_port(port: int) -> None:
    for _ in range(300):
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


@pytest.mark.asyncio_only
async def test_one_scrape_sums_every_worker(tmp_path: Path) -> None:
    # A supervisor that manages the directory itself may use another one; with workers started
    # some other way (SO_REUSEPORT), this one is where both write.
    prom = tmp_path / "prom"
    prom.mkdir()
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), PROMETHEUS_MULTIPROC_DIR=str(prom))
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(APP), str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    clients: list[zzz.ClientWebSocket] = []
    try:
        await wait_for_port(port)
        by_pid: dict[str, int] = {}
        # Keep connecting until both workers served at least two (the kernel spreads them).
        for _ in range(200):
            ws = await zzz.connect(f"ws://127.0.0.1:{port}/pid")
            clients.append(ws)
            pid = (await asyncio.wait_for(ws.recv(), 5)).data
            by_pid[pid] = by_pid.get(pid, 0) + 1
            if len(by_pid) == 2 and min(by_pid.values()) >= 2:
                break
        assert len(by_pid) == 2 and min(by_pid.values()) >= 2, by_pid
        total = len(clients)
        # Close all but two, with 4001.
        for ws in clients[2:]:
            ws.close(4001)
            await asyncio.wait_for(ws.wait_closed(), 5)
        await asyncio.sleep(SYNC_INTERVAL * 2)  # every worker wrote its counts since
        for _ in range(4):  # whichever worker answers, the same sums
            samples = await scrape(port)
            assert samples[("zzz_connections_total", ())] == total
            assert samples[("zzz_connections_open", ())] == 2
            assert samples[("zzz_closes_total", (("code", "4001"),))] == total - 2
    finally:
        for ws in clients:
            ws.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
