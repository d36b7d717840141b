"""Tests of zzz.deflate: RFC 7692 examples, round trips, bounded inflation and negotiation."""

from __future__ import annotations

import itertools
import random
import tracemalloc
import zlib
from dataclasses import replace

import pytest
import websockets.extensions.permessage_deflate as ws_pmd
import websockets.frames as ws_frames
from hypothesis import given, settings
from hypothesis import strategies as st

from zzz.deflate import (
    DeflateConfig,
    DeflateParams,
    PerMessageDeflate,
    accept_response,
    client_offer,
    compressed_size_bound,
    negotiate,
    negotiate_request,
)
from zzz.errors import InvalidPayload, MessageTooBig
from zzz.handshake import parse_extensions

TAIL = b"\x00\x00\xff\xff"
KIB = 1024
MIB = 1024 * 1024


def server(**params: object) -> PerMessageDeflate:
    return PerMessageDeflate(DeflateParams(**params), is_server=True)  # type: ignore[arg-type]


def client(**params: object) -> PerMessageDeflate:
    return PerMessageDeflate(DeflateParams(**params), is_server=False)  # type: ignore[arg-type]


def sample(size: int, seed: int = 0) -> bytes:
    """Compressible data with repeats at many distances (short, ~300 B, ~5 KiB, ~40 KiB)."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        choice = rng.random()
        if out and choice < 0.6:
            distance = rng.choice([3, 40, 200, 255, 256, 257, 300, 511, 600, 5000, 40000])
            distance = min(distance, len(out))
            start = len(out) - distance
            length = rng.randint(3, 300)
            for i in range(length):  # byte by byte: overlapping copies are allowed
                out.append(out[start + i])
        else:
            out += rng.randbytes(rng.randint(1, 40))
    return bytes(out[:size])


def strict_inflate(inflater: zlib._Decompress, payload: bytes) -> bytes:
    """Inflate one output byte per call, so that every match must come from zlib's window.

    Within one call zlib also copies from the output produced by that call, so it accepts
    distances beyond its window. With one byte per call the output buffer is always empty when a
    byte is copied, and a distance past the window (2**wbits) fails with "too far back".
    """
    out = bytearray()
    data = payload
    while True:
        piece = inflater.decompress(data, 1)
        out += piece
        data = inflater.unconsumed_tail
        if not piece and not data:
            return bytes(out)


class BitWriter:
    """Writes a deflate bit stream: fields LSB first, Huffman codes MSB first (RFC 1951 §3.1.1)."""

    def __init__(self) -> None:
        self.bits: list[int] = []

    def field(self, value: int, count: int) -> None:
        self.bits.extend((value >> i) & 1 for i in range(count))

    def code(self, value: int, count: int) -> None:
        self.bits.extend((value >> (count - 1 - i)) & 1 for i in range(count))

    def fixed_literal(self, byte: int) -> None:
        assert byte < 144
        self.code(0x30 + byte, 8)

    def match_258_distance_1(self) -> None:
        self.code(0xC5, 8)  # length symbol 285 = 258, no extra bits
        self.code(0, 5)  # distance code 0 = 1

    def end_of_block(self) -> None:
        self.code(0, 7)

    def to_bytes(self) -> tuple[bytes, int]:
        """Return the whole bytes and how many bits are left over in a partial last byte."""
        full, rest = divmod(len(self.bits), 8)
        data = bytes(sum(self.bits[i * 8 + j] << j for j in range(8)) for i in range(full))
        return data, rest


def fixed_bomb(units: int) -> tuple[bytes, int]:
    """A message payload (tail removed) inflating to 1 + 258 * (1 + 8 * units) zero bytes.

    One literal and one match fill exactly 24 bits, after which 8 matches are exactly 13
    bytes, so the body is one 13-byte unit repeated: megabytes of input cost nothing to build.
    """
    head = BitWriter()
    head.field(0, 1)  # BFINAL = 0
    head.field(1, 2)  # BTYPE = fixed Huffman
    head.fixed_literal(0)
    head.match_258_distance_1()
    head_bytes, rest = head.to_bytes()
    assert rest == 0 and len(head_bytes) == 3
    unit = BitWriter()
    for _ in range(8):
        unit.match_258_distance_1()
    unit_bytes, rest = unit.to_bytes()
    assert rest == 0 and len(unit_bytes) == 13
    end = BitWriter()
    end.end_of_block()
    end.field(0, 3)  # empty stored block header of the sync flush; pad to a byte boundary
    end.bits.extend([0] * (-len(end.bits) % 8))
    end_bytes, _ = end.to_bytes()
    return head_bytes + unit_bytes * units + end_bytes, 1 + 258 * (1 + 8 * units)


# --- RFC 7692 §7.2.3 examples -------------------------------------------------------------------


def test_rfc_hello_compressed() -> None:
    assert server().compress(b"Hello") == bytes.fromhex("f248cdc9c90700")


def test_rfc_hello_twice_shares_window() -> None:
    pmd = server()
    first = pmd.compress(b"Hello")
    second = pmd.compress(b"Hello")
    assert second == bytes.fromhex("f200110000")
    assert len(second) < len(first)
    receiver = client()
    assert receiver.decompress_frame(first, True, None) == b"Hello"
    assert receiver.decompress_frame(second, True, None) == b"Hello"


def test_rfc_hello_without_context_takeover_does_not_shrink() -> None:
    pmd = server(server_no_context_takeover=True)
    assert pmd.compress(b"Hello") == pmd.compress(b"Hello") == bytes.fromhex("f248cdc9c90700")


@pytest.mark.parametrize(
    "frames",
    [
        ["f248cdc9c90700"],  # §7.2.3.1
        ["f248cd", "c9c90700"],  # §7.2.3.1, fragmented
        ["000500faff48656c6c6f00"],  # §7.2.3.3, stored block
        ["f348cdc9c90700"],  # §7.2.3.4, BFINAL set
        ["f24805000000ffffcac9c90700"],  # §7.2.3.5, two blocks
        ["f2480500", "0000ffffcac9c90700"],
    ],
)
def test_rfc_examples_decompress(frames: list[str]) -> None:
    pmd = client()
    out = b""
    for i, frame in enumerate(frames):
        out += pmd.decompress_frame(bytes.fromhex(frame), i == len(frames) - 1, 5 - len(out))
    assert out == b"Hello"


def test_empty_message() -> None:
    pmd = server()
    payload = pmd.compress(b"")
    assert payload == b"\x00"
    assert zlib.decompressobj(-15).decompress(payload + TAIL) == b""
    receiver = client()
    assert receiver.decompress_frame(payload, True, 0) == b""
    # The window is intact afterwards.
    assert receiver.decompress_frame(pmd.compress(b"Hello"), True, None) == b"Hello"


def test_empty_fragment_rfc_7_2_3_6() -> None:
    # A sender that flushed a frame without stripping the tail ends the message with 0x00.
    pmd = client()
    assert pmd.decompress_frame(bytes.fromhex("f248cdc9c90700") + TAIL, False, 10) == b"Hello"
    assert pmd.decompress_frame(b"\x00", True, 5) == b""
    assert pmd.decompress_frame(bytes.fromhex("f200110000"), True, 5) == b"Hello"


def test_empty_payload_is_an_empty_message_and_keeps_window() -> None:
    sender = server()
    receiver = client()
    assert receiver.decompress_frame(sender.compress(b"Hello"), True, None) == b"Hello"
    assert receiver.decompress_frame(b"", True, 0) == b""
    assert receiver.decompress_frame(b"", False, 0) == b""
    assert receiver.decompress_frame(b"", True, 0) == b""
    assert receiver.decompress_frame(sender.compress(b"Hello"), True, None) == b"Hello"


# --- round trips --------------------------------------------------------------------------------

SIZES = [0, 1, 2, 100, 255, 256, 257, 1000, 4096, 65536, 300_000, MIB]


@pytest.mark.parametrize("bits", range(8, 16))
@pytest.mark.parametrize("no_context_takeover", [False, True])
def test_our_compressor_against_plain_zlib(bits: int, no_context_takeover: bool) -> None:
    """Plain zlib inflates our output with a window of exactly the agreed size.

    Up to 64 KiB the inflation is strict (``strict_inflate``): for 8 that proves zlib's 9-bit
    deflate stays within 256 bytes. Larger messages go through zlib the usual way.
    """
    sender = server(server_max_window_bits=bits, server_no_context_takeover=no_context_takeover)
    inflater = zlib.decompressobj(-bits)
    for seed, size in enumerate(SIZES):
        data = sample(size, seed)
        payload = sender.compress(data)
        if no_context_takeover:
            inflater = zlib.decompressobj(-bits)  # each message must stand alone
        if size <= 65536:
            assert strict_inflate(inflater, payload + TAIL) == data
        else:
            assert inflater.decompress(payload + TAIL) == data
    if not no_context_takeover:
        # Context is really kept: a repeated message costs far less the second time.
        data = sample(200, 99)
        first = sender.compress(data)
        assert len(sender.compress(data)) < len(first) // 4


@pytest.mark.parametrize("distance", [257, 300, 500])
def test_strict_inflate_catches_a_window_violation(distance: int) -> None:
    """The check above can fail: a stream reaching past 256 bytes is refused by a strict 8-bit inflate."""
    data = random.Random(5).randbytes(distance) * 3
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    stream = deflater.compress(data) + deflater.flush(zlib.Z_SYNC_FLUSH)
    assert zlib.decompressobj(-8).decompress(stream) == data  # plain zlib doesn't notice
    with pytest.raises(zlib.error, match="too far back"):
        strict_inflate(zlib.decompressobj(-8), stream)
    ours = server(server_max_window_bits=8).compress(data)
    assert strict_inflate(zlib.decompressobj(-8), ours + TAIL) == data


@pytest.mark.parametrize("bits", range(8, 16))
@pytest.mark.parametrize("no_context_takeover", [False, True])
def test_our_decompressor_on_plain_zlib_streams(bits: int, no_context_takeover: bool) -> None:
    rng = random.Random(bits)
    receiver = server(client_max_window_bits=bits, client_no_context_takeover=no_context_takeover)
    deflater = zlib.compressobj(6, zlib.DEFLATED, -max(bits, 9), 8)
    for seed, size in enumerate(SIZES):
        data = sample(size, seed + 100)
        if no_context_takeover:
            deflater = zlib.compressobj(6, zlib.DEFLATED, -max(bits, 9), 8)
        payload = deflater.compress(data) + deflater.flush(zlib.Z_SYNC_FLUSH)
        assert payload.endswith(TAIL)
        payload = payload[:-4]
        # Random frame boundaries, each frame getting the remaining budget like the protocol does.
        cuts = sorted(rng.sample(range(len(payload) + 1), min(3, len(payload) + 1)))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        out = b""
        for i, piece in enumerate(pieces):
            out += receiver.decompress_frame(piece, i == len(pieces) - 1, size - len(out))
        assert out == data


def test_decompressor_accepts_bfinal_messages_then_fresh_stream() -> None:
    receiver = server()
    for seed in range(4):
        data = sample(5000, seed)
        deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
        payload = deflater.compress(data) + deflater.flush(zlib.Z_FINISH)
        assert receiver.decompress_frame(payload, True, len(data)) == data


def test_bfinal_with_takeover_then_sync_flushed_message() -> None:
    receiver = server()
    assert receiver.decompress_frame(bytes.fromhex("f348cdc9c90700"), True, None) == b"Hello"
    assert receiver.decompress_frame(bytes.fromhex("f248cdc9c90700"), True, None) == b"Hello"


@pytest.mark.parametrize(
    "params",
    [
        DeflateParams(),
        DeflateParams(True, True, 8, 8),
        DeflateParams(False, True, 9, 15),
        DeflateParams(True, False, 15, 10),
        DeflateParams(False, False, 12, 12),
    ],
)
def test_server_and_client_talk(params: DeflateParams) -> None:
    srv = PerMessageDeflate(params, is_server=True)
    cli = PerMessageDeflate(params, is_server=False, compress_level=1, mem_level=9)
    for seed, size in enumerate([0, 10, 3000, 70000, 10, 0, 123456]):
        data = sample(size, seed)
        assert cli.decompress_frame(srv.compress(data), True, size) == data
        assert srv.decompress_frame(cli.compress(memoryview(data)), True, size) == data
        assert srv.decompress_frame(cli.compress(bytearray(data)), True, None) == data


def test_remote_no_context_takeover_resets_decoder() -> None:
    # A client that agreed to client_no_context_takeover but still references its old window.
    misbehaving = zlib.compressobj(6, zlib.DEFLATED, -15)

    def send(data: bytes) -> bytes:
        return (misbehaving.compress(data) + misbehaving.flush(zlib.Z_SYNC_FLUSH))[:-4]

    strict = server(client_no_context_takeover=True)
    assert strict.decompress_frame(send(b"Hello"), True, None) == b"Hello"
    with pytest.raises(InvalidPayload) as info:
        strict.decompress_frame(send(b"Hello"), True, None)
    assert info.value.close_code == 1007
    # With context takeover the same bytes are fine.
    misbehaving = zlib.compressobj(6, zlib.DEFLATED, -15)
    lenient = server()
    assert lenient.decompress_frame(send(b"Hello"), True, None) == b"Hello"
    assert lenient.decompress_frame(send(b"Hello"), True, None) == b"Hello"


def test_objects_are_created_lazily_and_dropped_without_takeover() -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        idle = [server() for _ in range(200)]
        per_connection = (tracemalloc.get_traced_memory()[0] - before) / len(idle)
        assert per_connection < 2 * KIB  # no zlib state until first use

        frugal = server(server_no_context_takeover=True, client_no_context_takeover=True)
        sender = client(server_no_context_takeover=True, client_no_context_takeover=True)
        start = tracemalloc.get_traced_memory()[0]
        for seed in range(5):
            data = sample(10000, seed)
            assert frugal.decompress_frame(sender.compress(data), True, None) == data
            assert sender.decompress_frame(frugal.compress(data), True, None) == data
        del data
        # Between messages the frugal side holds neither compressor nor decompressor.
        assert tracemalloc.get_traced_memory()[0] - start < 8 * KIB + 64 * KIB  # sender's objects
        kept = server(server_max_window_bits=12, client_max_window_bits=12)
        incoming = client(client_max_window_bits=12).compress(b"y" * 1000)
        mark = tracemalloc.get_traced_memory()[0]
        kept.compress(b"x" * 1000)
        kept.decompress_frame(incoming, True, None)
        held = tracemalloc.get_traced_memory()[0] - mark
        # Defaults (12-bit windows, memLevel 5): about 38 KiB + 11 KiB held for context takeover.
        assert 20 * KIB < held < 80 * KIB
    finally:
        tracemalloc.stop()


# --- limits and bombs ---------------------------------------------------------------------------


def test_fixed_bomb_helper_is_right() -> None:
    payload, size = fixed_bomb(10)
    assert zlib.decompressobj(-15).decompress(payload + TAIL) == bytes(size)


def test_gigabyte_bomb_is_stopped_with_bounded_memory() -> None:
    payload, size = fixed_bomb(2**30 // (258 * 8) + 1)
    assert size > 2**30
    limit = MIB
    receiver = server()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        with pytest.raises(MessageTooBig) as info:
            receiver.decompress_frame(payload, True, limit)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert info.value.close_code == 1009
    assert str(info.value) == "message too big"
    assert peak < limit + MIB


def test_zlib_made_bomb_over_many_frames() -> None:
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    zeros = bytes(MIB)
    payload = b"".join(deflater.compress(zeros) for _ in range(64)) + deflater.flush(zlib.Z_SYNC_FLUSH)
    payload = payload[:-4]
    assert len(payload) < 128 * KIB
    limit = 8 * MIB
    receiver = server()
    produced = 0
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        with pytest.raises(MessageTooBig):
            for start in range(0, len(payload), 1000):
                chunk = payload[start : start + 1000]
                fin = start + 1000 >= len(payload)
                produced += len(receiver.decompress_frame(chunk, fin, limit - produced))
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert produced <= limit
    assert peak < limit + MIB


@pytest.mark.parametrize("frames", [1, 3])
@pytest.mark.parametrize("delta", [-1, 0, 1, 2])
def test_exactly_at_limit(frames: int, delta: int) -> None:
    size = 10_000
    data = sample(size, 7)
    payload = server().compress(data)
    limit = size + delta
    receiver = client()
    step = -(-len(payload) // frames)
    pieces = [payload[i : i + step] for i in range(0, len(payload), step)]
    out = b""

    def run() -> None:
        nonlocal out
        for i, piece in enumerate(pieces):
            out += receiver.decompress_frame(piece, i == len(pieces) - 1, limit - len(out))

    if delta < 0:
        with pytest.raises(MessageTooBig):
            run()
    else:
        run()
        assert out == data


def _tail_completed_message(length: int) -> bytes:
    """A payload whose last byte of output needs bits from the appended ``00 00 ff ff``.

    Fixed Huffman literal 'P' is 10000000: its last three zero bits fall after the cut, so the
    data alone yields ``length - 1`` bytes and only the flush tail releases the last one.
    """
    writer = BitWriter()
    writer.field(0, 1)
    writer.field(1, 2)
    for _ in range(length):
        writer.fixed_literal(ord("P"))
    data, rest = writer.to_bytes()
    assert rest == 3 and writer.bits[-3:] == [0, 0, 0]
    return data


def test_overflow_byte_only_from_the_final_flush() -> None:
    length = 50
    payload = _tail_completed_message(length)
    # The premise: plain zlib gives one byte less without the tail.
    assert zlib.decompressobj(-15).decompress(payload) == b"P" * (length - 1)
    assert zlib.decompressobj(-15).decompress(payload + TAIL) == b"P" * length
    with pytest.raises(MessageTooBig):
        client().decompress_frame(payload, True, length - 1)
    with pytest.raises(MessageTooBig):
        client().decompress_frame(payload, True, 0)
    assert client().decompress_frame(payload, True, length) == b"P" * length
    assert client().decompress_frame(payload, True, length + 1) == b"P" * length
    # Same over two frames: the first frame fits exactly, the flush overflows.
    receiver = client()
    first = receiver.decompress_frame(payload[:10], False, length - 1)
    with pytest.raises(MessageTooBig):
        receiver.decompress_frame(payload[10:], True, length - 1 - len(first))


def test_zero_budget_and_unlimited() -> None:
    payload = server().compress(b"a")
    with pytest.raises(MessageTooBig):
        client().decompress_frame(payload, True, 0)
    assert client().decompress_frame(payload, True, None) == b"a"
    big = sample(2 * MIB, 3)
    assert client().decompress_frame(server().compress(big), True, None) == big


# --- corrupt data -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xff\xff\xff",
        b"\x07\x00",  # reserved block type 11
        bytes.fromhex("0005000000"),  # stored block whose NLEN is not ~LEN
        bytes.fromhex("f248cdc9c90700") + b"\xff" * 8,
    ],
)
def test_corrupt_stream_is_1007(payload: bytes) -> None:
    with pytest.raises(InvalidPayload) as info:
        client().decompress_frame(payload, True, 1000)
    assert info.value.close_code == 1007
    assert str(info.value) == "invalid compressed data"


def test_distance_beyond_agreed_window_is_1007() -> None:
    data = random.Random(1).randbytes(3000) * 2  # repeats at distance 3000 > 2**9
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = (deflater.compress(data) + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]

    def receive(receiver: PerMessageDeflate) -> bytes:
        # Small frames: the far references land in a later call, where only the window counts.
        # (Within one call zlib may copy from that call's own output, window or not.)
        out = b""
        for start in range(0, len(payload), 10):
            out += receiver.decompress_frame(payload[start : start + 10], start + 10 >= len(payload), None)
        return out

    assert receive(server(client_max_window_bits=15)) == data
    with pytest.raises(InvalidPayload):
        receive(server(client_max_window_bits=9))


def test_data_after_final_block_is_1007() -> None:
    final = bytes.fromhex("f348cdc9c90700")
    with pytest.raises(InvalidPayload):
        client().decompress_frame(final + bytes.fromhex("f248cdc9c90700"), True, None)
    receiver = client()
    assert receiver.decompress_frame(final, False, None) == b"Hello"
    with pytest.raises(InvalidPayload):
        receiver.decompress_frame(b"\xf2", True, None)
    # An empty last frame after a BFINAL frame is fine.
    receiver = client()
    assert receiver.decompress_frame(final, False, None) == b"Hello"
    assert receiver.decompress_frame(b"", True, None) == b""
    assert receiver.decompress_frame(bytes.fromhex("f248cdc9c90700"), True, None) == b"Hello"


# --- negotiation (server side) ------------------------------------------------------------------


def offers(value: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    return parse_extensions([value])


@pytest.mark.parametrize(
    "offer, response, params",
    [
        (
            "permessage-deflate",
            "permessage-deflate",
            DeflateParams(server_max_window_bits=12, client_max_window_bits=15),
        ),
        (
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_max_window_bits=12",
            DeflateParams(server_max_window_bits=12, client_max_window_bits=12),
        ),
        (
            "permessage-deflate; client_max_window_bits=10",
            "permessage-deflate; client_max_window_bits=10",
            DeflateParams(server_max_window_bits=12, client_max_window_bits=10),
        ),
        (
            "permessage-deflate; client_max_window_bits=15",
            "permessage-deflate; client_max_window_bits=12",
            DeflateParams(server_max_window_bits=12, client_max_window_bits=12),
        ),
        (
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10",
            DeflateParams(server_max_window_bits=10),
        ),
        (
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits=8",
            DeflateParams(server_max_window_bits=8),
        ),
        (
            "permessage-deflate; server_max_window_bits=15",
            "permessage-deflate; server_max_window_bits=12",
            DeflateParams(server_max_window_bits=12),
        ),
        (
            'permessage-deflate; server_max_window_bits="9"',
            "permessage-deflate; server_max_window_bits=9",
            DeflateParams(server_max_window_bits=9),
        ),
        (
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover",
            DeflateParams(server_no_context_takeover=True, server_max_window_bits=12),
        ),
        (
            "permessage-deflate; client_no_context_takeover",
            "permessage-deflate; client_no_context_takeover",
            DeflateParams(client_no_context_takeover=True, server_max_window_bits=12),
        ),
        (
            (
                "Permessage-Deflate; client_no_context_takeover; server_no_context_takeover; "
                "server_max_window_bits=11; client_max_window_bits=9"
            ),
            (
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                "server_max_window_bits=11; client_max_window_bits=9"
            ),
            DeflateParams(True, True, 11, 9),
        ),
    ],
)
def test_negotiate_each_parameter(offer: str, response: str, params: DeflateParams) -> None:
    assert negotiate(offers(offer), DeflateConfig()) == (response, params)


@pytest.mark.parametrize(
    "bad",
    [
        "unknown_param",
        "server_no_context_takeover; server_no_context_takeover",
        "client_max_window_bits; client_max_window_bits=10",
        "server_max_window_bits=99",
        "server_max_window_bits=7",
        "server_max_window_bits=16",
        "server_max_window_bits=08",
        "server_max_window_bits=+9",
        "server_max_window_bits",
        "server_max_window_bits=abc",
        "server_no_context_takeover=1",
        'client_no_context_takeover="x"',
        "client_max_window_bits=16",
        "client_max_window_bits=7",
        "client_max_window_bits=0",
        "__proto__",
        "Server_Max_Window_Bits=10",
    ],
)
def test_negotiate_declines_invalid_offer_and_tries_the_next(bad: str) -> None:
    assert negotiate(offers(f"permessage-deflate; {bad}"), DeflateConfig()) is None
    result = negotiate(
        offers(f"permessage-deflate; {bad}, permessage-deflate; server_max_window_bits=10"), DeflateConfig()
    )
    assert result == (
        "permessage-deflate; server_max_window_bits=10",
        DeflateParams(server_max_window_bits=10),
    )


def test_negotiate_picks_first_valid_in_client_order() -> None:
    value = (
        "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=9, "
        "permessage-deflate; server_max_window_bits=10"
    )
    result = negotiate(offers(value), DeflateConfig())
    assert result is not None and result[1].server_max_window_bits == 9


def test_negotiate_nothing_to_accept() -> None:
    assert negotiate([], DeflateConfig()) is None
    assert negotiate(offers("x-webkit-deflate-frame"), DeflateConfig()) is None
    assert negotiate(offers("permessage-deflate"), DeflateConfig(enabled=False)) is None


def test_negotiate_config_variants() -> None:
    config = DeflateConfig(
        server_max_window_bits=15,
        client_max_window_bits=15,
        server_no_context_takeover=True,
        client_no_context_takeover=True,
    )
    assert negotiate(offers("permessage-deflate"), config) == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        DeflateParams(True, True, 15, 15),
    )
    small = DeflateConfig(client_max_window_bits=8)
    assert negotiate(offers("permessage-deflate; client_max_window_bits"), small) == (
        "permessage-deflate; client_max_window_bits=8",
        DeflateParams(False, False, 12, 8),
    )


AUTOBAHN_13 = [(False, 0), (True, 0), (False, 8), (False, 15), (True, 8), (True, 15)]


@pytest.mark.parametrize("offer_list", [[p] for p in AUTOBAHN_13] + [[(True, 8), (True, 0), (False, 0)]])
@pytest.mark.parametrize("side", ["server", "client"])
def test_autobahn_13_style_offers_all_work(offer_list: list[tuple[bool, int]], side: str) -> None:
    """Autobahn's case 13 offers (no_context_takeover, max_window_bits) for either direction."""
    parts = []
    for nct, bits in offer_list:
        fields = ["permessage-deflate"]
        if nct:
            fields.append(f"{side}_no_context_takeover")
        if bits:
            fields.append(f"{side}_max_window_bits={bits}")
        if side == "server":
            fields.append("client_max_window_bits")
        parts.append("; ".join(fields))
    result = negotiate(offers(", ".join(parts)), DeflateConfig())
    assert result is not None
    _, params = result
    nct, bits = offer_list[0]
    if side == "server":
        assert params.server_no_context_takeover == nct
        if bits:
            assert params.server_max_window_bits <= bits
    else:
        assert params.client_no_context_takeover == nct
        if bits:
            assert params.client_max_window_bits <= bits
    srv = PerMessageDeflate(params, is_server=True)
    # The peer inflates with exactly the window it asked for.
    peer_inflater = zlib.decompressobj(-params.server_max_window_bits)
    peer_deflater = zlib.compressobj(6, zlib.DEFLATED, -max(params.client_max_window_bits, 9))
    for seed, size in enumerate([16, 64, 256, 1024, 4096, 8192, 16384, 65536, 131072]):
        data = sample(size, seed)
        if params.server_no_context_takeover:
            peer_inflater = zlib.decompressobj(-params.server_max_window_bits)
        assert peer_inflater.decompress(srv.compress(data) + TAIL) == data
        if params.client_no_context_takeover:
            peer_deflater = zlib.compressobj(6, zlib.DEFLATED, -max(params.client_max_window_bits, 9))
        sent = peer_deflater.compress(data) + peer_deflater.flush(zlib.Z_SYNC_FLUSH)
        assert srv.decompress_frame(sent[:-4], True, size) == data


