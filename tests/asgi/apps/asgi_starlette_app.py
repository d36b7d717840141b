"""A Starlette app with the routes the ASGI suite checks, written in Starlette's own style.

``app`` is the app under test; ``failing_app`` is the same app whose lifespan startup raises
(the server must exit non-zero). The FastAPI app in ``asgi_fastapi_app`` answers the same
contract; ``tests/asgi/test_asgi_http.py`` and ``test_asgi_websocket.py`` say what it is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from asgi_common import (
    choose_subprotocol,
    gate,
    lifespan_token,
    note_shutdown,
    release,
    scope_summary,
)
from asgi_probe import probe_app, query, record
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

__all__ = ["app", "failing_app"]


class JsonEndpoint(HTTPEndpoint):
    """``/json``: GET (and HEAD) greet, POST adds up numbers."""

    async def get(self, request: Request) -> Response:
        """Greet ``?name=`` and show the lifespan state."""
        return JSONResponse(
            {"hello": request.query_params.get("name", "world"), "state": request.state.token}
        )

    async def post(self, request: Request) -> Response:
        """Sum ``numbers`` of the JSON body; 400 for a body that is not a JSON object."""
        try:
            data = await request.json()
            numbers = [float(n) for n in data["numbers"]]
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'expected {"numbers": [...]}'}, status_code=400)
        return JSONResponse({"sum": sum(numbers), "count": len(numbers)}, status_code=201)


async def scope_route(request: Request) -> Response:
    """The request's scope, summarised."""
    return JSONResponse(scope_summary(request.scope))


async def stream_route(request: Request) -> Response:
    """Stream three parts; the second waits until ``/release/<token>`` is called."""
    token = request.path_params["token"]

    async def parts() -> AsyncIterator[bytes]:
        yield b"part-1\n"
        yield b"part-2\n" if await gate(token) else b"gate-timeout\n"
        yield b"part-3\n"

    return StreamingResponse(parts(), media_type="text/plain")


async def release_route(request: Request) -> Response:
    """Open the gate of a streaming response."""
    release(request.path_params["token"])
    return PlainTextResponse("released")


async def upload_route(request: Request) -> Response:
    """A multipart form with a ``title`` field and a ``file``: report what arrived."""
    async with request.form() as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            return JSONResponse({"error": "no file"}, status_code=400)
        data = await upload.read()
        return JSONResponse(
            {
                "title": form.get("title"),
                "filename": upload.filename,
                "content_type": upload.content_type,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )


async def form_route(request: Request) -> Response:
    """An urlencoded form: every field back, as lists."""
    async with request.form() as form:
        return JSONResponse({k: form.getlist(k) for k in form})


async def body_route(request: Request) -> Response:
    """Read the body as a stream: size, hash and how many non-empty chunks it came in."""
    digest = hashlib.sha256()
    size = chunks = 0
    async for chunk in request.stream():
        if chunk:
            chunks += 1
            size += len(chunk)
            digest.update(chunk)
    return JSONResponse({"size": size, "sha256": digest.hexdigest(), "chunks": chunks})


async def no_read_route(request: Request) -> Response:
    """Answer without reading the body (a server must then not send ``100 Continue``)."""
    return PlainTextResponse("not read", status_code=200)


async def ws_echo(websocket: WebSocket) -> None:
    """Echo; ``close:CODE:REASON`` closes, ``state`` and ``scope`` report; records the disconnect."""
    key = query(websocket.scope, "id")
    await websocket.accept(
        subprotocol=choose_subprotocol(websocket.scope.get("subprotocols", [])),
        headers=[(b"x-accepted", b"starlette")],
    )
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            record(f"disconnect:{key}", {"code": message.get("code"), "reason": message.get("reason")})
            return
        text = message.get("text")
        if text is None:
            await websocket.send_bytes(message.get("bytes") or b"")
        elif text.startswith("close:"):
            _, code, reason = text.split(":", 2)
            await websocket.close(int(code), reason)
            return
        elif text == "state":
            await websocket.send_text(websocket.state.token)
        elif text == "scope":
            await websocket.send_text(json.dumps(scope_summary(websocket.scope)))
        else:
            await websocket.send_text(text)


async def ws_deny(websocket: WebSocket) -> None:
    """Refuse the upgrade with the app's own 403 (the ``websocket.http.response`` extension)."""
    await websocket.send_denial_response(
        PlainTextResponse("denied by starlette", status_code=403, headers={"x-denied": "yes"})
    )


async def ws_goodbye(websocket: WebSocket) -> None:
    """The server closes first: one message, then close 4000."""
    await websocket.accept()
    await websocket.send_text("goodbye")
    await websocket.close(4000, "server says bye")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    """Startup puts a token in ``state``; shutdown leaves a line in ``$ZZZ_ASGI_SHUTDOWN_FILE``."""
    yield {"token": lifespan_token()}
    note_shutdown("starlette")


@asynccontextmanager
async def failing_lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    """A startup that fails."""
    raise RuntimeError("startup failed on purpose")
    yield {}  # pragma: no cover - makes this a generator


ROUTES = [
    Route("/json", JsonEndpoint),
    Route("/scope", scope_route),
    Route("/stream/{token}", stream_route),
    Route("/release/{token}", release_route, methods=["POST"]),
    Route("/upload", upload_route, methods=["POST"]),
    Route("/form", form_route, methods=["POST"]),
    Route("/body", body_route, methods=["POST"]),
    Route("/no-read", no_read_route, methods=["POST"]),
    WebSocketRoute("/ws/echo", ws_echo),
    WebSocketRoute("/ws/deny", ws_deny),
    WebSocketRoute("/ws/goodbye", ws_goodbye),
    Mount("/_probe", app=probe_app),
]

app = Starlette(routes=ROUTES, lifespan=lifespan)
failing_app = Starlette(routes=ROUTES, lifespan=failing_lifespan)
