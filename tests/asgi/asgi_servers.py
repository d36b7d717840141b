"""The ASGI servers the suite runs the same apps on, and how to start and stop them.

``SERVERS`` is the one list to extend: each entry says how to start that server on an app
(``MODULE:ATTR``, imported from ``tests/asgi/apps``) and a port of 127.0.0.1, and what it
answers where servers differ on purpose. Today it holds uvicorn, the reference. When
``zzz.asgi`` exists, add::

    "zzz": ServerKind("zzz", zzz_command, ZZZ_EXPECT),

(both are defined below) and every test in ``tests/asgi`` runs on zzz as well.

uvicorn's WebSocket implementation is ``$ZZZ_ASGI_UVICORN_WS`` (``websockets-sansio`` by default,
which is also what ``--ws auto`` picks; ``wsproto`` and the legacy ``websockets`` are the others).
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "APPS_DIR",
    "HOST",
    "SERVERS",
    "UVICORN_WS",
    "ZZZ_EXPECT",
    "Expect",
    "Options",
    "Running",
    "ServerDidNotStart",
    "ServerKind",
    "ServerPool",
    "free_port",
    "run_until_exit",
    "start",
    "uvicorn_command",
    "uvicorn_expect",
    "zzz_command",
]

HERE = Path(__file__).resolve().parent
APPS_DIR = HERE / "apps"
ROOT = HERE.parent.parent
HOST = "127.0.0.1"
START_TIMEOUT = 30.0  # seconds; the machine is shared and FastAPI imports take a while


@dataclass(frozen=True)
class Options:
    """Settings a test needs changed from the server's defaults (None: leave the default).

    Attributes:
        ping_interval: Seconds between heartbeat pings.
        ping_timeout: Seconds to wait for the pong.
    """

    ping_interval: float | None = None
    ping_timeout: float | None = None


@dataclass(frozen=True)
class Expect:
    """What a server answers where the issue's contract lets servers differ.

    Attributes:
        raise_after_accept_close: The close code the client gets when the app raises after
            accepting a WebSocket; None when the server drops the TCP connection without a
            close frame (the client then reports 1006).
        heartbeat_disconnect_code: The code in the ``websocket.disconnect`` the app gets when
            the client stopped answering pings.
        sigterm_status: The exit status after a graceful shutdown on SIGTERM (SIGINT: 0).
    """

    raise_after_accept_close: int | None
    heartbeat_disconnect_code: int
    sigterm_status: int


@dataclass(frozen=True)
class ServerKind:
    """One server under test.

    Attributes:
        name: The test id.
        command: ``(app, port, options) -> argv`` that serves ``app`` on ``HOST:port``.
        expect: Its answers where servers differ.
        env: Extra environment for the server process.
    """

    name: str
    command: Callable[[str, int, Options], list[str]]
    expect: Expect
    env: tuple[tuple[str, str], ...] = field(default=())


def uvicorn_command(ws: str) -> Callable[[str, int, Options], list[str]]:
    """uvicorn on WebSocket implementation ``ws``, otherwise with its defaults (lifespan auto,
    permessage-deflate on, 16 MiB messages)."""

    def command(app: str, port: int, options: Options) -> list[str]:
        cmd = [sys.executable, "-m", "uvicorn", app, "--host", HOST, "--port", str(port), "--ws", ws]
        if options.ping_interval is not None:
            cmd += ["--ws-ping-interval", str(options.ping_interval)]
        if options.ping_timeout is not None:
            cmd += ["--ws-ping-timeout", str(options.ping_timeout)]
        return cmd

    return command


def zzz_command(app: str, port: int, options: Options) -> list[str]:
    """zzz's CLI (issue 17); settings the CLI has no option for go through ``zzz.asgi.serve``."""
    if options == Options():
        return [sys.executable, "-m", "zzz", app, "--interface", "asgi", "--host", HOST, "--port", str(port)]
    settings = [f"{k}={v}" for k, v in vars(options).items() if v is not None]
    return [sys.executable, str(HERE / "launch_zzz.py"), app, "--port", str(port), *settings]


def uvicorn_expect(ws: str) -> Expect:
    """uvicorn's answers: it drops the TCP connection when the app raises after accepting; on a
    missed pong websockets-sansio and wsproto send 1011 and then tell the app 1005 (the handshake
    had completed), the legacy websockets implementation 1006; after a graceful shutdown on
    SIGTERM uvicorn re-raises the signal, so its status is -SIGTERM."""
    return Expect(
        raise_after_accept_close=None,
        heartbeat_disconnect_code=1006 if ws == "websockets" else 1005,
        sigterm_status=-signal.SIGTERM,
    )


UVICORN_WS = os.environ.get("ZZZ_ASGI_UVICORN_WS", "websockets-sansio")
# Issue 17: "an app that raises after accepting -> close 1011 (zzz closes properly); a heartbeat
# timeout reaches the app as websocket.disconnect with code 1006"; "SIGTERM/SIGINT shut down
# gracefully, run lifespan shutdown, exit 0".
ZZZ_EXPECT = Expect(raise_after_accept_close=1011, heartbeat_disconnect_code=1006, sigterm_status=0)

