"""Raw ASGI 3 apps for the edge cases of the contract (issue 17, "Edge cases as uvicorn answers
them"), with no framework in between to paper over what the server does.

``app``: lifespan with state, and per path:

- HTTP ``/_probe/<key>``: what was recorded (see ``asgi_probe``).
- HTTP ``/body-after-complete?id=K``: completes a response, then sends another body; records
  ``RuntimeError`` (what the second ``send`` raised) or ``no error``.
- HTTP ``/raise``: raises before starting a response (the server answers 500).
- HTTP ``/disconnect?id=K``: reads the body, then waits for ``http.disconnect`` and records it.
- HTTP ``/chunks``: a response sent in three ``more_body`` parts.
- any other HTTP path: ``200 raw``.
- WS ``/ws/no-accept``: returns without accepting (500).
- WS ``/ws/close-before-accept``: ``websocket.close`` first (403).
- WS ``/ws/double-accept?id=K``: accepts twice; sends the outcome, records it, closes 1000.
- WS ``/ws/send-after-close?id=K``: closes 1000, then sends; records the outcome.
- WS ``/ws/raise-after-accept``: accepts, sends ``about to fail``, raises.
- WS ``/ws/deny``: ``websocket.http.response.start`` 403 with its body in two parts.
- WS ``/ws/echo?id=K``: echoes; records the ``websocket.disconnect`` event.

``no_lifespan_app``: raises on a ``lifespan`` scope, as apps written before lifespan do;
serves ``200 no lifespan`` otherwise. ``startup_failed_app``: answers ``lifespan.startup`` with
``lifespan.startup.failed``.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Any

from asgi_common import lifespan_token, note_shutdown
from asgi_probe import PREFIX, probe_app, query, record

__all__ = ["app", "no_lifespan_app", "startup_failed_app"]

Scope = MutableMapping[str, Any]


def _outcome(exc: BaseException | None) -> str:
    """How a forbidden ``send`` went: the exception type name, or ``no error``."""
    return "no error" if exc is None else type(exc).__name__


async def _respond(
    send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
            + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += bytes(message.get("body", b""))
        if not message.get("more_body", False):
            return body


async def _http(scope: Scope, receive: Any, send: Any) -> None:
    path = scope["path"]
    key = query(scope, "id")
    if path.startswith(PREFIX):
        await probe_app(scope, receive, send)
    elif path == "/body-after-complete":
        await _respond(send, 200, b"complete")
        error: BaseException | None = None
        try:
            await send({"type": "http.response.body", "body": b"one too many"})
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test checks
            error = exc
        record(f"body-after-complete:{key}", _outcome(error))
    elif path == "/raise":
        raise ValueError("the app fails before it responds")
    elif path == "/disconnect":
        await _read_body(receive)
        record(f"disconnect:{key}", "waiting")
        message = await receive()
        record(f"disconnect:{key}", message["type"])
    elif path == "/chunks":
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    else:
        await _read_body(receive)
        await _respond(send, 200, b"raw")


async def _websocket(scope: Scope, receive: Any, send: Any) -> None:
    path = scope["path"]
    key = query(scope, "id")
    connect = await receive()
    assert connect["type"] == "websocket.connect", connect
    if path == "/ws/no-accept":
        return
    if path == "/ws/close-before-accept":
        await send({"type": "websocket.close", "code": 1000})
        return
    if path == "/ws/deny":
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 403,
                "headers": [(b"content-type", b"text/plain"), (b"x-denied", b"raw")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"denied ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"by raw app"})
        return
    await send({"type": "websocket.accept"})
    error: BaseException | None = None
    if path == "/ws/double-accept":
        try:
            await send({"type": "websocket.accept"})
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test checks
            error = exc
        record(f"double-accept:{key}", _outcome(error))
        await send({"type": "websocket.send", "text": _outcome(error)})
        await send({"type": "websocket.close", "code": 1000})
    elif path == "/ws/send-after-close":
        await send({"type": "websocket.close", "code": 1000, "reason": "closing first"})
        try:
            await send({"type": "websocket.send", "text": "too late"})
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test checks
            error = exc
        record(f"send-after-close:{key}", _outcome(error))
    elif path == "/ws/raise-after-accept":
        await send({"type": "websocket.send", "text": "about to fail"})
        raise ValueError("the app fails after accepting")
    else:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                record(f"ws-disconnect:{key}", {"code": message.get("code")})
                return
            reply: dict[str, Any] = {"type": "websocket.send"}
            if message.get("text") is not None:
                reply["text"] = message["text"]
            else:
                reply["bytes"] = message.get("bytes") or b""
            await send(reply)


async def _lifespan(scope: Scope, receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if "state" in scope:
                scope["state"]["token"] = lifespan_token()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            note_shutdown("raw")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Any, send: Any) -> None:
    """The edge-case app (see the module docstring)."""
    if scope["type"] == "http":
        await _http(scope, receive, send)
    elif scope["type"] == "websocket":
        await _websocket(scope, receive, send)
    elif scope["type"] == "lifespan":
        await _lifespan(scope, receive, send)


async def no_lifespan_app(scope: Scope, receive: Any, send: Any) -> None:
    """An app that knows nothing of lifespan: it raises on that scope and serves HTTP anyway."""
    if scope["type"] not in ("http", "websocket"):
        raise ValueError(f"unsupported scope type {scope['type']!r}")
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "no lifespan"})
        await send({"type": "websocket.close", "code": 1000})
        return
    await _read_body(receive)
    await _respond(send, 200, b"no lifespan")


async def startup_failed_app(scope: Scope, receive: Any, send: Any) -> None:
    """An app whose startup fails: the server must not serve it, and must exit non-zero."""
    if scope["type"] == "lifespan":
        message = await receive()
        assert message["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.failed", "message": f"no database (pid {os.getpid()})"})
        return
    await _respond(send, 200, b"should never be served")
