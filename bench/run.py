"""The end-to-end echo benchmark: zzz against picows, aiohttp, websockets and a raw byte echo.

Builds the C load client, runs each server alone (order rotating every repetition), checks
every echoed byte, and prints one Markdown table, also written to ``reports/bench-latest.md``.
``make bench`` runs ``python bench/run.py``; ``--quick`` is a one-minute smoke test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SCENARIOS", "SERVERS", "Scenario", "Server", "main"]

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
        raw: a plain byte echo (the client runs with ``--raw``; no WebSocket scenarios that need
            a real server, such as broadcast).
        deflate: this entry runs the compression scenarios only (and only those).
        env: extra environment variables for the server process.
        only: when not empty, the scenario keys this entry runs (the others are skipped).
    """

    name: str
    script: str
    args: tuple[str, ...] = ()
    raw: bool = False
    deflate: bool = False
    env: tuple[tuple[str, str], ...] = ()
    only: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scenario:
    """One load pattern.

    Attributes:
        key: short name used on the command line (``--scenarios``).
        title: the row label.
        client: arguments for the load client.
        kind: ``rr`` (round trips; RTT is shown), ``bcast`` (fan-out), ``check`` (correctness run
            with a fixed message count) or ``bulk`` (pipelined throughput).
        main: repeated ``--reps`` times (otherwise ``--reps-other`` times).
        deflate: a compression scenario (runs on the ``deflate`` server entries only).
    """

    key: str
    title: str
    client: tuple[str, ...]
    kind: str = "rr"
    main: bool = True
    deflate: bool = False


SERVERS: list[Server] = [
    Server("raw uvloop", "server_raw.py", raw=True),
    Server("picows", "server_picows.py"),
    Server("aiohttp", "server_aiohttp.py"),
    Server("websockets", "server_websockets.py"),
    Server("zzz", "server_zzz.py"),
    Server("websockets+deflate", "server_websockets.py", ("--compression",), deflate=True),
    Server("zzz+deflate", "server_zzz.py", ("--compression",), deflate=True),
    # The pure-Python twin (what runs where the extension is not built), for the issue's
    # "no slower than websockets" rows.
    Server(
        "zzz twin",
        "server_zzz.py",
        env=(("ZZZ_NO_EXTENSIONS", "1"),),
        only=("rr-32", "rr-1k", "pipe-32", "pipe-1k"),
    ),
]

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
        ("--mode", "bcast", "--path", "/broadcast", "--conns", "1000", "--size", "64"),
        kind="bcast",
        main=False,
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
    "mixed",
    "deflate-rr-1k",
)


def applies(server: Server, scenario: Scenario) -> bool:
    """Whether ``scenario`` runs on ``server``: deflate rows only on deflate entries; no broadcast on raw."""
    if server.only and scenario.key not in server.only:
        return False
    if server.deflate != scenario.deflate:
        return False
    return not (server.raw and scenario.kind == "bcast")


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


# ---------------------------------------------------------------------------- one measurement


