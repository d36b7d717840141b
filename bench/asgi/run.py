"""The ASGI WebSocket benchmark: one FastAPI echo app on uvicorn (three WebSocket
implementations), hypercorn, granian and, once issue 17 is built, zzz.

Reuses the echo benchmark's C load client and its helpers (``bench/run.py``) for throughput at
1 and 100 messages in flight, 32 B and 1 KiB, and ``bench/memory.py`` for the memory per
connection, with and without permessage-deflate; both are imported, not changed. The servers
run one at a time, their order rotated every repetition. Prints one Markdown table (also
written to ``reports/bench-asgi-latest.md``) with a zzz / best-uvicorn column.

    python bench/asgi/run.py                 # full run (minutes; not on a shared machine)
    python bench/asgi/run.py --quick         # smoke test
    python bench/asgi/run.py --servers uvicorn-wsproto,granian --connections 2000

To add zzz: put ``"zzz"`` in ``SERVERS`` (``bench/asgi/serve.py`` already knows how to start it).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import memory as bench_memory  # bench/memory.py; it imports bench/run.py as "run"

# bench/run.py, the very module memory.py uses (typed Any: mypy would take this file for "run").
bench_run: Any = bench_memory.bench_run

__all__ = ["MEMORY_ROWS", "SCENARIO_KEYS", "SERVERS", "main"]

SERVE = HERE / "serve.py"

# The servers of the table, in column order.
SERVERS: list[str] = [
    "uvicorn-websockets",
    "uvicorn-websockets-sansio",
    "uvicorn-wsproto",
    "hypercorn",
    "granian",
    "zzz",
]
UVICORNS = [s for s in SERVERS if s.startswith("uvicorn")]
# The two uvicorn implementations issue 17 names (``--ws websockets``, ``--ws wsproto``): its
# targets are against the better of them. ``websockets-sansio`` (uvicorn's ``--ws auto`` since
# it exists) has its own column too, in the "any uvicorn" ratio.
ISSUE_UVICORNS = ["uvicorn-websockets", "uvicorn-wsproto"]

# Throughput rows, from bench/run.py's scenarios; the issue's target for zzz / best uvicorn.
SCENARIO_KEYS = {"rr-32": "≥ 1.2×", "rr-1k": "≥ 1.2×", "pipe-32": "≥ 2×", "pipe-1k": "≥ 2×"}


# 4 KiB echoes per connection after the first one: 64 KiB of chat-like text, more than any
# window (32 KiB at most), so that every server's compressor has touched all its zlib state.
FILL = 16


@dataclass(frozen=True)
class MemoryRow:
    """One memory row: compression on or off, and which of memory.py's figures."""

    key: str
    title: str
    deflate: bool
    figure: str  # "per_conn_idle", "per_conn_used" or "per_conn_filled"
    target: str


MEMORY_ROWS = [
    MemoryRow("mem-off-idle", "memory per idle conn, no compression (KiB)", False, "per_conn_idle", ""),
    MemoryRow(
        "mem-deflate-idle", "memory per idle conn, deflate negotiated (KiB)", True, "per_conn_idle", ""
    ),
    MemoryRow(
        "mem-deflate-used",
        "memory per conn after one 1 KiB deflated echo (KiB)",
        True,
        "per_conn_used",
        "",
    ),
    MemoryRow(
        "mem-deflate-filled",
        f"memory per compressing conn, after {FILL} × 4 KiB more (KiB)",
        True,
        "per_conn_filled",
        "≤ 0.5×",
    ),
]


def bench_server(name: str) -> Any:
    """A ``bench/run.py`` Server entry that starts ``serve.py`` for ``name``.

    ``bench/run.py`` runs ``bench/echo/<script>``; an absolute script path is taken as is.
    """
    return bench_run.Server(name, str(SERVE), env=(("ZZZ_ASGI_BENCH_SERVER", name),))


@contextmanager
def server_env(name: str) -> Iterator[None]:
    """Select the server for ``bench/memory.py``, which starts its targets with our environment."""
    old = os.environ.get("ZZZ_ASGI_BENCH_SERVER")
    os.environ["ZZZ_ASGI_BENCH_SERVER"] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ZZZ_ASGI_BENCH_SERVER", None)
        else:
            os.environ["ZZZ_ASGI_BENCH_SERVER"] = old


