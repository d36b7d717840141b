"""Soak test (not part of CI): many clients with random message sizes, random compression and
random abrupt disconnects against one zzz server process, for a given time.

The server runs in a child process and reports its RSS, open file descriptors, asyncio tasks and
connections every ``--interval`` seconds; the bar is flat memory after warm-up (the first third)
and no echo ever wrong.  ``python bench/soak.py --clients 50 --duration 300``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- server side


def _server_stats(server: Any) -> dict[str, Any]:
    with open("/proc/self/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return {
        "rss_kib": rss,
        "fds": len(os.listdir("/proc/self/fd")),
        "tasks": len(asyncio.all_tasks()),
        "connections": server.connections,
    }


async def _serve(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    import zzz

    def on_message(ws: zzz.WebSocket, msg: Any) -> None:
        if isinstance(msg, zzz.Text):
            ws.send(msg.data)
        else:
            ws.send_binary(msg.data)

    async def on_message_async(ws: zzz.WebSocket, msg: Any) -> None:
        await asyncio.sleep(0)
        on_message(ws, msg)

    app = zzz.App(
        [
            zzz.Router.ws("/echo", zzz.WsConfig(on_message=on_message)),
            zzz.Router.ws("/echo-async", zzz.WsConfig(on_message=on_message_async)),
        ],
        max_message_size=1 << 20,
        ping_interval=5,
        ping_timeout=5,
        close_timeout=2,
        open_timeout=5,
    )
    server = await app.start("127.0.0.1", 0)
    print(json.dumps({"port": server.port}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    start = time.monotonic()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), args.interval)
        except asyncio.TimeoutError:
            pass
        print(json.dumps({"t": round(time.monotonic() - start, 1), **_server_stats(server)}), flush=True)
    await server.close()
    print(json.dumps({"final": True, **_server_stats(server)}), flush=True)


# ----------------------------------------------------------------------------- clients


@dataclass
class Tally:
    """What the clients did."""

    messages: int = 0
    bytes: int = 0
    sessions: int = 0
    aborted: int = 0
    mid_frame: int = 0
    wrong_echo: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, exc: BaseException) -> None:
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1


def _size(rng: random.Random) -> int:
    # Log-uniform from 0 bytes to 256 KiB: mostly small, some large.
    return int(2 ** rng.uniform(0, 18)) - 1


async def _session(port: int, rng: random.Random, tally: Tally, deadline: float) -> None:
    from websockets.asyncio.client import connect

    path = rng.choice(["/echo", "/echo-async"])
    compression = "deflate" if rng.random() < 0.5 else None
    async with connect(
        f"ws://127.0.0.1:{port}{path}",
        compression=compression,
        max_size=None,
        open_timeout=10,
        close_timeout=2,
    ) as ws:
        tally.sessions += 1
        for _ in range(rng.randint(1, 50)):
            if time.monotonic() > deadline:
                break
            size = _size(rng)
            if rng.random() < 0.5:
                message: str | bytes = "".join(rng.choice("abcdefé€ ") for _ in range(min(size, 2000))) * max(
                    1, size // 2000
                )
            else:
                message = rng.randbytes(size) if rng.random() < 0.3 else (b"zzz" * (size // 3 + 1))[:size]
            await ws.send(message)
            if rng.random() < 0.03:
                ws.transport.abort()  # vanish with a message in flight
                tally.aborted += 1
                return
            echo = await asyncio.wait_for(ws.recv(), 30)
            if echo != message:
                tally.wrong_echo += 1
            tally.messages += 1
            tally.bytes += len(message)


async def _mid_frame(port: int, rng: random.Random, tally: Tally) -> None:
    """A raw client that upgrades, sends part of a frame and resets the connection."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        await loop.sock_sendall(
            sock,
            (
                f"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode(),
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 10)
            if not chunk:
                return
            head += chunk
        length = rng.randint(200, 100_000)
        frame = struct.pack("!BBQ", 0x82, 0x80 | 127, length) + os.urandom(4) + os.urandom(length)
        await loop.sock_sendall(sock, frame[: rng.randint(1, len(frame) - 1)])
        tally.mid_frame += 1
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
        sock.close()


