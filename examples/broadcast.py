"""A live dashboard feed: one background task sends a JSON tick to every connected client.

Clients connect at ``/ws/ticks``. The ticker task starts with the first client and stops when the
last one leaves (so it needs no start-up hook and works with ``app.run`` and ``app.start`` alike);
each tick is encoded once and sent to everybody with ``zzz.broadcast``.
Run ``python examples/broadcast.py [--host H] [--port N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import zzz

__all__ = ["Ticker", "build_app"]


class Ticker:
    """The connected clients and the task that publishes ``{"tick": n, ...}`` every ``interval``."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.clients: set[zzz.WebSocket] = set()
        self.tick = 0  # keeps counting across idle periods, so ticks only ever increase
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """True while the ticker task runs (there are clients)."""
        return self._task is not None

    def on_open(self, ws: zzz.WebSocket) -> None:
        self.clients.add(ws)
        if self._task is None:  # callbacks run on the loop's thread, so a task can start here
            self._task = asyncio.get_running_loop().create_task(self._run())

    def on_close(self, ws: zzz.WebSocket, code: int, reason: str) -> None:
        self.clients.discard(ws)
        if not self.clients and self._task is not None:
            self._task.cancel()  # nobody listens: stop ticking (shutdown closes everyone, too)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.tick += 1
            tick = {"tick": self.tick, "time": time.time(), "clients": len(self.clients)}
            zzz.broadcast(list(self.clients), json.dumps(tick))


def build_app(ticker: Ticker | None = None) -> zzz.App:
    """The dashboard app; pass your own ``Ticker`` to change the interval or look at the clients."""
    ticker = ticker or Ticker()
    config = zzz.WsConfig(on_open=ticker.on_open, on_close=ticker.on_close)
    return zzz.App([zzz.Router.ws("/ws/ticks", config)])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="zzz live dashboard feed")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    build_app().run(args.host, args.port)
