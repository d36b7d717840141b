"""Packaging: the wheel carries both extensions (the byte core and the read loop), and the build
falls back to the twin, both or neither.

Builds a wheel from a copy of the source tree (isolated build, as ``pip`` does it), repairs it
into a manylinux wheel with ``auditwheel`` (needs ``patchelf``), installs it into a fresh venv
and asks the installed package which core it runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT = 600

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(1200)]


def run(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run ``cmd``; fail the test with its output if it fails."""
    proc = subprocess.run(
        cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


def source_copy(tmp: Path) -> Path:
    """The package sources without build products, so nothing built in the tree leaks in."""
    dest = tmp / "src"
    shutil.copytree(
        ROOT,
        dest,
        ignore=shutil.ignore_patterns(
            ".git",
            "build",
            "dist",
            "*.egg-info",
            "*.so",
            "*.c",
            "__pycache__",
            ".hypothesis",
            ".pytest_cache",
            ".benchmarks",
            "reports",
            "wheelhouse",
            ".venv",
            "node_modules",
        ),
    )
    return dest


def build_wheel(src: Path, out: Path, **env_extra: str) -> tuple[Path, str]:
    env = {**os.environ, **env_extra}
    env.pop("ZZZ_NO_EXTENSIONS", None)
    env.update(env_extra)
    log = run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(src)], env=env)
    # The backend's Python warnings (build prints them as "WARNING <message>"; pip as
    # "...BuildBackendWarning: ...") flag configuration a later setuptools will refuse.
    noisy = [
        line
        for line in log.splitlines()
        if line.startswith("WARNING ") or "Warning:" in line or "deprecat" in line.lower()
    ]
    assert not noisy, "\n".join(noisy)
    wheels = list(out.glob("zzz-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0], log


def implementation(python: Path, **env_extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "ZZZ_NO_EXTENSIONS"}
    env.pop("PYTHONPATH", None)
    env.update(env_extra)
    # Run from / so that the installed package is imported, not the working tree.
    code = (
        "import zzz.core as c, zzz.readloop as r, zzz.channels.wire as w; "
        "print(c.IMPLEMENTATION, r.IMPLEMENTATION, c.__file__, "
        "'cython' if w.decode_fields is not w.decode_fields_py else 'python')"
    )
    out = run([str(python), "-c", code], env=env, cwd=Path("/")).split()
    assert str(ROOT) not in out[2], out
    assert out[0] == out[1], f"the byte core is {out[0]} but the read loop is {out[1]}"
    assert out[0] == out[3], f"the byte core is {out[0]} but the channel wire format is {out[3]}"
    return out[0]


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the runtime dependency; each test installs its wheel over the last."""
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "httptools"])
    return python


def install(python: Path, wheel: Path) -> None:
    run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--force-reinstall",
            "--no-deps",
            str(wheel),
        ]
    )


def patchelf_path(tmp: Path) -> str:
    """A PATH on which ``auditwheel`` finds a patchelf it accepts (>= 0.14.5).

    Debian 12 ships 0.14.3, so fall back to the PyPI build of patchelf in a private directory.
    """
    found = shutil.which("patchelf")
    if found:
        version = subprocess.run([found, "--version"], capture_output=True, text=True, check=False).stdout
        m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
        if m and tuple(int(x or 0) for x in m.groups()) >= (0, 14, 5):
            return os.environ["PATH"]
    tools = tmp / "tools"
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(tools),
            "patchelf",
        ]
    )
    return f"{tools / 'bin'}{os.pathsep}{os.environ['PATH']}"


def test_manylinux_wheel_runs_the_compiled_core(tmp_path: Path, venv_python: Path) -> None:
    src = source_copy(tmp_path)
    wheel, _ = build_wheel(src, tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("zzz/_speedups") and n.endswith(".so") for n in names), names
    assert any(n.startswith("zzz/_readloop_c") and n.endswith(".so") for n in names), names
    assert any(n.startswith("zzz/channels/_wire_c") and n.endswith(".so") for n in names), names
    assert "zzz/_readloop.py" in names, names  # the text the twin runs
    assert not any(n.endswith((".c", ".h")) for n in names), names
    run(
        [
            sys.executable,
            "-m",
            "auditwheel",
            "repair",
            "--wheel-dir",
            str(tmp_path / "wheelhouse"),
            str(wheel),
        ],
        env={**os.environ, "PATH": patchelf_path(tmp_path)},
    )
    repaired = list((tmp_path / "wheelhouse").glob("zzz-*manylinux*.whl"))
    assert len(repaired) == 1, list((tmp_path / "wheelhouse").iterdir())
    install(venv_python, repaired[0])
    assert implementation(venv_python) == "cython"
    assert implementation(venv_python, ZZZ_NO_EXTENSIONS="1") == "python"


def test_no_extensions_at_build_time_gives_a_pure_wheel(tmp_path: Path, venv_python: Path) -> None:
    src = source_copy(tmp_path)
    wheel, log = build_wheel(src, tmp_path / "dist", ZZZ_NO_EXTENSIONS="1")
    assert "installing the pure-Python core" in log
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    assert not any(n.endswith(".so") for n in zipfile.ZipFile(wheel).namelist())
    install(venv_python, wheel)
    assert implementation(venv_python) == "python"


def test_missing_compiler_falls_back_to_the_twin(tmp_path: Path, venv_python: Path) -> None:
    src = source_copy(tmp_path)
    wheel, log = build_wheel(src, tmp_path / "dist", CC="/nonexistent/cc")
    assert "could not be built" in log and "installing the pure-Python core" in log
    assert not any(n.endswith(".so") for n in zipfile.ZipFile(wheel).namelist())
    install(venv_python, wheel)
    assert implementation(venv_python) == "python"


def test_a_failed_read_loop_build_installs_neither_extension(tmp_path: Path, venv_python: Path) -> None:
    src = source_copy(tmp_path)
    # The C of _readloop_c includes a header that does not exist: its compile fails, the byte
    # core's does not, and the build must not ship the byte core alone.
    with open(src / "zzz" / "_readloop_c.pxd", "a") as pxd:
        pxd.write('\ncdef extern from "zzz_no_such_header.h":\n    pass\n')
    wheel, log = build_wheel(src, tmp_path / "dist")
    assert "could not be built" in log and "installing the pure-Python core" in log
    assert not any(n.endswith(".so") for n in zipfile.ZipFile(wheel).namelist())
    install(venv_python, wheel)
    assert implementation(venv_python) == "python"
