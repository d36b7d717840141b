"""What every connection of one listening server shares: its settings, routes and loop, the live
connections, the running callbacks, what they count, and whether the server is shutting down.

The I/O drivers (``HttpProtocol``, ``WebSocketProtocol``) hold the hub of their server and report
to it; ``Server.close`` walks it to shut down. It knows the drivers only as members of its sets,
so it imports neither of them and both can import it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from zzz.metrics import Counters
from zzz.proxy import TrustedProxies
from zzz.routing import RouteTable
from zzz.settings import Settings

__all__ = ["ConnectionHub"]


class ConnectionHub:
    """The shared state of one listening server.

    Attributes:
        settings: the app's ``Settings``.
        routes: the app's ``RouteTable``.
        loop: the loop the server runs on.
        connections: open connections, HTTP and WebSocket (what ``max_connections`` counts).
        websockets: upgraded connections, from ``register`` (the 101 written) to ``unregister``.
        tasks: running async callbacks (on_open, on_message, on_close), awaited at shutdown.
        refused: connections answered 503 that linger; not counted as connections.
        closing: set once ``Server.close`` started; new connections get 503.
        idle: set while ``connections`` is empty (shutdown waits for it).
        counters: what the drivers count (``zzz.metrics.Counters``; ``Server.stats()`` reads it).
        proxies: the proxies whose forwarding headers are believed, or None when
            ``proxy_headers`` is off.
    """

    def __init__(self, settings: Settings, routes: RouteTable, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.routes = routes
        self.loop = loop
        self.connections: set[Any] = set()
        self.websockets: set[Any] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.refused: set[Any] = set()
        self.closing = False
        self.idle: asyncio.Event = asyncio.Event()
        self.idle.set()
        self.counters = Counters()
        self.proxies = TrustedProxies(settings.forwarded_allow_ips) if settings.proxy_headers else None

    def register(self, proto: Any) -> None:
        """A WebSocket connection is open."""
        self.websockets.add(proto)
        self.counters.connections_total += 1

    def unregister(self, proto: Any) -> None:
        """A WebSocket connection is gone (it stops counting as a connection too)."""
        self.websockets.discard(proto)
        self.connection_gone(proto)

    def connection_gone(self, proto: Any) -> None:
        """A connection is gone; ``idle`` is set when it was the last."""
        self.connections.discard(proto)
        if not self.connections:
            self.idle.set()
