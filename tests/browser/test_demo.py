"""The ``python -m zzz`` demo page: two users chat in a room and see each other online."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.channels.procs import AppProcess


@pytest.fixture(scope="module")
def demo() -> Iterator[AppProcess]:
    proc = AppProcess(demo=True).start()
    try:
        yield proc
    finally:
        proc.stop()


def enter(browser: Any, demo: AppProcess, name: str) -> Any:
    page = browser.new_context().new_page()
    page.set_default_timeout(15000)
    page.goto(demo.http + "/")
    page.fill("#name", name)
    page.click("#login-form button")
    page.wait_for_selector("#conn.up")
    page.wait_for_function(f"document.querySelector('#users').textContent.includes({json.dumps(name)})")
    return page


def test_two_users_chat_and_see_each_other(browser: Any, demo: AppProcess) -> None:
    ann = enter(browser, demo, "ann")
    bob = enter(browser, demo, "<b>bob</b>")  # markup in a name must show as text
    ann.wait_for_function("document.querySelector('#users').textContent.includes('<b>bob</b>')")
    assert ann.locator("#users b").count() == 0
    bob.fill("#msg", "hi <i>ann</i>")
    bob.press("#msg", "Enter")
    ann.wait_for_function("document.querySelector('#messages').textContent.includes('hi <i>ann</i>')")
    assert ann.locator("#messages i").count() == 0
    # a late joiner gets the room's recent history in the join reply
    cy = enter(browser, demo, "cy")
    cy.wait_for_function("document.querySelector('#messages').textContent.includes('hi <i>ann</i>')")
    bob.context.close()
    ann.wait_for_function("!document.querySelector('#users').textContent.includes('bob')")
    ann.context.close()
    cy.context.close()
