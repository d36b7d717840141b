"""Redis backend: broadcasts and presence reach every process attached to the same Redis.

Uses redis-py's asyncio client (``pip install redis``), imported only when a ``RedisPubSub`` is made.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable
from typing import Any, TypeVar

from zzz.channels.pubsub import PresenceEntry, PubSub, envelope

__all__ = ["RedisPubSub"]

log = logging.getLogger("zzz")

T = TypeVar("T")

# The most a stopping backend spends on its goodbye (flush what is queued, drop the liveness key,
# disconnect), and the extra time ``close`` waits for its tasks to finish before it gives up on them.
_GOODBYE_TIMEOUT = 1.0
_TASKS_GRACE = 0.5

# Removes a topic from the presence index only when its hash is empty, atomically, so a concurrent
# track (HSET then SADD) can never be left out of the index.
_DROP_EMPTY_TOPIC = """
if redis.call('HLEN', KEYS[1]) == 0 then return redis.call('SREM', KEYS[2], ARGV[1]) end
return 0
"""


class RedisPubSub(PubSub):
    """Pub/sub and presence shared by every process on one Redis.

    Every process subscribes to one Redis channel (``<prefix>:bus``) and receives every broadcast, as
    Phoenix's Redis adapter does; each process then encodes the frame once and fans it out to its own
    subscribers. Broadcasts reach local subscribers at once, without a round trip through Redis.

    Presence entries are stored in Redis hashes (``<prefix>:p:<topic>``) so processes that start later
    see them, and every process keeps a replica fed by the diffs, so ``Presence.list`` needs no I/O.
    Each process refreshes a liveness key (``<prefix>:node:<id>``, TTL ``node_ttl``); the survivors
    remove the entries of a process whose key expired and broadcast the leaves.

    Args:
        url: a Redis URL, e.g. ``"redis://127.0.0.1:6379/0"``.
        prefix: the prefix of every key and channel (share it between the processes of one app).
        node_ttl: seconds after which a silent process's presences are removed.

    Raises:
        ImportError: the ``redis`` package is not installed.
    """

    def __init__(
        self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "zzz", node_ttl: float = 15.0
    ) -> None:
        try:
            import redis.asyncio  # noqa: F401
            from redis.exceptions import RedisError
        except ImportError:
            raise ImportError(
                "zzz.RedisPubSub needs the 'redis' package (redis-py with asyncio): pip install redis"
            ) from None
        super().__init__()
        if node_ttl <= 0:
            raise ValueError("node_ttl must be positive")
        self.url = url
        self.prefix = prefix
        self.node_ttl = node_ttl
        self._bus = f"{prefix}:bus"
        self._topics_key = f"{prefix}:ptopics"
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._pending: list[tuple[Any, ...]] = []
        self._wakeup: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._writer: asyncio.Task[None] | None = None
        # Set once the backend stops (close(), or its tasks cancelled as the loop shuts down); every
        # loop checks it, so no task goes back to waiting after it was told to stop.
        self._stopping = False
        # What a lost or restarting Redis raises; anything else is a bug and should surface.
        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError)

    def _node_key(self, node: str) -> str:
        return f"{self.prefix}:node:{node}"

    def _presence_key(self, topic: str) -> str:
        return f"{self.prefix}:p:{topic}"

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, subscribe, load the stored presences and start the background tasks (idempotent).

        Raises:
            redis.exceptions.ConnectionError: Redis is not reachable.
        """
        if self._client is not None:
            return
        import redis.asyncio as aioredis

        await super().start()
        self._client = aioredis.from_url(self.url, decode_responses=True)
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wakeup = asyncio.Event()
        self._stopping = False
        try:
            pubsub = await self._subscribe()
        except BaseException:
            await self._client.aclose()
            self._client = None
            raise
        self._drop_empty = self._client.register_script(_DROP_EMPTY_TOPIC)
        self._writer = self._loop.create_task(self._write(self._client))
        self._tasks = [
            self._loop.create_task(self._read(pubsub)),
            self._writer,
            self._loop.create_task(self._keep_alive()),
        ]
        if self._pending:
            self._wakeup.set()

    async def close(self) -> None:
        """Withdraw this process's presences, flush what is queued and disconnect.

        Bounded whatever Redis does: the goodbye gets about a second, then ``close`` gives up on it
        (and on any task that does not stop) with a WARNING; the other processes expire what was not
        withdrawn after ``node_ttl``.
        """
        if self._client is None:
            return
        with self._lock:
            self._tracked.clear()
        by_topic: dict[str, list[PresenceEntry]] = {}
        for topic, entry in self._own_entries():
            by_topic.setdefault(topic, []).append(entry)
        for topic, leaves in by_topic.items():
            self._presence_change(topic, [], leaves)
        self._begin_stop()
        tasks, self._tasks = self._tasks, []
        if tasks:
            # Not gather(): a task whose cancellation was swallowed (see _stop_requested) would hold
            # close() for ever; a bounded wait lets us give up on it instead.
            _done, pending = await asyncio.wait(tasks, timeout=_GOODBYE_TIMEOUT + _TASKS_GRACE)
            if pending:
                log.warning(
                    "zzz.channels: %d Redis task(s) did not stop within %.1f s; leaving them",
                    len(pending),
                    _GOODBYE_TIMEOUT + _TASKS_GRACE,
                )
        self._client = None
        self._writer = None

    def _begin_stop(self) -> None:
        """Stop every loop: set the flag, wake the writer (it says goodbye) and cancel the others.

        Called by ``close`` and by whichever task first sees that it was cancelled, so a cancellation
        swallowed inside redis-py by one task is made up for by the others.
        """
        if self._stopping:
            return
        self._stopping = True
        if self._wakeup is not None:
            self._wakeup.set()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current and task is not self._writer:
                task.cancel()

    def _stop_requested(self) -> bool:
        """True once the backend is stopping or the running task was cancelled.

        Python 3.11's ``asyncio.wait_for`` (which redis-py wraps around socket writes) returns normally
        and drops a cancellation that arrives just as the write completes; ``Task.cancelling()`` still
        counts it, so checking it keeps such a task from going back to waiting.
        """
        if self._stopping:
            return True
        task = asyncio.current_task()
        cancelling = getattr(task, "cancelling", None)  # Python 3.11+
        if cancelling is not None and cancelling():
            self._begin_stop()
            return True
        return False

    async def _goodbye(self, client: Any) -> None:
        batch, self._pending = self._pending, []
        pipe = _pipeline(client, batch)
        pipe.delete(self._node_key(self.node_id))
        await pipe.execute()

    async def _finish(self, client: Any) -> None:
        """The writer's last act: goodbye and disconnect, together bounded by ``_GOODBYE_TIMEOUT``."""
        errors: tuple[type[BaseException], ...] = (asyncio.TimeoutError, *self._errors)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _GOODBYE_TIMEOUT
        try:
            await _bounded(self._goodbye(client), _GOODBYE_TIMEOUT)
        except errors as exc:
            # The survivors expire what we could not withdraw.
            log.warning("zzz.channels: could not say goodbye to Redis (%r)", exc)
        try:
            await _bounded(client.aclose(), max(deadline - loop.time(), 0.1))
        except errors as exc:
            log.warning("zzz.channels: could not disconnect from Redis (%r)", exc)

    # -- the seam to other processes -----------------------------------------------------------------------

    def _publish(self, kind: str, header: list[Any], body: str) -> None:
        if self._stopping and kind != "p":
            return  # a broadcast made while stopping would only pile up; presence diffs still go out
        self._enqueue(("publish", self._bus, envelope(kind, header, body)))

    def _store(self, topic: str, joins: list[PresenceEntry], leaves: list[PresenceEntry]) -> None:
        key = self._presence_key(topic)
        for entry in leaves:
            self._enqueue(("hdel", key, entry[0]))
        for entry in joins:
            self._enqueue(("hset", key, entry[0], json.dumps(entry)))
            self._enqueue(("sadd", self._topics_key, topic))

    def _enqueue(self, op: tuple[Any, ...]) -> None:
        # One writer task sends everything in order, so a presence diff never overtakes the write it
        # describes, and commands queued together go out in one pipeline round trip.
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self._enqueue, op)
            return
        self._pending.append(op)
        if self._wakeup is not None:
            self._wakeup.set()

    async def _flush(self, client: Any) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            await _pipeline(client, batch).execute()
        except BaseException as exc:
            if not isinstance(exc, (*self._errors, asyncio.CancelledError)):
                raise  # a bug: the batch would fail again
            # Lost Redis or cancelled mid-send. Live messages are worthless late; presence writes are
            # state: keep them, in order (they are idempotent, so sending one twice does no harm).
            self._pending[:0] = [op for op in batch if op[0] != "publish"]
            raise

    async def _write(self, client: Any) -> None:
        assert self._wakeup is not None
        try:
            while not self._stop_requested():
                await self._wakeup.wait()
                self._wakeup.clear()
                if self._stop_requested():
                    break
                try:
                    await self._flush(client)
                except self._errors as exc:
                    log.warning("zzz.channels: Redis write failed (%s); broadcasts were lost, retrying", exc)
                    await asyncio.sleep(0.5)
                    self._wakeup.set()
                except Exception:  # a bug: drop the batch, keep the writer that every broadcast needs
                    log.exception("zzz.channels: Redis write failed")
        except asyncio.CancelledError:
            # Cancelled with the loop (asyncio.run/Runner cancels every task at exit): still say
            # goodbye, bounded, then let the cancellation through.
            self._begin_stop()
            await self._finish(client)
            raise
        await self._finish(client)

    async def _subscribe(self) -> Any:
        """Subscribe to the bus, then bring the replica and our stored entries in line with Redis."""
        pubsub = self._client.pubsub()
        await pubsub.subscribe(self._bus)
        # Wait for Redis to confirm: from then on no broadcast can be missed, so the snapshot read next
        # plus the diffs that follow it describe every presence.
        while True:
            msg = await pubsub.get_message(timeout=5.0)
            if msg is not None and msg["type"] == "subscribe":
                break
            if self._stop_requested():
                await _bounded(pubsub.aclose(), _GOODBYE_TIMEOUT, quiet=True)
                raise asyncio.CancelledError
        await self._client.set(self._node_key(self.node_id), "1", px=int(self.node_ttl * 1000))
        await self._resync()
        return pubsub

    async def _read(self, pubsub: Any) -> None:
        try:
            while not self._stop_requested():
                try:
                    async for msg in pubsub.listen():
                        if self._stop_requested():
                            break
                        if msg["type"] == "message":
                            self._receive(msg["data"])
                    else:
                        raise ConnectionError("subscription ended")
                    break
                except self._errors as exc:
                    if self._stop_requested():
                        break  # the writer's goodbye disconnected us
                    log.warning("zzz.channels: Redis subscription lost (%s); reconnecting", exc)
                # Broadcasts published while we were away are lost (as with any Redis pub/sub);
                # presence is repaired by the resync in _subscribe.
                delay = 0.1
                while not self._stop_requested():
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    try:
                        pubsub = await self._subscribe()
                        break
                    except self._errors as exc:
                        log.warning("zzz.channels: Redis still unreachable (%s)", exc)
        except asyncio.CancelledError:
            self._begin_stop()
            raise
        finally:
            await _bounded(pubsub.aclose(), _GOODBYE_TIMEOUT, quiet=True)

    async def _keep_alive(self) -> None:
        try:
            while not self._stop_requested():
                await asyncio.sleep(self.node_ttl / 3)
                if self._stop_requested():
                    break
                try:
                    await self._client.set(self._node_key(self.node_id), "1", px=int(self.node_ttl * 1000))
                    await self._sweep()
                except self._errors as exc:
                    log.warning("zzz.channels: Redis presence upkeep failed (%s)", exc)
        except asyncio.CancelledError:
            self._begin_stop()
            raise

    # -- presence storage ----------------------------------------------------------------------------------

    async def _stored_entries(self) -> dict[str, list[PresenceEntry]]:
        """Every stored presence entry, by topic (dead processes' entries included)."""
        topics = sorted(await self._client.smembers(self._topics_key))
        if not topics:
            return {}
        pipe = self._client.pipeline(transaction=False)
        for topic in topics:
            pipe.hgetall(self._presence_key(topic))
        hashes = await pipe.execute()
        return {topic: [json.loads(v) for v in fields.values()] for topic, fields in zip(topics, hashes)}

    async def _alive(self, nodes: set[str]) -> set[str]:
        ordered = sorted(nodes)
        if not ordered:
            return set()
        flags = await self._client.mget([self._node_key(n) for n in ordered])
        return {n for n, flag in zip(ordered, flags) if flag is not None}

    def _own_entries(self) -> list[tuple[str, PresenceEntry]]:
        """(topic, entry) for every presence this process tracks."""
        with self._lock:
            return [
                (topic, e)
                for topic, entries in self._presence.items()
                for e in entries.values()
                if e[3] == self.node_id
            ]

    async def _resync(self) -> None:
        """Make Redis hold exactly our own entries, and the replica exactly the live stored ones.

        At start this loads what other processes tracked; after an outage it also restores our entries
        (Redis may have restarted empty, or swept us as dead) and tells local subscribers what changed.
        """
        stored = await self._stored_entries()
        alive = await self._alive({e[3] for entries in stored.values() for e in entries})
        alive.add(self.node_id)
        mine = {entry[0]: (topic, entry) for topic, entry in self._own_entries()}
        pipe = self._client.pipeline(transaction=False)
        for topic, entries in stored.items():
            for entry in entries:
                if entry[3] == self.node_id and entry[0] not in mine:
                    pipe.hdel(self._presence_key(topic), entry[0])  # left while we were cut off
        for ref, (topic, entry) in mine.items():
            pipe.hset(self._presence_key(topic), ref, json.dumps(entry))
            pipe.sadd(self._topics_key, topic)
        await pipe.execute()
        for topic in set(stored) | set(self._presence):
            current = self._presence.get(topic, {})
            others = {e[0]: e for e in stored.get(topic, ()) if e[3] in alive and e[3] != self.node_id}
            joins = [e for ref, e in others.items() if ref not in current]
            leaves = [e for ref, e in current.items() if e[3] != self.node_id and ref not in others]
            if joins or leaves:
                self._apply_presence(topic, joins, leaves)

    async def _sweep(self) -> None:
        """Remove the stored presences of processes whose liveness key expired, and announce the leaves."""
        stored = await self._stored_entries()
        alive = await self._alive({e[3] for entries in stored.values() for e in entries})
        alive.add(self.node_id)
        for topic, entries in stored.items():
            key = self._presence_key(topic)
            dead = [e for e in entries if e[3] not in alive]
            if dead:
                pipe = self._client.pipeline(transaction=False)
                for entry in dead:
                    pipe.hdel(key, entry[0])
                removed = await pipe.execute()
                # Several survivors may sweep at once: only the one whose HDEL removed an entry announces it.
                leaves = [e for e, n in zip(dead, removed) if n]
                if leaves:
                    self._apply_presence(topic, [], leaves)
                    self._publish("p", [self.node_id, topic], json.dumps({"joins": [], "leaves": leaves}))
            if len(dead) == len(entries):
                await self._drop_empty(keys=[key, self._topics_key], args=[topic])


async def _bounded(aw: Awaitable[T], timeout: float, *, quiet: bool = False) -> T | None:
    """Await ``aw`` for at most ``timeout`` seconds, never longer.

    Unlike ``asyncio.wait_for``, a timeout does not wait for the cancelled work to finish cancelling
    (redis-py can swallow that cancellation too); it is cancelled and left behind.

    Args:
        aw: what to await.
        timeout: seconds.
        quiet: return None instead of raising, whatever happened.

    Raises:
        asyncio.TimeoutError: it did not finish in time (unless ``quiet``).
        Exception: whatever ``aw`` raised (unless ``quiet``).
    """
    task = asyncio.ensure_future(aw)
    try:
        done, _pending = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        if quiet:
            return None
        raise asyncio.TimeoutError(f"no answer within {timeout:.1f} s")
    if task.cancelled() or (quiet and task.exception() is not None):
        return None
    return task.result()


def _pipeline(client: Any, batch: list[tuple[Any, ...]]) -> Any:
    """A pipeline (no MULTI) holding the queued operations, in order."""
    pipe = client.pipeline(transaction=False)
    for op, *args in batch:
        getattr(pipe, op)(*args)
    return pipe
