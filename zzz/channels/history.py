"""Broadcast history of channel topics: stream positions, stored publications, the in-process store.

A topic whose ``ChannelDef`` has a ``History`` numbers its broadcasts (``offset`` 1, 2, ... in an
``epoch``) and keeps the last ones, so that a client that reconnects can get what it missed.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Final

__all__ = ["History", "LocalHistory", "Position", "Publication", "new_epoch"]


@dataclass(frozen=True, slots=True)
class History:
    """How much of a topic's broadcast stream to keep for recovery.

    Attributes:
        size: the number of most recent broadcasts kept (a hard cap).
        ttl: seconds a broadcast is kept at most; None keeps it until ``size`` pushes it out.

    Raises:
        ValueError: ``size < 1`` or ``ttl <= 0``.
    """

    size: int
    ttl: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise TypeError("History size must be an int")
        if self.size < 1:
            raise ValueError("History size must be at least 1")
        if self.ttl is not None and not self.ttl > 0:  # "not >" also refuses NaN
            raise ValueError("History ttl must be positive (or None)")


@dataclass(frozen=True, slots=True)
class Position:
    """A place in a topic's broadcast stream.

    Attributes:
        offset: the offset of the last broadcast (0 before the first); grows by exactly 1 per broadcast.
        epoch: names one unbroken stream; it changes whenever the history was lost.
    """

    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class Publication:
    """One stored broadcast.

    Attributes:
        offset: its offset in the topic's stream.
        event: the event name.
        body: the payload's JSON text (encoded once, by the sender).
        exclude: the socket id of a ``broadcast_from`` sender (which does not get it), or None.
        time: ``time.time()`` when it was published (for ``History.ttl``).
    """

    offset: int
    event: str
    body: str
    exclude: str | None
    time: float


def new_epoch() -> str:
    """A fresh epoch: random, short, and safe to put in JSON as it is."""
    return uuid.uuid4().hex[:16]


# A stored publication as the stream keeps it: a Publication's fields as a plain tuple, (offset,
# event, body, exclude, time). Every broadcast on a topic with history stores one, and a frozen
# dataclass costs five ``object.__setattr__`` calls to make; Publications are made only for the
# rare reader, a client that recovers (``since``).
_Entry = tuple[int, str, str, "str | None", float]
_OFFSET: Final = 0  # the offset field of an _Entry
_TIME: Final = 4  # its time field


class _Stream:
    """One topic's stored stream (guarded by ``LocalHistory``'s lock)."""

    __slots__ = ("entries", "epoch", "offset")

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch
        self.offset = 0
        self.entries: collections.deque[_Entry] = collections.deque()

    def expire(self, history: History, now: float) -> None:
        if history.ttl is not None:
            oldest = now - history.ttl
            entries = self.entries
            while entries and entries[0][_TIME] < oldest:
                entries.popleft()


# How often (at most) the store looks for topics whose whole history expired, to free them.
_SWEEP_PERIOD = 30.0


class LocalHistory:
    """The history of every topic, kept in this process (``InMemoryPubSub``'s, and the base default).

    Memory stays bounded by the topics that were broadcast to: a topic that never had a broadcast
    costs nothing (it sits at offset 0 in the store's ``base`` epoch), each stream keeps at most
    ``size`` publications, and a stream whose every publication expired (``ttl``) is freed. Freeing
    one moves ``base`` to a new epoch, so that the topic's next broadcasts can never be taken for its
    old ones; positions taken at offset 0 on topics without broadcasts before that then no longer
    recover (the client is told ``recovered: false``).

    Thread-safe: ``append`` may run in any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}
        self._ttls: dict[str, float] = {}  # topic -> ttl, for the sweep (topics with a ttl only)
        self.base = new_epoch()
        self._next_sweep = time.monotonic() + _SWEEP_PERIOD

    def append(self, topic: str, event: str, body: str, exclude: str | None, history: History) -> Position:
        """Store a broadcast and give it the topic's next offset.

        Returns:
            The broadcast's position.
        """
        now = time.time()
        with self._lock:
            stream = self._streams.get(topic)
            if stream is None:
                stream = self._streams[topic] = _Stream(self.base)
            stream.offset += 1
            entries = stream.entries
            entries.append((stream.offset, event, body, exclude, now))
            if len(entries) > history.size:
                entries.popleft()
            stream.expire(history, now)
            if history.ttl is not None:
                self._ttls[topic] = history.ttl
            position = Position(stream.offset, stream.epoch)
        if time.monotonic() >= self._next_sweep:
            self.sweep()
        return position

    def position(self, topic: str) -> Position:
        """The topic's current position (offset 0 in ``base`` before its first broadcast)."""
        with self._lock:
            stream = self._streams.get(topic)
            return Position(0, self.base) if stream is None else Position(stream.offset, stream.epoch)

    def since(self, topic: str, history: History, pos: Position) -> tuple[bool, list[Publication], Position]:
        """What a client at ``pos`` missed.

        Returns:
            ``(recovered, missed, current)``: recovered is False, and missed empty, when ``pos`` is in
            another epoch, ahead of the stream, or older than what is still stored.
        """
        now = time.time()
        with self._lock:
            stream = self._streams.get(topic)
            if stream is None:
                current = Position(0, self.base)
                return pos == current, [], current
            stream.expire(history, now)
            current = Position(stream.offset, stream.epoch)
            if pos.epoch != stream.epoch or pos.offset > stream.offset or pos.offset < 0:
                return False, [], current
            if pos.offset == stream.offset:
                return True, [], current
            entries = stream.entries
            if not entries or entries[0][_OFFSET] > pos.offset + 1:
                return False, [], current  # trimmed by size or expired by ttl
            # Offsets in the deque are consecutive, so the first one wanted is at a known index.
            start = pos.offset + 1 - entries[0][_OFFSET]
            return True, [Publication(*e) for e in itertools.islice(entries, start, None)], current

    def sweep(self) -> None:
        """Free the streams whose every publication expired (a new ``base`` epoch if any was freed)."""
        now = time.time()
        with self._lock:
            self._next_sweep = time.monotonic() + _SWEEP_PERIOD
            gone = []
            for topic, ttl in self._ttls.items():
                stream = self._streams.get(topic)
                if stream is None or not stream.entries or stream.entries[-1][_TIME] < now - ttl:
                    gone.append(topic)
            for topic in gone:
                del self._ttls[topic]
                self._streams.pop(topic, None)
            if gone:
                self.base = new_epoch()
