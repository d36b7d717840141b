"""Fixtures for the core tests: every test runs against both cores.

``impl`` is the pure-Python twin and the compiled extension in turn; a missing extension is a
failure, not a skip, unless ``ZZZ_NO_EXTENSIONS`` is set (then only the twin runs).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

NO_EXTENSIONS = os.environ.get("ZZZ_NO_EXTENSIONS", "").strip().lower() in {"1", "true", "yes", "on"}
IMPLEMENTATIONS = ["python"] if NO_EXTENSIONS else ["python", "cython"]


def load(name: str) -> ModuleType:
    """Import one core by its short name; fail loudly when the extension was not built."""
    if name == "python":
        return importlib.import_module("zzz._purepy")
    try:
        return importlib.import_module("zzz._speedups")
    except ImportError as exc:
        pytest.fail(
            f"zzz._speedups is not built ({exc}); run `python setup.py build_ext --inplace` "
            "or set ZZZ_NO_EXTENSIONS=1 to test the twin alone",
            pytrace=False,
        )


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """The core under test: ``zzz._purepy``, then ``zzz._speedups``."""
    return load(request.param)


@pytest.fixture(params=[] if NO_EXTENSIONS else ["cython"])
def speedups(request: pytest.FixtureRequest) -> ModuleType:
    """The compiled core alone (for its SIMD kernels and for comparing it with the twin)."""
    return load(request.param)


@pytest.fixture
def purepy() -> ModuleType:
    """The pure-Python twin, the reference for behaviour."""
    return load("python")
