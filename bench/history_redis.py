"""What history costs on Redis: broadcast throughput with and without ``History`` on ``RedisPubSub``.

Two backends ("processes") in one event loop share a redis-server; each has ``--subscribers`` fake
subscribers on one topic (they count frames, nothing goes to a socket, so the Redis round trips and
the backend's own work are what is measured). Backend A publishes ``--count`` broadcasts as fast as
it can (waiting while it is ``backlogged``, as a publishing socket would); a run ends when every
subscriber of both backends has all of them. The same is done on a topic without history and on one
with ``History(size)``, alternately, ``--repeat`` times, and the best of each is reported with the
cost of history (issue #15's target: at most 35 %).

    python bench/history_redis.py                   # starts its own redis-server on a free port
    python bench/history_redis.py --redis redis://127.0.0.1:6379/0
    python bench/history_redis.py --quick           # a smoke run: small counts, one repetition

Never part of the test run. On a shared or loaded machine the numbers mean little.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zzz.channels import ChannelConfig, ChannelDef, ChannelEndpoint, RedisPubSub
from zzz.channels.history import History

__all__ = ["main"]


class Counter:
    """A subscriber that counts the frames it is given."""

    array_form = False

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex
        self.frames = 0

    def send_text(self, text: str) -> None:
        self.frames += 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_redis(workdir: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("history_redis: redis-server is not installed (or give --redis URL)")
    port = _free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir]
    proc = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("history_redis: redis-server did not start")


async def _run(pa: RedisPubSub, pb: RedisPubSub, topic: str, count: int, subs: int, payload: Any) -> float:
    """Broadcasts per second from A until every subscriber of A and B has all ``count``."""
    ca, cb = [Counter() for _ in range(subs)], [Counter() for _ in range(subs)]
    for sub in ca:
        pa.subscribe(topic, sub)
    for sub in cb:
        pb.subscribe(topic, sub)
    everyone = ca + cb
    try:
        started = time.perf_counter()
        for n in range(count):
            pa.broadcast(topic, "msg", payload)
            if n % 200 == 199:
                # Let the writer and readers run, and wait while A is backlogged, as the channel
                # endpoint makes a publishing socket wait.
                await pa.drain()
        deadline = time.monotonic() + 60
        while min(s.frames for s in everyone) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"history_redis: {topic}: not every broadcast arrived within 60 s")
            await asyncio.sleep(0.001)
        took = time.perf_counter() - started
        assert max(s.frames for s in everyone) == count, "a broadcast arrived twice"
        assert pa.stats()["dropped"] == 0, "a broadcast was dropped on a healthy Redis"
        return count / took
    finally:
        for sub in ca:
            pa.unsubscribe(topic, sub)
        for sub in cb:
            pb.unsubscribe(topic, sub)


async def bench(url: str, count: int, subs: int, size: int, repeat: int) -> dict[str, float]:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    channels = [ChannelDef("plain:*"), ChannelDef("hist:*", history=History(size))]
    pa, pb = RedisPubSub(url, prefix=prefix), RedisPubSub(url, prefix=prefix)
    for pubsub in (pa, pb):
        ChannelEndpoint(ChannelConfig(list(channels), pubsub=pubsub))  # registers the definitions
        await pubsub.start()
    payload = {"user": "bench", "body": "x" * 64, "n": 1}
    best = {"plain": 0.0, "hist": 0.0}
    try:
        await _run(pa, pb, "plain:warm", min(count, 500), subs, payload)
        await _run(pa, pb, "hist:warm", min(count, 500), subs, payload)
        for i in range(repeat):
            for kind in ("plain", "hist"):
                rate = await _run(pa, pb, f"{kind}:{i}", count, subs, payload)
                best[kind] = max(best[kind], rate)
    finally:
        await pa.close()
        await pb.close()
    return best


def _cpu_model() -> str:
    """The CPU as ``lscpu`` names it: these machines rank code differently by vendor."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--redis", default=None, help="a Redis URL (default: start a private redis-server)")
    parser.add_argument("--count", type=int, default=20_000, help="broadcasts per run")
    parser.add_argument("--subscribers", type=int, default=10, help="subscribers per backend")
    parser.add_argument("--size", type=int, default=1000, help="History(size) of the history topic")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1,000 broadcasts, once")
    args = parser.parse_args()
    if args.quick:
        args.count, args.repeat = 1000, 1
    proc = None
    with tempfile.TemporaryDirectory() as workdir:
        url = args.redis
        if url is None:
            proc, url = _start_redis(workdir)
        try:
            best = asyncio.run(bench(url, args.count, args.subscribers, args.size, args.repeat))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)
    cost = 1 - best["hist"] / best["plain"] if best["plain"] else float("nan")
    print(
        f"RedisPubSub, {args.count} broadcasts x {2 * args.subscribers} subscribers on 2 backends, best of {args.repeat}"
    )
    print(f"CPU: {_cpu_model()}; {time.strftime('%Y-%m-%d %H:%M')}")
    print()
    print("| topic | broadcasts/s |")
    print("|---|---|")
    print(f"| no history | {best['plain']:,.0f} |")
    print(f"| History(size={args.size}) | {best['hist']:,.0f} |")
    print()
    print(f"history costs {cost:.0%} of the throughput (target: at most 35 %)")


if __name__ == "__main__":
    main()
