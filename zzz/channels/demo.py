"""The demo behind ``python -m zzz``: a chat with rooms and presence, on Channels and zzz.js.

``build_app()`` gives the whole app; ``demo_routes()`` gives its routes to mount beside others.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from zzz.channels.channel import JoinResult, Reply
from zzz.channels.pubsub import PubSub
from zzz.channels.socket import ChannelConfig, ChannelDef, ChannelSocket
from zzz.http import Response
from zzz.routing import Router
from zzz.server import App

__all__ = ["MAX_BODY", "MAX_NAME", "build_app", "demo_routes"]

MAX_NAME = 32
MAX_BODY = 2000
HISTORY = 50

_PAGE = Path(__file__).resolve().parent.parent / "static" / "demo.html"

# The demo's icon, at /favicon.ico for pages that ask for it (/raw); demo.html inlines the same one.
FAVICON = (
    b"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'>"
    b"<rect width='16' height='16' rx='3' fill='#20242b'/>"
    b"<path d='M4 4h8v2l-5 4h5v2H4v-2l5-4H4z' fill='#2d6cdf'/></svg>"
)


class ChatRooms:
    """Room channel handlers, with the last messages of each room kept in memory (this process only)."""

    def __init__(self) -> None:
        self.history: dict[str, deque[dict[str, Any]]] = {}

    def join(self, socket: ChannelSocket, topic: str, payload: Any) -> JoinResult:
        name = payload.get("user") if isinstance(payload, dict) else None
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
            return JoinResult.error(f"a user name of 1 to {MAX_NAME} characters is required")
        if len(topic) > len("room:") + MAX_NAME:
            return JoinResult.error("room name too long")
        name = name.strip()
        socket.assign("user", name)
        socket.track(topic, name, {"online_at": int(time.time())})
        return JoinResult.ok({"history": list(self.history.get(topic, ()))})

    def new_msg(self, socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
        body = payload.get("body") if isinstance(payload, dict) else None
        if not isinstance(body, str) or not body.strip():
            return Reply.error("empty message")
        if len(body) > MAX_BODY:
            return Reply.error(f"message longer than {MAX_BODY} characters")
        msg = {"user": socket.get_assign("user"), "body": body, "at": int(time.time() * 1000)}
        self.history.setdefault(topic, deque(maxlen=HISTORY)).append(msg)
        socket.broadcast(topic, "new_msg", msg)
        return {"ok": True}

    def typing(self, socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
        socket.broadcast_from(topic, "typing", {"user": socket.get_assign("user")})
        return {}


def _page(request: Any) -> Any:
    return Response(_PAGE.read_bytes(), content_type="text/html; charset=utf-8")


def _favicon(request: Any) -> Any:
    headers = [("Cache-Control", "public, max-age=86400")]
    return Response(FAVICON, headers=headers, content_type="image/svg+xml")


def demo_routes(pubsub: PubSub | None = None) -> list[Any]:
    """The demo's routes: the page at ``/``, its icon at ``/favicon.ico``, the endpoint at ``/socket``.

    Args:
        pubsub: the backend (e.g. a ``RedisPubSub`` to run the demo on several processes).
    """
    rooms = ChatRooms()
    room = ChannelDef("room:*", join=rooms.join, handlers={"new_msg": rooms.new_msg, "typing": rooms.typing})
    config = ChannelConfig(channels=[room], pubsub=pubsub, rate_limit=(20, 5.0))
    return [Router.get("/", _page), Router.get("/favicon.ico", _favicon), *config.routes("/socket")]


def build_app(extra_routes: Iterable[Any] = (), pubsub: PubSub | None = None, **settings: Any) -> Any:
    """The demo app: ``demo_routes(pubsub)`` plus ``extra_routes``; ``settings`` go to ``zzz.App``."""
    return App([*demo_routes(pubsub), *extra_routes], **settings)
