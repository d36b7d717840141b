"""Topic subscriptions, broadcast fan-out and the presence replica of one process.

The in-process backend lives here; ``zzz.channels.redis`` extends it so that broadcasts and presence reach
every process attached to the same Redis.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import uuid
import weakref
from typing import Any, Protocol

from zzz.channels.wire import dumps, encode_raw

__all__ = ["InMemoryPubSub", "PresenceEntry", "PubSub", "Subscriber", "active_backends"]

log = logging.getLogger("zzz")

# One presence entry as it travels and is stored: [ref, key, meta, node, socket_id].
PresenceEntry = list[Any]


class Subscriber(Protocol):
    """What the pub/sub needs from a subscriber (a ``ChannelSocket``)."""

    id: str
    array_form: bool

    def send_text(self, text: str) -> None:
        """Send one text frame to the client; never raises."""


_backends: weakref.WeakSet[PubSub] = weakref.WeakSet()


def active_backends() -> list[PubSub]:
    """Every pub/sub backend alive in this process (``Presence.list`` reads them all)."""
    return list(_backends)


class PubSub:
    """Base backend: local topic registry, local fan-out and the presence replica.

    A broadcast's payload is JSON-encoded once, and its frame text once per wire form, whatever the number
    of receivers. Subclasses hook ``_publish`` (send an envelope to other processes) and ``_store`` (make
    presence changes durable) and call ``_receive`` with envelopes from other processes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._topics: dict[str, dict[str, Subscriber]] = {}
        # Presence replica: topic -> ref -> entry; and the refs this process tracked, per socket.
        self._presence: dict[str, dict[str, PresenceEntry]] = {}
        self._tracked: dict[str, dict[tuple[str, str], str]] = {}
        self._ref_counter = itertools.count(1)
        self.node_id = ""
        _backends.add(self)

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Prepare the backend; called before the first socket uses it (idempotent)."""
        if not self.node_id:
            # Made here, not in __init__: a backend created before a fork must not share its id.
            self.node_id = f"{uuid.uuid4().hex[:12]}.{os.getpid()}"

    async def close(self) -> None:
        """Release what ``start`` acquired."""

    # -- subscriptions -------------------------------------------------------------------------------------

    def subscribe(self, topic: str, sub: Subscriber) -> None:
        """Deliver ``topic``'s broadcasts to ``sub`` from now on."""
        with self._lock:
            self._topics.setdefault(topic, {})[sub.id] = sub

    def unsubscribe(self, topic: str, sub: Subscriber) -> None:
        """Stop delivering ``topic`` to ``sub``."""
        with self._lock:
            subs = self._topics.get(topic)
            if subs is not None:
                subs.pop(sub.id, None)
                if not subs:
                    del self._topics[topic]

    def forget(self, sub: Subscriber) -> None:
        """Drop ``sub`` from every topic and its presence entries (its connection closed)."""
        self.untrack_all(sub)
        with self._lock:
            for topic in [t for t, subs in self._topics.items() if sub.id in subs]:
                subs = self._topics[topic]
                del subs[sub.id]
                if not subs:
                    del self._topics[topic]

    def subscriber_count(self, topic: str) -> int:
        """Subscribers of ``topic`` in this process."""
        return len(self._topics.get(topic, ()))

    # -- messages ------------------------------------------------------------------------------------------

    def broadcast(self, topic: str, event: str, payload: Any, exclude: str | None = None) -> None:
        """Send an event to every subscriber of ``topic`` in every process.

        Args:
            topic: the topic.
            event: the event name.
            payload: a JSON-serialisable value.
            exclude: a socket id that must not receive it (``broadcast_from``).

        Raises:
            TypeError: the payload is not JSON-serialisable.
        """
        body = dumps(payload)
        self._deliver(topic, event, body, exclude)
        self._publish("b", [self.node_id, topic, event, exclude], body)

    def send_to(self, target: str, topic: str, event: str, payload: Any) -> None:
        """Send an event to one subscriber of ``topic``, found by socket id, in whatever process it is."""
        body = dumps(payload)
        if not self._deliver_one(target, topic, event, body):
            self._publish("d", [self.node_id, topic, event, target], body)

    def _deliver(self, topic: str, event: str, body: str, exclude: str | None) -> None:
        subs = self._topics.get(topic)
        if not subs:
            return
        texts: list[str | None] = [None, None]  # [object form, array form], each made at most once
        for sub in list(subs.values()):
            if sub.id == exclude:
                continue
            form = 1 if sub.array_form else 0
            text = texts[form]
            if text is None:
                text = texts[form] = encode_raw(sub.array_form, topic, event, body)
            sub.send_text(text)

    def _deliver_one(self, target: str, topic: str, event: str, body: str) -> bool:
        sub = self._topics.get(topic, {}).get(target)
        if sub is None:
            return False
        sub.send_text(encode_raw(sub.array_form, topic, event, body))
        return True

    # -- presence ------------------------------------------------------------------------------------------

    def track(self, sub: Subscriber, topic: str, key: str, meta: dict[str, Any]) -> str:
        """Track ``sub`` under ``key`` on ``topic``; tracking the same key again replaces its meta.

        Returns:
            The new entry's ``phx_ref``.

        Raises:
            TypeError: ``key`` is not a string or ``meta`` is not a dict or not JSON-serialisable.
            ValueError: ``meta`` holds a circular reference.
            RecursionError: ``meta`` is nested too deeply to encode.
        """
        if not isinstance(key, str):
            raise TypeError("presence key must be a string")
        if not isinstance(meta, dict):
            raise TypeError("presence meta must be a dict")
        ref = f"{self.node_id}-{next(self._ref_counter)}"
        meta = dict(meta, phx_ref=ref)
        # Encode once before anything changes: an entry that cannot be encoded would otherwise sit in
        # the replica and break every later presence_state and presence_diff of the topic, for every
        # socket on it.
        dumps(meta)
        with self._lock:
            mine = self._tracked.setdefault(sub.id, {})
            old_ref = mine.get((topic, key))
            mine[(topic, key)] = ref
        leaves: list[PresenceEntry] = []
        if old_ref is not None:
            old = self._presence.get(topic, {}).get(old_ref)
            if old is not None:
                leaves.append(old)
                meta["phx_ref_prev"] = old_ref
        self._presence_change(topic, [[ref, key, meta, self.node_id, sub.id]], leaves)
        return ref

    def untrack(self, sub: Subscriber, topic: str, key: str | None = None) -> None:
        """Stop tracking ``sub`` on ``topic`` (under ``key``, or under every key when ``key`` is None)."""
        with self._lock:
            mine = self._tracked.get(sub.id, {})
            refs = [mine.pop(k) for k in list(mine) if k[0] == topic and (key is None or k[1] == key)]
        leaves = [e for e in (self._presence.get(topic, {}).get(r) for r in refs) if e is not None]
        if leaves:
            self._presence_change(topic, [], leaves)

    def untrack_all(self, sub: Subscriber) -> None:
        """Stop tracking ``sub`` everywhere."""
        with self._lock:
            mine = self._tracked.pop(sub.id, {})
        by_topic: dict[str, list[PresenceEntry]] = {}
        for (topic, _key), ref in mine.items():
            entry = self._presence.get(topic, {}).get(ref)
            if entry is not None:
                by_topic.setdefault(topic, []).append(entry)
        for topic, leaves in by_topic.items():
            self._presence_change(topic, [], leaves)

    def presence_list(self, topic: str) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """The presences on ``topic``: ``{key: {"metas": [meta, ...]}}``, each meta with its ``phx_ref``."""
        return _group(list(self._presence.get(topic, {}).values()))

    def _presence_change(self, topic: str, joins: list[PresenceEntry], leaves: list[PresenceEntry]) -> None:
        # A change made in this process: apply, make durable, tell local subscribers, tell other processes.
        self._apply_presence(topic, joins, leaves)
        self._store(topic, joins, leaves)
        body = dumps({"joins": joins, "leaves": leaves})
        self._publish("p", [self.node_id, topic], body)

    def _apply_presence(self, topic: str, joins: list[PresenceEntry], leaves: list[PresenceEntry]) -> None:
        with self._lock:
            entries = self._presence.setdefault(topic, {})
            for entry in leaves:
                entries.pop(entry[0], None)
            for entry in joins:
                entries[entry[0]] = entry
            if not entries:
                del self._presence[topic]
        diff = {"joins": _group(joins), "leaves": _group(leaves)}
        self._deliver(topic, "presence_diff", dumps(diff), None)

    # -- the seam to other processes -----------------------------------------------------------------------

    def _publish(self, kind: str, header: list[Any], body: str) -> None:
        """Send an envelope to the other processes (nothing to do in-process)."""

    def _store(self, topic: str, joins: list[PresenceEntry], leaves: list[PresenceEntry]) -> None:
        """Make a presence change durable for processes that start later (nothing to do in-process)."""

    def _receive(self, data: str) -> None:
        """Act on an envelope published by another process; ignores our own and malformed ones."""
        try:
            kind, header_text, body = data.split("\n", 2)
            header = json.loads(header_text)
            if header[0] == self.node_id:
                return
            if kind == "b":
                self._deliver(header[1], header[2], body, header[3])
            elif kind == "d":
                self._deliver_one(header[3], header[1], header[2], body)
            elif kind == "p":
                change = json.loads(body)
                self._apply_presence(header[1], change["joins"], change["leaves"])
        except Exception:  # a bad envelope must not kill the listener that feeds every socket
            log.exception("zzz.channels: dropping a malformed pub/sub envelope")


def _group(entries: list[PresenceEntry]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for _ref, key, meta, _node, _sid in entries:
        out.setdefault(key, {"metas": []})["metas"].append(meta)
    return out


def envelope(kind: str, header: list[Any], body: str) -> str:
    """Frame a message for other processes: kind, JSON header, and the body kept as already-encoded text."""
    return f"{kind}\n{dumps(header)}\n{body}"


class InMemoryPubSub(PubSub):
    """The default backend: subscribers and presence of this process only.

    Every ``ChannelConfig`` without a ``pubsub`` gets its own; share one instance between configs to make
    them see each other. Worker processes do not see each other: use ``RedisPubSub`` for that.
    """
