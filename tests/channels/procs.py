"""Start the test chat app in a subprocess on a free port, wait until it listens, stop it afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AppProcess:
    """``python -m tests.channels.chat_app`` on 127.0.0.1; restartable on the same port.

    ``module`` runs another test app that takes the same ``--port``/``--redis``/``--node-ttl``/``--loop``
    options (e.g. ``tests.channels.fault_app``); ``args`` are added to its command line.
    """

    def __init__(
        self,
        port: int | None = None,
        redis_url: str | None = None,
        node_ttl: float = 15.0,
        demo: bool = False,
        close_timeout: float | None = None,
        loop: str = "asyncio",
        module: str = "tests.channels.chat_app",
        args: list[str] | None = None,
    ) -> None:
        self.module = module
        self.args = list(args or [])
        self.demo = demo
        self.close_timeout = close_timeout
        self.loop = loop
        self.port = port or free_port()
        self.redis_url = redis_url
        self.node_ttl = node_ttl
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> AppProcess:
        cmd = [
            sys.executable,
            "-m",
            self.module,
            "--port",
            str(self.port),
            "--node-ttl",
            str(self.node_ttl),
        ]
        if self.redis_url:
            cmd += ["--redis", self.redis_url]
        if self.demo:
            cmd.append("--demo")
        if self.close_timeout is not None:
            cmd += ["--close-timeout", str(self.close_timeout)]
        cmd += ["--loop", self.loop, *self.args]
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"test app exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"test app did not listen on {self.port}") from None
                time.sleep(0.05)

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
