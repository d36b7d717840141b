"""``make test`` starts with .ci/install_packages.sh (shared with .ci/run): what is missing is
installed as root, or named in one line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / ".ci" / "install_packages.sh"


def test_what_is_missing_is_named_in_one_line_when_it_may_not_install() -> None:
    env = dict(os.environ, ZZZ_NO_INSTALL="1", ZZZ_CHROMIUM="/nonexistent/chromium")
    done = subprocess.run(
        ["bash", str(SCRIPT)], check=False, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "chromium" in lines[0] and "apt-get install -y" in lines[0], done.stderr
    assert "redis-server" not in lines[0]  # only what is missing


def test_nothing_to_do_when_everything_is_there() -> None:
    done = subprocess.run(
        ["bash", str(SCRIPT)],
        check=False,
        env=dict(os.environ, ZZZ_NO_INSTALL="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_make_test_and_ci_run_use_it() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    plan = subprocess.run(
        ["make", "-n", "--no-print-directory", "test"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert plan[0] == "bash .ci/install_packages.sh"  # before the venv, the extension and the tests
    assert "bash .ci/install_packages.sh" in (REPO / ".ci" / "run").read_text()
