"""The FastAPI WebSocket echo every server of the ASGI benchmark serves: ``/`` sends each message
back with its type, as a FastAPI user writes it (``receive``, then ``send_text``/``send_bytes``)."""

from __future__ import annotations

from fastapi import FastAPI, WebSocket

__all__ = ["app"]

app = FastAPI()


@app.websocket("/")
async def echo(websocket: WebSocket) -> None:
    """Echo until the client leaves."""
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is not None:
            await websocket.send_text(text)
        else:
            await websocket.send_bytes(message.get("bytes") or b"")