# --- client side --------------------------------------------------------------------------------


def test_client_offer() -> None:
    assert client_offer(DeflateConfig()) == (
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits"
    )
    assert client_offer(DeflateConfig(server_max_window_bits=15, client_max_window_bits=15)) == (
        "permessage-deflate; client_max_window_bits"
    )
    assert client_offer(DeflateConfig(server_no_context_takeover=True, client_no_context_takeover=True)) == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "server_max_window_bits=12; client_max_window_bits"
    )


CLIENT_CONFIGS = [
    DeflateConfig(),
    DeflateConfig(server_max_window_bits=15, client_max_window_bits=15),
    DeflateConfig(server_max_window_bits=8, client_max_window_bits=8),
    DeflateConfig(server_no_context_takeover=True),
    DeflateConfig(client_no_context_takeover=True, server_max_window_bits=9),
]
SERVER_CONFIGS = [
    DeflateConfig(),
    DeflateConfig(server_max_window_bits=15, client_max_window_bits=15),
    DeflateConfig(server_max_window_bits=10, client_max_window_bits=9, client_no_context_takeover=True),
    DeflateConfig(server_no_context_takeover=True, server_max_window_bits=8),
]


@pytest.mark.parametrize(
    "client_config, server_config", list(itertools.product(CLIENT_CONFIGS, SERVER_CONFIGS))
)
def test_offer_negotiate_accept_round_trip(
    client_config: DeflateConfig, server_config: DeflateConfig
) -> None:
    result = negotiate(offers(client_offer(client_config)), server_config)
    assert result is not None
    response, server_params = result
    client_params = accept_response(response, client_config)
    # The server may use a smaller window than it announced, never a larger one.
    assert client_params.server_max_window_bits >= server_params.server_max_window_bits
    if client_config.server_max_window_bits < 15:
        assert client_params.server_max_window_bits == server_params.server_max_window_bits
    # Likewise we may compress with a smaller window than the server allows (our own limit).
    assert client_params.client_max_window_bits == min(
        server_params.client_max_window_bits, client_config.client_max_window_bits
    )
    assert replace(client_params, server_max_window_bits=15, client_max_window_bits=15) == replace(
        server_params, server_max_window_bits=15, client_max_window_bits=15
    )
    srv = PerMessageDeflate(server_params, is_server=True)
    cli = PerMessageDeflate(client_params, is_server=False)
    for seed in range(3):
        data = sample(20000, seed)
        assert cli.decompress_frame(srv.compress(data), True, None) == data
        assert srv.decompress_frame(cli.compress(data), True, None) == data


