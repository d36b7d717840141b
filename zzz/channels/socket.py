"""The channel layer of one WebSocket endpoint: what an application declares, per-connection sockets,
joins, routing of events, replies.

``ChannelDef`` and ``ChannelConfig`` declare the channels and the endpoint's settings;
``ChannelConfig.routes`` mounts it. ``ChannelEndpoint`` provides the ``on_open``/``on_message``/
``on_close`` callbacks of a ``WsConfig``; ``ChannelSocket`` is what join and event handlers receive.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from zzz.channels.channel import JoinResult, Reply
from zzz.channels.history import History, Position, Publication
from zzz.channels.pubsub import InMemoryPubSub, InterceptFn, PubSub
from zzz.channels.wire import (
    MalformedMessage,
    Message,
    decode_fields,
    dumps,
    encode,
    encode_ok_reply,
    quote,
    reply_payload,
)
from zzz.routing import Route, Router
from zzz.websocket import WebSocket, WsConfig

__all__ = [
    "ChannelConfig",
    "ChannelDef",
    "ChannelEndpoint",
    "ChannelSocket",
    "EventHandler",
    "JoinHandler",
    "LeaveHandler",
]

log = logging.getLogger("zzz")

# The longest a join waits for its topic's history (a backend's I/O, e.g. a stalled Redis) before it
# is answered with {"reason": "history unavailable"}.
HISTORY_TIMEOUT = 5.0


# What an endpoint step is: plain code that yields each awaitable it needs, and gets its result back.
_Steps = Generator[Awaitable[Any], Any, None]


_HANDLER_RAISED = "zzz.channels: handler for %r on %r raised"

# Results that are never awaitable: checked first, as inspect.isawaitable is slow on non-awaitables.
_PLAIN_RESULTS = frozenset({dict, list, str, int, float, bool, tuple, Reply, JoinResult})
# A push handler's results that are ok replies with themselves as the response.
_PLAIN_REPLIES = frozenset({dict, list, str, int, float, bool, tuple})
_monotonic = time.monotonic
# The events the endpoint answers itself (a heartbeat only on the "phoenix" topic).
_SPECIAL_EVENTS = frozenset({"heartbeat", "phx_join", "phx_leave"})


def _call(fn: Any, *args: Any) -> Generator[Awaitable[Any], Any, Any]:
    """Call a callback that may be a plain function or ``async``; yield its result only when awaitable."""
    result = fn(*args)
    if result is not None and type(result) not in _PLAIN_RESULTS and inspect.isawaitable(result):
        result = yield result
    return result


def _run(steps: _Steps) -> Coroutine[Any, Any, None] | None:
    """Run ``steps`` up to their first awaitable: None when they finished without one, else the rest."""
    try:
        awaitable = steps.send(None)
    except StopIteration:
        return None
    return _finish(steps, awaitable)


async def _finish(steps: _Steps, awaitable: Awaitable[Any]) -> None:
    while True:
        try:
            value = await awaitable
        except BaseException as exc:  # noqa: BLE001 (raised where the step awaited: it handles or re-raises)
            try:
                awaitable = steps.throw(exc)
            except StopIteration:
                return
        else:
            try:
                awaitable = steps.send(value)
            except StopIteration:
                return


# -- what an application declares ------------------------------------------------------------------------

JoinHandler = Callable[["ChannelSocket", str, Any], JoinResult | Reply | bool | Awaitable[Any]]
LeaveHandler = Callable[["ChannelSocket", str], None | Awaitable[None]]
EventHandler = Callable[["ChannelSocket", str, str, Any], Any]


@dataclass(frozen=True)
class ChannelDef:
    """Handlers for the topics that match a pattern.

    Attributes:
        topic_pattern: ``"prefix:*"`` matches every topic starting with ``"prefix:"``; anything else
            matches exactly.
        join: ``join(socket, topic, payload)`` returning True/False, a ``JoinResult`` or a ``Reply``
            (sync or async). None accepts every join.
        leave: ``leave(socket, topic)`` called when the client leaves or disconnects (sync or async).
        handlers: event name -> ``handler(socket, topic, event, payload)`` (sync or async); its return
            value is the reply (see ``Reply``).
        history: keep the topics' last broadcasts, numbered, so that clients that reconnect recover
            what they missed (see ``History``); None: no history, no ``meta`` on the wire.
        intercept: event name -> ``fn(socket, topic, event, payload)``, a plain function called once per
            subscriber for each broadcast of that event (replays included); it returns the payload to
            send to that subscriber, or None to skip it. Other events keep the encode-once path.

    Raises:
        TypeError: ``history`` is not a ``History``, or an intercept is not callable.
    """

    topic_pattern: str
    join: JoinHandler | None = None
    leave: LeaveHandler | None = None
    handlers: Mapping[str, EventHandler] = field(default_factory=dict)
    history: History | None = None
    intercept: Mapping[str, InterceptFn] | None = None

    def __post_init__(self) -> None:
        if self.history is not None and not isinstance(self.history, History):
            raise TypeError("ChannelDef history must be a zzz.History (or None)")
        for event, fn in (self.intercept or {}).items():
            if not isinstance(event, str) or not callable(fn):
                raise TypeError("ChannelDef intercept maps event names to functions")

    def matches(self, topic: str) -> bool:
        """True when ``topic`` belongs to this channel."""
        if self.topic_pattern.endswith("*"):
            return topic.startswith(self.topic_pattern[:-1])
        return topic == self.topic_pattern


@dataclass
class ChannelConfig:
    """Settings of one channel endpoint (``Router.channel(path, config)``).

    Attributes:
        channels: the channel definitions; the first whose pattern matches a topic handles it.
        pubsub: the backend; None gives this endpoint its own ``InMemoryPubSub``.
        heartbeat_timeout: seconds without any message from a client before its socket is closed
            (clients send a heartbeat every 30 s by default); None disables the check.
        max_topics_per_socket: joins beyond this are refused with ``{"reason": "too many topics"}``;
            None is unlimited.
        rate_limit: ``(burst, per_second)`` token bucket per socket for every message but heartbeats;
            None disables it.
        rate_limit_action: ``"drop"`` answers excess pushes with ``{"reason": "rate_limited"}``;
            ``"disconnect"`` closes the socket with 1008.
        slow_subscriber: what a broadcast does for a subscriber that does not read fast enough.
            ``"close"``: it queues the frame like any other, and the server closes the connection with
            1008 once its unsent bytes pass ``max_backpressure``. ``"skip"``: while the subscriber's
            unsent bytes (``ws.buffered_amount``) are over ``skip_if_buffered_over``, broadcasts skip it
            (they are lost to it, as if the network had dropped them) instead of queueing more; replies,
            ``push``, ``push_to``, replays and ``presence_diff`` are never skipped.
        skip_if_buffered_over: the threshold of ``slow_subscriber="skip"``, in bytes (default 1 MiB);
            keep it under the server's ``max_backpressure`` (8 MiB by default), which still applies.

    Raises:
        ValueError: an unknown ``rate_limit_action`` or ``slow_subscriber``, a bad ``rate_limit``, or a
            negative ``skip_if_buffered_over``.
        TypeError: ``skip_if_buffered_over`` is not an int.
    """

    channels: list[ChannelDef]
    pubsub: PubSub | None = None
    heartbeat_timeout: float | None = 60.0
    max_topics_per_socket: int | None = 100
    rate_limit: tuple[float, float] | None = None
    rate_limit_action: Literal["drop", "disconnect"] = "drop"
    slow_subscriber: Literal["close", "skip"] = "close"
    skip_if_buffered_over: int = 1 << 20

    def __post_init__(self) -> None:
        if self.pubsub is None:
            self.pubsub = InMemoryPubSub()
        if self.rate_limit_action not in ("drop", "disconnect"):
            raise ValueError("rate_limit_action must be 'drop' or 'disconnect'")
        if self.slow_subscriber not in ("close", "skip"):
            raise ValueError("slow_subscriber must be 'close' or 'skip'")
        if not isinstance(self.skip_if_buffered_over, int) or isinstance(self.skip_if_buffered_over, bool):
            raise TypeError("skip_if_buffered_over must be an int (bytes)")
        if self.skip_if_buffered_over < 0:
            raise ValueError("skip_if_buffered_over must be >= 0")
        if self.rate_limit is not None:
            burst, rate = self.rate_limit
            if burst < 1 or rate <= 0:
                raise ValueError("rate_limit needs burst >= 1 and per_second > 0")

    def find(self, topic: str) -> ChannelDef | None:
        """The channel definition that handles ``topic``, if any."""
        for channel in self.channels:
            if channel.matches(topic):
                return channel
        return None

    def routes(self, path: str) -> list[Route]:
        """The WebSocket routes of this endpoint: ``path`` and ``path + "/websocket"``.

        phoenix.js appends ``/websocket`` to the URL it is given; zzz.js uses the URL as it is.
        ``Router.channel(path, config)`` mounts them; both share one ``ChannelEndpoint``.

        Args:
            path: the mount point, e.g. ``"/socket"``.
        """
        ws_config = ChannelEndpoint(self).ws_config()
        base = path.rstrip("/") or ""
        return [Router.ws(path, ws_config), Router.ws(f"{base}/websocket", ws_config)]


# -- one connection --------------------------------------------------------------------------------------


class ChannelSocket:
    """One client connection as the channel handlers see it.

    Attributes:
        id: a unique id for this connection (``push_to`` accepts it, in any process).
        ws: the underlying ``zzz.WebSocket``.
        assigns: per-connection data; starts as a copy of the upgrade request's assigns.
        array_form: True when frames to this client use the array form: always for a socket opened with
            ``vsn=2.x`` (phoenix.js), otherwise when the client's last message used it.
        skip_over: the ``skip_if_buffered_over`` of an endpoint with ``slow_subscriber="skip"``, else None.
        fanout_target: ``ws`` when it is a ``zzz.WebSocket`` (broadcasts reach it through
            ``zzz.broadcast``, from ``fanout_thread``, the thread that opened it), else None.

    Args:
        ws: the connection.
        pubsub: the endpoint's backend.
        array_form: the socket was opened with ``vsn=2.x``: every frame to it is in the array form,
            whatever form the client's messages take.
        skip_over: while more than this many bytes wait to be sent to the client, broadcasts skip it
            (``ChannelConfig(slow_subscriber="skip")``); None: it gets every broadcast.
    """

    def __init__(
        self, ws: Any, pubsub: PubSub, array_form: bool = False, skip_over: int | None = None
    ) -> None:
        self.id = uuid.uuid4().hex
        self.ws = ws
        self.skip_over = skip_over
        # A zzz.WebSocket takes broadcasts through zzz.broadcast with the other subscribers of its
        # thread (the loop's: sockets are made in the connection's callbacks); other handles (test
        # doubles) get them one send_text at a time.
        self.fanout_target: Any = ws if isinstance(ws, WebSocket) else None
        self.fanout_thread = threading.get_ident()
        self.assigns: dict[str, Any] = dict(getattr(ws, "assigns", None) or {})
        self.array_form = array_form
        # phoenix.js with vsn=2.0.0 parses every frame as an array, so its form is fixed at connect
        # (as Phoenix picks its serializer by vsn); other clients are answered in the form they use.
        self._array_only = array_form
        self.closed = False
        self.last_seen = time.monotonic()
        self._pubsub = pubsub
        # topic -> (join_ref, channel definition, topic as JSON, join_ref as JSON, the definition's
        # handlers) for every joined topic: the push path writes its replies with the JSON parts as
        # they are, and finds the handler without a lookup of the definition's attribute.
        self._joins: dict[str, tuple[str | None, ChannelDef, str, str, Mapping[str, EventHandler]]] = {}
        self._tokens = 0.0
        self._stamp = 0.0

    def __repr__(self) -> str:
        return f"<ChannelSocket {self.id[:8]} topics={list(self._joins)}>"

    # -- request data --------------------------------------------------------------------------------------

    def param(self, name: str) -> str | None:
        """A path parameter of the upgrade request."""
        return self.ws.param(name)  # type: ignore[no-any-return]

    def query_param(self, name: str) -> str | None:
        """A query-string parameter of the upgrade request."""
        return self.ws.query_param(name)  # type: ignore[no-any-return]

    def get_assign(self, name: str) -> Any:
        """A value from ``assigns`` (set by middleware before the upgrade, or by ``assign``)."""
        return self.assigns.get(name)

    def assign(self, name: str, value: Any) -> None:
        """Store a value in ``assigns`` for the life of the connection."""
        self.assigns[name] = value

    # -- topics --------------------------------------------------------------------------------------------

    @property
    def topics(self) -> list[str]:
        """The topics this socket has joined."""
        return list(self._joins)

    def is_joined(self, topic: str) -> bool:
        """True when this socket has joined ``topic``."""
        return topic in self._joins

    # -- sending -------------------------------------------------------------------------------------------

    @property
    def buffered_amount(self) -> int:
        """Bytes sent to this client and not yet handed to the kernel (``ws.buffered_amount``)."""
        return self.ws.buffered_amount  # type: ignore[no-any-return]

    def send_text(self, text: str) -> None:
        """Send an already-encoded frame (no-op once the connection is closed)."""
        self.ws.send(text)

    def push(self, topic: str, event: str, payload: Any) -> None:
        """Send an event to this client only."""
        join = self._joins.get(topic)
        self.ws.send(encode(self.array_form, topic, event, payload, None, join[0] if join else None))

    def broadcast(self, topic: str, event: str, payload: Any) -> None:
        """Send an event to every subscriber of ``topic`` (this one included), in every process."""
        self._pubsub.broadcast(topic, event, payload)

    def broadcast_from(self, topic: str, event: str, payload: Any) -> None:
        """Send an event to every subscriber of ``topic`` except this socket."""
        self._pubsub.broadcast(topic, event, payload, exclude=self.id)

    def push_to(self, target: ChannelSocket | str, topic: str, event: str, payload: Any) -> None:
        """Send an event to one other subscriber of ``topic``.

        Args:
            target: the receiving ``ChannelSocket`` or its ``id`` (which may live in another process when
                the backend is Redis). Nothing is sent when it has not joined ``topic``.
            topic: the topic the receiver's channel listens on.
            event: the event name.
            payload: a JSON-serialisable value.
        """
        target_id = target if isinstance(target, str) else target.id
        self._pubsub.send_to(target_id, topic, event, payload)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (its channels are left as for any disconnect)."""
        self.ws.close(code, reason)

    # -- presence ------------------------------------------------------------------------------------------

    def track(self, topic: str, key: str, meta: dict[str, Any] | None = None) -> str:
        """Announce this socket on ``topic`` under ``key`` (e.g. a user id) with ``meta``.

        Subscribers get a ``presence_diff``; the entry goes away when the socket leaves the topic,
        calls ``untrack`` or disconnects. Tracking the same key again replaces the meta.

        Returns:
            The entry's ``phx_ref``.
        """
        return self._pubsub.track(self, topic, key, {} if meta is None else meta)

    def untrack(self, topic: str, key: str | None = None) -> None:
        """Remove this socket's presence on ``topic`` (one key, or all of them)."""
        self._pubsub.untrack(self, topic, key)


