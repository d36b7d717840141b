"""The end-to-end benchmark: zzz against picows, aiohttp, websockets, socketify, python-socketio
and raw uvloop ceilings, on echo, broadcast (fan-out) and Channels rows.

Builds the C load client, runs each server alone (order rotating every repetition), checks
every echoed byte and every broadcast delivery (content and order), and prints one Markdown
table and the issue #14 targets, also written to ``reports/bench-latest.md``.
``make bench`` runs ``python bench/run.py``; ``--quick`` is a short smoke test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["SCENARIOS", "SERVERS", "TARGETS", "Scenario", "Server", "Target", "main"]

ROOT = Path(__file__).resolve().parent.parent
ECHO_DIR = ROOT / "bench" / "echo"
BUILD_DIR = ROOT / "build" / "bench"
REPORTS = ROOT / "reports"


@dataclass(frozen=True)
class Server:
    """One server under test.

    Attributes:
        name: the row label.
        script: file in ``bench/echo/``.
        args: extra arguments for the script.
        raw: a plain byte echo (the client runs with ``--raw``).
        deflate: this entry runs the compression scenarios only (and only those).
        env: extra environment variables for the server process.
        only: when not empty, the scenario keys this entry runs (the others are skipped).
        kinds: when not empty, the scenario kinds this entry runs (a ceiling or a fan-out-only peer).
        wire: the Channels-style protocol it speaks (``phoenix``, ``socketio``): it runs the
            ``channel`` scenarios, with ``wire_path`` as the client's path.
        wire_path: the WebSocket path of that protocol.
    """

    name: str
    script: str
    args: tuple[str, ...] = ()
    raw: bool = False
    deflate: bool = False
    env: tuple[tuple[str, str], ...] = ()
    only: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    wire: str = ""
    wire_path: str = ""


@dataclass(frozen=True)
class Scenario:
    """One load pattern.

    Attributes:
        key: short name used on the command line (``--scenarios``).
        title: the row label.
        client: arguments for the load client.
        kind: ``rr`` (round trips; RTT is shown), ``bcast`` (fan-out over plain WebSocket),
            ``channel`` (over a server's Channels wire: Phoenix or Socket.IO), ``check``
            (correctness run with a fixed message count) or ``bulk`` (pipelined throughput).
        main: repeated ``--reps`` times (otherwise ``--reps-other`` times).
        deflate: a compression scenario (runs on the ``deflate`` server entries only).
        fresh: runs in a server process of its own (so its peak RSS is its own, and the memory
            it leaves behind does not inflate the next rows').
        ceiling: the server whose median is the "vs raw" column.
    """

    key: str
    title: str
    client: tuple[str, ...]
    kind: str = "rr"
    main: bool = True
    deflate: bool = False
    fresh: bool = False
    ceiling: str = "raw uvloop"

    @property
    def fanout(self) -> bool:
        """One publisher, many receivers (deliveries per second, "all got it in")."""
        return "bcast" in self.client

    @property
    def conns(self) -> int:
        """Connections the client opens."""
        args = list(self.client)
        return int(args[args.index("--conns") + 1]) if "--conns" in args else 1


RAW_FANOUT = "raw fan-out"
ZZZ_HISTORY = "zzz history"
CHANNEL_TOPIC_PATH = "/socket/websocket"  # zzz.Router.channel("/socket") also serves this (phoenix.js's)
SOCKETIO_PATH = "/socket.io/?EIO=4&transport=websocket"

SERVERS: list[Server] = [
    Server("raw uvloop", "server_raw.py", raw=True, kinds=("rr", "bulk", "check")),
    Server(RAW_FANOUT, "server_raw_fanout.py", kinds=("bcast",)),
    Server("picows", "server_picows.py"),
    Server("aiohttp", "server_aiohttp.py"),
    Server("websockets", "server_websockets.py"),
    # uWebSockets' C pub/sub: the fastest peer on fan-out; it runs the broadcast rows.
    Server("socketify", "server_socketify.py", kinds=("bcast",)),
    Server("zzz", "server_zzz.py", wire="phoenix", wire_path=CHANNEL_TOPIC_PATH),
    # The same Channels server with a History on its topics (issue #15): what numbering, storing and
    # the meta on every frame cost on the fan-out rows.
    Server(
        ZZZ_HISTORY,
        "server_zzz.py",
        ("--history", "1000"),
        wire="phoenix",
        wire_path=CHANNEL_TOPIC_PATH,
        only=("ch-bcast-1000", "ch-burst10-1000"),
    ),
    Server(
        "python-socketio", "server_socketio.py", kinds=("channel",), wire="socketio", wire_path=SOCKETIO_PATH
    ),
    Server("websockets+deflate", "server_websockets.py", ("--compression",), deflate=True),
    Server("zzz+deflate", "server_zzz.py", ("--compression",), deflate=True),
    # The compressed-broadcast row: zzz answering server_no_context_takeover (compress once for
    # all receivers), the peers that can, and the ceiling compressing each message once.
    Server(
        "zzz+deflate nct",
        "server_zzz.py",
        ("--compression", "--server-no-context-takeover"),
        deflate=True,
        only=("deflate-bcast-1000",),
    ),
    Server(
        "aiohttp+deflate", "server_aiohttp.py", ("--compression",), deflate=True, only=("deflate-bcast-1000",)
    ),
    Server("socketify+deflate", "server_socketify.py", ("--compression",), deflate=True, kinds=("bcast",)),
    Server(
        f"{RAW_FANOUT}+deflate", "server_raw_fanout.py", ("--compression",), deflate=True, kinds=("bcast",)
    ),
    # The pure-Python twin (what runs where the extension is not built), for the issue's
    # "no slower than websockets" rows.
    Server(
        "zzz twin",
        "server_zzz.py",
        env=(("ZZZ_NO_EXTENSIONS", "1"),),
        only=("rr-32", "rr-1k", "pipe-32", "pipe-1k"),
    ),
]

# ZZZ_BENCH_BASE=/path/to/an/older/checkout (its extension built in place) adds "zzz base": the same
# server script on that checkout's zzz, interleaved with today's, for "no row slower than before"
# comparisons of a refactoring (issue #13). The Channels and compression rows need today's script
# options, so the base runs the plain WebSocket rows.
if os.environ.get("ZZZ_BENCH_BASE"):
    SERVERS.append(
        Server(
            "zzz base",
            "server_zzz.py",
            env=(("PYTHONPATH", os.path.abspath(os.environ["ZZZ_BENCH_BASE"])),),
            kinds=("rr", "bulk", "check", "bcast"),
        )
    )

BCAST = ("--mode", "bcast", "--path", "/broadcast", "--size", "64")

# Text for 32 B and 1 KiB (valid UTF-8, so servers run their UTF-8 checks), binary above.
SCENARIOS: list[Scenario] = [
    Scenario("rr-32", "1 conn, 1 in flight, 32 B text", ("--size", "32")),
    Scenario("rr-1k", "1 conn, 1 in flight, 1 KiB text", ("--size", "1024")),
    Scenario("rr-64k", "1 conn, 1 in flight, 64 KiB binary", ("--size", "65536")),
    Scenario("rr-1m", "1 conn, 1 in flight, 1 MiB binary", ("--size", "1048576")),
    Scenario("pipe-32", "1 conn, 100 in flight, 32 B text", ("--size", "32", "--inflight", "100")),
    Scenario("pipe-1k", "1 conn, 100 in flight, 1 KiB text", ("--size", "1024", "--inflight", "100")),
    Scenario("conns-100", "100 conns, 1 in flight each, 32 B text", ("--size", "32", "--conns", "100")),
    Scenario(
        "pipe-64k",
        "1 conn, 100 in flight, 64 KiB binary",
        ("--size", "65536", "--inflight", "100"),
        kind="bulk",
        main=False,
    ),
    Scenario(
        "bcast-1000",
        "broadcast 64 B text to 1000 conns",
        (*BCAST, "--conns", "1000"),
        kind="bcast",
        main=False,
        ceiling=RAW_FANOUT,
    ),
    Scenario(
        "bcast-10k",
        "broadcast 64 B text to 10,000 conns",
        (*BCAST, "--conns", "10000"),
        kind="bcast",
        main=False,
        fresh=True,
        ceiling=RAW_FANOUT,
    ),
    Scenario(
        "burst10-1000",
        "bursts of 10 × 64 B to 1000 conns",
        (*BCAST, "--conns", "1000", "--burst", "10"),
        kind="bcast",
        main=False,
        ceiling=RAW_FANOUT,
    ),
    Scenario(
        "burst100-1000",
        "bursts of 100 × 64 B to 1000 conns",
        (*BCAST, "--conns", "1000", "--burst", "100"),
        kind="bcast",
        main=False,
        ceiling=RAW_FANOUT,
    ),
    Scenario(
        "burst10-10k",
        "bursts of 10 × 64 B to 10,000 conns",
        (*BCAST, "--conns", "10000", "--burst", "10"),
        kind="bcast",
        main=False,
        fresh=True,
        ceiling=RAW_FANOUT,
    ),
    Scenario(
        "deflate-bcast-1000",
        "deflate: broadcast 64 B text to 1000 conns",
        ("--deflate", *BCAST, "--conns", "1000"),
        kind="bcast",
        main=False,
        deflate=True,
        ceiling=f"{RAW_FANOUT}+deflate",
    ),
    Scenario(
        "ch-bcast-1000",
        "channels: 1 push → broadcast to 1000 subscribers",
        ("--mode", "bcast", "--conns", "1000", "--size", "64"),
        kind="channel",
        main=False,
    ),
    Scenario(
        "ch-burst10-1000",
        "channels: bursts of 10 pushes → 1000 subscribers",
        ("--mode", "bcast", "--conns", "1000", "--size", "64", "--burst", "10"),
        kind="channel",
        main=False,
    ),
    Scenario(
        "ch-rr",
        "channels: push + reply, 1 conn, 1 in flight",
        ("--size", "32"),
        kind="channel",
    ),
    Scenario(
        "mixed",
        "mixed 0 B-1 MiB, 32 in flight, 480 msgs",
        ("--mode", "mixed", "--inflight", "32", "--count", "480", "--warmup", "0"),
        kind="check",
        main=False,
    ),
    Scenario(
        "deflate-rr-1k",
        "deflate: 1 conn, 1 in flight, 1 KiB text",
        ("--deflate", "--size", "1024"),
        main=False,
        deflate=True,
    ),
    Scenario(
        "deflate-pipe-1k",
        "deflate: 1 conn, 100 in flight, 1 KiB text",
        ("--deflate", "--size", "1024", "--inflight", "100"),
        main=False,
        deflate=True,
    ),
    Scenario(
        "deflate-mixed",
        "deflate: mixed 0 B-1 MiB, 8 in flight, 240 msgs",
        ("--deflate", "--mode", "mixed", "--inflight", "8", "--count", "240", "--warmup", "0"),
        kind="check",
        main=False,
        deflate=True,
    ),
]

QUICK_SCENARIOS = (
    "rr-32",
    "rr-64k",
    "pipe-32",
    "conns-100",
    "pipe-64k",
    "bcast-1000",
    "burst10-1000",
    "ch-bcast-1000",
    "ch-rr",
    "mixed",
    "deflate-rr-1k",
    "deflate-bcast-1000",
)


@dataclass(frozen=True)
class Target:
    """One target of issue #14: a ratio of two medians, or a ceiling on zzz's peak RSS.

    Attributes:
        scenario: the row (scenario key) the target is about.
        server: the row's server.
        ref_server: the server it is compared with ("" for an RSS target).
        ref_scenario: the reference row's scenario when it is another one (None: the same).
        minimum: the ratio ``server / ref_server`` must be at least this.
        rss_max_mib: the server's peak RSS must stay under this many MiB.
    """

    scenario: str
    server: str
    ref_server: str = ""
    ref_scenario: str | None = None
    minimum: float | None = None
    rss_max_mib: float | None = None


def _targets() -> list[Target]:
    out: list[Target] = []
    for key in ("burst10-1000", "burst100-1000", "burst10-10k"):
        out += [Target(key, "zzz", RAW_FANOUT, minimum=0.5), Target(key, "zzz", "socketify", minimum=2.0)]
    for key in ("bcast-1000", "bcast-10k"):
        out += [Target(key, "zzz", "picows", minimum=1.3), Target(key, "zzz", RAW_FANOUT, minimum=0.9)]
    out.append(Target("bcast-10k", "zzz", rss_max_mib=200))
    out.append(Target("deflate-bcast-1000", "zzz+deflate nct", "zzz", "bcast-1000", minimum=0.5))
    for key, plain in (("ch-bcast-1000", "bcast-1000"), ("ch-burst10-1000", "burst10-1000")):
        out += [
            Target(key, "zzz", "python-socketio", minimum=10.0),
            Target(key, "zzz", "zzz", plain, minimum=0.8),
            # issue #15: history costs at most 20 % of Channels broadcast throughput (in-memory backend)
            Target(key, ZZZ_HISTORY, "zzz", minimum=0.8),
        ]
    out.append(Target("ch-rr", "zzz", "zzz", "rr-32", minimum=0.8))
    for key in ("rr-32", "rr-1k", "conns-100"):
        out.append(Target(key, "zzz", "picows", minimum=1.02))
    out.append(Target("mixed", "zzz", "picows", minimum=1.0))
    return out


TARGETS: list[Target] = _targets()


def applies(server: Server, scenario: Scenario) -> bool:
    """Whether ``scenario`` runs on ``server``.

    Deflate rows run only on deflate entries (and the reverse); Channels rows on the servers
    that speak a Channels wire; an entry with ``kinds`` (a ceiling, a fan-out-only peer) only
    on those kinds.
    """
    if server.only and scenario.key not in server.only:
        return False
    if server.deflate != scenario.deflate:
        return False
    if scenario.kind == "channel":
        return bool(server.wire)
    if server.kinds:
        return scenario.kind in server.kinds
    return True


# ---------------------------------------------------------------------------- building the client


def build_client(cc: str) -> tuple[Path, bool]:
    """Compile ``loadclient.c`` with ``cc -O2``; without zlib if its header is missing.

    Returns:
        The binary and whether it supports ``--deflate``.
    """
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    out = BUILD_DIR / "loadclient"
    src = ECHO_DIR / "loadclient.c"
    base = [cc, "-O2", "-Wall", "-o", str(out), str(src)]
    done = subprocess.run([*base, "-lz"], check=False, capture_output=True, text=True)
    if done.returncode == 0:
        return out, True
    fallback = subprocess.run([*base, "-DNO_ZLIB"], check=False, capture_output=True, text=True)
    if fallback.returncode != 0:
        sys.exit(f"cannot build the load client:\n{done.stderr}\n{fallback.stderr}")
    print("warning: zlib headers missing, load client built without permessage-deflate", file=sys.stderr)
    return out, False


# ---------------------------------------------------------------------------- servers


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin_prefix(pin: str, role: str, cpu: int = 0) -> list[str]:
    """The ``taskset`` prefix for ``role`` ("server" or "client") under the pinning policy.

    ``same`` puts both on ``cpu``; ``split`` puts the server on ``cpu`` and the client on the next.
    """
    if pin == "none" or shutil.which("taskset") is None:
        return []
    if pin == "same" or role == "server":
        return ["taskset", "-c", str(cpu)]
    return ["taskset", "-c", str((cpu + 1) % (os.cpu_count() or 1))]


@dataclass
class Running:
    """A started server process."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path


def start_server(server: Server, python: str, pin: str, log: Path, cpu: int = 0) -> Running | str:
    """Start ``server`` and wait until it accepts connections.

    Returns:
        The running server, or a one-line reason why it did not start.
    """
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(server.env)
    cmd = [
        *pin_prefix(pin, "server"),
        python,
        str(ECHO_DIR / server.script),
        "--port",
        str(port),
        *server.args,
    ]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with status {proc.returncode}: {last_line(log)}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return Running(proc, port, log)
        except OSError:
            time.sleep(0.05)
    stop_server(Running(proc, port, log))
    return "did not listen within 20 s"


def last_line(log: Path) -> str:
    """The last non-empty line of a log, to say why a server died."""
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1].strip()[:200] if lines else "(no output)"


def stop_server(running: Running) -> None:
    """SIGINT, then SIGKILL if it lingers; only the process we started."""
    proc = running.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------- limits and memory


def raise_fd_limit(needed: int) -> int:
    """Raise this process's RLIMIT_NOFILE (inherited by the servers and the client) like ``ulimit -n``.

    The soft limit goes to the hard limit; when that is below ``needed`` and the process may raise
    the hard limit (root), both go to ``needed``.

    Returns:
        The soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
        except (ValueError, OSError):
            pass
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def fds_needed(scenario: Scenario) -> int:
    """Descriptors one side of ``scenario`` needs (its connections and some to spare)."""
    return scenario.conns + 256


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a server with worker processes counts whole)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def status_kib(pid: int, field_name: str) -> int:
    """A ``/proc/PID/status`` memory field (``VmRSS``, ``VmHWM``) in KiB; 0 when unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class PeakRss:
    """The server's peak RSS over one run of the client.

    The kernel's own high-water mark (``VmHWM``) is reset first by writing 5 to
    ``/proc/PID/clear_refs``, so the peak is this run's; where that is not allowed, ``VmRSS`` is
    sampled every 20 ms instead. Summed over the server's process tree.
    """

    def __init__(self, pid: int) -> None:
        self.pids = process_tree(pid)
        self.reset = True
        for p in self.pids:
            try:
                with open(f"/proc/{p}/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                self.reset = False
        self.sampled = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.sampled = max(self.sampled, sum(status_kib(p, "VmRSS") for p in self.pids))

    def stop(self) -> int:
        """Stop sampling; the peak in KiB."""
        self._stop.set()
        self._thread.join()
        hwm = sum(status_kib(p, "VmHWM") for p in self.pids) if self.reset else 0
        return max(hwm, self.sampled)


# ---------------------------------------------------------------------------- one measurement


def run_client(
    client: Path, server: Server, scenario: Scenario, running: Running, args: argparse.Namespace
) -> dict[str, Any]:
    """Run the load client once and return its JSON report (or a synthetic failure report).

    The report gains ``server_rss_peak_kib``: the server's peak RSS during the run.
    """
    cmd = [*pin_prefix(args.pin, "client", args.cpu), str(client), "--port", str(running.port)]
    cmd += ["--duration", str(args.duration), "--warmup", str(args.warmup)]
    if scenario.kind == "channel":
        cmd += ["--wire", server.wire, "--path", server.wire_path]
    cmd += list(scenario.client)  # a scenario may override the warm-up (later flags win)
    if server.raw:
        cmd.append("--raw")
    # Opening 10,000 connections to a slow server takes a while; a round of a burst too.
    timeout = args.duration + args.warmup + 60 + scenario.conns / 100
    peak = PeakRss(running.proc.pid)
    try:
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        peak.stop()
        return {"ok": False, "fatal": True, "error": f"load client timed out after {timeout:.0f} s"}
    rss = peak.stop()
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {
            "ok": False,
            "fatal": True,
            "error": f"no report (status {done.returncode}) {done.stderr[-200:]}",
        }
    report: dict[str, Any] = json.loads(lines[-1])
    report["server_rss_peak_kib"] = rss
    return report


@dataclass
class Cell:
    """Every repetition of one scenario on one server."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    def good(self) -> list[dict[str, Any]]:
        """Runs that produced a measurement (corrupt ones included: they are flagged, not hidden)."""
        return [r for r in self.runs if not r.get("fatal") and r.get("messages", 0) > 0]

    def median(self, key: str) -> float | None:
        """Median of ``key`` over the measured runs."""
        vals = [float(r[key]) for r in self.good() if key in r]
        return statistics.median(vals) if vals else None

    def corruption(self) -> tuple[int, int, int]:
        """(corrupt messages, corrupt bytes, header+protocol errors) summed over all runs."""
        msgs = sum(int(r.get("corrupt_messages", 0)) for r in self.runs)
        byts = sum(int(r.get("corrupt_bytes", 0)) for r in self.runs)
        errs = sum(int(r.get("header_errors", 0)) + int(r.get("protocol_errors", 0)) for r in self.runs)
        return msgs, byts, errs

    def errors(self) -> list[str]:
        """Distinct error strings reported by the client."""
        seen: list[str] = []
        for r in self.runs:
            e = r.get("error") or ""
            if e and e not in seen:
                seen.append(e)
        return seen


# ---------------------------------------------------------------------------- formatting


def fmt_rate(v: float | None) -> str:
    """Messages per second, readable."""
    if v is None:
        return "—"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e4:
        return f"{v / 1e3:.0f}k"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    """``a / b`` as ``0.87×``."""
    if a is None or not b:
        return "—"
    return f"{a / b:.2f}×"


def fmt_us(v: float | None) -> str:
    """Microseconds, or milliseconds when large."""
    if v is None:
        return "—"
    return f"{v / 1e3:.1f} ms" if v >= 10_000 else f"{v:.0f} µs"


def check_text(cell: Cell) -> tuple[str, bool]:
    """The data-check column and whether the cell is loudly bad."""
    msgs, byts, errs = cell.corruption()
    errors = cell.errors()
    checked = sum(int(r.get("checked_messages", 0)) for r in cell.runs)
    if msgs or byts or errs:
        text = f"**CORRUPT: {msgs} msgs, {byts} bytes**"
        if errs:
            text += f" ({errs} header/protocol errors)"
        return text, True
    if errors:
        return f"**FAILED**: {errors[0][:90]}", True
    return f"ok ({checked:,} msgs)", False


def cpu_model() -> str:
    """The CPU's model name, from ``lscpu`` (``/proc/cpuinfo`` when lscpu is missing)."""
    try:
        done = subprocess.run(
            ["lscpu"],
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
            env=dict(os.environ, LC_ALL="C"),
        )
        for line in done.stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


PEER_DISTRIBUTIONS = (
    "picows",
    "websockets",
    "aiohttp",
    "uvloop",
    "socketify",
    "python-socketio",
    "python-engineio",
)


def machine_info() -> dict[str, str]:
    """nproc, CPU model, kernel, Python and library versions (as installed, without importing them)."""
    versions = []
    for dist in PEER_DISTRIBUTIONS:
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist} missing")
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "libs": ", ".join(versions),
    }


