"""Processes and clients for the operations tests: ``python -m zzz`` (or the ``zzz`` script) in a
directory of its own, worker pids read from /proc, a client that connects in a loop and records
every failure and the slowest answer, and raw WebSocket clients that note when and how they closed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# The app the tests serve: its pid on /pid, one on every WebSocket's first message, a health path,
# and drain settings from the environment.
APP = """
import os
import zzz

def pid(request):
    return str(os.getpid())

def worker(request):
    from zzz.runner import current_worker
    me = current_worker()
    return "-" if me is None else f"{me.index} {me.id} {me.pid} {me.pid == os.getpid()} {os.environ['ZZZ_WORKER']}"

def metrics_dir(request):
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "-")

def settings(request):
    s = app.settings
    return f"{s.proxy_headers} {','.join(s.forwarded_allow_ips)}"

app = zzz.App(
    [
        zzz.Router.get("/pid", pid),
        zzz.Router.get("/settings", settings),
        zzz.Router.get("/worker", worker),
        zzz.Router.get("/metrics-dir", metrics_dir),
        zzz.Router.ws("/ws", zzz.WsConfig(on_open=lambda ws: ws.send(str(os.getpid())))),
    ],
    health_path="/healthz",
    drain_batch=int(os.environ.get("DRAIN_BATCH", "1000")),
    drain_interval=float(os.environ.get("DRAIN_INTERVAL", "0.5")),
    close_timeout=5,
)

def make_app():
    return app
"""


def write_app(directory: Path, name: str = "opsapp", text: str = APP) -> Path:
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(text))
    return path


class Zzz:
    """``python -m zzz ARGS`` (or ``zzz ARGS``) in ``cwd``; ``start`` waits for its banner."""

    def __init__(
        self, args: list[str], cwd: Path, script: bool = False, env: dict[str, str] | None = None
    ) -> None:
        command = [str(Path(sys.executable).with_name("zzz"))] if script else [sys.executable, "-m", "zzz"]
        self.env = dict(os.environ, **(env or {}))
        self.env.pop("PYTHONPATH", None)  # MODULE comes from cwd, zzz from the venv
        self.cwd = cwd
        self.out_path = cwd / f"out-{id(self)}.txt"
        self.err_path = cwd / f"err-{id(self)}.txt"
        self.out = self.out_path.open("wb")
        self.err = self.err_path.open("wb")
        self.proc = subprocess.Popen(
            [*command, *args], cwd=cwd, env=self.env, stdout=self.out, stderr=self.err, start_new_session=True
        )
        self.address: str | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def start(self, timeout: float = 30) -> Zzz:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.stdout().splitlines():
                if line.startswith("zzz: serving on "):
                    self.address = line.split()[3]
                    return self
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"zzz exited with {self.proc.returncode}: {self.stdout()} {self.stderr()}"
                )
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"no banner within {timeout} s: {self.stdout()} {self.stderr()}")

    @property
    def port(self) -> int:
        assert self.address is not None and self.address.startswith("http://")
        return int(self.address.rstrip("/").rsplit(":", 1)[1])

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"zzz did not exit within {timeout} s: {self.stderr()[-2000:]}") from None

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        else:
            # Workers left behind by a supervisor that exited are killed with the group.
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.out.close()
        self.err.close()


def children(pid: int) -> set[int]:
    """The live child processes of ``pid`` (zombies excluded), from /proc."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != b"Z":
            found.add(int(entry))
    return found


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until ``predicate()``; the seconds it took. Fails after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.01)
    return time.monotonic() - start


def tcp(port: int) -> Callable[[], socket.socket]:
    return lambda: socket.create_connection(("127.0.0.1", port), timeout=5)


def unix(path: str) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(path)
        return s

    return connect


def get(connect: Callable[[], socket.socket], path: str = "/pid") -> tuple[int, str]:
    """One request on a new connection (``Connection: close``): status and body."""
    with connect() as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        raise ConnectionError(f"no HTTP answer: {data[:100]!r}")
    return int(head.split()[1]), body.decode()


class ConnectLoop(threading.Thread):
    """A client connecting again and again (one GET each): every failure, the slowest answer, the pids."""

    def __init__(self, connect: Callable[[], socket.socket], path: str = "/pid") -> None:
        super().__init__(daemon=True)
        self.connect = connect
        self.path = path
        self.halt = threading.Event()
        self.failures: list[str] = []
        self.slowest = 0.0
        self.count = 0
        self.pids: list[int] = []

    def run(self) -> None:
        while not self.halt.is_set():
            start = time.monotonic()
            try:
                status, body = get(self.connect, self.path)
                if status != 200:
                    self.failures.append(f"status {status}: {body!r}")
                else:
                    self.pids.append(int(body))
            except OSError as exc:
                self.failures.append(repr(exc))
            self.slowest = max(self.slowest, time.monotonic() - start)
            self.count += 1
            time.sleep(0.002)

    def stop(self) -> ConnectLoop:
        self.halt.set()
        self.join(15)
        return self


class RawWebSocket:
    """A WebSocket client on a plain socket that reads on a thread and notes its close frame's code
    and when it came (monotonic)."""

    def __init__(self, connect: Callable[[], socket.socket], path: str = "/ws") -> None:
        self.sock = connect()
        self.sock.settimeout(None)
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.pid: int | None = None
        self.close_code: int | None = None
        self.closed_at: float | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _frames(self) -> tuple[int, bytes] | None:
        buf = self.buf
        if len(buf) < 2:
            return None
        opcode, length, pos = buf[0] & 0x0F, buf[1] & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                return None
            length, pos = int.from_bytes(buf[2:4], "big"), 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length, pos = int.from_bytes(buf[2:10], "big"), 10
        if len(buf) < pos + length:
            return None
        self.buf = buf[pos + length :]
        return opcode, buf[pos : pos + length]

    def _read(self) -> None:
        try:
            while True:
                frame = self._frames()
                if frame is None:
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        return
                    self.buf += chunk
                    continue
                opcode, payload = frame
                if opcode == 1 and self.pid is None:
                    self.pid = int(payload)
                elif opcode == 8:
                    self.closed_at = time.monotonic()
                    self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                    # Answer with a masked close frame echoing the code, then leave.
                    mask = b"\x01\x02\x03\x04"
                    body = payload[:2]
                    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(body))
                    self.sock.sendall(bytes([0x88, 0x80 | len(body)]) + mask + masked)
                    return
        except OSError:
            return
        finally:
            self.done.set()
            self.sock.close()

    def wait_pid(self, timeout: float = 10) -> int:
        wait_for(lambda: self.pid is not None, timeout, "the first message")
        assert self.pid is not None
        return self.pid


def groups(times: list[float], gap: float = 0.1) -> list[list[float]]:
    """Close times grouped: a new group starts after a silence longer than ``gap``."""
    out: list[list[float]] = []
    for t in sorted(times):
        if out and t - out[-1][-1] <= gap:
            out[-1].append(t)
        else:
            out.append([t])
    return out
