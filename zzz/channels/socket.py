"""The channel layer of one WebSocket endpoint: per-connection sockets, joins, routing of events, replies.

``ChannelEndpoint`` provides the ``on_open``/``on_message``/``on_close`` callbacks of a ``WsConfig``;
``ChannelSocket`` is what join and event handlers receive.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import time
import uuid
from typing import Any

from zzz.channels.channel import ChannelConfig, ChannelDef, JoinResult, Reply
from zzz.channels.pubsub import PubSub
from zzz.channels.wire import MalformedMessage, Message, decode, encode, reply_payload

__all__ = ["ChannelEndpoint", "ChannelSocket"]

log = logging.getLogger("zzz")


async def _call(fn: Any, *args: Any) -> Any:
    # Handlers may be plain functions or coroutines; await only what needs awaiting.
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class ChannelSocket:
    """One client connection as the channel handlers see it.

    Attributes:
        id: a unique id for this connection (``push_to`` accepts it, in any process).
        ws: the underlying ``zzz.WebSocket``.
        assigns: per-connection data; starts as a copy of the upgrade request's assigns.
        array_form: True when frames to this client use the array form: always for a socket opened with
            ``vsn=2.x`` (phoenix.js), otherwise when the client's last message used it.

    Args:
        ws: the connection.
        pubsub: the endpoint's backend.
        array_form: the socket was opened with ``vsn=2.x``: every frame to it is in the array form,
            whatever form the client's messages take.
    """

    def __init__(self, ws: Any, pubsub: PubSub, array_form: bool = False) -> None:
        self.id = uuid.uuid4().hex
        self.ws = ws
        self.assigns: dict[str, Any] = dict(getattr(ws, "assigns", None) or {})
        self.array_form = array_form
        # phoenix.js with vsn=2.0.0 parses every frame as an array, so its form is fixed at connect
        # (as Phoenix picks its serializer by vsn); other clients are answered in the form they use.
        self._array_only = array_form
        self.closed = False
        self.last_seen = time.monotonic()
        self._pubsub = pubsub
        # topic -> (join_ref, channel definition) for every joined topic
        self._joins: dict[str, tuple[str | None, ChannelDef]] = {}
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

    Args:
        config: the endpoint's settings.
    """

    def __init__(self, config: ChannelConfig) -> None:
        assert config.pubsub is not None  # ChannelConfig.__post_init__ fills it
        self.config = config
        self.pubsub: PubSub = config.pubsub
        self.pubsub.register_channels(config.channels)
        self._sockets: dict[int, ChannelSocket] = {}
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._watchdog: asyncio.Task[None] | None = None

    def ws_config(self) -> Any:
        """A ``zzz.WsConfig`` wired to this endpoint."""
        from zzz.websocket import WsConfig  # lazy: keeps the channel logic importable without the server

        return WsConfig(on_open=self.on_open, on_message=self.on_message, on_close=self.on_close)

    @property
    def sockets(self) -> list[ChannelSocket]:
        """The open channel sockets of this endpoint."""
        return list(self._sockets.values())

    # -- WebSocket callbacks -------------------------------------------------------------------------------

    async def on_open(self, ws: Any) -> None:
        """Attach a ``ChannelSocket`` to a new connection and start the backend on first use."""
        await self._ensure_started()
        self._socket_for(ws)
        if self.config.heartbeat_timeout is not None and (self._watchdog is None or self._watchdog.done()):
            self._watchdog = asyncio.get_running_loop().create_task(self._watch_heartbeats())

    async def on_message(self, ws: Any, msg: Any) -> None:
        """Decode one frame and act on it; malformed input is answered, never raised."""
        sock = self._sockets.get(id(ws))
        if sock is None:  # on_open not run (or failed): be robust rather than drop the message
            await self.on_open(ws)
            sock = self._socket_for(ws)
        sock.last_seen = time.monotonic()
        data = getattr(msg, "data", None)
        if not isinstance(data, str):
            ws.close(1003, "binary frames are not supported")
            return
        try:
            message = decode(data)
        except MalformedMessage as exc:
            self._malformed(sock, exc)
            return
        if sock._array_only:
            if not message.array_form:
                message = dataclasses.replace(message, array_form=True)
        else:
            sock.array_form = message.array_form
        if message.event == "heartbeat" and message.topic == "phoenix":
            self._reply(sock, message, "ok", {})
            return
        if self.config.rate_limit is not None and not self._take_token(sock):
            if self.config.rate_limit_action == "disconnect":
                ws.close(1008, "rate limited")
            elif message.ref is not None:
                self._reply(sock, message, "error", {"reason": "rate_limited"})
            return
        if message.event == "phx_join":
            await self._join(sock, message)
        elif message.event == "phx_leave":
            if message.topic in sock._joins:
                await self._leave(sock, message.topic)
            self._reply(sock, message, "ok", {})
        else:
            await self._event(sock, message)

    async def on_close(self, ws: Any, code: int, reason: str) -> None:
        """Leave every channel of the connection and drop its subscriptions and presence."""
        sock = self._sockets.pop(id(ws), None)
        if sock is None:
            return
        sock.closed = True
        for topic in list(sock._joins):
            await self._leave(sock, topic)
        self.pubsub.forget(sock)

    # -- protocol ------------------------------------------------------------------------------------------

    def _socket_for(self, ws: Any) -> ChannelSocket:
        sock = self._sockets.get(id(ws))
        if sock is None:
            vsn = ws.query_param("vsn") if hasattr(ws, "query_param") else None
            sock = ChannelSocket(ws, self.pubsub, array_form=bool(vsn and vsn.startswith("2.")))
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

    def _reply(self, sock: ChannelSocket, message: Message, status: str, response: Any) -> None:
        try:
            text = encode(
                message.array_form,
                message.topic,
                "phx_reply",
                reply_payload(status, response),
                message.ref,
                message.join_ref,
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

    async def _join(self, sock: ChannelSocket, message: Message) -> None:
        topic = message.topic
        channel = self.config.find(topic)
        if channel is None:
            self._reply(sock, message, "error", {"reason": "no such channel"})
            return
        if topic in sock._joins:
            # Like Phoenix: a second join replaces the first; the client's old channel gets phx_close.
            old_ref = sock._joins[topic][0]
            await self._leave(sock, topic)
            sock.send_text(encode(sock.array_form, topic, "phx_close", {}, None, old_ref))
        limit = self.config.max_topics_per_socket
        if limit is not None and len(sock._joins) >= limit:
            self._reply(sock, message, "error", {"reason": "too many topics"})
            return
        # phoenix.js sends join_ref == ref on joins; zzz.js object frames may omit join_ref.
        join_ref = message.join_ref if message.join_ref is not None else message.ref
        message = Message(topic, message.event, message.payload, message.ref, join_ref, message.array_form)
        status: str = "ok"
        response: Any = {}
        if channel.join is not None:
            try:
                status, response = _join_outcome(await _call(channel.join, sock, topic, message.payload))
            except Exception:
                log.exception("zzz.channels: join of %r raised", topic)
                status, response = "error", {"reason": "join crashed"}
        if status != "ok" or sock.closed:
            # Presence the callback tracked before rejecting (or before the client vanished) must not linger.
            self.pubsub.untrack(sock, topic)
            if not sock.closed:
                self._reply(sock, message, status, response)
            return
        sock._joins[topic] = (join_ref, channel)
        self.pubsub.subscribe(topic, sock)
        self._reply(sock, message, "ok", response)
        sock.push(topic, "presence_state", self.pubsub.presence_list(topic))

    async def _leave(self, sock: ChannelSocket, topic: str) -> None:
        _join_ref, channel = sock._joins.pop(topic)
        self.pubsub.unsubscribe(topic, sock)
        self.pubsub.untrack(sock, topic)
        if channel.leave is not None:
            try:
                await _call(channel.leave, sock, topic)
            except Exception:
                log.exception("zzz.channels: leave of %r raised", topic)

    async def _event(self, sock: ChannelSocket, message: Message) -> None:
        join = sock._joins.get(message.topic)
        if join is None or (message.join_ref is not None and message.join_ref != join[0]):
            # Phoenix's answer to a topic the socket has not joined (or a push from a join since replaced).
            if message.ref is not None:
                self._reply(sock, message, "error", {"reason": "unmatched topic"})
            else:
                sock.send_text(
                    encode(sock.array_form, message.topic, "phx_error", {"reason": "unmatched topic"})
                )
            return
        handler = join[1].handlers.get(message.event)
        if handler is None:
            if message.ref is not None:
                self._reply(sock, message, "error", {"reason": "unknown event"})
            return
        try:
            result = await _call(handler, sock, message.topic, message.event, message.payload)
        except Exception:
            log.exception("zzz.channels: handler for %r on %r raised", message.event, message.topic)
            result = Reply.error("internal error")
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


def _join_outcome(result: Any) -> tuple[str, Any]:
    if result is True:
        return "ok", {}
    if result is False:
        return "error", {"reason": "join rejected"}
    if isinstance(result, (JoinResult, Reply)):
        return result.status, result.response
    raise TypeError(f"join must return a JoinResult, a Reply or a bool, not {type(result).__name__}")
