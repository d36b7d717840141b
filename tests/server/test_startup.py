"""Starting a server the way a new user does: ports out of range (CLI, ``App.run``, ``App.start``)
and the banner's URL for an IPv6 host."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import zzz

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO))


def _free_port(family: socket.AddressFamily = socket.AF_INET, host: str = "127.0.0.1") -> int:
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("port", ["99999", "65536", "-1"])
def test_cli_refuses_a_port_out_of_range_in_one_line(loop: str, port: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "zzz", "--port", port, "--loop", loop],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "--port" in lines[0] and port in lines[0] and "0-65535" in lines[0], lines[0]
    assert "serving on" not in proc.stdout and "open http" not in proc.stdout


async def test_start_refuses_a_port_out_of_range_before_binding() -> None:
    free = _free_port()
    # uvloop used to bind free + 65536 modulo 65536, i.e. ``free`` itself.
    for bad in (free + 65536, 99999, -1):
        with pytest.raises(ValueError, match=f"port {bad} "):
            await zzz.App([]).start(host="127.0.0.1", port=bad)
    assert _port_is_free(free)
    with pytest.raises(TypeError, match="port must be an int"):
        await zzz.App([]).start(host="127.0.0.1", port="8080")  # type: ignore[arg-type]


_RUN = """
import sys, zzz
try:
    zzz.App([]).run(host="127.0.0.1", port={port}, loop={loop!r}, workers={workers})
except ValueError as exc:
    print("ValueError:", exc)
    sys.exit(0)
print("returned")
sys.exit(1)
"""


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("workers", [1, 2])
def test_run_refuses_a_port_out_of_range_before_binding(loop: str, workers: int) -> None:
    free = _free_port()
    bad = free + 65536
    # In a child process: the old behaviour was to serve (on the wrapped port) for ever.
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUN.format(port=bad, loop=loop, workers=workers)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the workers too
        proc.communicate()
        pytest.fail(f"App.run(port={bad}) did not refuse the port: it kept running")
    assert proc.returncode == 0, out
    assert f"ValueError: port {bad} is outside 0-65535" in out, out
    assert _port_is_free(free)


def _first_lines(proc: subprocess.Popen[bytes], count: int, timeout: float = 30) -> list[str]:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    lines: list[str] = []
    buf = b""
    deadline = time.monotonic() + timeout
    while len(lines) < count and time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            chunk = None
        if chunk:
            buf += chunk
            *done, buf = buf.split(b"\n")
            lines += [line.decode() for line in done]
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.05)
    return lines


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_ipv6_banners_put_the_address_in_brackets(loop: str) -> None:
    try:
        port = _free_port(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    proc = subprocess.Popen(
        [sys.executable, "-m", "zzz", "--host", "::1", "--port", str(port), "--loop", loop],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        lines = [line for line in _first_lines(proc, 2) if "http://" in line]
        assert len(lines) == 2, lines
        for line in lines:  # the CLI's banner, then App.run's
            assert f"http://[::1]:{port}/" in line, line
            assert "http://::1" not in line, line
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
