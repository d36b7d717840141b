"""websockets (new asyncio API) echo and broadcast server, for the echo benchmark.

Limits and the receive queue are off and keepalive pings are off, so the library does only
what the benchmark asks of it; ``--compression`` turns its default permessage-deflate on.
"""

from __future__ import annotations

import uvloop
from common import BROADCAST_PATH, ECHO_PATH, parse_args
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

__all__ = ["handler", "main"]

_members: set[ServerConnection] = set()


async def handler(ws: ServerConnection) -> None:
    """Echo on ``/``; fan text out on ``/broadcast``; a vanished client is not an error here."""
    try:
        await _serve(ws)
    except ConnectionClosed:
        pass


async def _serve(ws: ServerConnection) -> None:
    path = ws.request.path if ws.request is not None else ECHO_PATH
    if path == BROADCAST_PATH:
        _members.add(ws)
        try:
            async for message in ws:
                if isinstance(message, str):
                    broadcast(_members, message)
        finally:
            _members.discard(ws)
        return
    async for message in ws:
        await ws.send(message)


async def run(host: str, port: int, compression: bool) -> None:
    """Listen until killed."""
    async with serve(
        handler,
        host,
        port,
        compression="deflate" if compression else None,
        max_size=None,
        max_queue=None,
        ping_interval=None,
        backlog=4096,
    ) as server:
        await server.serve_forever()


def main() -> None:
    """Entry point: ``python server_websockets.py --port P [--compression]``."""
    args = parse_args("websockets echo server")
    uvloop.run(run(args.host, args.port, args.compression))


if __name__ == "__main__":
    main()
