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
    "Settings": "zzz.server",
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


def __getattr__(name: str) -> Any:
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
        ChannelConfig as ChannelConfig,
        ChannelDef as ChannelDef,
        ChannelSocket as ChannelSocket,
        History as History,
        InMemoryPubSub as InMemoryPubSub,
        JoinResult as JoinResult,
        Presence as Presence,
        PubSub as PubSub,
        RedisPubSub as RedisPubSub,
        Reply as Reply,
    )
    from zzz.client import (
        ClientWebSocket as ClientWebSocket,
        connect as connect,
    )
    from zzz.errors import (
        ConnectionClosed as ConnectionClosed,
        InvalidUtf8 as InvalidUtf8,
        MessageTooBig as MessageTooBig,
        PolicyViolation as PolicyViolation,
        ProtocolError as ProtocolError,
        WebSocketError as WebSocketError,
    )
    from zzz.frames import (
        Binary as Binary,
        CloseCode as CloseCode,
        Opcode as Opcode,
        Text as Text,
        WsMessage as WsMessage,
    )
    from zzz.handshake import (
        InvalidHandshake as InvalidHandshake,
    )
    from zzz.http import (
        Headers as Headers,
        HttpError as HttpError,
        Request as Request,
        Response as Response,
    )
    from zzz.routing import (
        Controller as Controller,
        Router as Router,
    )
    from zzz.server import (
        App as App,
        Server as Server,
        Settings as Settings,
    )
    from zzz.websocket import (
        WebSocket as WebSocket,
        WsConfig as WsConfig,
        broadcast as broadcast,
    )
