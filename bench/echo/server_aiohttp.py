"""aiohttp echo and broadcast server, for the echo benchmark.

Compression and the message size limit are off unless ``--compression`` turns deflate on.
"""

from __future__ import annotations

import asyncio

import uvloop
from aiohttp import WSMsgType, web
from common import BROADCAST_PATH, ECHO_PATH, parse_args

__all__ = ["main"]

_members: set[web.WebSocketResponse] = set()
COMPRESS = False


async def echo(request: web.Request) -> web.WebSocketResponse:
    """Send every message straight back, same type."""
    ws = web.WebSocketResponse(compress=COMPRESS, max_msg_size=0)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def fan_out(request: web.Request) -> web.WebSocketResponse:
    """A text message from any member goes to every member."""
    ws = web.WebSocketResponse(compress=COMPRESS, max_msg_size=0)
    await ws.prepare(request)
    _members.add(ws)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                for member in list(_members):
                    if not member.closed:
                        await member.send_str(msg.data)
    finally:
        _members.discard(ws)
    return ws


async def serve(host: str, port: int) -> None:
    """Listen until killed; access logging off (it would dominate the handshake cost)."""
    app = web.Application()
    app.router.add_get(ECHO_PATH, echo)
    app.router.add_get(BROADCAST_PATH, fan_out)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    await asyncio.Event().wait()


def main() -> None:
    """Entry point: ``python server_aiohttp.py --port P [--compression]``."""
    global COMPRESS
    args = parse_args("aiohttp echo server")
    COMPRESS = args.compression
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