def zzz_info(python: str) -> str:
    """zzz's version and core implementation, or why it cannot be imported."""
    code = "import zzz, zzz.core as c; print(getattr(zzz, '__version__', '?'), c.IMPLEMENTATION)"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    try:
        done = subprocess.run(
            [python, "-c", code], check=False, capture_output=True, text=True, env=env, cwd=ROOT, timeout=30
        )
    except subprocess.TimeoutExpired:
        return "import timed out"
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()
        return f"not importable ({tail[-1] if tail else 'error'})"
    version, impl = (done.stdout.split() + ["?", "?"])[:2]
    return f"zzz {version}, core {impl}"


def fmt_mib(kib: float | None) -> str:
    """KiB as MiB, or a dash."""
    return "—" if not kib else f"{kib / 1024:.0f} MiB"


def ratio_of(
    results: dict[tuple[str, str], Cell], server: str, scenario: str, ref_server: str, ref_scenario: str
) -> float | None:
    """Median of (server, scenario) over median of (ref_server, ref_scenario), when both ran."""
    a, b = results.get((server, scenario)), results.get((ref_server, ref_scenario))
    if a is None or b is None:
        return None
    ma, mb = a.median("msgs_per_s"), b.median("msgs_per_s")
    if ma is None or not mb:
        return None
    return ma / mb


