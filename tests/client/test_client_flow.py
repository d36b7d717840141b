"""The client's memory stays bounded against a server that floods pings and never reads (issue 12,
item 12), without stopping its reads, so that streaming both ways can't deadlock with a server
that stops reading while its own writes are paused (zzz's does).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import struct
import time
from typing import Any

from server.helpers import recorder, serve, url

import zzz
from zzz import core

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PINGS_PER_WRITE = 512
FLOOD_BYTES = 24 << 20  # with the defect, the client buffered about this much in pongs
FLOOD_SECONDS = 10


def _ping(n: int) -> bytes:
    payload = struct.pack("!Q", n) + b"p" * 117  # 125 bytes, the most a ping may carry
    return bytes((0x89, len(payload))) + payload


async def _flooding_server(sent: dict[str, Any]) -> tuple[asyncio.AbstractServer, int]:
    """A server that answers the handshake, then sends pings as fast as the client takes them and
    never reads, until FLOOD_BYTES or FLOOD_SECONDS; then it reads what the client sent."""
    sock = socket.socket()
    # A small receive buffer, fixed (no autotuning up to tens of MB): what the client can't hand
    # to the kernel stays in its own buffer, where the test sees it.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.bind(("127.0.0.1", 0))
    sock.listen()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        key = next(
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        writer.write(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        n = 0
        deadline = time.monotonic() + FLOOD_SECONDS
        while sent["bytes"] < FLOOD_BYTES and time.monotonic() < deadline:
            writer.write(b"".join(_ping(n + i) for i in range(PINGS_PER_WRITE)))
            n += PINGS_PER_WRITE
            sent["bytes"] += PINGS_PER_WRITE * 127
            try:
                await asyncio.wait_for(writer.drain(), 2)
            except asyncio.TimeoutError:
                break  # the client stopped reading
        sent["last_ping"] = n - 1
        sent["flood_over"].set()
        await sent["measured"].wait()
        # Now read everything the client sent: it must end with a pong to the latest ping.
        frames_reader = core.FrameReader(require_mask=True)
        while True:
            try:
                data = await asyncio.wait_for(reader.read(1 << 20), 1)
            except asyncio.TimeoutError:
                break
            if not data:
                break
            sent["frames"].extend(frames_reader.feed(data))
        writer.close()

    server = await asyncio.start_server(handle, sock=sock)
    return server, sock.getsockname()[1]


async def test_ping_flood_from_a_server_that_never_reads_keeps_the_client_bounded() -> None:
    sent: dict[str, Any] = {
        "bytes": 0,
        "flood_over": asyncio.Event(),
        "measured": asyncio.Event(),
        "frames": [],
    }
    server, port = await _flooding_server(sent)
    try:
        async with zzz.connect(
            f"ws://127.0.0.1:{port}/", compression=False, ping_interval=None, close_timeout=1
        ) as ws:
            peak = 0
            while not sent["flood_over"].is_set():
                transport = ws._proto.transport  # type: ignore[union-attr]
                peak = max(peak, transport.get_write_buffer_size())
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # let the client take what was still in flight
            peak = max(peak, ws._proto.transport.get_write_buffer_size())  # type: ignore[union-attr]
            assert not ws.closed
            sent["measured"].set()
            # The server reads again: the held pong goes out once the client's writes drain.
            for _ in range(200):
                pongs = [f for f in sent["frames"] if f[0] == 0xA]
                if pongs and struct.unpack("!Q", pongs[-1][3][:8])[0] == sent["last_ping"]:
                    break
                await asyncio.sleep(0.05)
    finally:
        sent["measured"].set()
        server.close()
        await server.wait_closed()
    print(f"\nping flood: {sent['bytes'] >> 20} MiB of pings, client write buffer peak {peak >> 10} KiB")
    # 64 KiB of high water plus the pongs of one read; the defect held nearly all of the flood.
    assert sent["bytes"] >= 4 << 20  # the client kept reading (it did not just stop)
    assert peak < 2 << 20
    pongs = [f for f in sent["frames"] if f[0] == 0xA]
    assert pongs and struct.unpack("!Q", pongs[-1][3][:8])[0] == sent["last_ping"]


async def test_streaming_both_ways_with_a_zzz_server_does_not_deadlock() -> None:
    # Both ends' writes are paused at once here: the server stops reading while its writes are
    # paused, so a client that did too would wait for ever.
    chunk = os.urandom(1 << 20)
    count = 48
    _seen, config = recorder()
    app = zzz.App([zzz.Router.ws("/ws", config)], compression=False, max_message_size=None)
    async with (
        serve(app) as server,
        zzz.connect(url(server, "/ws"), compression=False, max_message_size=None) as ws,
    ):

        async def sender() -> None:
            for _ in range(count):
                ws.send_binary(chunk)
                await ws.drain()

        async def receiver() -> int:
            got = 0
            for _ in range(count):
                msg = await ws.recv()
                assert msg == zzz.Binary(chunk)
                got += 1
            return got

        _, got = await asyncio.wait_for(asyncio.gather(sender(), receiver()), 40)
    assert got == count
