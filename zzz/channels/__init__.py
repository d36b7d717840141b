"""Phoenix-style channels for zzz: topics, event routing, replies, presence, and pub/sub across processes.

``Router.channel(path, config)`` (``config.routes(path)``) mounts the endpoint; clients are zzz.js or phoenix.js.
"""

from __future__ import annotations

from zzz.channels.channel import JoinResult, Reply
from zzz.channels.history import History
from zzz.channels.presence import Presence
from zzz.channels.pubsub import InMemoryPubSub, PubSub
from zzz.channels.redis import RedisPubSub
from zzz.channels.socket import ChannelConfig, ChannelDef, ChannelEndpoint, ChannelSocket
from zzz.routing import Route

__all__ = [
    "ChannelConfig",
    "ChannelDef",
    "ChannelEndpoint",
    "ChannelSocket",
    "History",
    "InMemoryPubSub",
    "JoinResult",
    "Presence",
    "PubSub",
    "RedisPubSub",
    "Reply",
    "channel_routes",
]


def channel_routes(path: str, config: ChannelConfig) -> list[Route]:
    """The WebSocket routes of a channel endpoint: ``path`` and ``path + "/websocket"``.

    The same as ``config.routes(path)`` (what ``Router.channel`` mounts).

    Args:
        path: the mount point, e.g. ``"/socket"``.
        config: the endpoint's channels and settings.

    Returns:
        Two routes for ``Router`` (or ``App``) route lists.
    """
    return config.routes(path)
