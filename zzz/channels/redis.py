"""Redis backend: broadcasts, history and presence shared by every process attached to the same Redis.

Every process appends to one Redis Stream, the bus, and reads it from the last entry it saw, so nothing
published while it was cut off is missed; what it publishes while Redis is unreachable waits in a
bounded buffer. Topics with history keep their stream in Redis too. Uses redis-py's asyncio client
(``pip install 'zzz[redis]'``: redis-py with hiredis, its C reply parser, which doubles the
broadcasts per second; without hiredis redis-py parses in Python), imported only when a
``RedisPubSub`` is made.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
import time
import uuid
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from zzz.channels.history import Position, Publication, new_epoch
from zzz.channels.pubsub import PresenceEntry, PubSub, envelope
from zzz.channels.wire import dumps

if TYPE_CHECKING:
    from zzz.channels.history import History

__all__ = ["RedisPubSub"]

log = logging.getLogger("zzz")

T = TypeVar("T")

# The most a stopping backend spends on its goodbye (flush what is queued, drop the liveness key,
# disconnect), and the extra time ``close`` waits for its tasks to finish before it gives up on them.
_GOODBYE_TIMEOUT = 1.0
_TASKS_GRACE = 0.5

# Messages per publish-script call, operations per pipeline round trip, entries per bus read.
_SCRIPT_MESSAGES = 200
_FLUSH_OPS = 1000
_READ_COUNT = 1000
# How long Redis remembers the last sequence number it applied for a process (resends are dropped
# by it); far longer than any outage a buffer can ride out.
_SEQ_TTL = 86_400
# Per-publisher dedupe state kept for at most this many processes (old ones are forgotten first).
_SEEN_MAX = 4096
# The longest wait between two retries while Redis is unreachable.
_MAX_BACKOFF = 1.0

# Appends a batch of messages to the bus, atomically, exactly once each, and gives the broadcasts on
# topics with history their offsets.
# KEYS: 1 the run key, 2 this process's last applied sequence number, 3 the bus, then one
#   (meta hash, history stream) pair per history broadcast.
# ARGV: 1 the run the sender knows, 2 a run id to store if there is none, 3 the bus's approximate
#   length cap, 4 seconds the sequence key lives, 5 an epoch for topics that have none, then five per
#   message: sequence number (0: a probe, never deduplicated), envelope, KEYS index of its meta hash
#   (0: no history), history size, history ttl in ms (0: none).
# A run key that is missing or different means Redis lost its data (restarted without persistence,
# or flushed): nothing is applied, the sender learns the new run and resends what Redis may have lost.
_PUBLISH = """
local run = redis.call('GET', KEYS[1])
if not run then
  redis.call('SET', KEYS[1], ARGV[2])
  return {'run', ARGV[2]}
end
if run ~= ARGV[1] then
  return {'run', run}
end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local added = 0
for i = 6, #ARGV, 5 do
  local seq = tonumber(ARGV[i])
  if seq == 0 or seq > last then
    if seq > 0 then last = seq end
    local k = tonumber(ARGV[i + 2])
    if k == 0 then
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'm', ARGV[i + 1])
    else
      local meta, hist = KEYS[k], KEYS[k + 1]
      local epoch = redis.call('HGET', meta, 'e')
      if not epoch then
        epoch = ARGV[5]
        redis.call('DEL', hist)
        redis.call('HSET', meta, 'e', epoch, 'o', 0)
      end
      local offset = redis.call('HINCRBY', meta, 'o', 1)
      redis.call('XADD', hist, 'MAXLEN', ARGV[i + 3], offset .. '-0', 'm', ARGV[i + 1])
      local ttl = tonumber(ARGV[i + 4])
      if ttl > 0 then
        redis.call('PEXPIRE', meta, ttl)
        redis.call('PEXPIRE', hist, ttl)
      end
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'm', ARGV[i + 1], 'o', offset, 'e', epoch)
    end
    added = added + 1
  end
end
redis.call('SET', KEYS[2], last, 'EX', ARGV[4])
return {'ok', added}
"""

# A topic's position, and optionally its stored broadcasts after an offset, read atomically.
# KEYS: meta hash, history stream. ARGV: an epoch to create if the topic has none, the ttl in ms (0:
# none) that a created one gets, the first offset wanted (0: none).
# A topic without a meta hash (never broadcast, expired, or lost with Redis's data) gets one at offset
# 0, so that its first broadcast carries the epoch returned here.
_READ = """
local v = redis.call('HMGET', KEYS[1], 'e', 'o')
local epoch, offset = v[1], tonumber(v[2])
if not epoch then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', ARGV[1], 'o', 0)
  if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
  return {ARGV[1], 0, {}}
end
local first = tonumber(ARGV[3])
if first == 0 or first > offset then
  return {epoch, offset, {}}
end
return {epoch, offset, redis.call('XRANGE', KEYS[2], first .. '-0', offset .. '-0')}
"""

# Removes a topic from the presence index only when its hash is empty, atomically, so a concurrent
# track (HSET then SADD) can never be left out of the index.
_DROP_EMPTY_TOPIC = """
if redis.call('HLEN', KEYS[1]) == 0 then return redis.call('SREM', KEYS[2], ARGV[1]) end
return 0
"""


# What ``_unless_stopped`` returns when the backend stopped first.
_STOPPED = object()


class _Deaf(Exception):
    """The bus reader has not read back this process's own heartbeat probes in time."""


