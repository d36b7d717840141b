"""zzz as an ASGI 3 server: FastAPI, Starlette, Django Channels and any other ASGI app, on zzz's
HTTP parser and WebSocket core.

``serve(app, host=..., port=..., **settings)`` blocks like ``App.run`` (SIGTERM/SIGINT drain the
connections, run lifespan shutdown and return); ``await start(app, host, port, **settings)`` is
for a running loop and returns an ``AsgiServer`` once lifespan startup has completed;
``await server.close()`` drains and runs lifespan shutdown. The settings are ``App``'s. From the
command line: ``python -m zzz MODULE:ATTR`` (``--interface auto`` serves any callable that is
not a ``zzz.App`` as ASGI; ``--interface asgi`` insists on it).

Here: the ``lifespan`` scope and the server around the connections; the HTTP side of a
connection is ``zzz._asgi_http``, an accepted WebSocket ``zzz._asgi_ws``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl as ssl_module
from typing import Any

from zzz import metrics, runner
from zzz._asgi_http import ASGI_VERSION, AsgiApp3, AsgiHttpProtocol
from zzz._asgi_ws import ClientDisconnected
from zzz.hub import ConnectionHub
from zzz.proxy import TrustedProxies
from zzz.routing import RouteTable
from zzz.server import Server, _check_port, listen
from zzz.settings import FLAT_NAMES, Settings

__all__ = ["AsgiApp", "AsgiServer", "ClientDisconnected", "StartupFailed", "serve", "start"]

logger = logging.getLogger("zzz")

#: The exit status of ``serve`` (and of ``python -m zzz``) when lifespan startup fails, as uvicorn's.
STARTUP_FAILED_EXIT = 3

#: ``max_message_size`` when none is given: uvicorn's ``--ws-max-size`` default (16 MiB), so that
#: an app moved from uvicorn keeps the messages it accepts; ``zzz.App``'s default is 1 MiB.
ASGI_MAX_MESSAGE_SIZE = 16 << 20


class StartupFailed(RuntimeError):
    """The app answered ``lifespan.startup`` with ``lifespan.startup.failed`` (the message is its
    reason); nothing was bound."""


class _Lifespan:
    """The ``lifespan`` scope of one server: startup before it listens, shutdown after it drained."""

    def __init__(self, app: AsgiApp3, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self.supported = True
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self._startup: asyncio.Future[tuple[str, str]] = loop.create_future()
        self._shutdown: asyncio.Future[tuple[str, str]] = loop.create_future()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": ASGI_VERSION, "state": self.state}
        outcome = ("returned", "")
        try:
            await self.app(scope, self._inbox.get, self._send)
        except Exception as exc:  # an app without lifespan raises: said below
            outcome = ("raised", f"{type(exc).__name__}: {exc}")
            if not self._startup.done():
                logger.info("ASGI 'lifespan' protocol appears unsupported (%s)", outcome[1])
                logger.debug("the lifespan scope raised", exc_info=exc)
            else:
                logger.error("Exception in ASGI lifespan", exc_info=exc)
        for fut in (self._startup, self._shutdown):
            if not fut.done():
                fut.set_result(outcome)

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        phase, _, outcome = str(kind).removeprefix("lifespan.").partition(".")
        if phase not in ("startup", "shutdown") or outcome not in ("complete", "failed"):
            raise RuntimeError(f"Unexpected ASGI message {kind!r} in the lifespan scope.")
        fut = self._startup if phase == "startup" else self._shutdown
        if fut.done():
            raise RuntimeError(f"Unexpected ASGI message {kind!r}: that phase is over.")
        if fut is self._shutdown and not self._startup.done():
            raise RuntimeError(f"Unexpected ASGI message {kind!r} before the startup completed.")
        fut.set_result((outcome, str(message.get("message") or "")))

    async def startup(self) -> None:
        """Run lifespan startup; an app that raises or returns instead is served without it.

        Raises:
            StartupFailed: the app sent ``lifespan.startup.failed``.
        """
        self._task = asyncio.get_running_loop().create_task(self._run())
        await self._inbox.put({"type": "lifespan.startup"})
        outcome, message = await self._startup
        if outcome == "failed":
            raise StartupFailed(message or "lifespan.startup.failed")
        if outcome != "complete":
            self.supported = False
            if outcome == "returned":
                logger.info("ASGI lifespan: the app returned without answering lifespan.startup")

    async def shutdown(self) -> None:
        """Run lifespan shutdown (nothing for an app that does not support lifespan)."""
        task = self._task
        if not self.supported or task is None or task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        outcome, message = await self._shutdown
        if outcome == "failed":
            logger.error("ASGI lifespan shutdown failed: %s", message)
        await asyncio.wait([task], timeout=1)


class AsgiServer(Server):
    """A listening ASGI server (from ``start`` or ``AsgiApp.start``): ``Server``'s ``port``,
    ``sockets``, ``connections``, ``draining``, ``stats()``, and a ``close()`` that drains and
    then runs lifespan shutdown."""

    def __init__(
        self, hub: ConnectionHub, servers: list[asyncio.AbstractServer], lifespan: _Lifespan
    ) -> None:
        super().__init__(hub, servers)
        self._lifespan = lifespan
        self._shut: asyncio.Future[None] | None = None

    async def close(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """``Server.close`` (WebSockets closed with ``code`` in rounds, requests answered, what is
        left aborted after ``close_timeout``), then lifespan shutdown, once.

        Raises:
            ValueError: ``code`` may not be sent or ``reason`` is too long (nothing is closed).
        """
        await super().close(code, reason)
        if self._shut is None:
            self._shut = asyncio.get_running_loop().create_future()
            try:
                await self._lifespan.shutdown()
            finally:
                self._shut.set_result(None)
        else:
            await asyncio.shield(self._shut)


class AsgiApp:
    """An ASGI 3 app with zzz's settings: what ``serve``, ``start`` and the CLI run.

    Args:
        app: the ASGI 3 callable, ``app(scope, receive, send)``.
        **settings: any ``zzz.App`` setting (see the README for the few that do not apply);
            ``max_message_size`` defaults to ``ASGI_MAX_MESSAGE_SIZE`` (16 MiB) here.

    Raises:
        TypeError: ``app`` is not callable, or an unknown setting.
        ValueError: a ``forwarded_allow_ips`` entry that is no address, network or ``"*"``.
        ImportError: ``metrics_path`` is set and ``prometheus-client`` is not installed.
    """

    def __init__(self, app: Any, **settings: Any) -> None:
        if not callable(app):
            raise TypeError(f"an ASGI app must be callable, not {type(app).__name__}")
        unknown = set(settings) - FLAT_NAMES.keys()
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        self.app: AsgiApp3 = app
        settings.setdefault("max_message_size", ASGI_MAX_MESSAGE_SIZE)
        self.settings = Settings(**settings)
        TrustedProxies(self.settings.forwarded_allow_ips)
        self._exporter: metrics.PrometheusExporter | None = None
        if self.settings.metrics_path is not None:
            metrics.require_prometheus()
            self._exporter = metrics.PrometheusExporter(self.stats)
        self._hubs: list[ConnectionHub] = []

    def stats(self) -> dict[str, Any]:
        """``AsgiServer.stats()`` summed over the servers this app started in this process."""
        hubs = self._hubs
        return metrics.stats([h.counters for h in hubs], sum(len(h.websockets) for h in hubs), ())

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        ssl: ssl_module.SSLContext | None = None,
        reuse_port: bool = False,
        sock: socket.socket | None = None,
        backlog: int = 2048,
    ) -> AsgiServer:
        """Run lifespan startup, then listen inside the running loop.

        Raises:
            StartupFailed: lifespan startup failed (nothing is bound).
            ValueError: ``port`` is outside 0-65535.
            TypeError: ``port`` is not an int.
            OSError: the address cannot be bound (lifespan shutdown has run).
        """
        _check_port(port)
        loop = asyncio.get_running_loop()
        state: dict[str, Any] = {}
        lifespan = _Lifespan(self.app, state)
        await lifespan.startup()
        hub = ConnectionHub(self.settings, RouteTable([]), loop)
        app, exporter = self.app, self._exporter
        try:
            srv = await listen(
                loop,
                lambda: AsgiHttpProtocol(hub, app, state, exporter),
                self.settings,
                host,
                port,
                ssl,
                reuse_port,
                sock,
                backlog,
            )
        except BaseException:
            await lifespan.shutdown()
            raise
        server = AsgiServer(hub, [srv], lifespan)
        self._hubs.append(hub)
        if exporter is not None:
            hubs = self._hubs
            exporter.started(loop, lambda: any(not h.closing for h in hubs))
        logger.info("zzz (ASGI) listening on %s", ", ".join(str(s.getsockname()) for s in server.sockets))
        return server


async def start(app: Any, host: str = "127.0.0.1", port: int = 8080, **settings: Any) -> AsgiServer:
    """Serve the ASGI ``app`` inside the running loop; returns once lifespan startup completed
    and the socket listens.

    Args:
        app: the ASGI 3 callable.
        host: the address to bind.
        port: the TCP port (0: one the system picks; ``server.port`` says which).
        **settings: ``zzz.App`` settings.

    Raises:
        TypeError: an unknown setting, or ``app`` is not callable.
        StartupFailed: lifespan startup failed.
        OSError: the address cannot be bound.
    """
    return await AsgiApp(app, **settings).start(host, port)


def serve(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    uds: str | None = None,
    workers: int | None = None,
    loop: str = "auto",
    ssl: ssl_module.SSLContext | None = None,
    **settings: Any,
) -> None:
    """Serve the ASGI ``app`` until SIGINT or SIGTERM, then drain, run lifespan shutdown and
    return (blocking, like ``App.run``; ``workers``, ``uds``, ``loop`` and ``ssl`` as there).

    Raises:
        TypeError: an unknown setting, or ``app`` is not callable.
        ValueError: a bad ``port``, ``loop`` or ``workers``.
        SystemExit: 3 when lifespan startup failed (logged with the app's reason); 1 when the
            address cannot be bound or the workers keep dying.
    """
    target = AsgiApp(app, **settings)
    _check_port(port)
    if loop not in ("auto", "uvloop", "asyncio"):
        raise ValueError('loop must be "auto", "uvloop" or "asyncio"')
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError("workers must be at least 1")
    run(target, runner.Listen(host, port, uds), loop, ssl, workers)


def run(
    target: Any,
    listen: runner.Listen,
    loop: str,
    ssl: ssl_module.SSLContext | None,
    workers: int | None,
) -> None:
    """``zzz.runner.run`` for an ``AsgiApp`` (or a loader of one): a failed startup is logged and
    exits with ``STARTUP_FAILED_EXIT``.

    Raises:
        SystemExit: as ``serve``.
    """
    try:
        runner.run(target, listen, loop, ssl, workers)
    except StartupFailed as exc:
        logger.error("ASGI lifespan startup failed: %s", exc)
        logger.error("Application startup failed. Exiting.")
        raise SystemExit(STARTUP_FAILED_EXIT) from None