def render_targets(results: dict[tuple[str, str], Cell], scenarios: list[Scenario]) -> list[str]:
    """The issue #14 targets that this run can judge: one line each, met or missed by how much."""
    titles = {sc.key: sc.title for sc in SCENARIOS}
    ran = {sc.key for sc in scenarios}
    lines = ["| row | ratio of medians | measured | target | verdict |", "|---|---|--:|--:|---|"]
    for t in TARGETS:
        if t.scenario not in ran:
            continue
        row = titles[t.scenario]
        if t.rss_max_mib is not None:
            cell = results.get((t.server, t.scenario))
            kib = cell.median("server_rss_peak_kib") if cell else None
            if not kib:
                lines.append(
                    f"| {row} | {t.server} peak RSS | — | < {t.rss_max_mib:.0f} MiB | not measured |"
                )
                continue
            mib = kib / 1024
            verdict = "met" if mib < t.rss_max_mib else f"missed by {mib - t.rss_max_mib:.0f} MiB"
            lines.append(
                f"| {row} | {t.server} peak RSS | {mib:.0f} MiB | < {t.rss_max_mib:.0f} MiB | {verdict} |"
            )
            continue
        ref_sc = t.ref_scenario or t.scenario
        what = f"{t.server} / {t.ref_server}" + (f" ({ref_sc})" if t.ref_scenario else "")
        r = ratio_of(results, t.server, t.scenario, t.ref_server, ref_sc)
        goal = f"≥ {t.minimum:.2f}×" if t.minimum is not None else "—"
        if r is None:
            lines.append(f"| {row} | {what} | — | {goal} | not measured (a row is missing) |")
            continue
        assert t.minimum is not None
        verdict = "met" if r >= t.minimum else f"missed by {100 * (t.minimum - r) / t.minimum:.0f} %"
        lines.append(f"| {row} | {what} | {r:.2f}× | {goal} | {verdict} |")
    return lines if len(lines) > 2 else []


