"""A compressed message of exactly ``max_message_size`` gets through whatever compressor settings
the peer used, though incompressible data comes out of deflate longer than it went in (issue 12,
item 5); the limit stays exact on what the message inflates to.

Random bytes are the worst ordinary case: zlib sends them as stored blocks, 5 bytes of header per
block, and a block holds 127 symbols at memLevel 1 (about 4 % longer), 2047 at memLevel 5
(0.25 %). Bytes that all need 9-bit fixed Huffman codes are the worst case overall (12.5 %).
"""

from __future__ import annotations

import asyncio
import os
import random
import zlib
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from server.helpers import RawClient, read_head, recorder, serve, upgrade_request, url
from websockets.asyncio.client import connect as ws_connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

import zzz
from zzz import core
from zzz.deflate import DeflateConfig

from .hostile import DEFLATE_OFFER, TAIL, ws_app

KIB = 1024
MIB = 1024 * KIB

Peer = Callable[[str, int, bytes], Awaitable[bytes]]


async def _zzz(address: str, limit: int, data: bytes, mem_level: int = 5) -> bytes:
    async with zzz.connect(address, max_message_size=limit, deflate=DeflateConfig(mem_level=mem_level)) as ws:
        assert any(n == "sec-websocket-extensions" for n, _ in ws.response_headers)
        ws.send_binary(data)
        reply = await asyncio.wait_for(ws.recv(), 10)
    assert isinstance(reply, zzz.Binary)
    return reply.data


async def _websockets(address: str, limit: int, data: bytes, mem_level: int | None = None) -> bytes:
    if mem_level is None:
        options: dict[str, object] = {"compression": "deflate"}  # websockets' default: memLevel 5
    else:
        factory = ClientPerMessageDeflateFactory(compress_settings={"memLevel": mem_level})
        options = {"compression": None, "extensions": [factory]}
    # websockets limits the compressed frame to max_size too, so it could not take our echo.
    async with ws_connect(address, max_size=None, **options) as client:  # type: ignore[arg-type]
        assert "permessage-deflate" in (client.response.headers.get("Sec-WebSocket-Extensions") or "")
        await client.send(data)
        reply = await asyncio.wait_for(client.recv(), 10)
    assert isinstance(reply, bytes)
    return reply


async def _aiohttp(address: str, limit: int, data: bytes) -> bytes:
    # aiohttp compresses at level 1 with zlib's default memLevel 8 and exposes neither.
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(address, compress=15, max_msg_size=4 * limit) as client,
    ):
        assert client.compress
        await client.send_bytes(data)
        return await asyncio.wait_for(client.receive_bytes(), 10)


def _deflate(
    data: bytes, mem_level: int, strategy: int = zlib.Z_DEFAULT_STRATEGY, level: int = 6, wbits: int = 15
) -> bytes:
    deflater = zlib.compressobj(level, zlib.DEFLATED, -wbits, mem_level, strategy)
    out = deflater.compress(data) + deflater.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


async def _raw(address: str, limit: int, data: bytes, **settings: int) -> bytes:
    """A client that compresses with settings no library offers (memLevel 1 by default; fixed
    Huffman codes only) and builds the frame by hand."""
    port = int(address.rsplit(":", 1)[1].split("/")[0])
    payload = _deflate(data, **{"mem_level": 1, **settings})
    assert len(payload) > len(data)  # the case under test: compressed is longer than the message
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(upgrade_request("/ws", extra=DEFLATE_OFFER))
        status, headers, _ = await read_head(reader)
        assert status == 101 and "permessage-deflate" in headers.get("sec-websocket-extensions", "")
        writer.write(core.encode_frame(2, payload, True, True, os.urandom(4)))
        opcode, reply = await RawClient(reader, writer).read_frame(10)
        assert opcode == 2, (opcode, reply[:2])
        return zlib.decompressobj(-15).decompress(reply + TAIL)
    finally:
        writer.close()


def _nine_bit_bytes(size: int) -> bytes:
    """Random bytes from 144..255, the literals fixed Huffman coding spends 9 bits on."""
    rng = random.Random(size)
    return bytes(rng.randrange(144, 256) for _ in range(size))


PEERS: dict[str, Peer] = {
    "zzz": _zzz,
    "zzz-memlevel1": lambda a, n, d: _zzz(a, n, d, mem_level=1),
    "websockets": _websockets,
    "websockets-memlevel1": lambda a, n, d: _websockets(a, n, d, mem_level=1),
    "aiohttp": _aiohttp,
    "raw-memlevel1": _raw,
}


@pytest.mark.parametrize("limit", [64 * KIB, MIB], ids=["64KiB", "1MiB"])
@pytest.mark.parametrize("peer", list(PEERS))
async def test_random_message_of_exactly_the_limit_is_accepted_compressed(peer: str, limit: int) -> None:
    data = os.urandom(limit)
    seen, config = recorder()
    async with serve(ws_app(config, max_message_size=limit)) as server:
        reply = await PEERS[peer](url(server, "/ws"), limit, data)
    assert reply == data
    assert [len(m.data) for m in seen["messages"]] == [limit]


async def test_worst_case_fixed_huffman_message_of_exactly_the_limit_is_accepted() -> None:
    limit = 64 * KIB
    data = _nine_bit_bytes(limit)
    seen, config = recorder()
    async with serve(ws_app(config, max_message_size=limit)) as server:
        # Fixed codes only, and a window too small to keep a block's input for a stored block.
        worst = {"level": 1, "wbits": 9, "mem_level": 4, "strategy": zlib.Z_FIXED}
        reply = await _raw(url(server, "/ws"), limit, data, **worst)
    assert reply == data
    assert [len(m.data) for m in seen["messages"]] == [limit]
    assert len(_deflate(data, **worst)) > limit * 112 // 100  # really the 12.5 % case


@pytest.mark.parametrize("limit", [64 * KIB, MIB], ids=["64KiB", "1MiB"])
async def test_one_byte_over_the_limit_is_still_1009_for_incompressible_data(limit: int) -> None:
    seen, config = recorder()
    async with serve(ws_app(config, max_message_size=limit)) as server:
        client = await RawClient.connect(server.port, extra=DEFLATE_OFFER)
        client.writer.write(
            core.encode_frame(2, _deflate(os.urandom(limit + 1), 1), True, True, os.urandom(4))
        )
        assert (await client.read_close(10))[0] == 1009
        client.close()
        await asyncio.wait_for(seen["closed"].wait(), 10)
    assert seen["messages"] == []
    assert seen["close"][0][0] == 1009
