"""Heartbeats for one connection, server or client side: ping a peer that has been silent for an
interval, and give up on it if nothing comes back within the timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Keepalive"]


class Keepalive:
    """Pings only when the peer sent nothing for ``interval`` seconds (any data proves it alive,
    so a busy connection costs no pings); calls ``expired`` when ``timeout`` passes without data.

    Args:
        loop: the connection's loop.
        interval: seconds between checks; None turns heartbeats off.
        timeout: seconds to wait for a sign of life after a ping; None waits forever.
        ping: sends a ping; returns False when the connection can't send one any more.
        expired: called once the peer is considered gone.

    The owner sets ``received = True`` whenever data arrives and calls ``cancel()`` when the
    connection ends.
    """

    __slots__ = ("_deadline", "_expired", "_interval", "_loop", "_ping", "_tick", "_timeout", "received")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval: float | None,
        timeout: float | None,
        ping: Callable[[], bool],
        expired: Callable[[], None],
    ) -> None:
        self.received = False
        self._loop = loop
        self._interval = interval
        self._timeout = timeout
        self._ping = ping
        self._expired = expired
        self._tick: asyncio.TimerHandle | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start the first interval (no-op when heartbeats are off)."""
        if self._interval and self._tick is None:
            self._tick = self._loop.call_later(self._interval, self._on_tick)

    def pong(self) -> None:
        """The peer answered: stop waiting for it."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def cancel(self) -> None:
        """Stop every timer (the connection is gone)."""
        for timer in (self._tick, self._deadline):
            if timer is not None:
                timer.cancel()
        self._tick = self._deadline = None

    def _on_tick(self) -> None:
        assert self._interval is not None
        self._tick = self._loop.call_later(self._interval, self._on_tick)
        if self.received:
            self.received = False  # the peer showed it is alive since the last tick
            return
        if self._deadline is not None or not self._ping():
            return
        if self._timeout:
            self._deadline = self._loop.call_later(self._timeout, self._on_deadline)

    def _on_deadline(self) -> None:
        self._deadline = None
        if not self.received:
            self._expired()
