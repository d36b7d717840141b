"""``--reload``: a change of a ``.py`` file under the current directory restarts the app on the same
socket (port 0 included), with watchfiles and with the polling fallback; a broken edit waits for
the next one; a bad first start is exit 2."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .procs import Zzz, get, tcp, wait_for, write_app

APP = """
import zzz
app = zzz.App([zzz.Router.get("/", lambda r: {answer!r})])
"""


@pytest.fixture
def procs() -> Iterator[list[Zzz]]:
    started: list[Zzz] = []
    yield started
    for proc in started:
        proc.close()


def _answer(port: int) -> str | None:
    try:
        status, body = get(tcp(port), "/")
    except OSError:
        return None
    return body if status == 200 else None


@pytest.mark.parametrize("poll", [False, True], ids=["watchfiles", "polling"])
def test_a_change_restarts_the_app_on_the_same_port(procs: list[Zzz], tmp_path: Path, poll: bool) -> None:
    if not poll:
        import watchfiles  # noqa: F401 - in the dev extra: this case must not pass by polling
    write_app(tmp_path, "live", APP.format(answer="one"))
    (tmp_path / "pkg").mkdir()
    write_app(tmp_path / "pkg", "helper", "X = 1\n")
    env = {"ZZZ_RELOAD_POLL": "1"} if poll else {}
    z = Zzz(["live:app", "--port", "0", "--reload"], tmp_path, env=env)
    procs.append(z)
    z.start()
    port = z.port
    assert _answer(port) == "one"
    time.sleep(0.6)  # the watcher has its first view of the tree
    write_app(tmp_path, "live", APP.format(answer="two"))
    wait_for(lambda: _answer(port) == "two", 15, "the new code serving")
    write_app(tmp_path, "live", "import zzz\napp = (\n")  # a broken edit: the old process is stopped...
    wait_for(lambda: "SyntaxError" in z.stderr(), 15, "the broken edit reported")
    assert z.proc.poll() is None  # ...and the reloader waits for the next change
    write_app(tmp_path, "live", APP.format(answer="three"))
    wait_for(lambda: _answer(port) == "three", 15, "the fixed code serving")
    (tmp_path / "notes.txt").write_text("not python")
    time.sleep(1.2)
    assert z.stderr().count("changed; restarting") == 3  # .txt files are not watched
    assert z.stop() == 0


def test_a_bad_first_start_is_exit_2(procs: list[Zzz], tmp_path: Path) -> None:
    z = Zzz(["missing:app", "--port", "0", "--reload"], tmp_path)
    procs.append(z)
    assert z.wait(30) == 2
    lines = z.stderr().splitlines()
    assert len(lines) == 1 and "no module named 'missing'" in lines[0], lines


def test_the_child_leaves_when_the_reloader_is_killed(procs: list[Zzz], tmp_path: Path) -> None:
    write_app(tmp_path, "live", APP.format(answer="one"))
    z = Zzz(["live:app", "--port", "0", "--reload"], tmp_path)
    procs.append(z)
    z.start()
    child = int(z.stdout().split("(pid ")[1].split(")")[0])  # the banner is the child's
    assert child != z.pid
    os.kill(z.pid, signal.SIGKILL)  # no chance to stop its child
    z.proc.wait(10)

    def gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, 15, "the orphaned child leaving")
