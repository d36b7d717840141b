"""A compressed ``zzz.broadcast`` (``DeflateConfig(server_no_context_takeover=True)``) decoded by
headless Chromium: the server answers Chromium's offer with ``server_no_context_takeover``, each
broadcast is compressed once for all the pages (they share the window bits), and every page gets
every message intact and in order. The broadcasts come from the test's thread, so they are handed
to the server's loop as the README says.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import zzz
from zzz import deflate as deflate_module

OPEN = """(url) => new Promise((resolve, reject) => {
    window.got = [];
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    ws.onmessage = (e) => window.got.push(
        typeof e.data === "string" ? e.data : Array.from(new Uint8Array(e.data)));
    ws.onopen = () => resolve(ws.extensions);
    ws.onerror = () => reject(new Error("websocket error"));
    window.ws = ws;
})"""


@contextlib.contextmanager
def served_in_a_thread(app: zzz.App) -> Iterator[Any]:
    """``app`` served by its own loop in a thread, on a free port of 127.0.0.1; yields the server."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    server: list[Any] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        server.append(loop.run_until_complete(app.start(host="127.0.0.1", port=0)))
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(15)
    try:
        yield server[0]
    finally:
        asyncio.run_coroutine_threadsafe(server[0].close(), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(15)
        loop.close()


@pytest.fixture
def compress_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    calls: list[int] = []
    real = deflate_module.PerMessageDeflate.compress

    def compress(pmd: deflate_module.PerMessageDeflate, data: Any) -> bytes:
        calls.append(len(data))
        return real(pmd, data)

    monkeypatch.setattr(deflate_module.PerMessageDeflate, "compress", compress)
    yield calls


def test_chromium_decodes_a_broadcast_compressed_once(browser: Any, compress_calls: list[int]) -> None:
    handles: list[zzz.WebSocket] = []
    config = deflate_module.DeflateConfig(server_no_context_takeover=True)
    app = zzz.App([zzz.Router.ws("/ws", zzz.WsConfig(on_open=handles.append))], deflate=config)
    messages: list[str | bytes] = [
        '{"event":"tick","price":101.25,"symbol":"ZZZ"}' * 10,
        "héllo wörld — ünïcode ✓ " * 30,
        bytes(range(256)) * 4,
        "",
        "y" * 70_000,
        '{"event":"tick","price":101.25,"symbol":"ZZZ"}' * 10,
    ]
    with served_in_a_thread(app) as server:
        contexts = [browser.new_context() for _ in range(3)]
        try:
            pages = [c.new_page() for c in contexts]
            url = f"ws://127.0.0.1:{server.port}/ws"
            for page in pages:
                page.set_default_timeout(15000)
                extensions = page.evaluate(OPEN, url)
                assert extensions.startswith("permessage-deflate")
                assert "server_no_context_takeover" in extensions
            deadline = threading.Event()
            for _ in range(100):
                if len(handles) == len(pages):
                    break
                deadline.wait(0.05)
            assert len(handles) == len(pages)
            keys = {ws._proto.conn.broadcast_key for ws in handles}
            assert len(keys) == 1 and None not in keys
            compress_calls.clear()
            for message in messages:  # from this thread: handed to the server's loop
                assert zzz.broadcast(handles, message) == len(pages)
            for page in pages:
                page.wait_for_function(f"window.got.length === {len(messages)}")
                got = page.evaluate("window.got")
                assert got == [m if isinstance(m, str) else list(m) for m in messages]
            assert len(compress_calls) == len(messages)  # once per broadcast, for all three pages
        finally:
            for c in contexts:
                c.close()