def render(
    results: dict[tuple[str, str], Cell],
    servers: list[Server],
    scenarios: list[Scenario],
    start_failures: dict[str, str],
    args: argparse.Namespace,
    started: datetime.datetime,
    elapsed: float,
    skipped: dict[str, str] | None = None,
) -> tuple[str, list[str]]:
    """The whole report as Markdown, and the list of loud problems."""
    info = machine_info()
    out: list[str] = []
    problems: list[str] = []
    out.append(f"# Echo and fan-out benchmark — {started:%Y-%m-%d %H:%M} — {info['cpu']}")
    out.append("")
    out.append(f"- command: `{' '.join(shlex.quote(a) for a in sys.argv)}`")
    out.append(f"- machine: {info['nproc']} CPUs, {info['cpu']}, Linux {info['kernel']}")
    out.append(f"- Python {info['python']}; {info['libs']}; {zzz_info(args.python)}")
    other = (args.cpu + 1) % (os.cpu_count() or 1)
    pin = {
        "same": f"server and client both on CPU {args.cpu} (`taskset -c {args.cpu}`)",
        "split": f"server CPU {args.cpu}, client CPU {other}",
        "none": "not pinned",
    }[args.pin]
    out.append(
        f"- repetitions: {args.reps} of the request/response rows, {args.reps_other} of the others; "
        f"{args.duration:g} s measured after {args.warmup:g} s warm-up; server order rotated "
        f"each repetition; {pin}; total {elapsed / 60:.1f} min"
    )
    out.append("")
    out.append(
        "| scenario | server | msgs/s (median) | min–max | vs picows | vs raw | vs socketify | "
        "RTT mean / p99 (median) | MB/s | server RSS peak | client CPU | data check |"
    )
    out.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
    for sc in scenarios:
        if skipped and sc.key in skipped:
            out.append(
                f"| {sc.title} | — | — | — | — | — | — | — | — | — | — | **skipped**: {skipped[sc.key]} |"
            )
            continue
        for srv in servers:
            if not applies(srv, sc):
                continue
            if srv.name in start_failures:
                out.append(
                    f"| {sc.title} | {srv.name} | — | — | — | — | — | — | — | — | — | "
                    f"**{srv.name}: failed to start** |"
                )
                continue
            cell = results.get((srv.name, sc.key))
            if cell is None or not cell.runs:
                continue
            rates = [float(r["msgs_per_s"]) for r in cell.good()]
            med = cell.median("msgs_per_s")
            pic = results.get(("picows", sc.key))
            raw = results.get((sc.ceiling, sc.key))
            sfy = results.get(("socketify+deflate" if sc.deflate else "socketify", sc.key))
            vs_p = (
                fmt_ratio(med, pic.median("msgs_per_s") if pic else None) if srv.name != "picows" else "1.00×"
            )
            vs_r = fmt_ratio(med, raw.median("msgs_per_s") if raw else None)
            vs_s = fmt_ratio(med, sfy.median("msgs_per_s") if sfy else None)
            rng = f"{fmt_rate(min(rates))}–{fmt_rate(max(rates))}" if rates else "—"
            if sc.fanout:
                rtt = f"all got it in {fmt_us(cell.median('rtt_mean_us'))} / {fmt_us(cell.median('rtt_p99_us'))}"
            elif sc.kind == "check":
                rtt = "—"
            else:
                rtt = f"{fmt_us(cell.median('rtt_mean_us'))} / {fmt_us(cell.median('rtt_p99_us'))}"
            mbs = cell.median("mbytes_per_s")
            cpu = cell.median("client_cpu_pct")
            rss = cell.median("server_rss_peak_kib")
            check, bad = check_text(cell)
            if bad:
                problems.append(f"{srv.name} / {sc.title}: {check.replace('**', '')}")
                for err in cell.errors():
                    problems.append(f"    {err}")
            if sc.deflate:
                negotiated = [r for r in cell.good() if r.get("deflate")]
                if cell.good() and not negotiated:
                    check += " (deflate NOT negotiated)"
                elif any("server_no_context_takeover" in str(r.get("extensions", "")) for r in negotiated):
                    check += " · server_no_context_takeover"
            out.append(
                f"| {sc.title} | {srv.name} | {fmt_rate(med)} | {rng} | {vs_p} | {vs_r} | {vs_s} | {rtt} | "
                f"{'—' if mbs is None else f'{mbs:.1f}'} | {fmt_mib(rss)} | "
                f"{'—' if cpu is None else f'{cpu:.0f} %'} | {check} |"
            )
    out.append("")
    out.append(
        "msgs/s counts echoed messages; for broadcast and channel fan-out rows it counts deliveries "
        "(connections × messages per round). RTT is from queuing a message to having checked its "
        "whole echo; with 100 in flight it includes the queue; for fan-out, from the publisher's "
        "write to the last receiver's check. vs picows / vs raw / vs socketify divide medians; raw "
        "is the row's ceiling (the byte echo, or the raw fan-out server for broadcast rows). server "
        "RSS peak is the server's high-water mark during the run (from /proc). client CPU is the load "
        "client's share of one core while measuring (pinned to the same core, the server gets the "
        "rest). Every echoed byte and every delivery (content and order) is checked; **CORRUPT** or "
        "**FAILED** rows are listed below."
    )
    targets = render_targets(results, scenarios)
    if targets:
        out.append("")
        out.append("## Issue #14 targets")
        out.append("")
        out.extend(targets)
    if start_failures:
        out.append("")
        for name, why in start_failures.items():
            out.append(f"- {name}: failed to start — {why}")
    if problems:
        out.append("")
        out.append("## Problems")
        out.append("")
        out.extend(f"- {p}" if not p.startswith("    ") else f"  - {p.strip()}" for p in problems)
    return "\n".join(out) + "\n", problems


