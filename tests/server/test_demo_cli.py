"""``python -m zzz`` and ``make run`` as users start them: options that are refused, ports and arguments."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _demo(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Run ``python -m zzz ARGS``; a demo that starts serving instead of exiting is killed and fails."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # Its own process group: forked workers hold the pipes open, so all of them are killed on a timeout.
    proc = subprocess.Popen(
        [sys.executable, "-m", "zzz", *args],
        cwd=REPO,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        raise AssertionError(f"python -m zzz {' '.join(args)} did not exit: {out!r} {err!r}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_workers_without_redis_are_refused_before_binding() -> None:
    port = _free_port()
    done = _demo("--workers", "2", "--port", str(port))
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("zzz: ") and "--workers 2" in lines[0] and "--redis URL" in lines[0]
    assert "serving" not in done.stdout and done.stdout == ""
    with socket.socket() as s:  # the port was never taken
        s.bind(("127.0.0.1", port))


def test_an_empty_redis_url_is_no_redis() -> None:
    done = _demo("--workers", "3", "--redis", "", "--port", str(_free_port()))
    assert done.returncode == 2 and "--redis URL" in done.stderr and done.stdout == ""


def test_make_run_takes_host_port_and_args() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}  # not the -j of an outer make
    cmd = [
        "make",
        "-n",
        "--no-print-directory",
        "run",
        "PORT=9000",
        "HOST=::1",
        "ARGS=--workers 2 --redis redis://127.0.0.1:6379/0",
    ]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=True)
    run = shlex.split(done.stdout.strip().splitlines()[-1])
    assert run[1:] == [
        "-m",
        "zzz",
        "--host",
        "::1",
        "--port",
        "9000",
        "--workers",
        "2",
        "--redis",
        "redis://127.0.0.1:6379/0",
    ]
    default = subprocess.run(
        ["make", "-n", "--no-print-directory", "run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert shlex.split(default.stdout.strip().splitlines()[-1])[1:] == [
        "-m",
        "zzz",
        "--host",
        "127.0.0.1",
        "--port",
        "8080",
    ]
