"""``python -m zzz --workers 2 --redis URL``: the demo's rooms and presence are shared by its workers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from tests.channels.procs import free_port
from tests.channels.test_server_e2e import Peer

ROOT = Path(__file__).resolve().parents[2]
USERS = [f"u{i}" for i in range(6)]  # with two workers, all six on one worker is a 1-in-32 chance


async def _wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        assert proc.poll() is None, f"python -m zzz exited with {proc.returncode}"
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


async def _presence(peer: Peer, want: set[str]) -> set[str]:
    """The keys ``peer`` has seen present (presence_state, then diffs) once they are ``want``, or at 10 s."""
    keys: set[str] = set()

    async def follow() -> None:
        while keys != want:
            frame = await peer.expect(lambda f: f["event"] in ("presence_state", "presence_diff"), timeout=10)
            payload: Any = frame["payload"]
            if frame["event"] == "presence_state":
                keys.clear()
                keys.update(payload)
            else:
                keys.update(payload["joins"])
                keys.difference_update(payload["leaves"])

    try:
        await asyncio.wait_for(follow(), 10)
    except asyncio.TimeoutError:
        pass
    return keys


@pytest.fixture
def demo_on_redis(redis_url: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``python -m zzz --workers 2 --redis URL`` on a free port; stopped with SIGTERM, as a user would."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "zzz", "--port", str(port), "--workers", "2", "--redis", redis_url],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield port, proc
    finally:
        proc.send_signal(signal.SIGTERM)  # the parent forwards it to its workers
        try:
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@pytest.mark.asyncio_only
async def test_workers_share_rooms_and_presence_through_redis(
    demo_on_redis: tuple[int, subprocess.Popen[bytes]], redis_url: str
) -> None:
    port, proc = demo_on_redis
    topic = f"room:cli-{uuid.uuid4().hex[:8]}"
    await _wait_for_port(port, proc)
    sockets = [await connect(f"ws://127.0.0.1:{port}/socket") for _ in USERS]
    try:
        peers = [Peer(ws) for ws in sockets]
        for peer, user in zip(peers, USERS):
            ref = await peer.send(topic, "phx_join", {"user": user})
            assert (await peer.reply(ref))["status"] == "ok"
        for peer in peers:
            assert await _presence(peer, set(USERS)) == set(USERS)
        ref = await peers[0].send(topic, "new_msg", {"body": "to every worker"})
        assert (await peers[0].reply(ref))["status"] == "ok"
        for peer in peers:
            msg = await peer.event("new_msg")
            assert (msg["user"], msg["body"]) == ("u0", "to every worker")
        client = aioredis.from_url(redis_url)
        try:
            assert await client.hlen(f"zzz:p:{topic}") == len(USERS)  # presence lives in Redis
        finally:
            await client.aclose()
    finally:
        for ws in sockets:
            await ws.close()