# ---------------------------------------------------------------------------- self-test

# fault -> whether the client must flag it (the legal ones must pass without a complaint)
FAULTS = {
    "none": False,
    "fragment": False,
    "ping": False,
    "flip": True,
    "opcode": True,
    "truncate": True,
    "nonminimal": True,
}


# fan-out: (wire, mode, fault) -> whether the client must flag it
FANOUT_FAULTS: list[tuple[str, str, str, bool]] = [
    *[
        (wire, "bcast", fault, fault not in ("none", "reencode"))
        for wire in ("ws", "phoenix", "phoenix+meta", "socketio")
        for fault in ("none", "reencode", "flip", "drop", "dup", "swap")
    ],
    *[(wire, "rr", fault, fault == "flip") for wire in ("phoenix", "socketio") for fault in ("none", "flip")],
]


def self_test(client: Path, python: str, out: Any = sys.stdout) -> int:
    """Run the client against the faulty servers and check it flags exactly the faults.

    ``server_faulty.py`` breaks echoes; ``server_faulty_fanout.py`` breaks one receiver's
    deliveries (a changed byte, a lost, repeated or swapped message) on each broadcast wire and
    varies them legally (JSON written another way, fragmented frames).

    Returns:
        0 when every fault was caught and every legal variation accepted, 1 otherwise.
    """
    failed = 0
    for fault, must_flag in FAULTS.items():
        srv = Server(f"faulty-{fault}", "server_faulty.py", ("--fault", fault))
        running = start_server(srv, python, "none", REPORTS / "bench-logs" / f"faulty-{fault}.log")
        if isinstance(running, str):
            print(f"{fault:12} server failed to start: {running}", file=out)
            failed += 1
            continue
        try:
            cmd = [
                str(client),
                "--port",
                str(running.port),
                "--mode",
                "mixed",
                "--count",
                "240",
                "--inflight",
                "8",
                "--warmup",
                "0",
            ]
            done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)
            report = json.loads(done.stdout.strip().splitlines()[-1])
        finally:
            stop_server(running)
        flagged = not report.get("ok", False)
        good = flagged == must_flag and report.get("checked_messages") == 240
        failed += not good
        print(
            f"{fault:12} {'flagged' if flagged else 'accepted'}: {report.get('corrupt_messages')} corrupt msgs, "
            f"{report.get('corrupt_bytes')} bytes, {report.get('header_errors')} header errors "
            f"-> {'ok' if good else 'WRONG'}",
            file=out,
        )
    for entry, mode, fault, must_flag in FANOUT_FAULTS:
        name = f"faulty-fanout-{entry}-{mode}-{fault}"
        # phoenix+meta: the Phoenix wire with a history position on every broadcast (zzz history)
        wire, meta = entry.removesuffix("+meta"), entry.endswith("+meta")
        srv = Server(
            name,
            "server_faulty_fanout.py",
            ("--wire", wire, "--fault", fault) + (("--meta",) if meta else ()),
        )
        label = f"{entry} {mode} {fault}"
        running = start_server(srv, python, "none", REPORTS / "bench-logs" / f"{name}.log")
        if isinstance(running, str):
            print(f"{label:28} server failed to start: {running}", file=out)
            failed += 1
            continue
        path = {"ws": "/", "phoenix": CHANNEL_TOPIC_PATH, "socketio": SOCKETIO_PATH}[wire]
        cmd = [str(client), "--port", str(running.port), "--wire", wire, "--path", path, "--mode", mode]
        cmd += ["--conns", "20", "--burst", "3", "--size", "64", "--duration", "0.3", "--warmup", "0"]
        cmd += ["--stall", "3"]
        try:
            done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)
            lines = done.stdout.strip().splitlines()
            report = json.loads(lines[-1]) if lines else {"ok": False, "fatal": True}
        finally:
            stop_server(running)
        flagged = not report.get("ok", False)
        # Enough deliveries that the faults (from the 30th message on) were reached.
        good = flagged == must_flag and not report.get("fatal") and report.get("checked_messages", 0) >= 600
        failed += not good
        print(
            f"{label:28} {'flagged' if flagged else 'accepted'}: {report.get('checked_messages')} checked, "
            f"{report.get('corrupt_messages')} corrupt, {report.get('protocol_errors')} order/protocol errors "
            f"-> {'ok' if good else 'WRONG'}",
            file=out,
        )
    return 1 if failed else 0


