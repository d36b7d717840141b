"""Instructions per message of a zzz echo server, counted by callgrind (machine noise does not
change them): ``python bench/callgrind.py rr`` or ``python bench/callgrind.py mixed``.

The server (``bench/echo/server_zzz.py``, the bench's own) runs under ``valgrind
--tool=callgrind`` twice, once for a short and once for a long run of the C load client
(``bench/echo/loadclient.c``, built here with ``cc -O2``), counting only while the client runs
(``callgrind_control --zero`` before it, ``--dump`` after it); the difference of the two counts,
divided by the difference in messages, is what one more message costs the server (the handshake
and the client's start cancel out). ``--keep DIR`` keeps the callgrind files of the long run
for ``callgrind_annotate``. Not a measurement of speed, and nothing to run in the test suite.

Scenarios: ``rr`` (1 connection, 1 in flight, 32 B text: request/response), ``pipe`` (the same
with 100 in flight; ``pipe-64k`` with 64 KiB binary; ``conns-100``: 100 connections, 1 in
flight each) and ``mixed`` (the bench's mixed row: 0 B to 1 MiB interleaved, 32 in flight).
With ``PYTHONPATH`` naming another checkout (its extension built in place), the server runs that
checkout's zzz: the way to compare two commits without noise.

``--asgi MODULE:ATTR`` counts zzz's ASGI mode instead: ``python -m zzz MODULE:ATTR --interface
asgi``, imported from ``bench/asgi`` (``app_fastapi:app``, the ASGI benchmark's FastAPI echo) or
from the current directory.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCENARIOS = {
    "rr": (("--mode", "rr", "--conns", "1", "--inflight", "1", "--size", "32", "--warmup", "0"), 2000, 12000),
    "pipe": (
        ("--mode", "rr", "--conns", "1", "--inflight", "100", "--size", "32", "--warmup", "0"),
        20000,
        120000,
    ),
    "pipe-64k": (
        ("--mode", "rr", "--conns", "1", "--inflight", "100", "--size", "65536", "--warmup", "0"),
        2000,
        6000,
    ),
    "conns-100": (
        ("--mode", "rr", "--conns", "100", "--inflight", "1", "--size", "32", "--warmup", "0"),
        5000,
        25000,
    ),
    "mixed": (("--mode", "mixed", "--conns", "1", "--inflight", "32", "--warmup", "0"), 96, 480),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"callgrind.py: the server did not listen on {port} within {timeout} s")


def server_command(port: int, asgi: str | None) -> list[str]:
    """The server: the echo benchmark's zzz server, or an ASGI app on ``python -m zzz``."""
    if asgi is None:
        return [sys.executable, str(HERE / "echo" / "server_zzz.py"), "--port", str(port)]
    return [
        sys.executable, "-m", "zzz", asgi, "--interface", "asgi", "--port", str(port), "--log-level", "warning"
    ]  # fmt: skip


def one_run(client: str, args: tuple[str, ...], count: int, out_dir: Path, asgi: str | None = None) -> int:
    """Total instructions (Ir) of a server process that answered ``count`` messages."""
    port = free_port()
    out = out_dir / f"callgrind.{count}.out"
    env = dict(os.environ, PYTHONHASHSEED="0")
    if asgi is not None:  # the app imports from bench/asgi or the current directory
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (env.get("PYTHONPATH"), str(HERE / "asgi"), os.getcwd()) if p
        )
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *server_command(port, asgi)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_port(port)
        time.sleep(1.0)  # the probe connection is gone before counting starts
        # Count from here to the end of the client's run only: no start-up, no shutdown.
        subprocess.run(["callgrind_control", "--zero", str(server.pid)], check=True, capture_output=True)
        done = subprocess.run(
            [client, "--port", str(port), *args, "--count", str(count)],
            check=False,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if '"ok": true' not in done.stdout:
            raise SystemExit(f"callgrind.py: the load client failed: {done.stdout} {done.stderr}")
        subprocess.run(["callgrind_control", "--dump", str(server.pid)], check=True, capture_output=True)
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=120)
    (dump,) = out_dir.glob(f"callgrind.{count}.out.*")
    dump.rename(out)
    found = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
    if found is None:
        raise SystemExit(f"callgrind.py: no total in {out}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--keep", type=Path, help="keep the callgrind file of the long run here")
    parser.add_argument("--asgi", metavar="MODULE:ATTR", help="count this ASGI app on zzz instead")
    opts = parser.parse_args()
    args, short, long = SCENARIOS[opts.scenario]
    work = Path(tempfile.mkdtemp(prefix="zzz-callgrind-"))
    try:
        client = str(work / "loadclient")
        subprocess.run(["cc", "-O2", "-o", client, str(HERE / "echo" / "loadclient.c"), "-lz"], check=True)
        small = one_run(client, args, short, work, opts.asgi)
        big = one_run(client, args, long, work, opts.asgi)
        per = (big - small) / (long - short)
        what = opts.scenario if opts.asgi is None else f"{opts.scenario} (ASGI {opts.asgi})"
        print(f"{what}: {per:,.0f} instructions per message ({small:,} Ir for {short}, {big:,} for {long})")
        if opts.keep is not None:
            opts.keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(work / f"callgrind.{long}.out", opts.keep / f"callgrind.{opts.scenario}.out")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
