"""What an app saw, for the test process to ask: a per-process store served at ``/_probe/<key>``.

Some outcomes of the ASGI contract are only visible inside the app: the ``RuntimeError`` that
``send`` raises after a close, the code in ``websocket.disconnect``. The apps record them here
under a key the test chose (usually from the query string), and the test reads them back over
HTTP from the same server process, so the check works on any server that serves the app.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import parse_qs

__all__ = ["PREFIX", "probe_app", "query", "record"]

PREFIX = "/_probe/"

# key -> events in the order they were recorded; bounded: a test records a handful per key.
_EVENTS: defaultdict[str, list[Any]] = defaultdict(list)
_MAX_KEYS = 10_000


def record(key: str, event: Any) -> None:
    """Remember ``event`` (anything JSON can encode) under ``key``.

    Args:
        key: The name the test will ask for.
        event: What happened.
    """
    if key not in _EVENTS and len(_EVENTS) >= _MAX_KEYS:
        _EVENTS.pop(next(iter(_EVENTS)))
    _EVENTS[key].append(event)


def query(scope: MutableMapping[str, Any], name: str, default: str = "") -> str:
    """Return one query-string parameter of an ASGI scope.

    Args:
        scope: An ``http`` or ``websocket`` scope.
        name: The parameter.
        default: What to return when it is absent.

    Returns:
        Its first value, or ``default``.
    """
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0] if values else default


async def probe_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """Raw ASGI: answer ``GET /_probe/<key>`` with the JSON list recorded under ``key``.

    The path may be the full path (raw app) or what a mount left of it (``root_path`` set).
    """
    path: str = scope["path"]
    key = path[len(PREFIX) :] if path.startswith(PREFIX) else path.lstrip("/")
    body = json.dumps(_EVENTS.get(key, [])).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
