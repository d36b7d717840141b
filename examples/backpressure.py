"""Streaming to slow readers without eating memory: ``await ws.drain()`` and ``max_backpressure``.

``/ws/stream`` sends binary chunks to each client as fast as the client reads them: after every
send it awaits ``ws.drain()``, which waits while the unsent bytes (``ws.buffered_amount``) are above
``write_high_water``, so a slow reader costs at most about that much memory. ``/ws/firehose``
ignores drain: a client that stops reading makes its buffer grow until ``max_backpressure``, and
zzz then closes it with 1008. Run ``python examples/backpressure.py [--host H] [--port N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

import zzz

__all__ = ["CHUNK", "Stats", "build_app"]

CHUNK = os.urandom(16384)  # random: deflate could not shrink it, so compression is off below


@dataclass
class Stats:
    """What the producers saw: bytes queued, the largest write buffer, the close codes."""

    sent: int = 0
    peak_buffered: int = 0
    closes: list[tuple[str, int, str]] = field(default_factory=list)


def build_app(stats: Stats | None = None, **settings: Any) -> zzz.App:
    """The streaming app; ``settings`` go to ``zzz.App`` (``max_backpressure`` defaults to 1 MiB)."""
    stats = stats if stats is not None else Stats()
    producers: dict[zzz.WebSocket, asyncio.Task[None]] = {}

    async def stream(ws: zzz.WebSocket, respect_drain: bool) -> None:
        while not ws.closed:
            ws.send_binary(CHUNK)
            stats.sent += len(CHUNK)
            stats.peak_buffered = max(stats.peak_buffered, ws.buffered_amount)
            if respect_drain:
                # Waits while the buffer is above write_high_water, and yields to the loop once
                # even when there is room, so the loop goes on reading and serving others.
                await ws.drain()
            else:
                # Without drain() nothing yields: this turn lets the loop run anything else
                # (this connection's reads among them).
                await asyncio.sleep(0)

    def opener(respect_drain: bool) -> Any:
        def on_open(ws: zzz.WebSocket) -> None:
            # A task, not an async on_open: the connection must go on reading (pongs, the close).
            producers[ws] = asyncio.get_running_loop().create_task(stream(ws, respect_drain))

        return on_open

    def on_close(ws: zzz.WebSocket, code: int, reason: str) -> None:
        task = producers.pop(ws, None)
        if task is not None:
            task.cancel()
        stats.closes.append((ws.path, code, reason))
        print(
            f"{ws.path} closed {code} {reason!r}: {stats.sent} bytes sent, peak buffer {stats.peak_buffered}"
        )

    settings.setdefault("max_backpressure", 1 << 20)
    settings.setdefault("compression", False)
    return zzz.App(
        [
            zzz.Router.ws("/ws/stream", zzz.WsConfig(on_open=opener(True), on_close=on_close)),
            zzz.Router.ws("/ws/firehose", zzz.WsConfig(on_open=opener(False), on_close=on_close)),
        ],
        **settings,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="zzz backpressure demo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    build_app().run(args.host, args.port)
