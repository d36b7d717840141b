"""Topic subscriptions, broadcast fan-out, history, recovery and the presence replica of one process.

The in-process backend lives here; ``zzz.channels.redis`` extends it so that broadcasts and presence reach
every process attached to the same Redis.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import itertools
import json
import logging
import os
import threading
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from zzz.channels.history import History, LocalHistory, Position, Publication
from zzz.channels.wire import dumps, encode_raw, position_meta
from zzz.websocket import broadcast

__all__ = ["InMemoryPubSub", "InterceptFn", "PresenceEntry", "PubSub", "Subscriber", "active_backends"]

log = logging.getLogger("zzz")

# One presence entry as it travels and is stored: [ref, key, meta, node, socket_id].
PresenceEntry = list[Any]


class Subscriber(Protocol):
    """What the pub/sub needs from a subscriber (a ``ChannelSocket``).

    A subscriber may also have (read when its topic's fan-out list is made, see ``_Fanout``):
    ``fanout_target``, a ``zzz.WebSocket`` that broadcasts may reach through ``zzz.broadcast`` with
    the others on ``fanout_thread`` (the thread of its event loop), instead of ``send_text``; and
    ``skip_over``, bytes of ``buffered_amount`` over which broadcasts skip it (None: never).
    """

    id: str
    array_form: bool

    def send_text(self, text: str) -> None:
        """Send one text frame to the client; never raises."""


# ``intercept(socket, topic, event, payload)`` -> the payload for that subscriber, or None to skip it.
InterceptFn = Callable[[Any, str, str, Any], Any]


class ChannelSpec(Protocol):
    """What the pub/sub reads of a channel definition (a ``zzz.ChannelDef``, which lives a layer up
    in ``zzz.channels.socket``): which topics it covers, and their history and intercepts."""

    @property
    def history(self) -> History | None: ...

    @property
    def intercept(self) -> Mapping[str, InterceptFn] | None: ...

    def matches(self, topic: str) -> bool:
        """True when ``topic`` belongs to this channel."""
        ...


# The least a recovering subscriber may buffer (it may always buffer its topic's History.size).
_RECOVERY_BUFFER_MIN = 1000
# Topics whose definition lookup is cached; past it the cache starts over (topics may be unbounded).
_INFO_CACHE_MAX = 4096


class _Recovery:
    """A subscriber that joined a topic with history and is not yet fully live on it.

    While ``buffer`` is a list (the join is fetching its missed broadcasts) deliveries are held there.
    Afterwards (``buffer`` None) deliveries of offsets already sent (``epoch``, ``last``) are dropped,
    until the first later one arrives: a backend may deliver a broadcast after the history read that
    already returned it.
    """

    __slots__ = ("buffer", "epoch", "last", "limit", "overflow")

    def __init__(self, limit: int) -> None:
        self.buffer: list[tuple[str, str, Position | None]] | None = []
        self.epoch = ""
        self.last = 0
        self.limit = limit
        self.overflow = False


class _Fanout:
    """The subscribers of one topic sorted for plain broadcasts (no intercept, nobody recovering).

    ``groups`` are the subscribers that take broadcasts through ``zzz.broadcast`` (the connections of
    ``thread``'s loop), one group per (wire form, skip threshold): ``(array_form, skip_over,
    connections, subscribers)``, so a broadcast is one ``zzz.broadcast`` call per group with one frame
    text per wire form, and the threshold its ``skip_if_buffered_over`` (from another thread,
    ``zzz.broadcast`` hands the whole group to the loop at once). ``single`` are sent one ``send_text``
    at a time. Made on the first broadcast after a change of the topic's subscribers and kept until the
    next one, so a broadcast does no per-subscriber Python work on the way.
    """

    __slots__ = ("groups", "single", "thread")

    def __init__(self, subs: Sequence[Subscriber]) -> None:
        self.thread: int | None = None
        by_key: dict[tuple[bool, int | None], tuple[list[Any], list[Subscriber]]] = {}
        self.single: list[Subscriber] = []
        for sub in subs:
            target = getattr(sub, "fanout_target", None)
            if target is not None and self.thread is None:
                self.thread = getattr(sub, "fanout_thread", None)
            if target is None or self.thread is None or getattr(sub, "fanout_thread", None) != self.thread:
                self.single.append(sub)
                continue
            key = (bool(sub.array_form), getattr(sub, "skip_over", None))
            targets, members = by_key.setdefault(key, ([], []))
            targets.append(target)
            members.append(sub)
        self.groups = [(form, skip, targets, members) for (form, skip), (targets, members) in by_key.items()]


def _skips(sub: Any, event: str) -> bool:
    """True when a broadcast of ``event`` skips ``sub``: it asked to be skipped while it is this slow."""
    skip_over = getattr(sub, "skip_over", None)
    # presence_diff is never skipped: a client that missed one would show the wrong presences for good.
    return skip_over is not None and event != "presence_diff" and sub.buffered_amount > skip_over


_backends: weakref.WeakSet[PubSub] = weakref.WeakSet()


def active_backends() -> list[PubSub]:
    """Every pub/sub backend alive in this process (``Presence.list`` reads them all)."""
    return list(_backends)


class PubSub:
    """Base backend: local topic registry, local fan-out and the presence replica.

    A broadcast's payload is JSON-encoded once, and its frame text once per wire form, whatever the number
    of receivers (unless the topic's channel intercepts that event). Subclasses hook ``_publish`` (send an
    envelope to other processes) and ``_store`` (make presence changes durable) and call ``_receive`` with
    envelopes from other processes.

    Topics with history: ``broadcast`` hands them to ``_publish_history``, which gives each broadcast its
    ``Position`` and calls ``_deliver(..., pos)`` in offset order; ``position`` and ``since`` read the
    stream. The defaults here keep it in this process (``LocalHistory``); a backend shared by several
    processes overrides the three of them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._topics: dict[str, dict[str, Subscriber]] = {}
        # The channel definitions of the endpoints on this backend, and (history, intercepts) by topic.
        self._channel_defs: list[ChannelSpec] = []
        self._info: dict[str, tuple[History | None, Mapping[str, InterceptFn] | None]] = {}
        # topic -> its subscribers sorted for fan-out; dropped whenever they change.
        self._fanouts: dict[str, _Fanout] = {}
        # topic -> socket id -> its recovery state (only for subscribers not yet fully live).
        self._recovering: dict[str, dict[str, _Recovery]] = {}
        self._history = LocalHistory()
        # History broadcasts waiting for delivery, in offset order; one caller delivers at a time.
        self._order_lock = threading.Lock()
        self._outbox: collections.deque[tuple[str, str, str, str | None, Position]] = collections.deque()
        self._draining = False
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

    # -- backpressure --------------------------------------------------------------------------------------

    #: True while the backend asks publishers to wait before they publish more (``drain``). The
    #: in-process backend never does; ``RedisPubSub`` does while more is queued for Redis than it
    #: sends in a round trip or two and Redis is answering.
    backlogged = False

    async def drain(self) -> None:
        """Wait until the backend takes more broadcasts without piling them up (``backlogged`` false).

        The channel endpoint calls it before it reads a socket's next message, so a client that
        pushes faster than the backend publishes is slowed down instead of filling its buffer; call
        it from a task that broadcasts in a loop. Always yields to the loop at least once.
        """
        await asyncio.sleep(0)

    # -- channel definitions -------------------------------------------------------------------------------

    def register_channels(self, channels: Sequence[ChannelSpec]) -> None:
        """Learn the channel definitions of an endpoint that uses this backend (each one once).

        ``history_for`` and ``intercepts_for`` look topics up in them, the first match winning, in the
        order the definitions were registered.
        """
        for channel in channels:
            if not any(channel is known for known in self._channel_defs):
                self._channel_defs.append(channel)
        self._info.clear()

    def _topic_info(self, topic: str) -> tuple[History | None, Mapping[str, InterceptFn] | None]:
        info = self._info.get(topic)
        if info is None:
            info = (None, None)
            for channel in self._channel_defs:
                if channel.matches(topic):
                    info = (channel.history, channel.intercept or None)
                    break
            if len(self._info) >= _INFO_CACHE_MAX:
                self._info.clear()
            self._info[topic] = info
        return info

    def history_for(self, topic: str) -> History | None:
        """The ``History`` of ``topic``'s channel definition, or None (no history)."""
        return self._topic_info(topic)[0]

    def intercepts_for(self, topic: str) -> Mapping[str, InterceptFn] | None:
        """The intercepts (event -> function) of ``topic``'s channel definition, or None."""
        return self._topic_info(topic)[1]

    # -- subscriptions -------------------------------------------------------------------------------------

    def subscribe(self, topic: str, sub: Subscriber) -> None:
        """Deliver ``topic``'s broadcasts to ``sub`` from now on."""
        with self._lock:
            self._topics.setdefault(topic, {})[sub.id] = sub
            self._fanouts.pop(topic, None)

    def unsubscribe(self, topic: str, sub: Subscriber) -> None:
        """Stop delivering ``topic`` to ``sub``."""
        with self._lock:
            self._fanouts.pop(topic, None)
            subs = self._topics.get(topic)
            if subs is not None:
                subs.pop(sub.id, None)
                if not subs:
                    del self._topics[topic]
            self._drop_recovery(topic, sub.id)

    def forget(self, sub: Subscriber) -> None:
        """Drop ``sub`` from every topic and its presence entries (its connection closed)."""
        self.untrack_all(sub)
        with self._lock:
            for topic in [t for t, subs in self._topics.items() if sub.id in subs]:
                self._fanouts.pop(topic, None)
                subs = self._topics[topic]
                del subs[sub.id]
                if not subs:
                    del self._topics[topic]
            for topic in [t for t, recs in self._recovering.items() if sub.id in recs]:
                self._drop_recovery(topic, sub.id)

    def subscriber_changed(self, sub: Subscriber) -> None:
        """Take note that ``sub``'s wire form (``array_form``) changed: its broadcasts change form too."""
        with self._lock:
            self._fanouts.clear()  # rare (a client switching forms): no need to find its topics

    def _drop_recovery(self, topic: str, sub_id: str) -> None:
        # Called with self._lock held.
        recs = self._recovering.get(topic)
        if recs is not None:
            recs.pop(sub_id, None)
            if not recs:
                del self._recovering[topic]

    # -- recovery ------------------------------------------------------------------------------------------

    def begin_recovery(self, topic: str, sub: Subscriber, history: History) -> None:
        """Subscribe ``sub`` to ``topic`` in the recovering state: its deliveries are held, not sent.

        The join then reads the stream (``position`` or ``since``), answers, ``replay``s what was
        missed and calls ``finish_recovery``. Whatever is published meanwhile is either in what the
        read returned or held here, so nothing falls in between.
        """
        with self._lock:
            self._recovering.setdefault(topic, {})[sub.id] = _Recovery(
                max(history.size, _RECOVERY_BUFFER_MIN)
            )
            self._topics.setdefault(topic, {})[sub.id] = sub
            self._fanouts.pop(topic, None)

    def replay(self, topic: str, sub: Subscriber, publications: Sequence[Publication], epoch: str) -> None:
        """Send stored publications (from ``since``) to ``sub``, through the topic's intercepts."""
        intercepts = self.intercepts_for(topic)
        for pub in publications:
            if pub.exclude == sub.id:
                continue
            fn = intercepts.get(pub.event) if intercepts else None
            self._send_one(sub, topic, pub.event, pub.body, Position(pub.offset, epoch), fn)

    def finish_recovery(self, topic: str, sub: Subscriber, sent: Position) -> bool:
        """Send what was held for ``sub`` since ``begin_recovery``, skipping what it already has, and go live.

        Args:
            topic: the topic.
            sub: the subscriber.
            sent: the position the subscriber is at (the current one the join answered with): held
                broadcasts at or before it in its epoch are duplicates and are dropped. Held
                ``presence_diff`` deliveries are dropped too: the ``presence_state`` sent by the join
                after they arrived already includes them.

        Returns:
            False when more arrived than the buffer may hold (some were dropped): the caller must
            close the subscriber's connection, whose client then reconnects and recovers again.
        """
        with self._lock:
            rec = self._recovering.get(topic, {}).get(sub.id)
            if rec is None:
                return True  # unsubscribed meanwhile
            rec.epoch, rec.last = sent.epoch, sent.offset
        intercepts = self.intercepts_for(topic)
        while True:
            with self._lock:
                held = rec.buffer or []
                if rec.overflow or not held:
                    rec.buffer = None
                    return not rec.overflow
                rec.buffer = []
            for event, body, pos in held:
                if pos is None:
                    if event == "presence_diff":
                        continue
                elif pos.epoch == rec.epoch and pos.offset <= rec.last:
                    continue
                else:
                    rec.epoch, rec.last = pos.epoch, pos.offset
                fn = intercepts.get(event) if intercepts else None
                self._send_one(sub, topic, event, body, pos, fn)

    def _hold(
        self,
        topic: str,
        recs: dict[str, _Recovery],
        sub: Subscriber,
        event: str,
        body: str,
        pos: Position | None,
    ) -> bool:
        """Deal with a delivery to a subscriber that is recovering; False when it is to be sent as usual."""
        with self._lock:
            rec = recs.get(sub.id)
            if rec is None:
                return False
            if rec.buffer is not None:
                if rec.overflow:
                    return True
                if len(rec.buffer) >= rec.limit:
                    rec.overflow = True
                    rec.buffer = []
                    return True
                rec.buffer.append((event, body, pos))
                return True
            if pos is None:
                return False
            if pos.epoch == rec.epoch and pos.offset <= rec.last:
                return True  # the join already sent it
            # A later offset: no duplicate can follow (deliveries come in offset order). Fully live.
            self._drop_recovery(topic, sub.id)
            return False

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
        history = self.history_for(topic)
        if history is None:
            self._deliver(topic, event, body, exclude)
            self._publish("b", [self.node_id, topic, event, exclude], body)
        else:
            self._publish_history(topic, event, body, exclude, history)

    def send_to(self, target: str, topic: str, event: str, payload: Any) -> None:
        """Send an event to one subscriber of ``topic``, found by socket id, in whatever process it is."""
        body = dumps(payload)
        if not self._deliver_one(target, topic, event, body):
            self._publish("d", [self.node_id, topic, event, target], body)

    def _deliver(
        self, topic: str, event: str, body: str, exclude: str | None, pos: Position | None = None
    ) -> None:
        """Fan a broadcast out to this process's subscribers of ``topic``.

        Args:
            topic: the topic.
            event: the event.
            body: the payload's JSON text.
            exclude: a socket id that does not get it.
            pos: the broadcast's position on a topic with history (frames then carry it as ``meta``);
                a backend calls this in offset order for each topic.
        """
        subs = self._topics.get(topic)
        if not subs:
            return
        intercepts = self._topic_info(topic)[1]
        fn = intercepts.get(event) if intercepts else None
        recs = self._recovering.get(topic) if self._recovering else None
        meta = None if pos is None else position_meta(pos.offset, pos.epoch)
        if fn is not None or recs:
            # Every subscriber is a case of its own: through the intercept, or held while recovering.
            for sub in list(subs.values()):
                if sub.id == exclude:
                    continue
                if recs and sub.id in recs and self._hold(topic, recs, sub, event, body, pos):
                    continue
                if _skips(sub, event):
                    continue
                self._send_one(sub, topic, event, body, pos, fn)
            return
        fanout = self._fanouts.get(topic)
        if fanout is None:
            with self._lock:  # what subscribe/unsubscribe change, and the entry they drop, together
                subs = self._topics.get(topic)
                if not subs:
                    return
                fanout = self._fanouts[topic] = _Fanout(list(subs.values()))
        excluded = subs.get(exclude) if exclude is not None else None
        texts: list[str | None] = [None, None]  # [object form, array form], each made at most once
        if fanout.groups:
            for array_form, skip_over, targets, _members in fanout.groups:
                text = texts[array_form]
                if text is None:
                    text = texts[array_form] = encode_raw(array_form, topic, event, body, None, None, meta)
                if excluded is not None:
                    target = getattr(excluded, "fanout_target", None)
                    if target is not None and target in targets:
                        targets = [ws for ws in targets if ws is not target]
                if targets:
                    # From another thread zzz.broadcast hands the group to the loop in one call, and
                    # the threshold is checked there, where the buffers are read safely.
                    # presence_diff is never skipped (see _skips).
                    broadcast(
                        targets, text, skip_if_buffered_over=None if event == "presence_diff" else skip_over
                    )
        for sub in fanout.single:
            if sub is excluded or _skips(sub, event):
                continue
            form = 1 if sub.array_form else 0
            text = texts[form]
            if text is None:
                text = texts[form] = encode_raw(sub.array_form, topic, event, body, None, None, meta)
            sub.send_text(text)

    def _send_one(
        self, sub: Subscriber, topic: str, event: str, body: str, pos: Position | None, fn: InterceptFn | None
    ) -> None:
        """One subscriber's frame of a broadcast, through ``fn`` (its intercept) when there is one."""
        if fn is not None:
            try:
                payload = fn(sub, topic, event, json.loads(body))
                if inspect.isawaitable(payload):
                    close = getattr(payload, "close", None)
                    if close is not None:
                        close()  # a coroutine never awaited would warn later, far from the cause
                    raise TypeError("an intercept must be a plain function, not async")
                if payload is None:
                    return  # this subscriber does not get it
                body = dumps(payload)
            except Exception:
                # Not sending is the safe side: an intercept may exist to keep data from some subscribers.
                log.exception(
                    "zzz.channels: intercept of %r on %r raised; not sent to that subscriber", event, topic
                )
                return
        meta = None if pos is None else position_meta(pos.offset, pos.epoch)
        sub.send_text(encode_raw(sub.array_form, topic, event, body, None, None, meta))

    def _deliver_one(self, target: str, topic: str, event: str, body: str) -> bool:
        sub = self._topics.get(topic, {}).get(target)
        if sub is None:
            return False
        recs = self._recovering.get(topic) if self._recovering else None
        if recs and target in recs and self._hold(topic, recs, sub, event, body, None):
            return True  # held until its join has answered
        sub.send_text(encode_raw(sub.array_form, topic, event, body))
        return True

    # -- history -------------------------------------------------------------------------------------------

    def _publish_history(
        self, topic: str, event: str, body: str, exclude: str | None, history: History
    ) -> None:
        """Give a broadcast on a topic with history its position, store it and deliver it in offset order.

        This default keeps the history in this process: other processes (if a subclass connects any)
        get the broadcast without a position. A backend shared by processes overrides this, ``position``
        and ``since`` so that every process sees the same offsets.
        """
        with self._order_lock:
            pos = self._history.append(topic, event, body, exclude, history)
            self._outbox.append((topic, event, body, exclude, pos))
            # When another call is delivering (another thread, or an intercept's broadcast further up
            # this stack), it delivers this one too, after the earlier offsets.
            drain = not self._draining
            self._draining = True
        self._publish("b", [self.node_id, topic, event, exclude], body)
        if drain:
            self._drain()

    def _drain(self) -> None:
        while True:
            with self._order_lock:
                if not self._outbox:
                    self._draining = False
                    return
                item = self._outbox.popleft()
            try:
                self._deliver(*item)
            except Exception:  # a bug; the broadcasts queued behind this one must still go out
                log.exception("zzz.channels: delivering a broadcast failed")

    async def position(self, topic: str, history: History) -> Position:
        """The current position of ``topic`` (offset 0, in the epoch of its first broadcast, before one)."""
        return self._history.position(topic)

    async def since(
        self, topic: str, history: History, pos: Position
    ) -> tuple[bool, list[Publication], Position]:
        """What a subscriber at ``pos`` missed on ``topic``.

        Returns:
            ``(recovered, missed, current)``: ``missed`` are the stored publications after ``pos``, in
            order; ``recovered`` is False (and ``missed`` empty) when ``pos`` is in another epoch or
            older than what is stored (trimmed by ``size``, expired by ``ttl``).
        """
        return self._history.since(topic, history, pos)

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
    Topic histories live in the process too: a new instance (a restart) starts every topic in a new epoch.
    """