async def _client(port: int, seed: int, tally: Tally, deadline: float) -> None:
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        try:
            if rng.random() < 0.1:
                await _mid_frame(port, rng, tally)
            else:
                await _session(port, rng, tally, deadline)
        except Exception as exc:  # noqa: BLE001 - abrupt endings are part of the soak; they are counted
            tally.error(exc)
        await asyncio.sleep(rng.random() * 0.05)


# ----------------------------------------------------------------------------- driver


async def _drive(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", "--interval", str(args.interval)]
    if args.loop == "uvloop":
        cmd.append("--uvloop")
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, env=env)
    assert proc.stdout is not None
    first = json.loads(await proc.stdout.readline())
    port = first["port"]
    tally = Tally()
    deadline = time.monotonic() + args.duration
    samples: list[dict[str, Any]] = []
    last = {"messages": 0, "t": 0.0}

    async def read_stats() -> None:
        assert proc.stdout is not None
        while True:
            line = await proc.stdout.readline()
            if not line:
                return
            sample = json.loads(line)
            if "t" in sample:
                rate = (tally.messages - last["messages"]) / max(sample["t"] - last["t"], 1e-9)
                last.update(messages=tally.messages, t=sample["t"])
                samples.append(sample)
                print(
                    f"{sample['t']:7.1f} s  RSS {sample['rss_kib'] / 1024:7.1f} MiB  fds {sample['fds']:5d}  "
                    f"tasks {sample['tasks']:5d}  connections {sample['connections']:5d}  "
                    f"client msgs/s {rate:8.0f}  errors {sum(tally.errors.values())}",
                    flush=True,
                )
            else:
                samples.append(sample)

    print(
        f"soak: {args.clients} clients for {args.duration} s against pid {proc.pid} ({args.loop})", flush=True
    )
    reader = asyncio.create_task(read_stats())
    await asyncio.gather(*(_client(port, args.seed + i, tally, deadline) for i in range(args.clients)))
    await asyncio.sleep(args.interval + 8)  # ping_timeout + close_timeout: let the server settle
    proc.send_signal(signal.SIGTERM)
    await proc.wait()
    await reader

    timed = [s for s in samples if "t" in s]
    print(
        f"\nclients: {tally.sessions} sessions, {tally.messages} messages echoed "
        f"({tally.bytes / 2**20:.0f} MiB), {tally.aborted} aborted mid-session, {tally.mid_frame} reset mid-frame, "
        f"wrong echoes {tally.wrong_echo}, client-side errors {tally.errors}"
    )
    if len([s for s in timed if s["t"] <= args.duration]) < 6:
        print("too few samples for a verdict; run longer")
        return 1
    active = [s for s in timed if s["t"] <= args.duration + args.interval / 2]
    warm = active[len(active) // 3]
    steady = [s["rss_kib"] for s in active[len(active) // 3 :]]
    # Growth over the steady phase: compare the median of its first and last quarters.
    quarter = max(1, len(steady) // 4)
    early, late = statistics.median(steady[:quarter]), statistics.median(steady[-quarter:])
    settled = timed[-1]
    print(
        f"server RSS after warm-up ({warm['t']} s): {warm['rss_kib'] / 1024:.1f} MiB; steady phase "
        f"{early / 1024:.1f} -> {late / 1024:.1f} MiB (median of first/last quarter), max {max(steady) / 1024:.1f} MiB"
    )
    print(
        f"after the clients stopped: connections {settled['connections']}, tasks {settled['tasks']}, fds {settled['fds']}"
    )
    flat = late - early < max(0.05 * early, 8 * 1024)
    ok = flat and tally.wrong_echo == 0 and settled["connections"] == 0
    print("verdict:", "flat memory, no wrong echo, everything closed" if ok else "NOT OK")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """Run the soak (or, with --serve, the server side of it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=180, help="seconds of client activity")
    parser.add_argument("--interval", type=float, default=10, help="seconds between server samples")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--uvloop", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        if args.uvloop:
            import uvloop

            uvloop.run(_serve(args))
        else:
            asyncio.run(_serve(args))
        return 0
    return asyncio.run(_drive(args))


if __name__ == "__main__":
    sys.exit(main())
