"""Helpers the FastAPI and Starlette test apps share, so that both answer the same contract.

The two apps are written each in its framework's own style; what they compute (scope
summaries, gates for the streaming route, the lifespan token, the subprotocol choice) is here.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

__all__ = [
    "GATE_TIMEOUT",
    "SUBPROTOCOLS",
    "choose_subprotocol",
    "gate",
    "lifespan_token",
    "note_shutdown",
    "release",
    "scope_summary",
]

# The subprotocols the WebSocket endpoint speaks, in its order of preference.
SUBPROTOCOLS = ("chat.v2", "chat.v1")
# How long the streaming route waits for its gate before giving up (the test fails then).
GATE_TIMEOUT = 10.0

_gates: dict[str, asyncio.Event] = {}


def _gate_event(token: str) -> asyncio.Event:
    if token not in _gates:
        if len(_gates) > 1000:  # a test uses one per run; never let them pile up
            _gates.clear()
        _gates[token] = asyncio.Event()
    return _gates[token]


async def gate(token: str) -> bool:
    """Wait until :func:`release` is called for ``token``.

    Args:
        token: Names the gate.

    Returns:
        True when released, False after :data:`GATE_TIMEOUT` seconds.
    """
    try:
        await asyncio.wait_for(_gate_event(token).wait(), GATE_TIMEOUT)
    except asyncio.TimeoutError:
        return False
    return True


def release(token: str) -> None:
    """Open the gate ``token`` (before or after someone waits on it)."""
    _gate_event(token).set()


def choose_subprotocol(offered: list[str]) -> str | None:
    """Return our most preferred subprotocol among those the client offered, or None."""
    for name in SUBPROTOCOLS:
        if name in offered:
            return name
    return None


def lifespan_token() -> str:
    """The value lifespan startup puts in ``state``: it names this process, so it can't be faked."""
    return f"started:{os.getpid()}"


def note_shutdown(app_name: str) -> None:
    """At lifespan shutdown, append a line to ``$ZZZ_ASGI_SHUTDOWN_FILE`` (when set)."""
    path = os.environ.get("ZZZ_ASGI_SHUTDOWN_FILE")
    if path:
        with Path(path).open("a") as f:
            f.write(f"shutdown {app_name} {os.getpid()}\n")


def scope_summary(scope: MutableMapping[str, Any]) -> dict[str, Any]:
    """The scope fields the spec fixes, in a JSON-friendly form, plus checks of their types.

    Args:
        scope: An ``http`` or ``websocket`` scope.

    Returns:
        A dict the test compares with what its own client knows.
    """
    headers = scope.get("headers", [])
    return {
        "type": scope["type"],
        "asgi_version": scope.get("asgi", {}).get("version"),
        "spec_version": scope.get("asgi", {}).get("spec_version"),
        "http_version": scope.get("http_version"),
        "method": scope.get("method"),
        "scheme": scope.get("scheme"),
        "path": scope.get("path"),
        "raw_path": scope["raw_path"].decode("latin-1") if scope.get("raw_path") is not None else None,
        "query_string": scope.get("query_string", b"").decode("latin-1"),
        "query_string_is_bytes": isinstance(scope.get("query_string"), bytes),
        "root_path": scope.get("root_path"),
        "client": list(scope["client"]) if scope.get("client") else None,
        "server": list(scope["server"]) if scope.get("server") else None,
        "headers_are_bytes": all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in headers),
        "header_names_lower": all(k == k.lower() for k, _ in headers),
        "x_test": [v.decode("latin-1") for k, v in headers if k == b"x-test"],
        "subprotocols": scope.get("subprotocols"),
        "has_state": isinstance(scope.get("state"), dict),
    }
