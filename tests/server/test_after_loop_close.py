"""``send``, ``send_binary`` and ``close`` from another thread do nothing once the loop that owns
the connection has closed, on the server handle and on the client (issue 12, item 17); before,
``loop.call_soon_threadsafe`` raised ``RuntimeError('Event loop is closed')``.

These tests are plain functions: each runs its own loops in threads, on asyncio and on uvloop.
"""

from __future__ import annotations

import asyncio
import queue
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import zzz

from .helpers import upgrade_request

LOOPS = ["asyncio", "uvloop"]


def _factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop  # type: ignore[no-any-return]
    return asyncio.new_event_loop


def _run_in_thread(kind: str, main: Callable[[], Coroutine[Any, Any, None]]) -> threading.Thread:
    """Run ``main()`` on a new loop of ``kind`` in a thread; the loop is closed when it ends."""

    def run() -> None:
        loop = _factory(kind)()
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _calls_after_close(target: Any) -> list[BaseException]:
    errors: list[BaseException] = []
    for call in (lambda: target.send("late"), lambda: target.send_binary(b"late"), lambda: target.close()):
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - collected and asserted on
            errors.append(exc)
    return errors


@pytest.mark.parametrize("shutdown", ["graceful", "abrupt"])
@pytest.mark.parametrize("kind", LOOPS)
def test_server_handle_from_another_thread_after_the_loop_closed(kind: str, shutdown: str) -> None:
    handles: queue.Queue[Any] = queue.Queue()
    ports: queue.Queue[int] = queue.Queue()
    stop = threading.Event()

    async def main() -> None:
        app = zzz.App([zzz.Router.ws("/ws", zzz.WsConfig(on_open=handles.put))], close_timeout=0.5)
        server = await app.start(host="127.0.0.1", port=0)
        ports.put(server.port)
        while not stop.is_set():
            await asyncio.sleep(0.01)
        if shutdown == "graceful":
            await server.close()
        # "abrupt": the loop just ends with the connection open.

    thread = _run_in_thread(kind, main)
    sock = socket.create_connection(("127.0.0.1", ports.get(timeout=10)), timeout=5)
    try:
        sock.sendall(upgrade_request("/ws"))
        assert sock.recv(4096).startswith(b"HTTP/1.1 101")
        ws = handles.get(timeout=5)
        stop.set()
        thread.join(10)
        assert not thread.is_alive()
        assert _calls_after_close(ws) == []
    finally:
        stop.set()
        sock.close()


@pytest.mark.parametrize("shutdown", ["graceful", "abrupt"])
@pytest.mark.parametrize("kind", LOOPS)
def test_client_from_another_thread_after_its_loop_closed(kind: str, shutdown: str) -> None:
    ports: queue.Queue[int] = queue.Queue()
    clients: queue.Queue[Any] = queue.Queue()
    stop_server = threading.Event()
    stop_client = threading.Event()

    async def server_main() -> None:
        app = zzz.App(
            [zzz.Router.ws("/ws", zzz.WsConfig(on_message=lambda ws, msg: None))], close_timeout=0.5
        )
        server = await app.start(host="127.0.0.1", port=0)
        ports.put(server.port)
        while not stop_server.is_set():
            await asyncio.sleep(0.01)
        await server.close()

    async def client_main() -> None:
        ws = await zzz.connect(f"ws://127.0.0.1:{ports.get(timeout=10)}/ws", close_timeout=0.5)
        clients.put(ws)
        while not stop_client.is_set():
            await asyncio.sleep(0.01)
        if shutdown == "graceful":
            ws.close()
            await ws.wait_closed()

    server_thread = _run_in_thread(kind, server_main)
    client_thread = _run_in_thread(kind, client_main)
    try:
        ws = clients.get(timeout=10)
        stop_client.set()
        client_thread.join(10)
        assert not client_thread.is_alive()
        assert _calls_after_close(ws) == []
    finally:
        stop_client.set()
        stop_server.set()
        server_thread.join(10)
