"""Test-wide set-up: coroutine tests run on both event loops (asyncio and uvloop).

A coroutine test function gets a ``loop_kind`` parameter unless it is marked for pytest-asyncio;
the core implementation is chosen per process by ``ZZZ_NO_EXTENSIONS`` (see the Makefile).
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from tests import redis_parser

redis_parser.apply()  # the twin's run: redis-py's Python reply parser too

LOOP_KINDS = ("asyncio", "uvloop")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "packaging: builds and installs a wheel (slow)")
    config.addinivalue_line("markers", "asyncio_only: a coroutine test that runs on the asyncio loop only")


def _is_ours(function: Any, item_or_meta: Any) -> bool:
    return inspect.iscoroutinefunction(function) and not _has_marker(item_or_meta, "asyncio")


def _has_marker(node: Any, name: str) -> bool:
    if hasattr(node, "get_closest_marker"):
        return node.get_closest_marker(name) is not None
    return any(m.name == name for m in getattr(node.definition, "iter_markers", list)())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if _is_ours(metafunc.function, metafunc) and "loop_kind" not in metafunc.fixturenames:
        kinds = ["asyncio"] if _has_marker(metafunc, "asyncio_only") else list(LOOP_KINDS)
        metafunc.fixturenames.append("loop_kind")
        metafunc.parametrize("loop_kind", kinds)


def loop_factory(kind: str) -> Any:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    function = pyfuncitem.obj
    if not _is_ours(function, pyfuncitem):
        return None
    kind = pyfuncitem.callspec.params.get("loop_kind", "asyncio")
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    with asyncio.Runner(loop_factory=loop_factory(kind)) as runner:
        runner.run(asyncio.wait_for(function(**kwargs), timeout=60))
    return True
