"""The builds of the per-read loop, each over the core it runs on."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import ModuleType

import pytest

NO_EXTENSIONS = os.environ.get("ZZZ_NO_EXTENSIONS", "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Build:
    """A read loop module (``loop``) with the byte core it works on (``core``)."""

    name: str
    core: ModuleType
    loop: ModuleType


def _build(name: str) -> Build:
    try:
        if name == "python":
            return Build(
                name, importlib.import_module("zzz._purepy"), importlib.import_module("zzz._readloop")
            )
        core = importlib.import_module("zzz._speedups")
        if name == "cython":
            return Build(name, core, importlib.import_module("zzz._readloop_c"))
        # The text over the compiled core: what zzz.readloop falls back to after a partial build.
        return Build(name, core, importlib.import_module("zzz._readloop"))
    except ImportError as exc:
        pytest.fail(
            f"the extensions are not built ({exc}); run `make ext` or set ZZZ_NO_EXTENSIONS=1", pytrace=False
        )


@pytest.fixture(params=["python"] if NO_EXTENSIONS else ["python", "cython", "text-over-cython"])
def build(request: pytest.FixtureRequest) -> Build:
    """``_readloop`` over ``_purepy``, ``_readloop_c`` over ``_speedups``, ``_readloop`` over ``_speedups``."""
    return _build(request.param)