def test_accept_response_valid_variants() -> None:
    config = DeflateConfig()
    assert accept_response("permessage-deflate; server_max_window_bits=12", config) == DeflateParams(
        server_max_window_bits=12, client_max_window_bits=12
    )
    assert accept_response(
        "permessage-deflate; server_max_window_bits=8; client_max_window_bits=9; client_no_context_takeover",
        config,
    ) == DeflateParams(False, True, 8, 9)
    open_config = DeflateConfig(server_max_window_bits=15, client_max_window_bits=15)
    assert accept_response("permessage-deflate", open_config) == DeflateParams()
    assert accept_response("permessage-deflate; server_max_window_bits=10", open_config) == DeflateParams(
        server_max_window_bits=10
    )
    assert accept_response(
        "permessage-deflate; server_no_context_takeover",
        DeflateConfig(server_no_context_takeover=True, server_max_window_bits=15),
    ) == DeflateParams(server_no_context_takeover=True, client_max_window_bits=12)


@pytest.mark.parametrize(
    "response, config",
    [
        ("permessage-deflate; server_max_window_bits=12; foo", DeflateConfig()),
        ("permessage-deflate; server_max_window_bits=12; server_max_window_bits=12", DeflateConfig()),
        ("permessage-deflate; server_max_window_bits=13", DeflateConfig()),
        ("permessage-deflate", DeflateConfig()),  # our server_max_window_bits was ignored
        ("permessage-deflate; server_max_window_bits=12; client_max_window_bits", DeflateConfig()),
        ("permessage-deflate; server_max_window_bits=7", DeflateConfig()),
        ("permessage-deflate; server_max_window_bits=12, permessage-deflate", DeflateConfig()),
        ("x-other", DeflateConfig()),
        ("", DeflateConfig()),
        ("permessage-deflate; server_max_window_bits=", DeflateConfig()),
        ("permessage-deflate; server_no_context_takeover=1", DeflateConfig()),
        ("permessage-deflate", DeflateConfig(server_no_context_takeover=True, server_max_window_bits=15)),
    ],
)
def test_accept_response_rejects(response: str, config: DeflateConfig) -> None:
    with pytest.raises(ValueError):
        accept_response(response, config)


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"server_max_window_bits": 7},
        {"server_max_window_bits": 16},
        {"client_max_window_bits": 7},
        {"compress_level": 10},
        {"compress_level": -2},
        {"mem_level": 0},
        {"mem_level": 10},
        {"min_size": -1},
    ],
)
def test_config_validation(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        DeflateConfig(**kwargs)  # type: ignore[arg-type]


def test_params_validation_and_min_size() -> None:
    with pytest.raises(ValueError):
        DeflateParams(server_max_window_bits=7)
    pmd = PerMessageDeflate(DeflateParams(), is_server=True, min_size=100)
    assert not pmd.should_compress(99)
    assert pmd.should_compress(100)
    assert server().should_compress(0)


# --- interoperability with an independent implementation (python-websockets) --------------------


def _format(params: list[tuple[str, str | None]]) -> str:
    return "; ".join(["permessage-deflate"] + [n if v is None else f"{n}={v}" for n, v in params])


WS_CLIENT_FACTORIES = [
    {},
    {"client_max_window_bits": None},
    {"server_max_window_bits": 8},
    {"server_max_window_bits": 10, "client_max_window_bits": 9},
    {"server_no_context_takeover": True},
    {"client_no_context_takeover": True, "server_max_window_bits": 15},
    {"server_no_context_takeover": True, "client_no_context_takeover": True, "server_max_window_bits": 9},
]


def _exchange(ours: PerMessageDeflate, theirs: object) -> None:
    for seed, size in enumerate([0, 5, 300, 5000, 70000, 5, 300]):
        data = sample(size, seed)
        sent = theirs.encode(ws_frames.Frame(ws_frames.Opcode.BINARY, data))  # type: ignore[attr-defined]
        assert sent.rsv1
        assert ours.decompress_frame(sent.data, True, size) == data
        frame = ws_frames.Frame(ws_frames.Opcode.BINARY, ours.compress(data), rsv1=True)
        assert theirs.decode(frame, max_size=size).data == data  # type: ignore[attr-defined]


@pytest.mark.parametrize("factory_kwargs", WS_CLIENT_FACTORIES)
def test_interop_websockets_client_with_our_server(factory_kwargs: dict[str, object]) -> None:
    factory = ws_pmd.ClientPerMessageDeflateFactory(**factory_kwargs)
    offer = _format(factory.get_request_params())
    result = negotiate(offers(offer), DeflateConfig())
    assert result is not None
    response, params = result
    ((_, response_params),) = parse_extensions([response])
    theirs = factory.process_response_params(response_params, [])
    _exchange(PerMessageDeflate(params, is_server=True), theirs)


# websockets' server refuses to agree to server_max_window_bits=8 ("use 9"), so that config is
# left out here; its client side is covered above (it inflates with an 8-bit window).
@pytest.mark.parametrize("config", [c for c in CLIENT_CONFIGS if c.server_max_window_bits != 8])
def test_interop_our_client_with_websockets_server(config: DeflateConfig) -> None:
    factory = ws_pmd.ServerPerMessageDeflateFactory()
    ((_, request_params),) = parse_extensions([client_offer(config)])
    response_params, theirs = factory.process_request_params(request_params, [])
    params = accept_response(_format(response_params), config)
    _exchange(PerMessageDeflate(params, is_server=False), theirs)


# --- property tests -----------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=4), st.integers(0, 300))
def test_arbitrary_frames_give_bounded_output_or_a_websocket_error(frames: list[bytes], limit: int) -> None:
    receiver = client(server_max_window_bits=9)
    out = b""
    try:
        for i, frame in enumerate(frames):
            out += receiver.decompress_frame(frame, i == len(frames) - 1, limit - len(out))
    except (InvalidPayload, MessageTooBig):
        pass
    assert len(out) <= limit


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.binary(max_size=3000), min_size=1, max_size=6),
    st.integers(8, 15),
    st.booleans(),
    st.integers(1, 4),
)
def test_random_messages_round_trip(messages: list[bytes], bits: int, reset: bool, frames: int) -> None:
    params = DeflateParams(server_no_context_takeover=reset, server_max_window_bits=bits)
    sender = PerMessageDeflate(params, is_server=True)
    receiver = PerMessageDeflate(params, is_server=False)
    for data in messages:
        payload = sender.compress(data)
        step = max(1, -(-len(payload) // frames))
        pieces = [payload[i : i + step] for i in range(0, len(payload), step)] or [b""]
        out = b""
        for i, piece in enumerate(pieces):
            out += receiver.decompress_frame(piece, i == len(pieces) - 1, len(data) - len(out))
        assert out == data


def test_negotiate_request_declines_malformed_header() -> None:
    config = DeflateConfig()
    assert negotiate_request([], config) is None
    assert negotiate_request(['permessage-deflate; x="'], config) is None
    assert negotiate_request(["permessage-deflate;;"], config) is None
    assert negotiate_request(["permessage-deflate"], DeflateConfig(enabled=False)) is None
    result = negotiate_request(["foo", "permessage-deflate; client_max_window_bits"], config)
    assert result == ("permessage-deflate; client_max_window_bits=12", DeflateParams(False, False, 12, 12))


def test_from_config() -> None:
    config = DeflateConfig(compress_level=1, mem_level=9, min_size=64)
    pmd = PerMessageDeflate.from_config(DeflateParams(), config, is_server=False)
    assert not pmd.is_server
    assert not pmd.should_compress(63)
    assert pmd.should_compress(64)
    data = sample(5000, 1)
    assert server().decompress_frame(pmd.compress(data), True, None) == data


def test_client_accepts_a_larger_client_window_and_keeps_its_own_limit() -> None:
    # Some servers (Autobahn's fuzzingserver among them) answer client_max_window_bits=15 to an
    # offer without a value; compressing with our smaller window is always valid.
    params = accept_response(
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=15", DeflateConfig()
    )
    assert params.client_max_window_bits == 12
    params = accept_response(
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=9", DeflateConfig()
    )
    assert params.client_max_window_bits == 9


def _incompressible(size: int, nine_bit: bool) -> bytes:
    rng = random.Random(size)
    if nine_bit:  # literals 144..255 cost 9 bits each in fixed Huffman codes
        return bytes(rng.randrange(144, 256) for _ in range(size))
    return rng.randbytes(size)


@pytest.mark.parametrize("size", [0, 1, 200, 20_000])
def test_compressed_size_bound_holds_for_every_zlib_setting(size: int) -> None:
    worst = 0
    samples = (_incompressible(size, False), _incompressible(size, True))
    for data, level, mem_level, wbits, strategy in itertools.product(
        samples, (0, 1, 6, 9), (1, 2, 4, 5, 8, 9), (9, 12, 15), range(5)
    ):
        deflater = zlib.compressobj(level, zlib.DEFLATED, -wbits, mem_level, strategy)
        out = deflater.compress(data) + deflater.flush(zlib.Z_SYNC_FLUSH)
        worst = max(worst, len(out) - len(TAIL))
    assert worst <= compressed_size_bound(size)
    # Not so loose that it means nothing: zlib's worst case comes within 2 % and 32 bytes of it.
    assert compressed_size_bound(size) <= worst + size // 50 + 32


def test_compressed_size_bound_of_a_message() -> None:
    assert compressed_size_bound(0) == 15
    assert compressed_size_bound(MIB) == MIB + MIB // 8 + MIB // 64 + 5 + 8
    with pytest.raises(ValueError):
        compressed_size_bound(-1)