def run_client(
    client: Path, server: Server, scenario: Scenario, port: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Run the load client once and return its JSON report (or a synthetic failure report)."""
    cmd = [*pin_prefix(args.pin, "client", args.cpu), str(client), "--port", str(port)]
    cmd += ["--duration", str(args.duration), "--warmup", str(args.warmup)]
    cmd += list(scenario.client)  # a scenario may override the warm-up (later flags win)
    if server.raw:
        cmd.append("--raw")
    timeout = args.duration + args.warmup + 60
    try:
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "fatal": True, "error": f"load client timed out after {timeout:.0f} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {
            "ok": False,
            "fatal": True,
            "error": f"no report (status {done.returncode}) {done.stderr[-200:]}",
        }
    report: dict[str, Any] = json.loads(lines[-1])
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


def machine_info() -> dict[str, str]:
    """nproc, CPU model, kernel, Python and library versions."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for mod in ("picows", "websockets", "aiohttp", "uvloop"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except Exception:  # noqa: BLE001 - a missing peer is reported, not fatal
            versions.append(f"{mod} missing")
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
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


def render(
    results: dict[tuple[str, str], Cell],
    servers: list[Server],
    scenarios: list[Scenario],
    start_failures: dict[str, str],
    args: argparse.Namespace,
    started: datetime.datetime,
    elapsed: float,
) -> tuple[str, list[str]]:
    """The whole report as Markdown, and the list of loud problems."""
    info = machine_info()
    out: list[str] = []
    problems: list[str] = []
    out.append(f"# Echo benchmark — {started:%Y-%m-%d %H:%M}")
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
        "| scenario | server | msgs/s (median) | min–max | vs picows | vs raw | "
        "RTT mean / p99 (median) | MB/s | client CPU | data check |"
    )
    out.append("|---|---|--:|--:|--:|--:|--:|--:|--:|---|")
    for sc in scenarios:
        for srv in servers:
            if not applies(srv, sc):
                continue
            if srv.name in start_failures:
                out.append(
                    f"| {sc.title} | {srv.name} | — | — | — | — | — | — | — | "
                    f"**{srv.name}: failed to start** |"
                )
                continue
            cell = results.get((srv.name, sc.key))
            if cell is None or not cell.runs:
                continue
            rates = [float(r["msgs_per_s"]) for r in cell.good()]
            med = cell.median("msgs_per_s")
            pic = results.get(("picows", sc.key))
            raw = results.get(("raw uvloop", sc.key))
            vs_p = (
                fmt_ratio(med, pic.median("msgs_per_s") if pic else None) if srv.name != "picows" else "1.00×"
            )
            vs_r = fmt_ratio(med, raw.median("msgs_per_s") if raw else None)
            rng = f"{fmt_rate(min(rates))}–{fmt_rate(max(rates))}" if rates else "—"
            if sc.kind == "bcast":
                rtt = f"all got it in {fmt_us(cell.median('rtt_mean_us'))} / {fmt_us(cell.median('rtt_p99_us'))}"
            elif sc.kind == "check":
                rtt = "—"
            else:
                rtt = f"{fmt_us(cell.median('rtt_mean_us'))} / {fmt_us(cell.median('rtt_p99_us'))}"
            mbs = cell.median("mbytes_per_s")
            cpu = cell.median("client_cpu_pct")
            check, bad = check_text(cell)
            if bad:
                problems.append(f"{srv.name} / {sc.title}: {check.replace('**', '')}")
                for err in cell.errors():
                    problems.append(f"    {err}")
            if sc.deflate:
                negotiated = [r for r in cell.good() if r.get("deflate")]
                if cell.good() and not negotiated:
                    check += " (deflate NOT negotiated)"
            out.append(
                f"| {sc.title} | {srv.name} | {fmt_rate(med)} | {rng} | {vs_p} | {vs_r} | {rtt} | "
                f"{'—' if mbs is None else f'{mbs:.1f}'} | {'—' if cpu is None else f'{cpu:.0f} %'} | {check} |"
            )
    out.append("")
    out.append(
        "msgs/s counts echoed messages (broadcast: deliveries, i.e. 1000 per round). "
        "RTT is from queuing a message to having checked its whole echo; with 100 in flight it "
        "includes the queue. vs picows / vs raw divide medians. client CPU is the load client's "
        "share of one core while measuring (pinned to the same core, the server gets the rest). "
        "Every echoed byte is compared with what was sent; **CORRUPT** or **FAILED** rows are "
        "listed below."
    )
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


def self_test(client: Path, python: str, out: Any = sys.stdout) -> int:
    """Run the client against ``server_faulty.py`` and check it flags exactly the faults.

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
    p.add_argument("--reps", type=int, default=5, help="repetitions of the request/response rows (default 5)")
    p.add_argument("--reps-other", type=int, default=3, help="repetitions of the other rows (default 3)")
    p.add_argument("--duration", type=float, default=2.0, help="measured seconds per run (default 2)")
    p.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds before measuring (default 0.5)")
    p.add_argument("--servers", help="comma-separated server names (default: all)")
    p.add_argument("--scenarios", help="comma-separated scenario keys (default: all)")
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
    if args.quick:
        args.reps = args.reps_other = 1
        args.duration = 1.0
        args.warmup = 0.2
        if not args.scenarios:
            args.scenarios = ",".join(QUICK_SCENARIOS)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 1 when zzz corrupted data or failed a check."""
    args = parse_args(argv)
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
    servers = [s for s in servers if any(applies(s, sc) for sc in scenarios)]

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
                for sc in scenarios
                if applies(srv, sc) and rep < (args.reps if sc.main else args.reps_other)
            ]
            if not todo or srv.name in start_failures:
                continue
            print(f"[rep {rep + 1}/{reps}] {srv.name}: {', '.join(sc.key for sc in todo)}", file=sys.stderr)
            log = logs / f"{srv.name.replace(' ', '_').replace('+', '_')}-{rep + 1}.log"
            running = start_server(srv, args.python, args.pin, log, args.cpu)
            if isinstance(running, str):
                # Reported as "<name>: failed to start"; not retried (it would fail the same way).
                print(f"  {srv.name}: failed to start: {running}", file=sys.stderr)
                start_failures[srv.name] = running
                continue
            try:
                for sc in todo:
                    cell = results.setdefault((srv.name, sc.key), Cell())
                    if running.proc.poll() is not None:
                        cell.runs.append(
                            {"ok": False, "fatal": True, "error": f"server died: {last_line(running.log)}"}
                        )
                        continue
                    report = run_client(client, srv, sc, running.port, args)
                    cell.runs.append(report)
                    bad = not report.get("ok", False)
                    print(
                        f"  {sc.key:16} {fmt_rate(report.get('msgs_per_s')):>8} msgs/s"
                        f"{'  ' + (report.get('error') or 'CORRUPT') if bad else ''}",
                        file=sys.stderr,
                    )
            finally:
                stop_server(running)
    elapsed = time.monotonic() - t0
    text, problems = render(results, servers, scenarios, start_failures, args, started, elapsed)
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
