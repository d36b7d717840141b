"""zzz: a fast, strict WebSocket server framework for Python.

Routes with ``Router.ws``, callbacks in ``WsConfig``, a thread-safe ``WebSocket`` handle, and
Channels on top; see the README for the whole API.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> module that defines it. Imported on first use, so that ``import zzz.core`` (the
# hot path, the tests of the core) does not pull in the server, httptools or asyncio.
_EXPORTS = {
    "App": "zzz.server",
    "Server": "zzz.server",
    "Settings": "zzz.settings",
    "ChannelConfig": "zzz.channels",
    "ChannelDef": "zzz.channels",
    "ChannelSocket": "zzz.channels",
    "JoinResult": "zzz.channels",
    "Presence": "zzz.channels",
    "History": "zzz.channels",
    "RedisPubSub": "zzz.channels",
    "InMemoryPubSub": "zzz.channels",
    "PubSub": "zzz.channels",
    "Reply": "zzz.channels",
    "InvalidHandshake": "zzz.handshake",
    "connect": "zzz.client",
    "ClientWebSocket": "zzz.client",
    "WebSocket": "zzz.websocket",
    "WsConfig": "zzz.websocket",
    "broadcast": "zzz.websocket",
    "Binary": "zzz.frames",
    "Text": "zzz.frames",
    "WsMessage": "zzz.frames",
    "CloseCode": "zzz.frames",
    "Opcode": "zzz.frames",
    "Headers": "zzz.http",
    "HttpError": "zzz.http",
    "Request": "zzz.http",
    "Response": "zzz.http",
    "Controller": "zzz.routing",
    "Router": "zzz.routing",
    "ConnectionClosed": "zzz.errors",
    "InvalidUtf8": "zzz.errors",
    "MessageTooBig": "zzz.errors",
    "PolicyViolation": "zzz.errors",
    "ProtocolError": "zzz.errors",
    "WebSocketError": "zzz.errors",
}

__all__ = [
    "App",
    "Binary",
    "ChannelConfig",
    "ChannelDef",
    "ChannelSocket",
    "ClientWebSocket",
    "CloseCode",
    "ConnectionClosed",
    "Controller",
    "Headers",
    "History",
    "HttpError",
    "InMemoryPubSub",
    "InvalidHandshake",
    "InvalidUtf8",
    "JoinResult",
    "MessageTooBig",
    "Opcode",
    "PolicyViolation",
    "Presence",
    "ProtocolError",
    "PubSub",
    "RedisPubSub",
    "Reply",
    "Request",
    "Response",
    "Router",
    "Server",
    "Settings",
    "Text",
    "WebSocket",
    "WebSocketError",
    "WsConfig",
    "WsMessage",
    "broadcast",
    "connect",
]


# Submodules that ``import zzz`` makes reachable as attributes too (``zzz.testing.serve``).
_SUBMODULES = ("testing",)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"zzz.{name}")  # the import binds zzz.<name> itself
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'zzz' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from zzz.channels import (
        ChannelConfig,
        ChannelDef,
        ChannelSocket,
        History,
        InMemoryPubSub,
        JoinResult,
        Presence,
        PubSub,
        RedisPubSub,
        Reply,
    )
    from zzz.client import (
        ClientWebSocket,
        connect,
    )
    from zzz.errors import (
        ConnectionClosed,
        InvalidUtf8,
        MessageTooBig,
        PolicyViolation,
        ProtocolError,
        WebSocketError,
    )
    from zzz.frames import (
        Binary,
        CloseCode,
        Opcode,
        Text,
        WsMessage,
    )
    from zzz.handshake import (
        InvalidHandshake,
    )
    from zzz.http import (
        Headers,
        HttpError,
        Request,
        Response,
    )
    from zzz.routing import (
        Controller,
        Router,
    )
    from zzz.server import (
        App,
        Server,
    )
    from zzz.settings import (
        Settings,
    )
    from zzz.websocket import (
        WebSocket,
        WsConfig,
        broadcast,
    )
