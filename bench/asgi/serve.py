"""Start one server of the ASGI benchmark on the FastAPI echo app, replacing this process.

``python bench/asgi/serve.py --port P [--server NAME] [--compression]``; NAME defaults to
``$ZZZ_ASGI_BENCH_SERVER`` (so that ``bench/run.py`` and ``bench/memory.py`` can start it as they
start their own scripts). Every server keeps its permessage-deflate default: compression is
chosen by the client offering it (the load client with ``--deflate``), so ``--compression``
changes nothing, as for ``bench/echo/server_zzz.py``. Logging per request is off, keepalive
pings are off (uvicorn sends them whatever the traffic), uvloop where it can be chosen.
The process ``exec``s the server, so the pid the benchmark watches (RSS, signals) is the server's.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["COMMANDS", "main"]

HERE = Path(__file__).resolve().parent
APP = "app_fastapi:app"
BACKLOG = "4096"
# uvicorn pings every interval whatever the traffic, and the memory client would take a ping for an
# echo; 0 does not turn them off on every implementation (legacy websockets pings without pause).
NO_PINGS = "86400"


def _uvicorn(ws: str) -> Callable[[str, int], list[str]]:
    def command(host: str, port: int) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", APP, "--host", host, "--port", str(port), "--ws", ws,
            "--loop", "uvloop", "--http", "httptools", "--backlog", BACKLOG, "--ws-ping-interval", NO_PINGS,
            "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip

    return command


def _hypercorn(host: str, port: int) -> list[str]:
    # --workers 0: serve in this process (1 would fork a worker under a supervisor).
    return [
        sys.executable, "-m", "hypercorn", APP, "--bind", f"{host}:{port}", "--workers", "0",
        "--worker-class", "uvloop", "--backlog", BACKLOG, "--log-level", "warning",
    ]  # fmt: skip


def _granian(host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "granian", "--interface", "asgi", "--host", host, "--port", str(port),
        "--workers", "1", "--loop", "uvloop", "--backlog", BACKLOG, "--no-access-log", "--log-level", "warning",
        APP,
    ]  # fmt: skip


def _zzz(host: str, port: int) -> list[str]:
    # Issue 17's CLI; zzz negotiates permessage-deflate whenever the client offers it.
    return [sys.executable, "-m", "zzz", APP, "--interface", "asgi", "--host", host, "--port", str(port)]


COMMANDS: dict[str, Callable[[str, int], list[str]]] = {
    "uvicorn-websockets": _uvicorn("websockets"),
    "uvicorn-websockets-sansio": _uvicorn("websockets-sansio"),
    "uvicorn-wsproto": _uvicorn("wsproto"),
    "hypercorn": _hypercorn,
    "granian": _granian,
    "zzz": _zzz,
}


def main(argv: list[str] | None = None) -> int:
    """Parse the options and exec the server (returns only on a usage error)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default=os.environ.get("ZZZ_ASGI_BENCH_SERVER"), choices=sorted(COMMANDS))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--compression", action="store_true", help="accepted for symmetry; changes nothing")
    args = p.parse_args(argv)
    if args.server is None:
        p.error("no server: pass --server or set ZZZ_ASGI_BENCH_SERVER")
    # The memory benchmark opens thousands of connections; the default soft limit is often 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.chdir(HERE)  # every server imports MODULE:ATTR from the current directory
    cmd = COMMANDS[args.server](args.host, args.port)
    os.execv(cmd[0], cmd)
    return 1  # pragma: no cover - execv does not return


if __name__ == "__main__":
    sys.exit(main())
