"""Running an app until a signal: the event loop it runs on, one process, or workers sharing a port.

``App.run`` checks its arguments and calls ``run``; everything here happens after that, around
``app.start`` and ``server.close``. The app is known only by those two methods, so this module
sits beside the server rather than above it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl as ssl_module
import sys
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["http_url", "loop_factory", "run"]

logger = logging.getLogger("zzz")


class _Running(Protocol):
    @property
    def port(self) -> int: ...

    async def close(self) -> None: ...


class _Startable(Protocol):
    async def start(
        self, host: str, port: int, *, ssl: ssl_module.SSLContext | None = ..., reuse_port: bool = ...
    ) -> Any: ...


def http_url(host: str, port: int) -> str:
    """``http://host:port/``, with an IPv6 address in brackets (RFC 3986 section 3.2.2)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The factory of the event loop ``kind`` names: uvloop for "auto" when installed.

    Raises:
        RuntimeError: "uvloop" but uvloop is not installed.
    """
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise RuntimeError(
                    "loop='uvloop' but uvloop is not installed (pip install zzz[uvloop])"
                ) from None
            return asyncio.new_event_loop
        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(
    app: _Startable, host: str, port: int, loop_kind: str, ssl: ssl_module.SSLContext | None, workers: int
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, in this process or in ``workers`` forked ones."""
    if workers == 1:
        _run_one(app, host, port, loop_kind, ssl, reuse_port=False)
    else:
        _run_workers(app, host, port, loop_kind, ssl, workers)


def _run_one(
    app: _Startable, host: str, port: int, loop_kind: str, ssl: ssl_module.SSLContext | None, reuse_port: bool
) -> None:
    async def main() -> None:
        server: _Running = await app.start(host, port, ssl=ssl, reuse_port=reuse_port)
        stop = asyncio.Event()
        running = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                running.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        print(f"zzz: serving on {http_url(host, server.port)} (pid {os.getpid()})", flush=True)
        await stop.wait()
        logger.info("zzz: shutting down")
        await server.close()

    factory = loop_factory(loop_kind)
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main())
    else:  # pragma: no cover - Python 3.10
        ev = factory()
        try:
            ev.run_until_complete(main())
        finally:
            ev.close()


def _run_workers(
    app: _Startable, host: str, port: int, loop_kind: str, ssl: ssl_module.SSLContext | None, workers: int
) -> None:
    if not hasattr(socket, "SO_REUSEPORT"):
        raise RuntimeError("workers > 1 needs SO_REUSEPORT (Linux, BSD, macOS)")
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _run_one(app, host, port, loop_kind, ssl, reuse_port=True)
            except BaseException:
                logger.exception("worker failed")
                code = 1
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    for child in children:
        while True:
            try:
                os.waitpid(child, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break
