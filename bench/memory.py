"""Server memory per idle WebSocket connection, for zzz and its peers, compression off and on.

Starts each server, opens N connections from a separate client process (raw sockets on uvloop,
its own handshake), and divides the growth of the server's RSS by N; also times an echo on a
fresh connection while the N are open.  ``python bench/memory.py [-n 10000]``.

``measure(..., fill=K)`` also echoes K distinct 4 KiB chat-like messages on every connection
after the first echo and reads the RSS again: a compressing connection that has carried more
than its window of traffic has touched all of its zlib state, which one small echo does not.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import hashlib
import os
import random
import resource
import shlex
import statistics
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TARGETS_KIB", "main", "server_rss_kib"]

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench_run

ROOT = bench_run.ROOT
REPORTS = bench_run.REPORTS

# Per-connection targets for zzz, in KiB: compression off, on.
TARGETS_KIB = {False: 16, True: 80}


@dataclass(frozen=True)
class Target:
    """One server configuration to measure."""

    name: str
    script: str
    deflate: bool
    raw: bool = False


TARGETS: list[Target] = [
    Target("raw uvloop", "server_raw.py", False, raw=True),
    Target("picows", "server_picows.py", False),
    Target("aiohttp", "server_aiohttp.py", False),
    Target("websockets", "server_websockets.py", False),
    Target("zzz", "server_zzz.py", False),
    Target("aiohttp", "server_aiohttp.py", True),
    Target("websockets", "server_websockets.py", True),
    Target("zzz", "server_zzz.py", True),
]


# ============================================================================ client process

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# 1 KiB of text that deflates well, as chat-like traffic would.
MESSAGE = (b'{"user": "alice", "text": "hello from the memory benchmark", "seq": 0} ' * 15)[:1024]


WORDS = [
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "heidi",
    "ivan",
    "judy",
    "price",
    "bid",
    "ask",
    "fill",
    "order",
    "room",
    "lobby",
    "join",
    "leave",
    "typing",
    "hello",
    "thanks",
    "sure",
    "later",
    "ok",
    "maybe",
    "tomorrow",
    "meeting",
    "ticket",
    "deploy",
    "build",
    "green",
    "red",
    "latency",
    "spike",
    "update",
    "patch",
    "review",
    "merge",
    "coffee",
    "lunch",
    "weekend",
]


def fill_message(conn: int, seq: int, size: int = 4096) -> bytes:
    """One chat-like JSON text of ``size`` bytes, different for every connection and number:
    it deflates about as well as chat traffic, and a few of them fill any window."""
    rnd = random.Random(conn * 1_000_003 + seq)
    parts = []
    total = 0
    while total < size:
        line = (
            f'{{"user": "{rnd.choice(WORDS)}{rnd.randrange(1000)}", "seq": {rnd.randrange(10**9)}, '
            f'"text": "{" ".join(rnd.choice(WORDS) for _ in range(rnd.randrange(4, 14)))}"}}\n'
        )
        parts.append(line)
        total += len(line)
    return "".join(parts).encode()[:size]


def masked_frame(payload: bytes, rsv1: bool = False, opcode: int = 1) -> bytes:
    """A client frame (FIN, masked) around ``payload``."""
    first = 0x80 | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    key = os.urandom(4)
    # XOR as one big integer: no per-byte Python loop.
    mask = (key * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")
    return head + key + body


def deflate_message(payload: bytes) -> bytes:
    """Compress one message on its own, 512-byte window: valid under any client_max_window_bits >= 9."""
    c = zlib.compressobj(wbits=-9)
    data = c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(b"\x00\x00\xff\xff") else data


class ClientConn(asyncio.Protocol):
    """One connection: handshake, then optionally echo messages; no work while idle."""

    def __init__(self, host: str, port: int, offer_deflate: bool, raw: bool) -> None:
        self.host, self.port, self.offer_deflate, self.raw = host, port, offer_deflate, raw
        self.buf = bytearray()
        self.loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[bool] = self.loop.create_future()
        self.reply: asyncio.Future[bytes] | None = None
        self.deflate = False
        self.transport: asyncio.Transport | None = None
        self.expect_raw = 0
        # The server may keep its compression context between messages: one inflater per connection.
        self.inflater = zlib.decompressobj(wbits=-15)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the upgrade request (a raw echo just gets any bytes back)."""
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16))
        self.accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        ext = (
            b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            if self.offer_deflate
            else b""
        )
        req = (
            b"GET / HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n"
        ) % (self.host.encode(), self.port, key, ext)
        self.expect_raw = len(req)
        transport.write(req)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        """Finish the handshake, then collect one reply at a time."""
        self.buf += data
        if not self.opened.done():
            if self.raw:
                if len(self.buf) >= self.expect_raw:
                    del self.buf[: self.expect_raw]
                    self.opened.set_result(False)
                return
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[: end + 4]
            if not head.startswith("HTTP/1.1 101") or self.accept.decode() not in head:
                self.opened.set_exception(RuntimeError(head.splitlines()[0] if head else "empty response"))
                return
            self.deflate = "permessage-deflate" in head.lower()
            self.opened.set_result(self.deflate)
        self._try_reply()

    def _try_reply(self) -> None:
        """Hand the next data frame to whoever waits; answer pings (a server pings a connection
        that was silent for its ping interval, as those waiting for the fill are)."""
        while not self.raw and self._control_frame():
            pass
        if self.reply is None or self.reply.done():
            return
        if self.raw:
            if len(self.buf) >= self.expect_raw:
                out = bytes(self.buf[: self.expect_raw])
                del self.buf[: self.expect_raw]
                self.reply.set_result(out)
            return
        if len(self.buf) < 2:
            return
        b0, b1 = self.buf[0], self.buf[1]
        n, off = b1 & 127, 2
        if n == 126:
            if len(self.buf) < 4:
                return
            n, off = struct.unpack_from("!H", self.buf, 2)[0], 4
        elif n == 127:
            if len(self.buf) < 10:
                return
            n, off = struct.unpack_from("!Q", self.buf, 2)[0], 10
        if len(self.buf) < off + n:
            return
        payload = bytes(self.buf[off : off + n])
        del self.buf[: off + n]
        if b0 & 0x40:
            payload = self.inflater.decompress(payload + b"\x00\x00\xff\xff")
        self.reply.set_result(payload)

    def _control_frame(self) -> bool:
        """Take one whole ping (answered with a pong) or pong off the buffer; False if the next
        frame is not one, or not all here."""
        if len(self.buf) < 2 or self.buf[0] & 0x0F not in (0x9, 0xA):
            return False
        n = self.buf[1] & 127  # a control frame's payload is at most 125 bytes
        if len(self.buf) < 2 + n:
            return False
        payload = bytes(self.buf[2 : 2 + n])
        opcode = self.buf[0] & 0x0F
        del self.buf[: 2 + n]
        if opcode == 0x9 and self.transport is not None and not self.transport.is_closing():
            self.transport.write(masked_frame(payload, opcode=0xA))
        return True

    def goodbye(self) -> None:
        """Send a close frame (servers log abrupt disconnects) and drop the connection."""
        if self.transport is not None and not self.transport.is_closing():
            if not self.raw:
                self.transport.write(masked_frame(b"\x03\xe8", opcode=8))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail whatever waits."""
        err = ConnectionError(f"connection lost: {exc}")
        for fut in (self.opened, self.reply):
            if fut is not None and not fut.done():
                fut.set_exception(err)

    async def echo(self, payload: bytes) -> float:
        """Send one message, wait for its echo, check it, return seconds taken."""
        assert self.transport is not None
        if self.raw:
            frame = masked_frame(payload)
            self.expect_raw = len(frame)
        else:
            frame = (
                masked_frame(deflate_message(payload), rsv1=True) if self.deflate else masked_frame(payload)
            )
        self.reply = self.loop.create_future()
        t = time.perf_counter()
        self.transport.write(frame)
        got = await asyncio.wait_for(self.reply, 10)
        dt = time.perf_counter() - t
        if (got != frame) if self.raw else (got != payload):
            raise RuntimeError("echo does not match")
        return dt


async def open_many(
    connect: Callable[[], Awaitable[ClientConn]], n: int, conns: list[ClientConn]
) -> list[str]:
    """Open ``n`` connections, 100 handshakes at a time, appending to ``conns``; return the failures."""
    sem = asyncio.Semaphore(100)
    failures: list[str] = []

    async def one() -> None:
        async with sem:
            try:
                conns.append(await connect())
            except Exception as exc:  # noqa: BLE001 - counted and reported
                failures.append(repr(exc))

    await asyncio.gather(*(one() for _ in range(n)))
    return failures


async def echo_all(conns: list[ClientConn]) -> int:
    """Echo one message on every connection, 200 at a time; return how many failed."""
    sem = asyncio.Semaphore(200)
    bad = 0

    async def one(c: ClientConn) -> None:
        nonlocal bad
        async with sem:
            try:
                await c.echo(MESSAGE)
            except Exception:  # noqa: BLE001 - counted and reported
                bad += 1

    await asyncio.gather(*(one(c) for c in conns))
    return bad


async def fill_all(conns: list[ClientConn], count: int) -> int:
    """Echo ``count`` distinct 4 KiB messages on every connection, 200 connections at a time;
    return how many connections failed."""
    sem = asyncio.Semaphore(200)
    bad = 0

    async def one(i: int, c: ClientConn) -> None:
        nonlocal bad
        async with sem:
            try:
                for seq in range(count):
                    await c.echo(fill_message(i, seq))
            except Exception:  # noqa: BLE001 - counted and reported
                bad += 1

    await asyncio.gather(*(one(i, c) for i, c in enumerate(conns)))
    return bad


async def client_main(host: str, port: int, n: int, offer_deflate: bool, raw: bool) -> None:
    """Line protocol with the parent on stdin/stdout: warm, open, echo, fill K, rtt, quit."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def connect() -> ClientConn:
        _, proto = await loop.create_connection(
            lambda: ClientConn(host, port, offer_deflate, raw), host, port
        )
        await asyncio.wait_for(proto.opened, 30)
        return proto

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    # Warm-up: the server's lazily imported and allocated paths run before the baseline is taken.
    warm = [await connect() for _ in range(20)]
    for c in warm:
        await c.echo(MESSAGE)
    for c in warm:
        c.goodbye()
    say("warm")

    conns: list[ClientConn] = []
    while True:
        line = (await reader.readline()).decode().strip()
        if line == "open":
            t = time.perf_counter()
            failures = await open_many(connect, n, conns)
            negotiated = sum(1 for c in conns if c.deflate)
            say(
                f"opened {len(conns)} {len(failures)} {negotiated} {time.perf_counter() - t:.2f} "
                f"{failures[0] if failures else ''}"
            )
        elif line == "echo":
            bad = await echo_all(conns)
            say(f"echoed {len(conns) - bad} {bad}")
        elif line.startswith("fill "):
            bad = await fill_all(conns, int(line.split()[1]))
            say(f"filled {len(conns) - bad} {bad}")
        elif line == "rtt":
            fresh = await connect()
            times = [await fresh.echo(MESSAGE[:32]) for _ in range(200)]
            fresh.goodbye()
            times.sort()
            say(f"rtt {statistics.median(times) * 1e3:.3f} {times[int(len(times) * 0.99)] * 1e3:.3f}")
        else:
            for c in conns:
                c.goodbye()
            await asyncio.sleep(0.2)
            say("bye")
            return


