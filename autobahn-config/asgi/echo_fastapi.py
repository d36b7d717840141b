"""FastAPI echo app for the Autobahn fuzzingclient run: text back as text, bytes as bytes.

The endpoint is written as a FastAPI user would (``websocket.receive`` and the typed sends);
the message size limit (16 MiB) is the server's setting, given by ``run.py``.
"""

from __future__ import annotations

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

__all__ = ["app"]

app = FastAPI()


@app.websocket("/")
async def echo(websocket: WebSocket) -> None:
    """Echo every message until the client leaves."""
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message.get("bytes") or b"")
    except WebSocketDisconnect:
        return
