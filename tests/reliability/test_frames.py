"""Hostile frames over real sockets: every RFC 6455 violation gets its close code, declared lengths
are refused before anything is buffered, fragments are capped, dribbled frames cost linear time."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from server.helpers import RawClient, recorder, serve

import zzz
from zzz import core
from zzz.protocol import Connection
from zzz.settings import WsLimits

from .hostile import cpu_seconds, frame, header, traced, ws_app

LINEAR_RATIO = 8.0


async def _fails_with(data: list[bytes], code: int, *, extra: str = "", **settings: Any) -> dict[str, Any]:
    """Send ``data`` after the upgrade; the server must answer with a close frame carrying ``code``,
    close the TCP connection and report ``code`` to on_close."""
    seen, config = recorder()
    async with serve(ws_app(config, **settings)) as server:
        client = await RawClient.connect(server.port, extra=extra)
        for chunk in data:
            client.writer.write(chunk)
        got_code, _reason = await client.read_close()
        assert await client.at_eof()  # the server shut down its side after the close frame
        client.close()
        await asyncio.wait_for(seen["closed"].wait(), 5)
    assert got_code == code
    assert [c for c, _ in seen["close"]] == [code]
    return seen


async def test_unmasked_client_frame_is_1002() -> None:
    seen = await _fails_with([frame(1, b"hello", masked=False)], 1002)
    assert seen["messages"] == []


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10, 0x70], ids=["rsv1", "rsv2", "rsv3", "all"])
async def test_rsv_bits_without_an_extension_are_1002(rsv: int) -> None:
    await _fails_with([header(0x81 | rsv, 2) + b"hi"], 1002)


async def test_rsv1_on_a_continuation_is_1002_even_with_deflate() -> None:
    data = frame(1, b"ab", fin=False) + frame(0, b"cd", rsv1=True)
    await _fails_with([data], 1002, extra="Sec-WebSocket-Extensions: permessage-deflate\r\n")


@pytest.mark.parametrize("rsv", [0x20, 0x10], ids=["rsv2", "rsv3"])
async def test_rsv2_rsv3_are_1002_even_with_deflate(rsv: int) -> None:
    await _fails_with(
        [header(0x81 | rsv, 2) + b"hi"], 1002, extra="Sec-WebSocket-Extensions: permessage-deflate\r\n"
    )


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
async def test_reserved_opcode_is_1002_before_the_length_is_read(opcode: int) -> None:
    # Only the first two bytes: they announce a 64-bit length that never comes.
    await _fails_with([bytes((0x80 | opcode, 0x80 | 127))], 1002)


async def test_64_bit_length_with_the_top_bit_set_is_1002() -> None:
    await _fails_with([header(0x82, 1 << 63)], 1002)


@pytest.mark.parametrize(
    "data",
    [
        header(0x82, 1 << 30) + b"0123456789",  # 1 GiB declared, 10 bytes sent
        header(0x82, (1 << 63) - 1),
        frame(2, b"abc", fin=False) + header(0x80, (1 << 63) - 1),  # small fragment, then huge
        frame(2, b"a" * 1000, fin=False) + header(0x80, (1 << 20) - 999),  # the sum is one over
    ],
    ids=["1GiB-declared", "2^63-1", "fragment-then-huge", "sum-one-over"],
)
async def test_declared_length_over_the_limit_is_1009_at_once_without_allocating(data: bytes) -> None:
    with traced() as memory:
        await _fails_with([data], 1009, max_message_size=1 << 20)
        peak = memory.peak_growth()
    print(f"\npeak traced growth: {peak / 1024:.0f} KiB")
    assert peak < 512 * 1024  # nothing near the declared length was allocated


async def test_a_message_exactly_at_the_limit_is_accepted() -> None:
    _seen, config = recorder()
    async with serve(ws_app(config, max_message_size=64 * 1024)) as server:
        client = await RawClient.connect(server.port)
        client.send_frame(2, b"a" * 1000, fin=False)
        client.send_frame(0, b"b" * (64 * 1024 - 1000))
        opcode, payload = await client.read_frame()
        client.close()
    assert opcode == 2 and payload == b"a" * 1000 + b"b" * (64 * 1024 - 1000)


@pytest.mark.parametrize(
    "data",
    [
        frame(9, b"p" * 126),
        frame(10, b"p" * 126),
        frame(8, b"\x03\xe8" + b"r" * 124),
        frame(9, b"p", fin=False),
        frame(8, b"\x03\xe8", fin=False),
    ],
    ids=["ping-126", "pong-126", "close-126", "fragmented-ping", "fragmented-close"],
)
async def test_oversized_or_fragmented_control_frame_is_1002(data: bytes) -> None:
    await _fails_with([data], 1002)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535])
async def test_close_with_an_invalid_code_is_1002(code: int) -> None:
    await _fails_with([frame(8, code.to_bytes(2, "big") + b"bye")], 1002)


async def test_close_payload_of_one_byte_is_1002() -> None:
    await _fails_with([frame(8, b"\x03")], 1002)


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1014, 3000, 4000, 4999])
async def test_valid_close_codes_are_accepted_and_echoed(code: int) -> None:
    seen, config = recorder()
    async with serve(ws_app(config)) as server:
        client = await RawClient.connect(server.port)
        client.send_frame(8, code.to_bytes(2, "big") + "héllo".encode())
        assert await client.read_close() == (code, "héllo")
        await asyncio.wait_for(seen["closed"].wait(), 5)
        client.close()
    assert seen["close"] == [(code, "héllo")]


async def test_invalid_utf8_in_a_close_reason_is_1007() -> None:
    await _fails_with([frame(8, (1000).to_bytes(2, "big") + b"ok\xff")], 1007)


@pytest.mark.parametrize(
    "data",
    [
        frame(0, b"orphan"),
        frame(1, b"a", fin=False) + frame(1, b"b"),
        frame(2, b"a", fin=False) + frame(1, b"b", fin=False),
        frame(1, b"a") + frame(0, b"late"),
    ],
    ids=["continuation-first", "text-inside-text", "text-inside-binary", "continuation-after-final"],
)
async def test_broken_fragmentation_is_1002(data: bytes) -> None:
    await _fails_with([data], 1002)


async def test_pings_inside_a_fragmented_message_are_answered() -> None:
    seen, config = recorder()
    async with serve(ws_app(config)) as server:
        client = await RawClient.connect(server.port)
        client.writer.write(
            frame(1, "hé".encode()[:2], fin=False)
            + frame(9, b"p1")
            + frame(0, "hé".encode()[2:], fin=False)
            + frame(9, b"p2")
            + frame(0, b"!")
        )
        assert await client.read_frame() == (10, b"p1")
        assert await client.read_frame() == (10, b"p2")
        assert await client.read_frame() == (1, "hé!".encode())
        client.close()
    assert seen["messages"] == [zzz.Text("hé!")]


def _fragments(count: int, size: int) -> bytes:
    key = b"\x11\x22\x33\x44"
    first = core.encode_frame(2, b"x" * size, False, False, key)
    middle = core.encode_frame(0, b"x" * size, False, False, key)
    last = core.encode_frame(0, b"x" * size, True, False, key)
    return first + middle * (count - 2) + last


@pytest.mark.parametrize("size", [1, 0], ids=["one-byte", "empty"])
async def test_a_hundred_thousand_fragments_hit_max_fragments_1008_with_bounded_memory(size: int) -> None:
    data = _fragments(100_000, size)
    seen, config = recorder()
    loop = asyncio.get_running_loop()
    with traced() as memory:
        async with serve(ws_app(config)) as server:  # default max_fragments=4096
            client = await RawClient.connect(server.port)

            def send() -> None:
                sock = client.writer.get_extra_info("socket").dup()
                try:
                    sock.setblocking(True)
                    sock.settimeout(5)
                    sock.sendall(data)
                except OSError:
                    pass  # the server closed the connection part way: expected
                finally:
                    sock.close()

            sender = loop.run_in_executor(None, send)
            code, _ = await client.read_close()
            await sender  # the server kept reading (and discarding) until all was sent
            client.close()
            await asyncio.wait_for(seen["closed"].wait(), 5)
        peak = memory.peak_growth()
    print(
        f"\n100,000 {size}-byte fragments: peak traced growth {peak / 1024:.0f} KiB for {len(data) / 1024:.0f} KiB sent"
    )
    assert code == 1008
    assert seen["close"][0][0] == 1008
    assert seen["messages"] == []
    assert peak < 8 << 20


async def test_exactly_max_fragments_is_accepted() -> None:
    _seen, config = recorder()
    async with serve(ws_app(config, max_fragments=4096)) as server:
        client = await RawClient.connect(server.port)
        client.writer.write(_fragments(4096, 1))
        opcode, payload = await client.read_frame()
        client.close()
    assert (opcode, payload) == (2, b"x" * 4096)


def _dribble_cost(size: int, text: bool) -> float:
    conn = Connection(is_server=True, limits=WsLimits(max_message_size=4 << 20))
    payload = ("é" * (size // 2)).encode() if text else b"\xab" * size
    data = frame(1 if text else 2, payload)
    start = cpu_seconds()
    events = []
    for i in range(len(data)):
        conn.receive_data(data[i : i + 1])
        event = conn.next_event()
        if event is not None:
            events.append(event)
    took = cpu_seconds() - start
    assert len(events) == 1
    assert events[0] == (zzz.Text(payload.decode()) if text else zzz.Binary(payload))
    return took


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_a_frame_delivered_one_byte_per_read_costs_linear_time(text: bool) -> None:
    # 1 MiB on the compiled core; the pure-Python twin is ~20x slower per call, so a quarter.
    big = (1 << 20) if core.IMPLEMENTATION == "cython" else (256 << 10)
    small = big // 4
    _dribble_cost(small // 4, text)  # warm-up
    t_small = min(_dribble_cost(small, text) for _ in range(2))
    t_big = _dribble_cost(big, text)
    print(
        f"\n{core.IMPLEMENTATION}: {big >> 10} KiB one byte per read {t_big:.2f} s, "
        f"{small >> 10} KiB {t_small:.2f} s (ratio {t_big / t_small:.1f}, linear is 4)"
    )
    assert t_big / t_small < LINEAR_RATIO


async def test_a_frame_dribbled_over_many_packets_is_reassembled() -> None:
    seen, config = recorder()
    text = "zzz-é-" * 1500
    async with serve(ws_app(config)) as server:
        client = await RawClient.connect(server.port)
        client.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = frame(1, text.encode())
        for i in range(0, len(data), 7):
            client.writer.write(data[i : i + 7])
            if i % 700 == 0:
                await client.writer.drain()
                await asyncio.sleep(0)
        assert await client.read_frame() == (1, text.encode())
        client.close()
    assert seen["messages"] == [zzz.Text(text)]
