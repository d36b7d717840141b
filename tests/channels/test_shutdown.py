"""Shutdown with Channels on Redis is bounded, whatever the backend's tasks are doing (issue 12, item 9).

Python 3.11's ``asyncio.wait_for`` (inside redis-py's socket writes) can swallow a cancellation, and the
backend used to go back to waiting: ``close()`` and the loop's shutdown then hung for ever. These tests
stop a busy backend many times over, in-process and as a real server process getting SIGTERM, also with
Redis stalled (SIGSTOP) during the shutdown.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.channels.conftest import RedisServer
from tests.channels.procs import AppProcess
from zzz.channels import RedisPubSub

# What the tests allow beyond ``close_timeout`` (the bound), generous for a loaded machine.
CLOSE_TIMEOUT = 1.0
SLACK = 2.0


async def test_close_right_after_a_broadcast_returns(redis_url: str) -> None:
    for _ in range(20):
        pubsub = RedisPubSub(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}")
        await pubsub.start()
        for n in range(20):
            pubsub.broadcast("room:1", "msg", {"n": n})
        await asyncio.sleep(0)  # the writer is now inside redis-py's send
        tasks = list(pubsub._tasks)
        closing = asyncio.ensure_future(pubsub.close())
        done, _ = await asyncio.wait({closing}, timeout=5.0)
        if not done:
            closing.cancel()  # a second cancellation frees the stuck writer, so the test can end
            await asyncio.wait({closing}, timeout=2.0)
        assert done, "RedisPubSub.close() hung after a broadcast"
        closing.result()
        assert len(tasks) == 3 and all(task.done() for task in tasks)


async def test_close_with_redis_stalled_is_bounded(own_redis: RedisServer) -> None:
    pubsub = RedisPubSub(own_redis.url, prefix=f"t{uuid.uuid4().hex[:8]}")
    await pubsub.start()
    assert own_redis.proc is not None
    os.kill(own_redis.proc.pid, signal.SIGSTOP)
    try:
        for n in range(20):
            pubsub.broadcast("room:1", "msg", {"n": n})
        await asyncio.sleep(0.05)
        started = time.monotonic()
        closing = asyncio.ensure_future(pubsub.close())
        done, _ = await asyncio.wait({closing}, timeout=10.0)
        elapsed = time.monotonic() - started
        assert done, "RedisPubSub.close() hung on a stalled Redis"
        assert elapsed < 1.0 + SLACK, elapsed
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)


async def _busy_until_sigterm(app: AppProcess, stall: int | None = None) -> float:
    """Make the server broadcast through Redis (a ticker and a client), SIGTERM it, time its exit.

    With ``stall`` (a redis-server pid), Redis is SIGSTOPped right after the SIGTERM and resumed once
    the server is gone or the wait is over.
    """
    assert app.proc is not None
    async with connect(f"{app.ws}/socket") as ws:

        async def send(event: str, payload: Any, ref: int) -> None:
            msg = {"topic": "room:busy", "event": event, "payload": payload, "ref": str(ref)}
            await ws.send(json.dumps(msg))

        async def spam() -> None:
            ref = 10
            while True:
                ref += 1
                await send("new_msg", {"body": "x"}, ref)
                await asyncio.sleep(0.001)

        async def drain() -> None:
            async for _ in ws:
                pass

        await send("phx_join", {"user": "u"}, 1)
        await send("tick", {}, 2)
        tasks = [asyncio.ensure_future(spam()), asyncio.ensure_future(drain())]
        try:
            await asyncio.sleep(0.3)
            started = time.monotonic()
            app.proc.send_signal(signal.SIGTERM)
            if stall is not None:
                os.kill(stall, signal.SIGSTOP)
            try:
                while app.proc.poll() is None and time.monotonic() - started < CLOSE_TIMEOUT + SLACK + 1:
                    await asyncio.sleep(0.02)
            finally:
                if stall is not None:
                    os.kill(stall, signal.SIGCONT)
            return time.monotonic() - started
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.asyncio_only
@pytest.mark.parametrize("server_loop", ["asyncio", "uvloop"])
async def test_sigterm_while_broadcasting_exits_in_time(redis_url: str, server_loop: str) -> None:
    times = []
    for _ in range(8):
        app = AppProcess(redis_url=redis_url, close_timeout=CLOSE_TIMEOUT, loop=server_loop).start()
        try:
            times.append(await _busy_until_sigterm(app))
            assert app.proc is not None and app.proc.poll() is not None, f"server hung on SIGTERM {times}"
            assert app.proc.returncode == 0
        finally:
            app.stop(kill=True)
    assert max(times) < CLOSE_TIMEOUT + SLACK, times


@pytest.mark.asyncio_only
@pytest.mark.parametrize("server_loop", ["asyncio", "uvloop"])
async def test_sigterm_with_redis_stalled_exits_in_time(own_redis: RedisServer, server_loop: str) -> None:
    times = []
    for _ in range(3):
        app = AppProcess(redis_url=own_redis.url, close_timeout=CLOSE_TIMEOUT, loop=server_loop).start()
        try:
            assert own_redis.proc is not None
            times.append(await _busy_until_sigterm(app, stall=own_redis.proc.pid))
            assert app.proc is not None and app.proc.poll() is not None, f"server hung on SIGTERM {times}"
        finally:
            app.stop(kill=True)
    assert max(times) < CLOSE_TIMEOUT + SLACK, times
