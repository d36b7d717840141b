"""What a server announces (the banner, a worker's ready byte) comes after its signal handlers are
installed: a SIGTERM (or a supervisor's SIGUSR1) sent the moment it is announced drains the server
instead of killing the process with the signal's default action."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.ops.procs import write_app
from zzz import runner


class _FakeServer:
    def __init__(self) -> None:
        self.closed_with: tuple[int, str] | None = None

    async def close(self, code: int = 1001, reason: str = "") -> None:
        self.closed_with = (code, reason)


def test_a_signal_sent_from_ready_drains() -> None:
    server = _FakeServer()

    async def main() -> None:
        stops = {signal.SIGTERM: (1001, "server shutting down")}
        # ready() signals this very process: with the handler not yet installed, SIGTERM's default
        # action would end the test run here.
        await asyncio.wait_for(
            runner._serve_until_signal(
                server,  # type: ignore[arg-type]
                stops,
                ready=lambda: os.kill(os.getpid(), signal.SIGTERM),
            ),
            10,
        )

    asyncio.run(main())
    assert server.closed_with == (1001, "server shutting down")


def test_sigterm_at_the_banner_exits_0(tmp_path: Path) -> None:
    write_app(tmp_path)
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-m", "zzz", "opsapp:app", "--port", "0"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith(b"zzz: serving on "), line
            proc.send_signal(signal.SIGTERM)  # at once: no sleep between the banner and the signal
            assert proc.wait(20) == 0, proc.stderr.read() if proc.stderr else b""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
