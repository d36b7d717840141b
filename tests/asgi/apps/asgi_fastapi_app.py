"""A FastAPI app with the routes the ASGI suite checks, written in FastAPI's own style.

Same contract as ``asgi_starlette_app`` (JSON GET/HEAD/POST, scope, a gated streaming
response, multipart and urlencoded forms, a streamed body, a route that never reads its body,
WebSocket echo/deny/goodbye, lifespan state); ``failing_app``'s startup raises.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from asgi_common import (
    choose_subprotocol,
    gate,
    lifespan_token,
    note_shutdown,
    release,
    scope_summary,
)
from asgi_probe import probe_app, query, record
from fastapi import FastAPI, File, Form, Request, UploadFile, WebSocket
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel

__all__ = ["app", "failing_app"]


class Numbers(BaseModel):
    """The body of ``POST /json``."""

    numbers: list[float]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    """Startup puts a token in ``state``; shutdown leaves a line in ``$ZZZ_ASGI_SHUTDOWN_FILE``."""
    yield {"token": lifespan_token()}
    note_shutdown("fastapi")


@asynccontextmanager
async def failing_lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    """A startup that fails."""
    raise RuntimeError("startup failed on purpose")
    yield {}  # pragma: no cover - makes this a generator


def build(lifespan_handler: Any) -> FastAPI:
    """Return the app with its routes, on the given lifespan."""
    api = FastAPI(lifespan=lifespan_handler)

    @api.api_route("/json", methods=["GET", "HEAD"])
    async def json_get(request: Request, name: str = "world") -> dict[str, Any]:
        return {"hello": name, "state": request.state.token}

    @api.post("/json", status_code=201)
    async def json_post(body: Numbers) -> dict[str, Any]:
        return {"sum": sum(body.numbers), "count": len(body.numbers)}

    @api.get("/scope")
    async def scope_route(request: Request) -> dict[str, Any]:
        return scope_summary(request.scope)

    @api.get("/stream/{token}")
    async def stream_route(token: str) -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            yield b"part-1\n"
            yield b"part-2\n" if await gate(token) else b"gate-timeout\n"
            yield b"part-3\n"

        return StreamingResponse(parts(), media_type="text/plain")

    @api.post("/release/{token}", response_class=PlainTextResponse)
    async def release_route(token: str) -> str:
        release(token)
        return "released"

    @api.post("/upload")
    async def upload_route(
        title: Annotated[str, Form()], file: Annotated[UploadFile, File()]
    ) -> dict[str, Any]:
        data = await file.read()
        return {
            "title": title,
            "filename": file.filename,
            "content_type": file.content_type,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }

    @api.post("/form")
    async def form_route(request: Request) -> dict[str, list[Any]]:
        async with request.form() as form:
            return {k: form.getlist(k) for k in form}

    @api.post("/body")
    async def body_route(request: Request) -> dict[str, Any]:
        digest = hashlib.sha256()
        size = chunks = 0
        async for chunk in request.stream():
            if chunk:
                chunks += 1
                size += len(chunk)
                digest.update(chunk)
        return {"size": size, "sha256": digest.hexdigest(), "chunks": chunks}

    @api.post("/no-read", response_class=PlainTextResponse)
    async def no_read_route() -> str:
        return "not read"

    @api.websocket("/ws/echo")
    async def ws_echo(websocket: WebSocket) -> None:
        key = query(websocket.scope, "id")
        await websocket.accept(
            subprotocol=choose_subprotocol(websocket.scope.get("subprotocols", [])),
            headers=[(b"x-accepted", b"fastapi")],
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

    @api.websocket("/ws/deny")
    async def ws_deny(websocket: WebSocket) -> None:
        await websocket.send_denial_response(
            PlainTextResponse("denied by fastapi", status_code=403, headers={"x-denied": "yes"})
        )

    @api.websocket("/ws/goodbye")
    async def ws_goodbye(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("goodbye")
        await websocket.close(4000, "server says bye")

    api.mount("/_probe", probe_app)
    return api


app = build(lifespan)
failing_app = build(failing_lifespan)