SERVERS: dict[str, ServerKind] = {
    "uvicorn": ServerKind("uvicorn", uvicorn_command(UVICORN_WS), uvicorn_expect(UVICORN_WS)),
    "zzz": ServerKind("zzz", zzz_command, ZZZ_EXPECT),
}


class ServerDidNotStart(RuntimeError):
    """The server exited or did not listen in time; the message carries its log's tail."""


def free_port() -> int:
    """An unused TCP port of 127.0.0.1 (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _env(kind: ServerKind, extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    # The apps import from tests/asgi/apps; zzz from this working tree (with its built extension).
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(APPS_DIR), str(ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(dict(kind.env))
    env.update(extra or {})
    return env


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Running:
    """A server process serving one app.

    Attributes:
        kind: Which server.
        app: The ``MODULE:ATTR`` it serves.
        port: Its port on :data:`HOST`.
        proc: The process.
        log: Its stdout and stderr.
    """

    kind: ServerKind
    app: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def http(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{HOST}:{self.port}"

    @property
    def ws(self) -> str:
        """``ws://127.0.0.1:PORT``."""
        return f"ws://{HOST}:{self.port}"

    def pids(self) -> set[int]:
        """The server process and its descendants (a server may serve from a worker it forked)."""
        found: set[int] = set()
        todo = [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.add(pid)
            try:
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo.extend(int(c) for c in (task / "children").read_text().split())
            except (OSError, ValueError):
                continue
        return found

    def log_text(self) -> str:
        """Everything the server printed so far."""
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``sig`` and wait for the exit (SIGKILL after ``timeout`` seconds).

        Returns:
            The exit status (negative: killed by that signal).
        """
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start(
    kind: ServerKind,
    app: str,
    log: Path,
    options: Options | None = None,
    env: dict[str, str] | None = None,
) -> Running:
    """Start ``kind`` serving ``app`` and wait until it accepts connections.

    Args:
        kind: The server.
        app: ``MODULE:ATTR`` in ``tests/asgi/apps``.
        log: File for its output.
        options: Settings to change.
        env: Extra environment variables.

    Returns:
        The running server.

    Raises:
        ServerDidNotStart: It exited first, or nothing listened after :data:`START_TIMEOUT`.
    """
    options = options or Options()
    log.parent.mkdir(parents=True, exist_ok=True)
    for _attempt in range(3):  # another process may take the free port before the server binds it
        port = free_port()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                kind.command(app, port, options),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_env(kind, env),
                cwd=APPS_DIR,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if _listening(port):
                return Running(kind, app, port, proc, log)
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            raise ServerDidNotStart(
                f"{kind.name} {app}: nothing listens after {START_TIMEOUT:.0f}s\n{_tail(log)}"
            )
        if "address already in use" not in _tail(log).lower():
            break
    raise ServerDidNotStart(f"{kind.name} {app}: exited with status {proc.returncode}\n{_tail(log)}")


def run_until_exit(kind: ServerKind, app: str, log: Path, timeout: float = START_TIMEOUT) -> tuple[int, bool]:
    """Start a server that is expected to exit by itself (a failing startup).

    Returns:
        Its exit status and whether its port ever accepted a connection meanwhile.

    Raises:
        AssertionError: It was still running after ``timeout`` seconds (it is killed first).
    """
    port = free_port()
    listened = False
    with log.open("wb") as out:
        proc = subprocess.Popen(
            kind.command(app, port, Options()),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(kind, None),
            cwd=APPS_DIR,
        )
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        listened = listened or _listening(port)
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{kind.name} {app} still running after {timeout:.0f}s\n{_tail(log)}")
    return proc.returncode, listened


class ServerPool:
    """Servers started for the session, one per (server, app, options); all stopped at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.shared: dict[tuple[str, str, Options], Running] = {}
        self.started: list[Running] = []
        self._ids = itertools.count(1)

    def _log(self, kind: ServerKind, app: str) -> Path:
        return self.logs / f"{next(self._ids):03d}-{kind.name}-{app.replace(':', '-')}.log"

    def get(self, kind: ServerKind, app: str, options: Options | None = None) -> Running:
        """The shared server for this pair (started now if it is not running)."""
        key = (kind.name, app, options or Options())
        running = self.shared.get(key)
        if running is None or running.proc.poll() is not None:
            running = start(kind, app, self._log(kind, app), options)
            self.shared[key] = running
            self.started.append(running)
        return running

    def fresh(
        self, kind: ServerKind, app: str, options: Options | None = None, env: dict[str, str] | None = None
    ) -> Running:
        """A server of the test's own, which it may stop (stopped at the end of the session anyway)."""
        running = start(kind, app, self._log(kind, app), options, env)
        self.started.append(running)
        return running

    def stop_all(self) -> None:
        """Stop every server this pool started."""
        for running in self.started:
            running.stop(timeout=10)
