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


def watch_errors(page: Any) -> list[str]:
    """Collect console errors, uncaught exceptions and failed responses (e.g. a 404 favicon) of a page."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    return errors


def text_of(page: Any, selector: str) -> str:
    return str(page.evaluate(f"document.querySelector({json.dumps(selector)}).textContent"))


def wait_text(page: Any, selector: str, text: str) -> None:
    """Wait until the element's text contains ``text``."""
    page.wait_for_function(
        f"document.querySelector({json.dumps(selector)}).textContent.includes({json.dumps(text)})"
    )


@pytest.mark.parametrize("size", [(390, 844), (1280, 800)])
def test_before_login_only_the_centred_name_card_shows(
    browser: Any, demo: AppProcess, size: tuple[int, int]
) -> None:
    width, height = size
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
        page = context.new_page()
        page.set_default_timeout(15000)
        errors = watch_errors(page)
        page.goto(demo.http + "/")
        assert page.is_visible("#login")
        assert not page.is_visible("#app")
        assert not page.is_visible("#msg") and not page.is_visible("#room-name")
        box = page.locator("#login").bounding_box()
        assert box is not None
        assert box["x"] >= 0 and box["y"] >= 0
        assert box["x"] + box["width"] <= width and box["y"] + box["height"] <= height
        # centred: its middle within 5 % of the viewport's middle on both axes
        assert abs(box["x"] + box["width"] / 2 - width / 2) <= 0.05 * width
        assert abs(box["y"] + box["height"] / 2 - height / 2) <= 0.05 * height
        # Creating a room before login (the form is hidden, so submit it from script) does nothing, quietly.
        page.evaluate(
            "() => { document.getElementById('room-name').value = 'early';"
            " document.getElementById('room-form').requestSubmit(); }"
        )
        page.wait_for_timeout(300)
        assert errors == []
        # typing goes to the name box, and logging in still works
        page.keyboard.type("dee")
        assert page.input_value("#name") == "dee"
        page.keyboard.press("Enter")
        page.wait_for_selector("#conn.up")
        wait_text(page, "#messages", "You are in #lobby")
        assert not page.is_visible("#login")
        assert errors == []
    finally:
        context.close()


@pytest.mark.parametrize("size", [(390, 844), (1280, 800)])
def test_logged_in_page_fits_the_viewport(browser: Any, demo: AppProcess, size: tuple[int, int]) -> None:
    width, height = size
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
        page = context.new_page()
        page.set_default_timeout(15000)
        errors = watch_errors(page)
        page.goto(demo.http + "/")
        page.fill("#name", "a-rather-long-name-of-32-chars-x")
        page.click("#login-form button")
        page.wait_for_selector("#conn.up")
        page.fill("#msg", "w" * 300)  # one long word must wrap, not widen the page
        page.press("#msg", "Enter")
        page.wait_for_function("document.querySelector('#messages').textContent.includes('www')")
        page.wait_for_timeout(300)  # let the browser ask for whatever else it wants (an icon)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert page.evaluate("document.documentElement.scrollHeight <= window.innerHeight")
        send = page.locator("#msg-form button").bounding_box()
        assert send is not None
        assert send["x"] >= 0 and send["x"] + send["width"] <= width
        assert send["y"] >= 0 and send["y"] + send["height"] <= height
        # the "new room" box stays inside the sidebar's content box (not over its padding or border)
        inside = page.evaluate(
            """() => {
                const side = document.getElementById("side"), s = side.getBoundingClientRect();
                const box = document.getElementById("room-name").getBoundingClientRect();
                const cs = getComputedStyle(side);
                const left = s.left + parseFloat(cs.borderLeftWidth) + parseFloat(cs.paddingLeft);
                const right = s.right - parseFloat(cs.borderRightWidth) - parseFloat(cs.paddingRight);
                return box.left >= left - 0.5 && box.right <= right + 0.5;
            }"""
        )
        assert inside
        assert errors == []
    finally:
        context.close()


def test_favicon_is_served(browser: Any, demo: AppProcess) -> None:
    # The browser may keep a favicon answer per origin across contexts, so ask for it directly too.
    context = browser.new_context()
    try:
        response = context.request.get(demo.http + "/favicon.ico")
        assert response.status == 200
        assert response.headers["content-type"].startswith("image/svg+xml")
        assert response.body().startswith(b"<svg")
    finally:
        context.close()


def enter_room(page: Any, room: str, slug: str) -> None:
    page.fill("#room-name", room)
    page.press("#room-name", "Enter")
    wait_text(page, "#messages", "You are in #" + slug)


def test_joined_is_said_only_for_later_arrivals(browser: Any, demo: AppProcess) -> None:
    bea = enter(browser, demo, "bea")
    enter_room(bea, "Meeting", "meeting")
    al = enter(browser, demo, "al")
    enter_room(al, "Meeting", "meeting")
    al.wait_for_function("document.querySelector('#users').textContent.includes('bea')")
    bea.wait_for_function("document.querySelector('#messages').textContent.includes('al joined')")
    cid = enter(browser, demo, "cid")
    enter_room(cid, "Meeting", "meeting")
    al.wait_for_function("document.querySelector('#messages').textContent.includes('cid joined')")
    assert "bea joined" not in text_of(al, "#messages")
    assert "al joined" not in text_of(cid, "#messages") and "bea joined" not in text_of(cid, "#messages")
    cid.context.close()
    al.wait_for_function("document.querySelector('#messages').textContent.includes('cid left')")
    for p in (al, bea):
        p.context.close()


def test_room_names_keep_their_letters(browser: Any, demo: AppProcess) -> None:
    page = enter(browser, demo, "eve")
    errors = watch_errors(page)
    enter_room(page, "Café Talk", "café-talk")
    assert page.evaluate("state.channel.topic") == "room:café-talk"
    assert page.evaluate("state.channel.state") == "joined"
    page.wait_for_function("document.querySelector('#users').textContent.includes('eve')")
    assert "# café-talk" in text_of(page, "#rooms")
    page.fill("#msg", "un café ?")
    page.press("#msg", "Enter")
    page.wait_for_function("document.querySelector('#messages').textContent.includes('un café ?')")
    slugs = page.evaluate(
        "['  Hello,  World!! ', 'Ünïcödé Räume', '日本語 チャット', 'a_b--c', '!!!', 'Cafe\\u0301 X']"
        ".map(slug)"
    )
    assert slugs == ["hello-world", "ünïcödé-räume", "日本語-チャット", "a_b-c", "", "café-x"]
    assert errors == []
    page.context.close()
