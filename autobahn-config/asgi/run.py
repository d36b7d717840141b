"""Autobahn fuzzingclient against ASGI servers serving an echo app (raw ASGI, and FastAPI).

Reuses ``autobahn-config/run.py`` (imported, not changed) for the wstest spec, the processes,
the report reading and the per-section table; adds the ASGI servers and a comparison table.

Examples::

    python autobahn-config/asgi/run.py                                  # every server, both apps
    python autobahn-config/asgi/run.py --servers uvicorn-websockets --apps raw
    python autobahn-config/asgi/run.py --servers uvicorn-wsproto --cases "1.*,12.1.*"

A full run is 517 cases, several minutes per server and app (compression, 12.x and 13.x, is most
of it). To put zzz under test, add its entries to ``SERVERS`` (``zzz_server`` below builds them).
Reports go to ``reports/autobahn/asgi/<server>/<app>/``. The exit status is 0 only when every
run passed the gate of ``autobahn-config/run.py`` (every case OK, or INFORMATIONAL with an OK close).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["APPS", "SERVERS", "AsgiServer", "main", "uvicorn_server", "zzz_server"]

HERE = Path(__file__).resolve().parent
AUTOBAHN_DIR = HERE.parent
REPO = AUTOBAHN_DIR.parent


def _load_base() -> ModuleType:
    # By path: this file is also called run.py, so "import run" would find itself.
    spec = importlib.util.spec_from_file_location("zzz_autobahn_run", AUTOBAHN_DIR / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


# autobahn-config/run.py; its Summary objects are typed Any here (mypy can't see a module loaded by path).
base: Any = _load_base()

# The suite's 9.x cases send messages of up to 16 MiB (see autobahn-config/echo_server.py).
MAX_SIZE = 16 * 2**20

# App name -> MODULE:ATTR in this directory.
APPS: dict[str, str] = {"raw": "echo_raw:app", "fastapi": "echo_fastapi:app"}


@dataclass(frozen=True)
class AsgiServer:
    """One server configuration under test.

    Attributes:
        name: Label, agent name and report directory.
        command: ``(app, host, port) -> argv``.
        env: Extra environment variables.
    """

    name: str
    command: Callable[[str, str, int], list[str]]
    env: dict[str, str] = field(default_factory=dict)


def uvicorn_server(ws: str) -> AsgiServer:
    """uvicorn on WebSocket implementation ``ws``, permessage-deflate on, 16 MiB messages."""

    def command(app: str, host: str, port: int) -> list[str]:
        # Otherwise uvicorn's defaults, keepalive pings included (every 20 s). Not 0 to turn them
        # off: the legacy websockets implementation takes 0 as "ping without pause".
        return [
            sys.executable, "-m", "uvicorn", app, "--host", host, "--port", str(port),
            "--ws", ws, "--ws-max-size", str(MAX_SIZE), "--ws-per-message-deflate", "true",
            "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip

    return AsgiServer(f"uvicorn-{ws}", command)


def zzz_server(impl: str) -> AsgiServer:
    """zzz's ASGI mode (issue 17) on core ``impl`` ("cython" or "python"), with the limits of
    ``autobahn-config/echo_server.py`` (its CLI has no options for them: ``zzz.asgi.serve``)."""

    def command(app: str, host: str, port: int) -> list[str]:
        return [sys.executable, str(HERE / "serve_zzz.py"), app, host, str(port)]

    env = {"ZZZ_AUTOBAHN_IMPL": impl}
    if impl == "python":
        env["ZZZ_NO_EXTENSIONS"] = "1"
    return AsgiServer(f"zzz-{impl}", command, env)


SERVERS: list[AsgiServer] = [
    uvicorn_server("websockets"),
    uvicorn_server("websockets-sansio"),
    uvicorn_server("wsproto"),
    zzz_server("cython"),
    zzz_server("python"),
]


def run_one(server: AsgiServer, app_name: str, args: argparse.Namespace, tmp: Path) -> Any:
    """wstest fuzzingclient against ``server`` serving the ``app_name`` echo app."""
    label = f"{server.name}/{app_name}"
    agent = f"{server.name}-{app_name}"
    outdir = base.fresh_outdir(args.reports / server.name / app_name)
    spec = base.write_spec(AUTOBAHN_DIR / "fuzzingclient.json", outdir, args, agent, tmp)
    cmd = server.command(APPS[app_name], args.host, args.port)
    env = dict(os.environ)
    env.pop("ZZZ_NO_EXTENSIONS", None)
    env.update(server.env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), str(REPO), env.get("PYTHONPATH")) if p)
    if base.port_open(args.host, args.port):
        return base.Summary(label, [], [], f"something already listens on {args.host}:{args.port}")
    server_log = outdir / "server.log"
    wstest_log = outdir / "wstest.log"
    started = time.monotonic()
    with base.background(cmd, server_log, env, HERE) as proc:
        try:
            base.wait_for_port(args.host, args.port, proc, args.start_timeout)
        except RuntimeError as exc:
            return base.Summary(label, [], [], f"server: {exc}\n{base.tail(server_log)}")
        print(f"[{label}] up: {shlex.join(cmd)}  (log {server_log})", flush=True)
        try:
            status = base.run_bounded(
                [args.wstest, "-m", "fuzzingclient", "-s", str(spec)],
                wstest_log,
                base.wstest_env(),
                tmp,
                args.timeout,
                base.SectionProgress(label, started),
            )
        except RuntimeError as exc:
            return base.Summary(label, [], [], f"wstest: {exc}\n{base.tail(wstest_log)}")
        alive = proc.poll() is None
    print(f"[{label}] wstest finished in {time.monotonic() - started:.1f}s (status {status})", flush=True)
    if not alive:
        print(f"[{label}] warning: the server exited during the run\n{base.tail(server_log)}")
    summary: Any = base.results_for(outdir, agent, label)
    if summary.problem:
        summary.problem += f"\n{base.tail(wstest_log)}"
    return summary


def comparison(summaries: Sequence[Any]) -> str:
    """One Markdown row per run: the count of each verdict, bad closes, and cases passing the gate."""
    head = "| server / app | cases | " + " | ".join(base.BEHAVIOURS) + " | close≠OK | pass the gate |"
    lines = [head, "|---|" + "--:|" * (len(base.BEHAVIOURS) + 3)]
    for s in summaries:
        if s.problem:
            lines.append(f"| {s.label} | — | " + " | ".join("—" for _ in base.BEHAVIOURS) + " | — | ERROR |")
            continue
        counts = {b: sum(r.behavior == b for r in s.results) for b in base.BEHAVIOURS}
        bad_close = sum(r.behavior_close not in base.GOOD_CLOSE for r in s.results)
        passing = len(s.results) - len(s.failing)
        lines.append(
            f"| {s.label} | {len(s.results)} | "
            + " | ".join(str(counts[b]) for b in base.BEHAVIOURS)
            + f" | {bad_close} | {passing}/{len(s.results)} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    names = [s.name for s in SERVERS]
    parser.add_argument("--servers", default=",".join(names), help=f"comma-separated, of {names}")
    parser.add_argument("--apps", default=",".join(APPS), help=f"comma-separated, of {list(APPS)}")
    parser.add_argument("--cases", help='comma-separated case patterns, e.g. "1.*,6.4.*" (default: all)')
    parser.add_argument("--exclude-cases", help="comma-separated case patterns to leave out")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("ZZZ_AUTOBAHN_PORT", "9011")))
    parser.add_argument("--wstest", default=base.default_wstest(), help="default: %(default)s")
    parser.add_argument(
        "--reports", type=Path, default=base.default_reports() / "asgi", help="default: %(default)s"
    )
    parser.add_argument("--timeout", type=float, default=2400.0, help="seconds for one wstest run")
    parser.add_argument("--start-timeout", type=float, default=30.0, help="seconds for the server to listen")
    args = parser.parse_args(argv)
    known = {s.name: s for s in SERVERS}
    args.server_list = []
    for name in filter(None, (n.strip() for n in args.servers.split(","))):
        if name not in known:
            parser.error(f"unknown server {name!r}; known: {', '.join(known)}")
        args.server_list.append(known[name])
    args.app_list = [a.strip() for a in args.apps.split(",") if a.strip()]
    for app in args.app_list:
        if app not in APPS:
            parser.error(f"unknown app {app!r}; known: {', '.join(APPS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run every selected server with every selected app, print the tables.

    Returns:
        0 when every run passed the gate, 1 otherwise.
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    args.reports = args.reports.resolve()
    if not os.access(args.wstest, os.X_OK):
        print(
            f"wstest not found at {args.wstest}; run .ci/install_autobahn.sh (or set ZZZ_WSTEST)",
            file=sys.stderr,
        )
        return 1
    summaries = []
    with tempfile.TemporaryDirectory(prefix="zzz-autobahn-asgi-") as tmp:
        for server in args.server_list:
            for app in args.app_list:
                summaries.append(run_one(server, app, args, Path(tmp)))
    print()
    print(comparison(summaries))
    print()
    for s in summaries:
        if s.problem:
            print(f"{s.label}: ERROR {s.problem}")
        else:
            print(
                f"{s.label}: {'PASS' if s.passed else 'FAIL'} ({len(s.results) - len(s.failing)} of {len(s.results)} pass)"
            )
    return 0 if summaries and all(s.passed for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
