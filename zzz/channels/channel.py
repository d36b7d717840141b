"""What an application declares: channel definitions, replies, join results and the endpoint's settings.

Plain data; the connection logic that uses it is in ``zzz.channels.socket``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from zzz.channels.history import History
from zzz.channels.pubsub import InMemoryPubSub, InterceptFn, PubSub

if TYPE_CHECKING:
    from zzz.channels.socket import ChannelSocket

__all__ = [
    "ChannelConfig",
    "ChannelDef",
    "EventHandler",
    "InterceptFn",
    "JoinHandler",
    "JoinResult",
    "Reply",
]


def _as_response(value: Any) -> Any:
    # A bare string is a reason: clients (and phoenix.js users) look for ``response.reason``.
    return {"reason": value} if isinstance(value, str) else value


@dataclass(frozen=True, slots=True)
class Reply:
    """A handler's reply to a client push, sent as ``phx_reply``.

    A handler may also return a plain value (an ok reply with that response) or None (no reply).

    Attributes:
        status: ``"ok"`` or ``"error"``.
        response: the JSON-serialisable response; a str given to ``error`` becomes ``{"reason": str}``.
    """

    status: Literal["ok", "error"]
    response: Any = None

    @classmethod
    def ok(cls, response: Any = None) -> Reply:
        """An ok reply; ``None`` is sent as ``{}``."""
        return cls("ok", response)

    @classmethod
    def error(cls, response: Any = "error") -> Reply:
        """An error reply; a string becomes ``{"reason": string}``."""
        return cls("error", _as_response(response))


@dataclass(frozen=True, slots=True)
class JoinResult(Reply):
    """What a join callback decides; ``True``/``False`` and a ``Reply`` are accepted too.

    Attributes:
        status: ``"ok"`` (joined) or ``"error"`` (rejected).
        response: what the client's ``join()`` resolves or rejects with.
    """

    @classmethod
    def ok(cls, response: Any = None) -> JoinResult:
        """Accept the join; the client's ``join()`` resolves with ``response`` (``{}`` when None)."""
        return cls("ok", response)

    @classmethod
    def error(cls, response: Any = "join rejected") -> JoinResult:
        """Reject the join; a string becomes ``{"reason": string}``."""
        return cls("error", _as_response(response))


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
    """

    channels: list[ChannelDef]
    pubsub: PubSub | None = None
    heartbeat_timeout: float | None = 60.0
    max_topics_per_socket: int | None = 100
    rate_limit: tuple[float, float] | None = None
    rate_limit_action: Literal["drop", "disconnect"] = "drop"

    def __post_init__(self) -> None:
        if self.pubsub is None:
            self.pubsub = InMemoryPubSub()
        if self.rate_limit_action not in ("drop", "disconnect"):
            raise ValueError("rate_limit_action must be 'drop' or 'disconnect'")
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
