"""examples/test_chat_channels.py, the example of zzz.testing, passes when run as a user runs it:
``pytest examples/test_chat_channels.py`` in a process of its own (pytest-asyncio, no conftest of
ours)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "test_chat_channels.py"


def test_the_example_test_passes_as_it_is() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Every test of the example ran and passed (none skipped, none deselected).
    tests = len(re.findall(r"^async def test_", EXAMPLE.read_text(), re.MULTILINE))
    assert tests >= 3
    assert re.search(rf"\b{tests} passed\b", done.stdout), done.stdout
    assert "skipped" not in done.stdout and "failed" not in done.stdout
