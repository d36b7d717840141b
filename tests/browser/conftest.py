"""Fixtures for the browser tests: Debian's Chromium driven by Playwright, and the test app in a subprocess.

Never a downloaded browser: ``executable_path`` is the system's ``/usr/bin/chromium``
(``apt-get install -y chromium``); the tests fail, not skip, when it is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.channels.conftest import RedisServer
from tests.channels.procs import AppProcess

CHROMIUM = os.environ.get("ZZZ_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# Package scope, not session: Playwright's sync API keeps an event loop running in this thread
# until it stops, and every asyncio test after the browser tests needs that thread free.
@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} not found: apt-get install -y chromium (the browser tests need it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def app() -> Iterator[AppProcess]:
    proc = AppProcess().start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def page(browser: Any, app: AppProcess) -> Iterator[Any]:
    context = browser.new_context()
    p = context.new_page()
    p.set_default_timeout(15000)
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.goto(app.http + "/")
    p.js_errors = errors
    try:
        yield p
    finally:
        context.close()


@pytest.fixture
def new_page(browser: Any, app: AppProcess) -> Iterator[Any]:
    contexts: list[Any] = []

    def make(path: str = "/") -> Any:
        context = browser.new_context()
        contexts.append(context)
        p = context.new_page()
        p.set_default_timeout(15000)
        p.goto(app.http + path)
        return p

    try:
        yield make
    finally:
        for c in contexts:
            c.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server for one test (the test app's processes share it)."""
    server = RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()