def cpu_model() -> str:
    """The CPU model as ``lscpu`` names it (``/proc/cpuinfo`` when lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], check=False, capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return str(bench_run.machine_info()["cpu"])


def versions(python: str) -> str:
    """Versions of the peers, from the interpreter that runs the servers."""
    code = (
        "import importlib.metadata as m\n"
        "for d in ('fastapi', 'starlette', 'uvicorn', 'websockets', 'wsproto', 'hypercorn', 'granian', 'uvloop'):\n"
        "    try: print(d, m.version(d))\n"
        "    except m.PackageNotFoundError: print(d, 'missing')\n"
    )
    try:
        out = subprocess.run(
            [python, "-c", code], check=False, capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "versions unknown"
    return ", ".join(out.split("\n")[:-1])


# ---------------------------------------------------------------------------------------- running


def run_throughput(
    servers: list[str], client: Path, args: argparse.Namespace
) -> tuple[dict[tuple[str, str], Any], dict[str, str]]:
    """Every scenario on every server, ``args.reps`` times, server order rotated each time."""
    scenarios = [s for s in bench_run.SCENARIOS if s.key in SCENARIO_KEYS]
    results: dict[tuple[str, str], Any] = {}
    failures: dict[str, str] = {}
    logs = bench_run.REPORTS / "bench-logs"
    for rep in range(args.reps):
        k = rep % len(servers)
        for name in servers[k:] + servers[:k]:
            if name in failures:
                continue
            print(f"[rep {rep + 1}/{args.reps}] {name}", file=sys.stderr, flush=True)
            srv = bench_server(name)
            running = bench_run.start_server(
                srv, args.python, args.pin, logs / f"asgi-{name}-{rep + 1}.log", args.cpu
            )
            if isinstance(running, str):
                print(f"  {name}: failed to start: {running}", file=sys.stderr)
                failures[name] = running
                continue
            try:
                for sc in scenarios:
                    cell = results.setdefault((name, sc.key), bench_run.Cell())
                    if running.proc.poll() is not None:
                        error = f"server died: {bench_run.last_line(running.log)}"
                        cell.runs.append({"ok": False, "fatal": True, "error": error})
                        continue
                    report = bench_run.run_client(client, srv, sc, running, args)
                    cell.runs.append(report)
                    bad = "" if report.get("ok") else "  " + str(report.get("error") or "CORRUPT")
                    print(
                        f"  {sc.key:8} {bench_run.fmt_rate(report.get('msgs_per_s')):>8} msgs/s{bad}",
                        file=sys.stderr,
                    )
            finally:
                bench_run.stop_server(running)
    return results, failures


def run_memory(servers: list[str], args: argparse.Namespace) -> dict[tuple[str, bool], dict[str, Any]]:
    """memory.py's measurement for every server, compression off and on."""
    out: dict[tuple[str, bool], dict[str, Any]] = {}
    for deflate in (False, True):
        for name in servers:
            print(
                f"[memory] {name} ({'deflate' if deflate else 'no compression'})", file=sys.stderr, flush=True
            )
            target = bench_memory.Target(name, str(SERVE), deflate)
            with server_env(name):
                out[(name, deflate)] = bench_memory.measure(
                    target, args.connections, args.python, args.settle, fill=FILL if deflate else 0
                )
            print(f"  {out[(name, deflate)]}", file=sys.stderr)
    return out


# ---------------------------------------------------------------------------------------- table


def throughput_cell(cell: Any) -> tuple[str, float | None]:
    """The median msgs/s (and RTT when one in flight), flagged when the data check failed."""
    if cell is None or not cell.runs:
        return "—", None
    median = cell.median("msgs_per_s")
    text = bench_run.fmt_rate(median)
    check, bad = bench_run.check_text(cell)
    if bad:
        text += f" {check}"
    return text, (None if bad else median)


def memory_cell(result: dict[str, Any] | None, row: MemoryRow) -> tuple[str, float | None]:
    """KiB per connection, flagged when connections failed or deflate was not negotiated."""
    if result is None:
        return "—", None
    if "error" in result:
        return f"**{str(result['error'])[:60]}**", None
    value = float(result[row.figure])
    text = f"{value:.1f}"
    notes = []
    if result["failed"]:
        notes.append(f"**{result['failed']} failed**")
    if result.get("echo_failed"):
        notes.append(f"**{result['echo_failed']} echoes failed**")
    if row.figure == "per_conn_filled" and result.get("fill_failed"):
        notes.append(f"**{result['fill_failed']} connections failed the fill**")
    if row.deflate and result["deflate_negotiated"] != result["opened"]:
        notes.append(
            "no deflate" if not result["deflate_negotiated"] else f"deflate on {result['deflate_negotiated']}"
        )
    if notes:
        text += " (" + ", ".join(notes) + ")"
    clean = not result["failed"] and not result.get("echo_failed")
    if row.figure == "per_conn_filled":
        clean = clean and not result.get("fill_failed")
    negotiated = not row.deflate or result["deflate_negotiated"] == result["opened"]
    return text, (value if clean and negotiated else None)


def ratio(zzz: float | None, uvicorns: list[float | None], higher_is_better: bool) -> str:
    """zzz / best uvicorn (best: the most msgs/s, or the least memory); empty without zzz."""
    known = [v for v in uvicorns if v]
    if zzz is None or not known:
        return ""
    best = max(known) if higher_is_better else min(known)
    return f"{zzz / best:.2f}×"


