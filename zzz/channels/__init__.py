"""Phoenix-style channels for zzz: topics, event routing, replies, presence, and pub/sub across processes.

``channel_routes(path, config)`` (``Router.channel``) mounts the endpoint; clients are zzz.js or phoenix.js.
"""

from __future__ import annotations

from typing import Any

from zzz.channels.channel import ChannelConfig, ChannelDef, JoinResult, Reply
from zzz.channels.history import History
from zzz.channels.presence import Presence
from zzz.channels.pubsub import InMemoryPubSub, PubSub
from zzz.channels.redis import RedisPubSub
from zzz.channels.socket import ChannelEndpoint, ChannelSocket

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


def channel_routes(path: str, config: ChannelConfig) -> list[Any]:
    """The WebSocket routes of a channel endpoint: ``path`` and ``path + "/websocket"``.

    phoenix.js appends ``/websocket`` to the URL it is given; zzz.js uses the URL as it is.

    Args:
        path: the mount point, e.g. ``"/socket"``.
        config: the endpoint's channels and settings.

    Returns:
        Two routes for ``Router`` (or ``App``) route lists.
    """
    from zzz.routing import Router  # lazy: routing sits below this layer and may import us back

    ws_config = ChannelEndpoint(config).ws_config()
    base = path.rstrip("/") or ""
    return [Router.ws(path, ws_config), Router.ws(f"{base}/websocket", ws_config)]