class ChannelEndpoint:
    """Speaks the channel protocol over the WebSockets of one route.

    The callbacks are plain functions: a message whose handling involves only plain functions (a
    heartbeat, a sync join, a sync event handler, a leave) is handled at once, inside the server's
    read, so the connection keeps reading and the replies of a read go out in one write. When
    something must be awaited (an ``async def`` join, leave or handler, a join that reads its topic's
    history, the backend's start), the callback returns a coroutine for the rest, and the server
    holds the connection's next messages until it is done: the order of one connection's messages
    and replies is kept either way.

    Args:
        config: the endpoint's settings.
    """

    def __init__(self, config: ChannelConfig) -> None:
        assert config.pubsub is not None  # ChannelConfig.__post_init__ fills it
        self.config = config
        self.pubsub: PubSub = config.pubsub
        self.pubsub.register_channels(config.channels)
        self._sockets: dict[int, ChannelSocket] = {}
        self._skip_over = config.skip_if_buffered_over if config.slow_subscriber == "skip" else None
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self.joins = 0

    def ws_config(self) -> WsConfig:
        """A ``zzz.WsConfig`` wired to this endpoint."""
        return WsConfig(on_open=self.on_open, on_message=self.on_message, on_close=self.on_close)

    @property
    def sockets(self) -> list[ChannelSocket]:
        """The open channel sockets of this endpoint."""
        return list(self._sockets.values())

    # -- WebSocket callbacks -------------------------------------------------------------------------------

    def on_open(self, ws: Any) -> Coroutine[Any, Any, None] | None:
        """Attach a ``ChannelSocket`` to a new connection (starting the backend on first use).

        Returns:
            None once the backend has started; before that, a coroutine that starts it.
        """
        if not self._started:
            return self._open_after_start(ws)
        self._attach(ws)
        return None

    def on_message(self, ws: Any, msg: Any) -> Coroutine[Any, Any, None] | None:
        """Decode one frame and act on it; malformed input is answered, never raised.

        Returns:
            None when the message was handled completely; otherwise a coroutine that finishes it (an
            ``async`` callback or a history read is involved), which the caller must await before it
            hands over the connection's next message.
        """
        sock = self._sockets.get(id(ws))
        if sock is None:  # on_open not run (or failed): be robust rather than drop the message
            return self._open_then_handle(ws, msg)
        # One function from here to the reply of a usual push: the hot path of every channel message.
        sock.last_seen = _monotonic()
        if self.pubsub.backlogged:
            return self._after_drain(ws, msg)
        try:
            data = msg.data
        except AttributeError:
            data = None
        if not isinstance(data, str):
            ws.close(1003, "binary frames are not supported")
            return None
        try:
            fields = decode_fields(data)
        except MalformedMessage as exc:
            self._malformed(sock, exc)
            return None
        topic, event, payload, ref, join_ref, array_form, meta = fields
        if sock._array_only:
            if not array_form:
                array_form = True
                fields = (topic, event, payload, ref, join_ref, True, meta)
        elif sock.array_form is not array_form:
            sock.array_form = array_form
            self.pubsub.subscriber_changed(sock)  # its broadcasts now take the other wire form
        special = event in _SPECIAL_EVENTS  # one lookup for the usual push (the event's hash is kept)
        if special and event == "heartbeat" and topic == "phoenix":
            self._reply(sock, Message(*fields), "ok", {})
            return None
        if self.config.rate_limit is not None and not self._take_token(sock):
            if self.config.rate_limit_action == "disconnect":
                ws.close(1008, "rate limited")
            elif ref is not None:
                self._reply(sock, Message(*fields), "error", {"reason": "rate_limited"})
            return None
        if special:
            if event == "phx_join":
                return _run(self._join(sock, Message(*fields)))
            if event == "phx_leave":
                return _run(self._leave_steps(sock, Message(*fields)))
        # The push path, inline for the usual push: a joined topic, a plain handler, a plain result
        # (or None), answered with an ok reply made from the join's prepared parts. Every other case
        # (and any exception) goes the general way, through _event, as before.
        join = sock._joins.get(topic)
        if join is not None and (join_ref is None or join_ref == join[0]):
            handler = join[4].get(event)
            if handler is not None:
                try:
                    result = handler(sock, topic, event, payload)
                except Exception:
                    log.exception(_HANDLER_RAISED, event, topic)
                    result = Reply.error("internal error")
                if result is None or ref is None:
                    if result is None or type(result) in _PLAIN_RESULTS or not inspect.isawaitable(result):
                        return None
                elif type(result) in _PLAIN_REPLIES:
                    try:
                        text = encode_ok_reply(
                            array_form, join[2], "null" if join_ref is None else join[3], ref, result
                        )
                    except (TypeError, ValueError, RecursionError):
                        pass  # _reply logs it and answers with an error
                    else:
                        sock.ws.send(text)
                        return None
                message = Message(*fields)
                if type(result) not in _PLAIN_RESULTS and inspect.isawaitable(result):
                    return self._event_reply_later(sock, message, result)
                self._answer(sock, message, result)
                return None
        return self._event(sock, Message(*fields))

    def on_close(self, ws: Any, code: int, reason: str) -> Coroutine[Any, Any, None] | None:
        """Leave every channel of the connection and drop its subscriptions and presence.

        Returns:
            None, or a coroutine when a channel's ``leave`` callback is ``async``.
        """
        sock = self._sockets.pop(id(ws), None)
        if sock is None:
            return None
        sock.closed = True
        return _run(self._close_steps(sock))

    # -- protocol ------------------------------------------------------------------------------------------

    async def _after_drain(self, ws: Any, msg: Any) -> None:
        """Handle ``msg`` once the backend takes broadcasts again; the server reads nothing more from
        the socket meanwhile, so a client pushing faster than Redis takes them is slowed down."""
        while self.pubsub.backlogged:
            await self.pubsub.drain()
        result = self.on_message(ws, msg)
        if result is not None:
            await result

    async def _open_after_start(self, ws: Any) -> None:
        await self._ensure_started()
        self._attach(ws)

    async def _open_then_handle(self, ws: Any, msg: Any) -> None:
        pending = self.on_open(ws)
        if pending is not None:
            await pending
        self._socket_for(ws)  # (on_open made it, unless it failed)
        rest = self.on_message(ws, msg)
        if rest is not None:
            await rest

    def _attach(self, ws: Any) -> None:
        self._socket_for(ws)
        if self.config.heartbeat_timeout is not None and (self._watchdog is None or self._watchdog.done()):
            self._watchdog = asyncio.get_running_loop().create_task(self._watch_heartbeats())

    def _socket_for(self, ws: Any) -> ChannelSocket:
        sock = self._sockets.get(id(ws))
        if sock is None:
            vsn = ws.query_param("vsn") if hasattr(ws, "query_param") else None
            sock = ChannelSocket(
                ws, self.pubsub, array_form=bool(vsn and vsn.startswith("2.")), skip_over=self._skip_over
            )
            self._sockets[id(ws)] = sock
        return sock

    async def _ensure_started(self) -> None:
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if not self._started:
                await self.pubsub.start()
                self._started = True

    def _reply(
        self,
        sock: ChannelSocket,
        message: Message,
        status: str,
        response: Any,
        meta: dict[str, Any] | None = None,
    ) -> None:
        try:
            text = encode(
                message.array_form,
                message.topic,
                "phx_reply",
                reply_payload(status, response),
                message.ref,
                message.join_ref,
                meta,
            )
        except (TypeError, ValueError, RecursionError):  # not JSON, circular, or nested too deeply
            log.exception("zzz.channels: reply to %r on %r is not JSON", message.event, message.topic)
            text = encode(
                message.array_form,
                message.topic,
                "phx_reply",
                reply_payload("error", {"reason": "internal error"}),
                message.ref,
                message.join_ref,
                meta,
            )
        sock.send_text(text)

    def _malformed(self, sock: ChannelSocket, exc: MalformedMessage) -> None:
        if exc.not_json:
            sock.close(1007, exc.reason)  # "invalid JSON" or "JSON nested too deeply"
        elif exc.ref is not None:
            array_form = exc.array_form or sock._array_only
            message = Message(exc.topic or "", "", None, exc.ref, exc.join_ref, array_form)
            self._reply(sock, message, "error", {"reason": "malformed message"})
        else:
            sock.close(1007, "malformed message")

    def _take_token(self, sock: ChannelSocket) -> bool:
        assert self.config.rate_limit is not None
        burst, rate = self.config.rate_limit
        now = time.monotonic()
        if sock._stamp == 0.0:
            sock._tokens = burst
        else:
            sock._tokens = min(burst, sock._tokens + (now - sock._stamp) * rate)
        sock._stamp = now
        if sock._tokens >= 1.0:
            sock._tokens -= 1.0
            return True
        return False

    # Joins and leaves are steps: generators run by ``_run``, plain code up to each ``yield``, which hands
    # over an awaitable (an async callback's result, a history read); the value it resolves to (or its
    # exception) comes back at the ``yield``. Without a yield, a message is handled with no await at all.
    # Pushes (``_event``, the hot path) do the same with a plain function and an async tail.

    def _join(self, sock: ChannelSocket, message: Message) -> _Steps:
        topic = message.topic
        channel = self.config.find(topic)
        if channel is None:
            self._reply(sock, message, "error", {"reason": "no such channel"})
            return
        if topic in sock._joins:
            # Like Phoenix: a second join replaces the first; the client's old channel gets phx_close.
            old_ref = sock._joins[topic][0]
            yield from self._leave(sock, topic)
            sock.send_text(encode(sock.array_form, topic, "phx_close", {}, None, old_ref))
        limit = self.config.max_topics_per_socket
        if limit is not None and len(sock._joins) >= limit:
            self._reply(sock, message, "error", {"reason": "too many topics"})
            return
        # phoenix.js sends join_ref == ref on joins; zzz.js object frames may omit join_ref.
        join_ref = message.join_ref if message.join_ref is not None else message.ref
        message = dataclasses.replace(message, join_ref=join_ref)
        status: str = "ok"
        response: Any = {}
        if channel.join is not None:
            try:
                outcome = yield from _call(channel.join, sock, topic, message.payload)
                status, response = _join_outcome(outcome)
            except Exception:
                log.exception("zzz.channels: join of %r raised", topic)
                status, response = "error", {"reason": "join crashed"}
        if status != "ok" or sock.closed:
            # Presence the callback tracked before rejecting (or before the client vanished) must not linger.
            self.pubsub.untrack(sock, topic)
            if not sock.closed:
                self._reply(sock, message, status, response)
            return
        sock._joins[topic] = (join_ref, channel, dumps(topic), quote(join_ref), channel.handlers)
        self.joins += 1  # successful joins: zzz.metrics reads it (stats()["channel_joins"])
        history = self.pubsub.history_for(topic)
        if history is not None:
            yield self._join_history(sock, message, history, response)
            return
        self.pubsub.subscribe(topic, sock)
        self._reply(sock, message, "ok", response)
        sock.push(topic, "presence_state", self.pubsub.presence_list(topic))

    async def _join_history(
        self, sock: ChannelSocket, message: Message, history: History, response: Any
    ) -> None:
        """The end of a join on a topic with history: recover what the client missed, then go live.

        The socket is subscribed first, holding its deliveries; the stream is read; the reply says
        where the topic stands; the missed broadcasts follow, then ``presence_state``, then whatever
        arrived meanwhile and is newer than the reply's position: no gap and no duplicate.
        """
        topic = message.topic
        pubsub = self.pubsub
        join = sock._joins[topic]
        want = _recover_position(message.meta)
        pubsub.begin_recovery(topic, sock, history)
        missed: list[Publication]
        try:
            if want is None:
                recovered, missed, current = (
                    False,
                    [],
                    await asyncio.wait_for(pubsub.position(topic, history), HISTORY_TIMEOUT),
                )
            else:
                recovered, missed, current = await asyncio.wait_for(
                    pubsub.since(topic, history, want), HISTORY_TIMEOUT
                )
        except Exception as exc:  # noqa: BLE001 (any backend failure: the stream cannot be read now)
            log.warning("zzz.channels: history of %r unavailable (%r); join refused", topic, exc)
            if sock._joins.get(topic) is join:
                rest = _run(self._leave(sock, topic))
                if rest is not None:
                    await rest
            if not sock.closed:
                self._reply(sock, message, "error", {"reason": "history unavailable"})
            return
        if sock.closed or sock._joins.get(topic) is not join:
            return  # the connection went away meanwhile; its leave cleaned up
        meta = {"recovered": recovered, "offset": current.offset, "epoch": current.epoch}
        self._reply(sock, message, "ok", response, meta)
        if missed:
            pubsub.replay(topic, sock, missed, current.epoch)
        sock.push(topic, "presence_state", pubsub.presence_list(topic))
        if not pubsub.finish_recovery(topic, sock, current):
            # More arrived during the join than may be held: some were dropped, so the client must
            # not carry on as if it had everything. It reconnects and recovers (or is told it cannot).
            log.warning("zzz.channels: a join on %r received too much while recovering; closing it", topic)
            sock.close(1013, "recovery overflow")

    def _leave_steps(self, sock: ChannelSocket, message: Message) -> _Steps:
        if message.topic in sock._joins:
            yield from self._leave(sock, message.topic)
        self._reply(sock, message, "ok", {})

    def _leave(self, sock: ChannelSocket, topic: str) -> _Steps:
        channel = sock._joins.pop(topic)[1]
        self.pubsub.unsubscribe(topic, sock)
        self.pubsub.untrack(sock, topic)
        if channel.leave is not None:
            try:
                yield from _call(channel.leave, sock, topic)
            except Exception:
                log.exception("zzz.channels: leave of %r raised", topic)

    def _close_steps(self, sock: ChannelSocket) -> _Steps:
        for topic in list(sock._joins):
            yield from self._leave(sock, topic)
        self.pubsub.forget(sock)

    def _event(self, sock: ChannelSocket, message: Message) -> Coroutine[Any, Any, None] | None:
        # Every push comes here: a plain function rather than steps, as it has one await at most.
        join = sock._joins.get(message.topic)
        if join is None or (message.join_ref is not None and message.join_ref != join[0]):
            # Phoenix's answer to a topic the socket has not joined (or a push from a join since replaced).
            if message.ref is not None:
                self._reply(sock, message, "error", {"reason": "unmatched topic"})
            else:
                sock.send_text(
                    encode(sock.array_form, message.topic, "phx_error", {"reason": "unmatched topic"})
                )
            return None
        handler = join[4].get(message.event)
        if handler is None:
            if message.ref is not None:
                self._reply(sock, message, "error", {"reason": "unknown event"})
            return None
        try:
            result = handler(sock, message.topic, message.event, message.payload)
        except Exception:
            log.exception(_HANDLER_RAISED, message.event, message.topic)
            result = Reply.error("internal error")
        else:
            if result is not None and type(result) not in _PLAIN_RESULTS and inspect.isawaitable(result):
                return self._event_reply_later(sock, message, result)
        self._answer(sock, message, result)
        return None

    async def _event_reply_later(
        self, sock: ChannelSocket, message: Message, awaitable: Awaitable[Any]
    ) -> None:
        try:
            result = await awaitable
        except Exception:
            log.exception(_HANDLER_RAISED, message.event, message.topic)
            result = Reply.error("internal error")
        self._answer(sock, message, result)

    def _answer(self, sock: ChannelSocket, message: Message, result: Any) -> None:
        """Reply to a push with what its handler returned (None, or a push without a ref: no reply)."""
        if result is None or message.ref is None:
            return
        if isinstance(result, Reply):
            self._reply(sock, message, result.status, result.response)
        else:
            self._reply(sock, message, "ok", result)

    async def _watch_heartbeats(self) -> None:
        timeout = self.config.heartbeat_timeout
        assert timeout is not None
        # Checking a few times per timeout keeps the overshoot small without a timer per connection.
        period = min(max(timeout / 4, 0.05), 5.0)
        while self._sockets:
            await asyncio.sleep(period)
            deadline = time.monotonic() - timeout
            for sock in list(self._sockets.values()):
                if sock.last_seen < deadline:
                    sock.close(1000, "heartbeat timeout")


def _recover_position(meta: dict[str, Any] | None) -> Position | None:
    """The position a join's ``meta`` asks to recover from; None when it asks for none.

    A ``recover`` that is not ``{"offset": non-negative int, "epoch": str}`` gets a position that never
    recovers, so the client hears ``recovered: false`` rather than an error.
    """
    want = None if meta is None else meta.get("recover")
    if want is None:
        return None
    if isinstance(want, dict):
        offset, epoch = want.get("offset"), want.get("epoch")
        if (
            isinstance(offset, int)
            and not isinstance(offset, bool)
            and offset >= 0
            and isinstance(epoch, str)
        ):
            return Position(offset, epoch)
    return Position(-1, "")


def _join_outcome(result: Any) -> tuple[str, Any]:
    if result is True:
        return "ok", {}
    if result is False:
        return "error", {"reason": "join rejected"}
    if isinstance(result, (JoinResult, Reply)):
        return result.status, result.response
    raise TypeError(f"join must return a JoinResult, a Reply or a bool, not {type(result).__name__}")