class _RunChanged(Exception):
    """Redis lost its data since the last write: the batch was not applied and is to be sent again."""


class RedisPubSub(PubSub):
    """Pub/sub, history and presence shared by every process on one Redis, across Redis outages.

    **The bus.** Every process appends what it publishes (broadcasts, direct messages, presence diffs)
    to one Redis Stream, ``<prefix>:bus``, and reads it with ``XREAD BLOCK`` from the last entry it saw,
    so after any disconnect it resumes where it stopped. Each process encodes a frame once and fans it
    out to its own subscribers. On a topic without history a broadcast reaches local subscribers at
    once; its copy read back from the bus is skipped.

    **Exactly once.** Messages carry a per-process sequence number; one Lua script appends each batch,
    skipping numbers Redis already applied, so a batch resent after a lost reply is not added twice,
    and readers drop numbers they have already seen. Messages wait in a buffer until Redis has taken
    them: while it is unreachable (stalled, restarting, cut off) up to ``outage_buffer`` of them wait
    and go out in order when it is back; past that the oldest are dropped, with a WARNING that says how
    many. That bound is for outages: while Redis answers, a burst is held back at its source instead
    (``backlogged``, ``drain``): past half the buffer, or two round trips' worth, queued, the channel
    endpoints read no more messages from their sockets until the queue has drained to half of that.

    **History.** A broadcast on a topic whose ``ChannelDef`` has a ``History`` gets its offset from the
    same script (``HINCRBY`` in ``<prefix>:hm:<topic>``, which also holds the epoch), is appended to
    ``<prefix>:h:<topic>`` (``XADD MAXLEN = size``, entry id = offset) and to the bus; every process,
    the sender included, delivers it when it reads it back, so every subscriber sees a topic's offsets
    in order. A run key, ``<prefix>:run``, notices a Redis that lost its data (restarted without
    persistence, flushed): topics then start new epochs, and each process resends what it published in
    the last ``2 * heartbeat`` seconds, which other processes may not have read yet.

    **Deafness.** Each process publishes a probe every ``heartbeat`` seconds and expects to read it
    back; when none came back for ``2 * heartbeat`` s although Redis took them, it reconnects its reader,
    resumes from the last entry and logs a WARNING. A read that gets no answer within about
    ``heartbeat`` seconds is treated the same way.

    **Presence.** Entries are stored in Redis hashes (``<prefix>:p:<topic>``) so processes that start
    later see them, and every process keeps a replica fed by the diffs, so ``Presence.list`` needs no
    I/O. Each process refreshes a liveness key (``<prefix>:node:<id>``, TTL ``node_ttl``); the survivors
    remove the entries of a process whose key expired and broadcast the leaves. After an outage each
    process writes its own entries back and resyncs its replica.

    Args:
        url: a Redis URL, e.g. ``"redis://127.0.0.1:6379/0"``.
        prefix: the prefix of every key (share it between the processes of one app).
        node_ttl: seconds after which a silent process's presences are removed.
        outage_buffer: the most messages kept while Redis is unreachable (the oldest go first).
        heartbeat: seconds between two probes through the bus; a reader that reads none of its own
            back for ``2 * heartbeat`` seconds reconnects.
        bus_length: about how many entries the bus keeps (``XADD MAXLEN ~``); a process cut off while
            the others publish more than that loses the oldest of them (with a WARNING).

    Raises:
        ImportError: the ``redis`` package is not installed.
        ValueError: ``node_ttl`` or ``heartbeat`` is not positive, ``outage_buffer`` or ``bus_length``
            is less than 1.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "zzz",
        node_ttl: float = 15.0,
        outage_buffer: int = 10_000,
        heartbeat: float = 5.0,
        bus_length: int = 100_000,
    ) -> None:
        try:
            import redis.asyncio  # noqa: F401
            from redis.exceptions import NoScriptError, RedisError
        except ImportError:
            raise ImportError(
                "zzz.RedisPubSub needs the 'redis' package (redis-py with asyncio): "
                "pip install 'zzz[redis]' (or pip install 'redis[hiredis]')"
            ) from None
        super().__init__()
        if not node_ttl > 0:
            raise ValueError("node_ttl must be positive")
        if not heartbeat > 0:
            raise ValueError("heartbeat must be positive")
        if isinstance(outage_buffer, bool) or not isinstance(outage_buffer, int) or outage_buffer < 1:
            raise ValueError("outage_buffer must be an int of at least 1")
        if isinstance(bus_length, bool) or not isinstance(bus_length, int) or bus_length < 1:
            raise ValueError("bus_length must be an int of at least 1")
        self.url = url
        self.prefix = prefix
        self.node_ttl = node_ttl
        self.outage_buffer = outage_buffer
        self.heartbeat = heartbeat
        self.bus_length = bus_length
        self._bus = f"{prefix}:bus"
        self._run_key = f"{prefix}:run"
        self._topics_key = f"{prefix}:ptopics"
        self._client: Any = None  # commands and writes
        self._reader: Any = None  # the bus reader's own connection (it blocks)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        # What waits for Redis: [op id, kind, ...] lists, in publish order; removed once Redis took them.
        self._queue: collections.deque[list[Any]] = collections.deque()
        self._op_ids = 0
        self._seq = 0
        # Messages Redis took in the last 2 * heartbeat s: (monotonic time, op), resent if it lost them.
        self._recent: collections.deque[tuple[float, list[Any]]] = collections.deque()
        self._run = ""
        self._last_id = "0-0"
        self._reread = False  # the reader must read the bus again from its start (Redis lost its data)
        self._resumed_from = ""
        self._seen: dict[str, int] = {}  # publisher node -> the highest sequence number read from it
        self._wakeup: asyncio.Event | None = None
        # Backpressure while Redis answers: backlogged from _high_water queued until _low_water;
        # _room is set whenever publishers need not wait.
        self._high_water = max(1, min(outage_buffer // 2, 2 * _FLUSH_OPS))
        self._low_water = self._high_water // 2
        self.backlogged = False
        self._room: asyncio.Event | None = None
        self._stopped: asyncio.Future[None] | None = None  # done once the backend is stopping
        self._tasks: list[asyncio.Task[None]] = []
        self._writer: asyncio.Task[None] | None = None
        self._script_sha = ""
        # Heartbeat probes: the next number, whether one is due; when each was sent; those Redis took
        # that were not read back yet (number, monotonic time taken); the last one read back (number,
        # monotonic time).
        self._probe_next = 1
        self._probe_due = False
        self._probe_sent: dict[int, float] = {}
        self._probes_out: collections.deque[tuple[int, float]] = collections.deque(maxlen=64)
        self._probe_seen: tuple[int, float] = (0, 0.0)
        self._lag = 0.0
        # Outage bookkeeping: when writes started failing, and drops not yet reported.
        self._write_down_since: float | None = None
        self._read_down_since: float | None = None
        self._dropped_unreported = 0
        self._presence_dirty = False
        self._counters = {"published": 0, "received": 0, "dropped": 0, "reconnects": 0, "duplicates": 0}
        self._counters["deaf"] = 0
        self._counters["missed"] = 0
        self._counters["resent"] = 0
        self._counters["backpressure"] = 0
        # Set once the backend stops (close(), or its tasks cancelled as the loop shuts down); every
        # loop checks it, so no task goes back to waiting after it was told to stop.
        self._stopping = False
        # What a lost, stalled or restarting Redis raises; anything else is a bug and should surface.
        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)
        self._no_script = NoScriptError

    def _node_key(self, node: str) -> str:
        return f"{self.prefix}:node:{node}"

    def _presence_key(self, topic: str) -> str:
        return f"{self.prefix}:p:{topic}"

    def _meta_key(self, topic: str) -> str:
        return f"{self.prefix}:hm:{topic}"

    def _history_key(self, topic: str) -> str:
        return f"{self.prefix}:h:{topic}"

    def _seq_key(self) -> str:
        return f"{self.prefix}:seq:{self.node_id}"

    # -- stats ---------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters of this process's traffic through Redis since ``start``.

        Returns:
            A dict: ``published`` (messages Redis took from this process), ``received`` (messages read
            from the bus, every process's, probes excluded), ``buffered`` (messages waiting for Redis
            now), ``dropped`` (oldest messages dropped from a full ``outage_buffer``), ``reconnects``
            (times the bus reader reconnected after an error, a stall or deafness), ``deaf`` (of those,
            for deafness), ``duplicates`` (copies of a message read again and skipped), ``resent``
            (messages sent again after Redis lost its data), ``backpressure`` (times the queue passed
            its high-water mark while Redis answered, so the endpoints stopped reading their sockets
            until it drained), ``missed`` (messages of other processes that never reached this one:
            numbers skipped in their sequence), ``lag_seconds`` (how long the last heartbeat probe took
            to come back through Redis, or how long the one still awaited has been out), ``connected``
            (the reader and the writer both reach Redis).
        """
        lag = self._lag
        if self._probes_out:
            n, acked_at = self._probes_out[0]
            lag = max(lag, time.monotonic() - self._probe_sent.get(n, acked_at))
        return {
            **self._counters,
            "buffered": len(self._queue),
            "lag_seconds": lag,
            "connected": self._client is not None
            and self._write_down_since is None
            and self._read_down_since is None,
        }

    # -- lifecycle -----------------------------------------------------------------------------------------

    def _redis(self, role: str, socket_timeout: float) -> Any:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No retries inside redis-py: this class decides what is resent (a blind retry of a write
        # could apply it twice), and a failure must surface at once so buffering starts.
        return aioredis.from_url(
            self.url,
            decode_responses=True,
            client_name=f"{self.prefix}:{self.node_id}:{role}",
            socket_timeout=socket_timeout,
            socket_connect_timeout=max(self.heartbeat, 2.0),
            retry=Retry(NoBackoff(), 0),
        )

    async def start(self) -> None:
        """Connect, load the stored presences and start the background tasks (idempotent).

        Raises:
            redis.exceptions.ConnectionError: Redis is not reachable.
        """
        if self._client is not None:
            return
        await super().start()
        block = self.heartbeat / 2
        self._client = self._redis("writer", max(self.heartbeat, 2.0))
        # A read waits ``block`` s for entries; one without an answer within about a heartbeat more
        # means a stalled Redis or a dead connection.
        self._reader = self._redis("reader", block + max(self.heartbeat / 2, 0.5))
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.backlogged = False
        self._stopping = False
        self._stopped = self._loop.create_future()
        try:
            self._script_sha = await self._client.script_load(_PUBLISH)
            self._read_script = self._client.register_script(_READ)
            self._drop_empty = self._client.register_script(_DROP_EMPTY_TOPIC)
            self._run = await self._current_run(self._client)
            # Read the bus from its current end: what was published before this process started is
            # not for it (presence comes from the snapshot read next, which the bus then updates).
            last = await self._client.xrevrange(self._bus, count=1)
            self._last_id = last[0][0] if last else "0-0"
            await self._client.set(self._node_key(self.node_id), "1", px=int(self.node_ttl * 1000))
            await self._resync()
        except BaseException:
            await _bounded(self._client.aclose(), _GOODBYE_TIMEOUT, quiet=True)
            await _bounded(self._reader.aclose(), _GOODBYE_TIMEOUT, quiet=True)
            self._client = self._reader = None
            raise
        now = time.monotonic()
        self._probe_seen = (0, now)
        self._writer = self._loop.create_task(self._write(self._client))
        self._tasks = [
            self._loop.create_task(self._read()),
            self._writer,
            self._loop.create_task(self._keep_alive()),
        ]
        if self._queue:
            self._wakeup.set()

    async def close(self) -> None:
        """Withdraw this process's presences, flush what is queued and disconnect.

        Bounded whatever Redis does: the goodbye gets about a second, then ``close`` gives up on it
        (and on any task that does not stop) with a WARNING; the other processes expire what was not
        withdrawn after ``node_ttl``. Messages still buffered then are lost.
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
                    "zzz.channels: %d Redis task(s) did not stop within %.1f s; leaving them (%s)",
                    len(pending),
                    _GOODBYE_TIMEOUT + _TASKS_GRACE,
                    ", ".join(sorted(getattr(t.get_coro(), "__qualname__", "?") for t in pending)),
                )
        if self._queue:
            log.warning(
                "zzz.channels: %d message(s) for Redis were not sent before closing", len(self._queue)
            )
            self._queue.clear()
        self._client = None
        self._reader = None
        self._writer = None

    def _begin_stop(self) -> None:
        """Stop every loop: set the flag, wake the writer (it says goodbye) and cancel the others.

        Called by ``close`` and by whichever task first sees that it was cancelled, so a cancellation
        swallowed inside redis-py by one task is made up for by the others.
        """
        if self._stopping:
            return
        self._stopping = True
        self._release()
        if self._wakeup is not None:
            self._wakeup.set()
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)
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
        while self._queue:
            try:
                await self._flush(client)
            except _RunChanged:
                continue  # sent again at once (the caller bounds the time)
        await client.delete(self._node_key(self.node_id))

    async def _finish(self, client: Any) -> None:
        """The writer's last act: goodbye and disconnect, together bounded by ``_GOODBYE_TIMEOUT``."""
        errors: tuple[type[BaseException], ...] = (asyncio.TimeoutError, _RunChanged, *self._errors)
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
        self._enqueue(["x", kind, header, body])

    def _publish_history(
        self, topic: str, event: str, body: str, exclude: str | None, history: History
    ) -> None:
        """Queue a broadcast on a topic with history; it is delivered here too once read back from the bus.

        Redis gives it its offset (in the publish script), so that every process delivers the topic's
        broadcasts in the same order, that of their offsets.
        """
        if self._stopping:
            return
        ttl_ms = 0 if history.ttl is None else max(int(history.ttl * 1000), 1)
        self._enqueue(
            ["H", "H", [self.node_id, topic, event, exclude, time.time()], body, topic, history.size, ttl_ms]
        )

    def _store(self, topic: str, joins: list[PresenceEntry], leaves: list[PresenceEntry]) -> None:
        key = self._presence_key(topic)
        for entry in leaves:
            self._enqueue(["hdel", key, entry[0]])
        for entry in joins:
            self._enqueue(["hset", key, entry[0], json.dumps(entry)])
            self._enqueue(["sadd", self._topics_key, topic])

    def _enqueue(self, op: list[Any]) -> None:
        # One writer task sends everything in order, so a presence diff never overtakes the write it
        # describes, and what is queued together goes out in one round trip. Sequence numbers are
        # given here, on the loop's thread, so they follow the order of the queue.
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self._enqueue, op)
            return
        if op[0] in ("x", "H"):
            self._seq += 1
            header = op[2]
            # The envelope: kind, JSON header [node, seq, ...], body (already-encoded text).
            op[2] = envelope(op[1], [header[0], self._seq, *header[1:]], op[3])
            op[3] = self._seq
        self._op_ids += 1
        op.insert(0, self._op_ids)
        queue = self._queue
        queue.append(op)
        if len(queue) >= self._high_water and not self.backlogged:
            self._backlog()
        if len(queue) > self.outage_buffer:
            if queue.popleft()[1] in ("hset", "hdel", "sadd"):
                self._presence_dirty = True  # rewritten from the replica once Redis is back
            self._counters["dropped"] += 1
            if not self._dropped_unreported:
                log.warning(
                    "zzz.channels: outage_buffer full (%d messages waiting for Redis): dropping the oldest",
                    self.outage_buffer,
                )
            self._dropped_unreported += 1
        if self._wakeup is not None:
            self._wakeup.set()

    def _backlog(self) -> None:
        """The queue passed its high-water mark: hold publishers back, unless Redis is unreachable
        (then the outage buffer takes what they publish) or the backend is stopping."""
        if self._write_down_since is not None or self._stopping or self._room is None:
            return
        self.backlogged = True
        self._room.clear()
        self._counters["backpressure"] += 1

    def _release(self) -> None:
        """Let publishers go on (the queue drained, Redis is unreachable, or the backend stops)."""
        if self.backlogged:
            self.backlogged = False
            if self._room is not None:
                self._room.set()

    async def drain(self) -> None:
        """Wait while ``backlogged``: until the queue for Redis is down to its low-water mark, Redis
        stops answering (the outage buffer then takes the broadcasts) or the backend stops.

        Always yields to the loop at least once.
        """
        room = self._room
        if not self.backlogged or room is None:
            await asyncio.sleep(0)
            return
        await room.wait()

    async def _current_run(self, client: Any) -> str:
        """The run id in Redis, made now if Redis has none (a new Redis, or one that lost its data)."""
        await client.set(self._run_key, uuid.uuid4().hex, nx=True)
        run = await client.get(self._run_key)
        return str(run)

    def _run_changed(self, run: str) -> bool:
        """Note Redis's run id; when it changed, Redis lost its data: resend what it may have lost.

        Returns:
            True when the run changed.
        """
        if run == self._run:
            return False
        self._run = run
        self._reread = True
        resend = [op for _at, op in self._recent]
        self._recent.clear()
        # Those went to Redis before anything still queued, so they go first again; the script and
        # the readers drop whatever was applied or read already.
        self._queue.extendleft(reversed(resend))
        while len(self._queue) > self.outage_buffer:
            if self._queue.popleft()[1] in ("hset", "hdel", "sadd"):
                self._presence_dirty = True
            self._counters["dropped"] += 1
            self._dropped_unreported += 1
        self._counters["resent"] += len(resend)
        log.warning(
            "zzz.channels: Redis lost its data (restarted without persistence, or flushed): topics with "
            "history start new epochs; resending the %d message(s) it took within %.1f s before",
            len(resend),
            2 * self.heartbeat,
        )
        if self._wakeup is not None:
            self._wakeup.set()
        return True

    async def _flush(self, client: Any) -> None:
        """Send the head of the queue (and a due probe) in one pipeline; drop what Redis took."""
        batch = [op for op, _ in zip(self._queue, range(_FLUSH_OPS))]
        probe = 0
        if self._probe_due and not self._stopping:
            probe = self._probe_next
            self._probe_next += 1
            self._probe_due = False
        if not batch and not probe:
            return
        run = self._run
        pipe = client.pipeline(transaction=False)
        scripts: list[int] = []  # indexes of the script calls among the pipeline's results
        commands = 0
        keys: list[str] = [self._run_key, self._seq_key(), self._bus]
        args: list[Any] = [run, uuid.uuid4().hex, self.bus_length, _SEQ_TTL, uuid.uuid4().hex[:16]]
        topic_keys: dict[str, int] = {}  # topic -> KEYS index of its meta hash, in this call

        def call_script() -> None:
            nonlocal keys, args, commands
            if len(args) > 5:
                pipe.evalsha(self._script_sha, len(keys), *keys, *args)
                scripts.append(commands)
                commands += 1
                keys = keys[:3]
                args = args[:5]
                topic_keys.clear()

        for op in batch:
            kind = op[1]
            if kind == "x":
                args += [op[4], op[3], 0, 0, 0]
            elif kind == "H":
                index = topic_keys.get(op[5])
                if index is None:
                    keys += [self._meta_key(op[5]), self._history_key(op[5])]
                    index = topic_keys[op[5]] = len(keys) - 1  # Lua's KEYS count from 1
                args += [op[4], op[3], index, op[6], op[7]]
            else:
                call_script()
                getattr(pipe, kind)(*op[2:])
                commands += 1
                continue
            if len(args) >= 5 + 5 * _SCRIPT_MESSAGES:
                call_script()
        if probe:
            sent = time.monotonic()
            self._probe_sent[probe] = sent
            for n in [n for n in self._probe_sent if n < probe - 64]:
                del self._probe_sent[n]  # never taken by Redis (failed batches)
            args += [0, envelope("h", [self.node_id, 0, probe], ""), 0, 0, 0]
        call_script()
        try:
            results = await pipe.execute(raise_on_error=False)
        except BaseException:
            if probe:
                self._probe_sent.pop(probe, None)
                self._probe_due = True
            raise
        for result in results:
            if isinstance(result, self._no_script):
                # Redis restarted and forgot the script: load it and send the whole batch again (the
                # script drops what was applied; the presence writes do the same thing twice).
                self._script_sha = await client.script_load(_PUBLISH)
                raise _RunChanged("publish script reloaded")
            if isinstance(result, Exception):
                raise result
        for i in scripts:
            status, value = results[i]
            if status == "run":
                self._run_changed(str(value))
                raise _RunChanged(f"Redis run is now {value}")
        # Redis took the batch.
        now = time.monotonic()
        last = batch[-1][0] if batch else 0
        queue, recent = self._queue, self._recent
        published = 0
        while queue and queue[0][0] <= last:
            op = queue.popleft()
            if op[1] in ("x", "H"):
                published += 1
                recent.append((now, op))
        self._counters["published"] += published
        if self.backlogged and len(queue) <= self._low_water:
            self._release()
        horizon = now - 2 * self.heartbeat
        while recent and (recent[0][0] < horizon or len(recent) > self.outage_buffer):
            recent.popleft()
        if probe:
            self._probes_out.append((probe, now))

    async def _write(self, client: Any) -> None:
        assert self._wakeup is not None
        delay = 0.05
        try:
            while not self._stop_requested():
                if not self._queue and not self._probe_due:
                    await self._wakeup.wait()
                    self._wakeup.clear()
                    continue
                try:
                    await self._flush(client)
                except _RunChanged:
                    continue  # the batch goes again at once, with what Redis may have lost first
                except self._errors as exc:
                    if self._stop_requested():
                        break
                    if self._write_down_since is None:
                        self._write_down_since = time.monotonic()
                        self._release()
                        log.warning(
                            "zzz.channels: Redis write failed (%s); buffering up to %d messages until it is back",
                            exc or type(exc).__name__,
                            self.outage_buffer,
                        )
                    await self._pause(delay)
                    delay = min(delay * 2, _MAX_BACKOFF)
                    continue
                except Exception:  # a bug: drop the batch, keep the writer that every broadcast needs
                    log.exception(
                        "zzz.channels: Redis write failed; dropping %d message(s)", len(self._queue)
                    )
                    self._queue.clear()
                    self._release()
                    continue
                delay = 0.05
                if self._presence_dirty and not self._queue:
                    self._presence_dirty = False
                    try:
                        await self._resync()
                    except self._errors:
                        self._presence_dirty = True
                        continue
                if self._write_down_since is not None:
                    log.warning(
                        "zzz.channels: Redis writes work again after %.1f s; sending what was buffered",
                        time.monotonic() - self._write_down_since,
                    )
                    self._write_down_since = None
                if self._dropped_unreported and len(self._queue) < self.outage_buffer:
                    log.warning(
                        "zzz.channels: %d message(s) were dropped because outage_buffer (%d) was full",
                        self._dropped_unreported,
                        self.outage_buffer,
                    )
                    self._dropped_unreported = 0
        except asyncio.CancelledError:
            # Cancelled with the loop (asyncio.run/Runner cancels every task at exit): still say
            # goodbye, bounded, then let the cancellation through.
            self._begin_stop()
            await self._finish(client)
            raise
        await self._finish(client)

    # -- the bus reader ------------------------------------------------------------------------------------

    async def _connect_reader(self) -> None:
        """(Re)start reading: notice a Redis that lost its data, then bring presence in line with it."""
        reader = self._reader
        if self._run_changed(await self._current_run(reader)) or self._reread:
            self._reread = False
            self._last_id = "0-0"  # the bus is a new one: read all of it
            self._resumed_from = "from the start of its new bus"
        else:
            self._resumed_from = "from where it stopped"
            await self._check_bus(reader)
        await reader.set(self._node_key(self.node_id), "1", px=int(self.node_ttl * 1000))
        await self._resync()
        self._probe_seen = (self._probe_seen[0], time.monotonic())

    async def _check_bus(self, reader: Any) -> None:
        """Before resuming: when the bus is behind our position, resume at its end.

        Redis came back with part of its data, or its clock went back: reading from our position would
        wait for ever (deaf), reading from the start would deliver old entries again. Resuming at the
        end may lose what came in between; the sequence numbers then tell how much (``missed``).
        """
        from redis.exceptions import ResponseError

        try:
            info = await reader.xinfo_stream(self._bus)
        except ResponseError:
            return  # no bus yet: the next entry starts one, after our position
        if not isinstance(info, dict):
            return
        last = _stream_id(self._last_id)
        generated = info.get("last-generated-id")
        if generated and _stream_id(str(generated)) < last:
            log.warning(
                "zzz.channels: the Redis bus is behind this process's position (Redis lost part of its "
                "data, or its clock went back); resuming at its end, some broadcasts may be lost here"
            )
            self._last_id = str(generated)
            return

    async def _read(self) -> None:
        block_ms = max(int(self.heartbeat * 500), 1)
        reconnect_on: tuple[type[BaseException], ...] = (*self._errors, _Deaf)
        connected = True  # start() did the first connect's work
        delay = 0.1
        try:
            while not self._stop_requested():
                try:
                    if not connected:
                        await self._connect_reader()
                        connected = True
                        self._counters["reconnects"] += 1
                        if self._read_down_since is not None:
                            log.warning(
                                "zzz.channels: reading the Redis bus again after %.1f s, %s",
                                time.monotonic() - self._read_down_since,
                                self._resumed_from,
                            )
                            self._read_down_since = None
                    response = await self._unless_stopped(
                        self._reader.xread({self._bus: self._last_id}, count=_READ_COUNT, block=block_ms)
                    )
                    delay = 0.1
                    if response is _STOPPED or self._stop_requested():
                        break
                    self._handle(response)
                    if self._reread:
                        self._reread = False
                        self._last_id = "0-0"
                    self._check_deaf()
                except reconnect_on as exc:
                    if self._stop_requested():
                        break  # the writer's goodbye disconnected us
                    connected = False
                    if isinstance(exc, _Deaf):
                        self._counters["deaf"] += 1
                        log.warning(
                            "zzz.channels: %s; reconnecting and resuming from the last entry read", exc
                        )
                    elif self._read_down_since is None:
                        log.warning(
                            "zzz.channels: reading the Redis bus failed (%s); reconnecting",
                            exc or type(exc).__name__,
                        )
                    if self._read_down_since is None:
                        self._read_down_since = time.monotonic()
                    # A connection that may still be waiting for an answer must not be reused.
                    await _bounded(self._reader.connection_pool.disconnect(), _GOODBYE_TIMEOUT, quiet=True)
                    await self._pause(delay)
                    delay = min(delay * 2, _MAX_BACKOFF)
        except asyncio.CancelledError:
            self._begin_stop()
            raise
        finally:
            if self._reader is not None:
                await _bounded(self._reader.aclose(), _GOODBYE_TIMEOUT, quiet=True)

    async def _pause(self, delay: float) -> None:
        """Sleep ``delay`` seconds, less if the backend starts stopping meanwhile."""
        if self._stopped is None:
            await asyncio.sleep(delay)
        else:
            await asyncio.wait({self._stopped}, timeout=delay)

    async def _unless_stopped(self, aw: Awaitable[T]) -> T | object:
        """Await ``aw``, or return ``_STOPPED`` as soon as the backend is stopping.

        A blocking read can last ``heartbeat / 2`` seconds, and redis-py may drop the cancellation
        meant to end it (see ``_stop_requested``), so the reader does not rely on being cancelled.
        """
        task = asyncio.ensure_future(aw)
        waiting: set[asyncio.Future[Any]] = {task}
        if self._stopped is not None:
            waiting.add(self._stopped)
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            task.add_done_callback(_retrieve)
            raise
        if not task.done():
            task.cancel()
            task.add_done_callback(_retrieve)  # it may still end with the error of a closed connection
            return _STOPPED
        return task.result()

    def _check_deaf(self) -> None:
        if not self._probes_out:
            return
        now = time.monotonic()
        seen_at = self._probe_seen[1]
        # Redis took a probe a while ago and none has come back for 2 heartbeats: the reader is deaf.
        # (A probe that Redis has not taken proves nothing: the writer may be the one cut off.)
        if now - self._probes_out[0][1] > self.heartbeat and now - seen_at > 2 * self.heartbeat:
            raise _Deaf(f"the Redis bus reader read none of this process's probes for {now - seen_at:.1f} s")

    def _handle(self, response: Any) -> None:
        streams = response.items() if isinstance(response, dict) else response or ()
        for _name, entries in streams:
            if entries and isinstance(entries[0], list) and entries[0] and isinstance(entries[0][0], tuple):
                entries = entries[0]  # the RESP3 shape: {stream: [entries]}
            for entry_id, fields in entries:
                self._last_id = entry_id
                try:
                    self._on_entry(fields)
                except Exception:  # a bad entry must not kill the reader that feeds every socket
                    log.exception("zzz.channels: dropping a malformed entry of the Redis bus")

    def _on_entry(self, fields: dict[str, str]) -> None:
        kind, header_text, body = fields["m"].split("\n", 2)
        header = json.loads(header_text)
        node, seq = header[0], header[1]
        if kind == "h":
            if node == self.node_id:
                n = header[2]
                if n > self._probe_seen[0]:
                    now = time.monotonic()
                    self._probe_seen = (n, now)
                    sent = self._probe_sent.get(n)
                    if sent is not None:
                        self._lag = now - sent
                    out = self._probes_out
                    while out and out[0][0] <= n:
                        out.popleft()
                    for old in [m for m in self._probe_sent if m <= n]:
                        del self._probe_sent[old]
            return
        seen = self._seen
        prev = seen.get(node)
        if prev is not None and seq <= prev:
            self._counters["duplicates"] += 1
            return
        if prev is None and len(seen) >= _SEEN_MAX:
            del seen[next(iter(seen))]
        seen[node] = seq
        if prev is not None and seq > prev + 1 and node != self.node_id:
            # Each process numbers its messages 1, 2, 3...: a jump is what never reached us.
            self._counters["missed"] += seq - prev - 1
            log.warning(
                "zzz.channels: %d message(s) from process %s never reached this one (trimmed from the "
                "bus while this process was away, dropped by that process's full outage_buffer, or "
                "lost with Redis's data)",
                seq - prev - 1,
                node,
            )
        self._counters["received"] += 1
        if kind == "H":
            self._deliver(header[2], header[3], body, header[4], Position(int(fields["o"]), fields["e"]))
            return
        if node == self.node_id:
            return  # delivered here when it was published
        if kind == "b":
            self._deliver(header[2], header[3], body, header[4])
        elif kind == "d":
            self._deliver_one(header[4], header[2], header[3], body)
        elif kind == "p":
            change = json.loads(body)
            self._on_presence(header[2], change["joins"], change["leaves"])

    def _on_presence(self, topic: str, joins: list[PresenceEntry], leaves: list[PresenceEntry]) -> None:
        # A diff may be read again after a resync already applied it: act only on what it changes.
        current = self._presence.get(topic, {})
        joins = [e for e in joins if current.get(e[0]) != e]
        leaves = [e for e in leaves if e[0] in current]
        if joins or leaves:
            self._apply_presence(topic, joins, leaves)

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        next_probe = loop.time()
        next_live = loop.time() + self.node_ttl / 3
        try:
            while not self._stop_requested():
                await asyncio.sleep(max(min(next_probe, next_live) - loop.time(), 0.0))
                if self._stop_requested():
                    break
                now = loop.time()
                if now >= next_probe:
                    next_probe = now + self.heartbeat
                    self._probe_due = True
                    if self._wakeup is not None:
                        self._wakeup.set()
                if now >= next_live:
                    next_live = now + self.node_ttl / 3
                    try:
                        await self._client.set(
                            self._node_key(self.node_id), "1", px=int(self.node_ttl * 1000)
                        )
                        await self._sweep()
                    except self._errors as exc:
                        if self._write_down_since is None:
                            log.warning(
                                "zzz.channels: Redis presence upkeep failed (%s)", exc or type(exc).__name__
                            )
        except asyncio.CancelledError:
            self._begin_stop()
            raise

    # -- history -------------------------------------------------------------------------------------------

    async def _read_topic(
        self, topic: str, history: History, first: int
    ) -> tuple[Position, list[Publication]]:
        if self._client is None:
            await self.start()
        ttl_ms = 0 if history.ttl is None else max(int(history.ttl * 1000), 1)
        epoch, offset, entries = await self._read_script(
            keys=[self._meta_key(topic), self._history_key(topic)], args=[new_epoch(), ttl_ms, first]
        )
        pubs = []
        for entry_id, fields in entries:
            values = dict(zip(fields[::2], fields[1::2]))
            _kind, header_text, body = values["m"].split("\n", 2)
            header = json.loads(header_text)
            pubs.append(
                Publication(int(entry_id.split("-", 1)[0]), header[3], body, header[4], float(header[5]))
            )
        return Position(int(offset), str(epoch)), pubs

    async def position(self, topic: str, history: History) -> Position:
        """The current position of ``topic`` in Redis (made at offset 0 in a new epoch if it has none).

        Raises:
            redis.exceptions.RedisError: Redis is unreachable (after at most about ``heartbeat`` s).
        """
        pos, _ = await self._read_topic(topic, history, 0)
        return pos

    async def since(
        self, topic: str, history: History, pos: Position
    ) -> tuple[bool, list[Publication], Position]:
        """What a subscriber at ``pos`` missed on ``topic``, read from Redis.

        Returns:
            ``(recovered, missed, current)``, as ``PubSub.since``.

        Raises:
            redis.exceptions.RedisError: Redis is unreachable (after at most about ``heartbeat`` s).
        """
        first = pos.offset + 1 if pos.offset >= 0 else 0
        current, pubs = await self._read_topic(topic, history, first)
        if pos.epoch != current.epoch or pos.offset > current.offset or pos.offset < 0:
            return False, [], current
        if pos.offset == current.offset:
            return True, [], current
        if not pubs or pubs[0].offset != pos.offset + 1:
            return False, [], current  # trimmed by size
        if history.ttl is not None and pubs[0].time < time.time() - history.ttl:
            return False, [], current  # expired by ttl
        return True, pubs, current

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
        (Redis may have lost them, or the others swept us as dead: then they are announced again) and
        tells local subscribers what changed.
        """
        stored = await self._stored_entries()
        alive = await self._alive({e[3] for entries in stored.values() for e in entries})
        alive.add(self.node_id)
        mine = {entry[0]: (topic, entry) for topic, entry in self._own_entries()}
        stored_refs = {e[0] for entries in stored.values() for e in entries}
        pipe = self._client.pipeline(transaction=False)
        for topic, entries in stored.items():
            for entry in entries:
                if entry[3] == self.node_id and entry[0] not in mine:
                    pipe.hdel(self._presence_key(topic), entry[0])  # left while we were cut off
        returning: dict[str, list[PresenceEntry]] = {}
        for ref, (topic, entry) in mine.items():
            pipe.hset(self._presence_key(topic), ref, json.dumps(entry))
            pipe.sadd(self._topics_key, topic)
            if ref not in stored_refs:
                returning.setdefault(topic, []).append(entry)
        await pipe.execute()
        for topic, joins in returning.items():
            self._publish("p", [self.node_id, topic], dumps({"joins": joins, "leaves": []}))
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
                    self._on_presence(topic, [], leaves)
                    self._publish("p", [self.node_id, topic], json.dumps({"joins": [], "leaves": leaves}))
            if len(dead) == len(entries):
                await self._drop_empty(keys=[key, self._topics_key], args=[topic])


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Done callback of work given up on: take its outcome, so asyncio does not log it as unretrieved."""
    if not task.cancelled():
        task.exception()


def _stream_id(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


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
        task.add_done_callback(_retrieve)
        raise
    if not done:
        task.cancel()
        task.add_done_callback(_retrieve)
        if quiet:
            return None
        raise asyncio.TimeoutError(f"no answer within {timeout:.1f} s")
    if task.cancelled() or (quiet and task.exception() is not None):
        return None
    return task.result()