# ---------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; see ``--help``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--quick", action="store_true", help="smoke test: 1 repetition, 1 s, a subset of scenarios"
    )
    p.add_argument(
        "--self-test",
        action="store_true",
        help="check the load client against a deliberately faulty server, then exit",
    )
    p.add_argument("--no-self-test", action="store_true", help="skip the self-test a full run starts with")
    p.add_argument("--reps", type=int, help="repetitions of the request/response rows (default 5; quick 1)")
    p.add_argument("--reps-other", type=int, help="repetitions of the other rows (default 3; quick 1)")
    p.add_argument("--duration", type=float, help="measured seconds per run (default 2; quick 1)")
    p.add_argument("--warmup", type=float, help="warm-up seconds before measuring (default 0.5; quick 0.2)")
    p.add_argument("--servers", help="comma-separated server names (default: all)")
    p.add_argument(
        "--scenarios",
        help="comma-separated scenario keys (default: all; --list shows them), e.g. bcast-1000,burst10-1000",
    )
    p.add_argument("--list", action="store_true", help="list the servers and scenario keys, then exit")
    p.add_argument(
        "--pin",
        choices=("same", "split", "none"),
        default="same",
        help="same: server and client on CPU 0 (default, steadiest on 2 cores); split: CPU 0 / CPU 1",
    )
    p.add_argument(
        "--cpu", type=int, default=0, help="the CPU to pin to (default 0; split: this and the next)"
    )
    p.add_argument("--python", default=sys.executable, help="interpreter for the servers")
    p.add_argument("--cc", default=os.environ.get("CC", "cc"), help="C compiler for the load client")
    p.add_argument("--output", type=Path, default=REPORTS / "bench-latest.md")
    args = p.parse_args(argv)
    # --quick: short defaults; whatever was given explicitly still wins.
    defaults = {"reps": 5, "reps_other": 3, "duration": 2.0, "warmup": 0.5}
    if args.quick:
        defaults = {"reps": 1, "reps_other": 1, "duration": 1.0, "warmup": 0.2}
        if not args.scenarios:
            args.scenarios = ",".join(QUICK_SCENARIOS)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def run_session(
    client: Path,
    srv: Server,
    todo: list[Scenario],
    rep: int,
    reps: int,
    results: dict[tuple[str, str], Cell],
    start_failures: dict[str, str],
    logs: Path,
    args: argparse.Namespace,
) -> None:
    """Start ``srv`` once and run the scenarios ``todo`` against it, one after the other."""
    print(f"[rep {rep + 1}/{reps}] {srv.name}: {', '.join(sc.key for sc in todo)}", file=sys.stderr)
    log = logs / f"{srv.name.replace(' ', '_').replace('+', '_')}-{rep + 1}-{todo[0].key}.log"
    running = start_server(srv, args.python, args.pin, log, args.cpu)
    if isinstance(running, str):
        # Reported as "<name>: failed to start"; not retried (it would fail the same way).
        print(f"  {srv.name}: failed to start: {running}", file=sys.stderr)
        start_failures[srv.name] = running
        return
    try:
        for sc in todo:
            cell = results.setdefault((srv.name, sc.key), Cell())
            if running.proc.poll() is not None:
                cell.runs.append(
                    {"ok": False, "fatal": True, "error": f"server died: {last_line(running.log)}"}
                )
                continue
            report = run_client(client, srv, sc, running, args)
            cell.runs.append(report)
            bad = not report.get("ok", False)
            print(
                f"  {sc.key:18} {fmt_rate(report.get('msgs_per_s')):>8} msgs/s"
                f"  rss {fmt_mib(report.get('server_rss_peak_kib'))}"
                f"{'  ' + (report.get('error') or 'CORRUPT') if bad else ''}",
                file=sys.stderr,
            )
    finally:
        stop_server(running)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 1 when zzz corrupted data or failed a check."""
    args = parse_args(argv)
    if args.list:
        for sc in SCENARIOS:
            on = ", ".join(srv.name for srv in SERVERS if applies(srv, sc))
            print(f"{sc.key:20} {sc.title}  [{on}]")
        return 0
    servers = SERVERS
    if args.servers:
        wanted = [s.strip() for s in args.servers.split(",")]
        unknown = set(wanted) - {s.name for s in SERVERS}
        if unknown:
            sys.exit(f"unknown servers {sorted(unknown)}; known: {[s.name for s in SERVERS]}")
        servers = [s for s in SERVERS if s.name in wanted]
    scenarios = SCENARIOS
    if args.scenarios:
        keys = [s.strip() for s in args.scenarios.split(",")]
        unknown = set(keys) - {s.key for s in SCENARIOS}
        if unknown:
            sys.exit(f"unknown scenarios {sorted(unknown)}; known: {[s.key for s in SCENARIOS]}")
        scenarios = [s for s in SCENARIOS if s.key in keys]
    client, has_zlib = build_client(args.cc)
    if args.self_test:
        return self_test(client, args.python)
    if not args.quick and not args.no_self_test:
        # A checker that misses corruption would make every "ok" below meaningless.
        print("self-test of the load client's checker:", file=sys.stderr)
        if self_test(client, args.python, sys.stderr):
            sys.exit("the load client failed its self-test; not benchmarking with it")
    if not has_zlib:
        scenarios = [s for s in scenarios if not s.deflate]
    # 10,000 connections need as many descriptors in the client and in the server: raise the
    # limit here (the children inherit it) and leave out, with the reason, what still cannot run.
    limit = raise_fd_limit(max(fds_needed(sc) for sc in scenarios))
    skipped = {
        sc.key: f"needs RLIMIT_NOFILE ≥ {fds_needed(sc)}, the limit here is {limit}"
        for sc in scenarios
        if fds_needed(sc) > limit
    }
    for key, why in skipped.items():
        print(f"skipping {key}: {why}", file=sys.stderr)
    runnable = [sc for sc in scenarios if sc.key not in skipped]
    servers = [s for s in servers if any(applies(s, sc) for sc in runnable)]

    started = datetime.datetime.now()
    t0 = time.monotonic()
    logs = REPORTS / "bench-logs"
    results: dict[tuple[str, str], Cell] = {}
    start_failures: dict[str, str] = {}
    reps = max(args.reps, args.reps_other)
    for rep in range(reps):
        k = rep % len(servers)
        order = servers[k:] + servers[:k]  # each server sees the machine's drift from every position
        for srv in order:
            todo = [
                sc
                for sc in runnable
                if applies(srv, sc) and rep < (args.reps if sc.main else args.reps_other)
            ]
            # One server process for the ordinary rows, one of its own for each "fresh" row.
            sessions = [[sc for sc in todo if not sc.fresh]] + [[sc] for sc in todo if sc.fresh]
            for session in sessions:
                if session and srv.name not in start_failures:
                    run_session(client, srv, session, rep, reps, results, start_failures, logs, args)
    elapsed = time.monotonic() - t0
    text, problems = render(results, servers, scenarios, start_failures, args, started, elapsed, skipped)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    print(f"written to {args.output}", file=sys.stderr)
    zzz_bad = [p for p in problems if p.startswith("zzz")]
    if zzz_bad:
        print("zzz FAILED a data check:\n  " + "\n  ".join(zzz_bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