def render(
    servers: list[str],
    results: dict[tuple[str, str], Any],
    failures: dict[str, str],
    mem: dict[tuple[str, bool], dict[str, Any]],
    args: argparse.Namespace,
    started: datetime.datetime,
    elapsed: float,
) -> str:
    """The report: a header naming the machine and the date, then one table."""
    info = bench_run.machine_info()
    out = [
        f"# ASGI WebSocket benchmark — {started:%Y-%m-%d %H:%M}",
        "",
        f"- CPU: {cpu_model()} ({info['nproc']} CPUs), Linux {info['kernel']}, Python {platform.python_version()}",
        f"- {versions(args.python)}; {bench_run.zzz_info(args.python)}",
        f"- command: `{shlex.join(sys.argv)}`",
        (
            f"- app: bench/asgi/app_fastapi.py (FastAPI WebSocket echo); {args.reps} repetitions of "
            f"{args.duration:g} s after {args.warmup:g} s warm-up, servers rotated each repetition, "
            f"pinning {args.pin}; memory: {args.connections:,} connections (bench/memory.py); "
            f"total {elapsed / 60:.1f} min"
        ),
        "",
        "| scenario | "
        + " | ".join(servers)
        + " | zzz / best of websockets, wsproto | zzz / best uvicorn | target (first ratio) |",
        "|---|" + "--:|" * len(servers) + "--:|--:|---|",
    ]
    titles = {s.key: s.title for s in bench_run.SCENARIOS}
    for key, target in SCENARIO_KEYS.items():
        cells = []
        values: dict[str, float | None] = {}
        for name in servers:
            if name in failures:
                cells.append("**failed to start**")
                values[name] = None
                continue
            text, value = throughput_cell(results.get((name, key)))
            cells.append(text)
            values[name] = value
        ratios = " | ".join(
            ratio(values.get("zzz"), [values.get(u) for u in group if u in values], True)
            for group in (ISSUE_UVICORNS, UVICORNS)
        )
        out.append(f"| {titles[key]} (msgs/s) | " + " | ".join(cells) + f" | {ratios} | {target} |")
    if mem:
        for row in MEMORY_ROWS:
            cells = []
            values = {}
            for name in servers:
                text, value = memory_cell(mem.get((name, row.deflate)), row)
                cells.append(text)
                values[name] = value
            ratios = " | ".join(
                ratio(values.get("zzz"), [values.get(u) for u in group if u in values], False)
                for group in (ISSUE_UVICORNS, UVICORNS)
            )
            out.append(f"| {row.title} | " + " | ".join(cells) + f" | {ratios} | {row.target} |")
    out += [
        "",
        (
            "msgs/s: median over the repetitions of echoed messages per second, every byte checked by "
            "the load client (**CORRUPT** / **FAILED** otherwise). Memory: growth of the server's RSS "
            "divided by the connections (idle: opened, never used). The ratios are zzz over the best "
            "(most msgs/s, least memory) of the two uvicorn implementations issue 17 names, then of "
            "every uvicorn in the table; empty until zzz is in the table."
        ),
    ]
    for name, why in failures.items():
        out.append(f"- {name}: failed to start — {why}")
    return "\n".join(out) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; see ``--help``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke test: 1 repetition of 1 s, 200 connections")
    p.add_argument("--servers", default=",".join(SERVERS), help="comma-separated (default: %(default)s)")
    p.add_argument("--reps", type=int, default=5, help="repetitions of the throughput rows (default 5)")
    p.add_argument("--duration", type=float, default=2.0, help="measured seconds per run (default 2)")
    p.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds (default 0.5)")
    p.add_argument("--connections", type=int, default=5000, help="connections for memory (default 5000)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds before reading RSS (default 1)")
    p.add_argument("--no-memory", action="store_true", help="leave the memory rows out")
    p.add_argument("--pin", choices=("same", "split", "none"), default="same", help="as in bench/run.py")
    p.add_argument("--cpu", type=int, default=0, help="the CPU to pin to (default 0)")
    p.add_argument("--python", default=sys.executable, help="interpreter for the servers")
    p.add_argument("--cc", default=os.environ.get("CC", "cc"), help="C compiler for the load client")
    p.add_argument("--output", type=Path, default=bench_run.REPORTS / "bench-asgi-latest.md")
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.duration, args.warmup, args.connections, args.settle = 1, 1.0, 0.2, 200, 0.5
    known = set(SERVERS) | {"zzz"}
    args.server_list = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.server_list) - known
    if unknown:
        p.error(f"unknown servers {sorted(unknown)}; known: {sorted(known)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 1 when zzz corrupted data or failed to start."""
    args = parse_args(argv)
    client, _ = bench_run.build_client(args.cc)  # no deflate scenarios here: zlib is not needed
    started = datetime.datetime.now()
    t0 = time.monotonic()
    results, failures = run_throughput(args.server_list, client, args)
    mem = {} if args.no_memory else run_memory([s for s in args.server_list if s not in failures], args)
    text = render(args.server_list, results, failures, mem, args, started, time.monotonic() - t0)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    print(f"written to {args.output}", file=sys.stderr)
    zzz_bad = "zzz" in failures or any(
        bench_run.check_text(cell)[1] for (name, _), cell in results.items() if name == "zzz"
    )
    return 1 if zzz_bad else 0


if __name__ == "__main__":
    sys.exit(main())
