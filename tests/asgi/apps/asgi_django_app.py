"""A Django Channels app that needs nothing but Django and channels: no database, the
in-memory channel layer, settings made here.

``app`` is a ``ProtocolTypeRouter``: HTTP goes to Django (``GET /django/hello``), WebSockets to
Channels consumers: ``/ws/echo`` (a sync ``WebsocketConsumer``: echo, ``close:CODE`` closes),
``/ws/room/<name>`` (an ``AsyncJsonWebsocketConsumer``: every JSON message goes to the room's
group, through the channel layer, to every member) and ``/ws/deny`` (closes before accepting).
Channels' router does not speak lifespan: the server must serve it anyway.
"""

from __future__ import annotations

import os
from typing import Any

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="test-only-not-secret",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["channels"],
    MIDDLEWARE=[],
    DATABASES={},
    USE_TZ=True,
    CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
)
django.setup()

from channels.generic.websocket import AsyncJsonWebsocketConsumer, WebsocketConsumer
from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.http import HttpRequest, JsonResponse
from django.urls import path, re_path

__all__ = ["app"]


def hello(request: HttpRequest) -> JsonResponse:
    """A plain Django view."""
    return JsonResponse({"hello": request.GET.get("name", "django"), "pid": os.getpid()})


urlpatterns = [path("django/hello", hello)]


class EchoConsumer(WebsocketConsumer):  # type: ignore[misc]
    """Sync consumer: echo text and bytes; ``close:CODE`` makes the server close with CODE."""

    def connect(self) -> None:
        self.accept()

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None and text_data.startswith("close:"):
            self.close(code=int(text_data.split(":", 1)[1]))
        elif text_data is not None:
            self.send(text_data=text_data)
        else:
            self.send(bytes_data=bytes_data)


class RoomConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """Async JSON consumer: a message from one member reaches every member of the room."""

    async def connect(self) -> None:
        self.group = f"room-{self.scope['url_route']['kwargs']['room']}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json({"joined": self.group})

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.channel_layer.group_send(self.group, {"type": "room.message", "content": content})

    async def room_message(self, event: dict[str, Any]) -> None:
        await self.send_json({"message": event["content"]})


class DenyConsumer(WebsocketConsumer):  # type: ignore[misc]
    """Refuses every connection (Channels closes before accepting: the server answers 403)."""

    def connect(self) -> None:
        self.close()


app = ProtocolTypeRouter(
    {
        "http": get_asgi_application(),
        "websocket": URLRouter(
            [
                path("ws/echo", EchoConsumer.as_asgi()),
                re_path(r"^ws/room/(?P<room>\w+)$", RoomConsumer.as_asgi()),
                path("ws/deny", DenyConsumer.as_asgi()),
            ]
        ),
    }
)
