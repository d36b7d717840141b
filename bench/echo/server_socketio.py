"""python-socketio peer for the Channels rows: one room, ``emit(..., room=...)``, on aiohttp.

``socketio.AsyncServer(async_mode="aiohttp")`` attached to an aiohttp application on uvloop,
WebSocket transport only (the load client connects straight to
``/socket.io/?EIO=4&transport=websocket``). Every connection enters one room on connect; the
event ``pub`` emits its data to the room as event ``msg`` (sender included, as a Channels
broadcast), and ``echo`` returns its data as the ack (the push + reply request/response).

aiohttp rather than uvicorn: python-socketio's aiohttp driver hands frames straight to aiohttp's
own WebSocket implementation (the compiled reader of the aiohttp rows), while under uvicorn every
message also crosses the ASGI layer and uvicorn's separate WebSocket library; aiohttp is the
faster of the two hosts, so the comparison is with python-socketio at its best, and it needs no
package beyond the bench extras. The library's other defaults are left as they are
(``async_handlers=True``: each event runs in its own task, as users run it).
"""

from __future__ import annotations

import asyncio
from typing import Any

import socketio
import uvloop
from aiohttp import web
from common import CHANNEL_TOPIC, parse_args

__all__ = ["build_server", "main"]


def build_server() -> tuple[socketio.AsyncServer, web.Application]:
    """The Socket.IO server and the aiohttp application it is attached to."""
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        transports=["websocket"],
        max_http_buffer_size=2**24,
        logger=False,
        engineio_logger=False,
    )
    app = web.Application()
    sio.attach(app)

    @sio.event  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        await sio.enter_room(sid, CHANNEL_TOPIC)

    @sio.on("pub")  # type: ignore[untyped-decorator]
    async def pub(sid: str, data: Any) -> None:
        await sio.emit("msg", data, room=CHANNEL_TOPIC)

    @sio.on("echo")  # type: ignore[untyped-decorator]
    async def echo(sid: str, data: Any) -> Any:
        return data

    return sio, app


async def serve(host: str, port: int) -> None:
    """Listen until killed; aiohttp's access log off (it would dominate the handshake cost)."""
    _, app = build_server()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    await asyncio.Event().wait()


def main() -> None:
    """Entry point: ``python server_socketio.py --port P``."""
    args = parse_args("python-socketio server (one room) on aiohttp")
    if args.compression:
        raise SystemExit("the Socket.IO rows run without compression")
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
