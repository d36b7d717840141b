"""Fixtures for the channel tests: a private redis-server on a free port, in a temp dir.

The tests fail (never skip) when the ``redis-server`` binary is missing: ``apt-get install -y redis-server``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.channels.procs import free_port


class RedisServer:
    """A private redis-server on 127.0.0.1; ``stop`` and ``start`` keep the port and the directory.

    Without persistence unless ``appendonly`` (its append-only file in ``workdir``): a restart then
    brings its data back. ``start(appendonly=...)`` may change that for one restart.
    """

    def __init__(self, workdir: Path, appendonly: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is not installed (apt-get install -y redis-server); the Redis tests need it"
            )
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, appendonly: bool | None = None) -> RedisServer:
        if appendonly is not None:
            self.appendonly = appendonly
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "yes" if self.appendonly else "no"]
        self.proc = subprocess.Popen(
            [self.binary, *args, "--dir", str(self.workdir), "--protected-mode", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.proc is not None, "redis-server is not running"
        return self.proc.pid

    def stop(self) -> None:
        """Shut it down (SIGTERM: with ``appendonly`` it writes its file first) and wait for it."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a test that failed mid-stall left it stopped
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for one test, which may stop and restart it."""
    server = RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for one test with its append-only file on: a restart keeps its data."""
    server = RedisServer(tmp_path, appendonly=True).start()
    try:
        yield server
    finally:
        server.stop()