# ============================================================================ parent


def server_rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` and all its descendants (a server may fork workers), in KiB."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                todo.extend(int(c) for c in children)
        except (OSError, ValueError):
            continue
    return total


class Client:
    """The client process, driven line by line."""

    def __init__(self, python: str, port: int, n: int, deflate: bool, raw: bool) -> None:
        cmd = [python, str(Path(__file__).resolve()), "--client-mode", "--port", str(port), "-n", str(n)]
        if deflate:
            cmd.append("--deflate")
        if raw:
            cmd.append("--raw")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)

    def ask(self, line: str | None, timeout: float = 300) -> str:
        """Send a command (or nothing) and read the answer line."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if line is not None:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        # The client answers every command; a dead client gives an empty line.
        answer = self.proc.stdout.readline().strip()
        if not answer:
            raise RuntimeError(f"memory client died (status {self.proc.poll()})")
        return answer

    def close(self) -> None:
        """Ask it to leave; kill it if it does not."""
        try:
            self.ask("quit")
        except (RuntimeError, BrokenPipeError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def kib(v: float) -> str:
    """KiB or MiB, readable."""
    return f"{v / 1024:.1f} MiB" if v >= 10240 else f"{v:.1f} KiB"


def measure(target: Target, n: int, python: str, settle: float, fill: int = 0) -> dict[str, object]:
    """One server configuration: RSS before, after opening N, after one echo on each, fresh RTT;
    with ``fill``, also after ``fill`` more 4 KiB echoes on each (``per_conn_filled``)."""
    server = bench_run.Server(
        target.name, target.script, ("--compression",) if target.deflate else (), raw=target.raw
    )
    log = (
        REPORTS
        / "bench-logs"
        / f"memory-{target.name.replace(' ', '_')}-{'deflate' if target.deflate else 'plain'}.log"
    )
    running = bench_run.start_server(server, python, "none", log)
    if isinstance(running, str):
        return {"error": f"failed to start: {running}"}
    client = Client(python, running.port, n, target.deflate, target.raw)
    try:
        client.ask(None)  # "warm"
        time.sleep(settle)
        before = server_rss_kib(running.proc.pid)
        opened = client.ask("open").split(maxsplit=5)
        n_open, n_fail, n_deflate, secs = int(opened[1]), int(opened[2]), int(opened[3]), float(opened[4])
        time.sleep(settle)
        after_open = server_rss_kib(running.proc.pid)
        echoed = client.ask("echo").split()
        time.sleep(settle)
        after_echo = server_rss_kib(running.proc.pid)
        filled: dict[str, object] = {}
        if fill:
            answer = client.ask(f"fill {fill}", timeout=900).split()
            time.sleep(settle)
            after_fill = server_rss_kib(running.proc.pid)
            filled = {
                "after_fill": after_fill,
                "fill_failed": int(answer[2]),
                "per_conn_filled": (after_fill - before) / max(n_open, 1),
            }
        rtt = client.ask("rtt").split()
        alive = running.proc.poll() is None
        result: dict[str, object] = {
            "opened": n_open,
            "failed": n_fail,
            "first_failure": opened[5] if len(opened) > 5 else "",
            "deflate_negotiated": n_deflate,
            "open_seconds": secs,
            "before": before,
            "after_open": after_open,
            "after_echo": after_echo,
            "echo_failed": int(echoed[2]),
            "per_conn_idle": (after_open - before) / max(n_open, 1),
            "per_conn_used": (after_echo - before) / max(n_open, 1),
            "rtt_ms": float(rtt[1]),
            "rtt_p99_ms": float(rtt[2]),
            "alive": alive,
            **filled,
        }
        return result
    except (RuntimeError, OSError, ValueError, IndexError) as exc:
        return {"error": f"{exc}; server log: {bench_run.last_line(log)}"}
    finally:
        client.close()
        bench_run.stop_server(running)


def render(rows: list[tuple[Target, dict[str, object]]], n: int, started: datetime.datetime) -> str:
    """The Markdown report."""
    info = bench_run.machine_info()
    out = [
        f"# Memory per connection — {started:%Y-%m-%d %H:%M}",
        "",
        f"- command: `{' '.join(shlex.quote(a) for a in sys.argv)}`",
        (
            f"- machine: {info['nproc']} CPUs, {info['cpu']}, Linux {info['kernel']}; Python {info['python']}; "
            f"{info['libs']}; {bench_run.zzz_info(sys.executable)}"
        ),
        f"- {n:,} connections; RSS = VmRSS of the server process (and any children)",
        "",
        (
            "| server | compression | opened | RSS before | + after opening | per conn, idle | "
            "+ after one 1 KiB echo each | per conn, used | fresh-conn echo RTT (median / p99) | zzz target |"
        ),
        "|---|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for t, r in rows:
        comp = "deflate" if t.deflate else "off"
        if "error" in r:
            out.append(f"| {t.name} | {comp} | — | — | — | — | — | — | — | **{r['error']}** |")
            continue
        opened = f"{r['opened']:,}"
        if r["failed"]:
            opened += f" (**{r['failed']} failed**: {str(r['first_failure'])[:60]})"
        if t.deflate and r["deflate_negotiated"] != r["opened"]:
            opened += f" (deflate on {r['deflate_negotiated']})"
        target = ""
        if t.name == "zzz":
            limit = TARGETS_KIB[t.deflate]
            worst = max(float(r["per_conn_idle"]), float(r["per_conn_used"]))  # type: ignore[arg-type]
            target = f"≤ {limit} KiB: {'met' if worst <= limit else '**MISSED**'}"
        if r["echo_failed"]:
            target += f" **{r['echo_failed']} echoes failed**"
        out.append(
            f"| {t.name} | {comp} | {opened} | {kib(float(r['before']))} | "  # type: ignore[arg-type]
            f"{kib(float(r['after_open']) - float(r['before']))} | "  # type: ignore[arg-type]
            f"**{float(r['per_conn_idle']):.1f} KiB** | "  # type: ignore[arg-type]
            f"{kib(float(r['after_echo']) - float(r['before']))} | "  # type: ignore[arg-type]
            f"**{float(r['per_conn_used']):.1f} KiB** | "  # type: ignore[arg-type]
            f"{float(r['rtt_ms']):.2f} / {float(r['rtt_p99_ms']):.2f} ms | {target} |"  # type: ignore[arg-type]
        )
    out += [
        "",
        (
            "idle: connections opened and never used; used: after each echoed one 1 KiB text message "
            "(compressed when deflate was negotiated), which makes the server allocate its read "
            "buffers and touch its zlib state. The zzz target applies to the larger of the two."
        ),
    ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Measure every target; exit status 1 when zzz misses a target."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("-n", "--connections", type=int, default=10_000)
    p.add_argument("--servers", help="comma-separated names (raw uvloop, picows, aiohttp, websockets, zzz)")
    p.add_argument("--compression", choices=("off", "on", "both"), default="both")
    p.add_argument("--python", default=sys.executable, help="interpreter for servers and client")
    p.add_argument("--settle", type=float, default=1.0, help="seconds to wait before reading RSS")
    p.add_argument("--output", type=Path, default=REPORTS / "memory-latest.md")
    # client side (internal)
    p.add_argument("--client-mode", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--deflate", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.client_mode:
        try:
            import uvloop

            uvloop.run(client_main("127.0.0.1", args.port, args.connections, args.deflate, args.raw))
        except ImportError:
            asyncio.run(client_main("127.0.0.1", args.port, args.connections, args.deflate, args.raw))
        return 0

    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if args.connections + 100 > limit:
        print(f"warning: the hard limit on open files is {limit}; expect failures above it", file=sys.stderr)
    targets = TARGETS
    if args.servers:
        names = {s.strip() for s in args.servers.split(",")}
        targets = [t for t in targets if t.name in names]
    if args.compression != "both":
        targets = [t for t in targets if t.deflate == (args.compression == "on")]
    started = datetime.datetime.now()
    rows: list[tuple[Target, dict[str, object]]] = []
    for t in targets:
        print(f"{t.name} ({'deflate' if t.deflate else 'no compression'}) ...", file=sys.stderr, flush=True)
        r = measure(t, args.connections, args.python, args.settle)
        rows.append((t, r))
        print(f"  {r}", file=sys.stderr)
    text = render(rows, args.connections, started)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    missed = [
        t
        for t, r in rows
        if t.name == "zzz"
        and (
            "error" in r or max(float(r["per_conn_idle"]), float(r["per_conn_used"])) > TARGETS_KIB[t.deflate]  # type: ignore[arg-type]
        )
    ]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
