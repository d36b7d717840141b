"""The ceiling: a uvloop asyncio.Protocol that writes back every byte it reads.

No WebSocket at all (no handshake, no framing): the load client runs with ``--raw`` against it
and checks that its own masked frames come back byte for byte.
"""

from __future__ import annotations

import asyncio

import uvloop
from common import parse_args

__all__ = ["ByteEcho", "main"]


class ByteEcho(asyncio.Protocol):
    """Write each chunk back as soon as it arrives."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport for writing (uvloop's is not an asyncio.Transport subclass)."""
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        """Echo the chunk (uvloop hands us a fresh bytes object, safe to queue)."""
        self.transport.write(data)


async def serve(host: str, port: int) -> None:
    """Listen until killed."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(ByteEcho, host, port, backlog=4096)
    await server.serve_forever()


def main() -> None:
    """Entry point: ``python server_raw.py --port P``."""
    args = parse_args("raw uvloop byte echo (the ceiling)")
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
