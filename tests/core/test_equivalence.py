"""The compiled core against its twin on random input: same frames, same errors, same moments.

Random frame streams (valid and broken, every length encoding, random reader options) are cut
at random points and fed to both readers; after every ``feed`` both must agree on the frames
returned or on the exception (type, message, close code, ``frames`` before it).
"""

from __future__ import annotations

import itertools
import os
from types import ModuleType
from typing import Any

import pytest
from _core_frames import header, xor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zzz.errors import WebSocketError

SETTINGS = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
BOUNDARY_LENGTHS = [0, 1, 124, 125, 126, 127, 65535, 65536]
TEXT_UNITS = ["a", "é", "€", "日", "🎉", "\x00", "\u07ff", "\U0010ffff"]


@st.composite
def payloads(draw: st.DrawFn, text: bool) -> bytes:
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return draw(
            st.sampled_from([b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xe2\x82", b"\xff"])
        )
    if kind <= 3:
        n = draw(st.sampled_from(BOUNDARY_LENGTHS))
        unit = draw(st.sampled_from(TEXT_UNITS))
        skip = draw(st.integers(0, 3)) if draw(st.integers(0, 3)) == 0 else 0
        return (unit * (n + 4)).encode()[skip : skip + n]
    if text or kind <= 7:
        return draw(st.text(max_size=30)).encode()
    return draw(st.binary(max_size=40))


@st.composite
def frames(draw: st.DrawFn, masked: bool) -> bytes:
    opcode = draw(
        st.one_of(st.sampled_from([1, 1, 2, 2, 8, 9, 9, 10]), st.integers(0, 15))
        if draw(st.integers(0, 9)) == 0
        else st.sampled_from([1, 1, 2, 2, 8, 9, 9, 10])
    )
    fin = draw(st.integers(0, 7)) != 0
    rsv = draw(st.sampled_from([0] * 60 + [4, 4, 4, 4, 2, 1, 6]))
    if draw(st.integers(0, 19)) == 0:
        masked = not masked
    key = os.urandom(4) if masked else None
    if opcode >= 8 and draw(st.integers(0, 9)):
        payload = draw(st.binary(max_size=125))
    else:
        payload = draw(payloads(opcode in (0, 1)))
    width = draw(st.sampled_from([None] * 12 + [0, 2, 8]))
    if width == 0 and len(payload) > 125:
        width = None
    if width == 2 and len(payload) > 65535:
        width = 8
    lie = draw(st.sampled_from([None] * 30 + [1 << 63, (1 << 63) - 1, (1 << 64) - 1, 1 << 40, 127, 65536]))
    if lie is not None:
        # A declared length that does not match the bytes that follow.
        return header(opcode, lie, fin=fin, rsv=rsv, key=key, width=8 if lie > 65535 else 2) + payload
    body = payload if key is None else xor(payload, key)
    return header(opcode, len(payload), fin=fin, rsv=rsv, key=key, width=width) + body


@st.composite
def fragmented(draw: st.DrawFn, masked: bool) -> bytes:
    """A text or binary message cut at random byte positions (through characters), maybe with
    control frames in between and sometimes a corrupted byte."""
    opcode = draw(st.sampled_from([1, 1, 1, 2]))
    rsv = 4 if draw(st.integers(0, 5)) == 0 else 0
    data = draw(st.one_of(st.text(min_size=1, max_size=40).map(str.encode), payloads(True).filter(bool)))
    if draw(st.integers(0, 2)) == 0:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([draw(st.integers(0x80, 0xFF))]) + data[at + 1 :]
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=4))))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    out = b""
    for i, piece in enumerate(pieces):
        key = os.urandom(4) if masked else None
        body = piece if key is None else xor(piece, key)
        out += (
            header(
                opcode if i == 0 else 0,
                len(piece),
                fin=i == len(pieces) - 1,
                rsv=rsv if i == 0 else 0,
                key=key,
            )
            + body
        )
        if draw(st.integers(0, 4)) == 0:
            out += header(9, 2, key=key) + (b"hi" if key is None else xor(b"hi", key))
    return out


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, Any], bytes]:
    """Reader options and a stream of frames mostly shaped to pass them (so that failures come
    at varied points, after varied frames)."""
    opts = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "require_mask": st.sampled_from([True, True, True, False]),
                "allow_rsv1": st.booleans(),
                "max_frame_size": st.one_of(st.none(), st.sampled_from([0, 1, 40, 125, 126, 65535, 65536])),
                "max_message_size": st.one_of(
                    st.none(), st.sampled_from([0, 1, 40, 125, 126, 65535, 65536, 70000])
                ),
                "max_fragments": st.one_of(st.none(), st.integers(0, 4)),
            },
        )
    )
    masked = opts.get("require_mask", True)
    parts = draw(st.lists(st.one_of(frames(masked), fragmented(masked)), min_size=1, max_size=8))
    return opts, b"".join(parts)


def run(module: ModuleType, opts: dict[str, Any], chunks: list[bytes]) -> list[Any]:
    reader = module.FrameReader(**opts)
    log: list[Any] = []
    for chunk in chunks:
        try:
            log.append(("frames", reader.feed(chunk)))
        except WebSocketError as exc:
            log.append(("error", type(exc), exc.args, exc.close_code, exc.frames))
            with pytest.raises(WebSocketError) as again:
                reader.feed(b"\x81")
            log.append(("again", again.value is exc, again.value.frames))
            break
    return log


def cut(stream: bytes, points: list[int], bytewise: bool) -> list[bytes]:
    if bytewise:
        return [stream[i : i + 1] for i in range(len(stream))]
    bounds = sorted({0, len(stream), *(p for p in points if p < len(stream))})
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


@SETTINGS
@given(
    scenario=scenarios(),
    points=st.lists(st.integers(0, 400), max_size=10),
    bytewise=st.integers(0, 9),
)
def test_random_streams(
    speedups: ModuleType,
    purepy: ModuleType,
    scenario: tuple[dict[str, Any], bytes],
    points: list[int],
    bytewise: int,
) -> None:
    opts, stream = scenario
    chunks = cut(stream, points, bytewise == 0 and len(stream) < 1500)
    expected = run(purepy, opts, chunks)
    assert run(speedups, opts, chunks) == expected


@SETTINGS
@given(
    data=st.binary(max_size=200),
    key=st.binary(min_size=4, max_size=4),
    phase=st.integers(-9, 9),
    offset=st.integers(0, 7),
)
def test_random_masks(
    speedups: ModuleType, purepy: ModuleType, data: bytes, key: bytes, phase: int, offset: int
) -> None:
    view = memoryview(data)[offset:]
    assert speedups.mask(view, key, phase) == purepy.mask(view, key, phase)
    a, b = bytearray(data), bytearray(data)
    speedups.mask_inplace(memoryview(a)[offset:], key, phase)
    purepy.mask_inplace(memoryview(b)[offset:], key, phase)
    assert a == b


@SETTINGS
@given(
    opcode=st.integers(0, 15),
    payload=st.binary(max_size=300),
    fin=st.booleans(),
    rsv1=st.booleans(),
    key=st.one_of(st.none(), st.binary(min_size=4, max_size=4)),
)
def test_random_encodings(
    speedups: ModuleType,
    purepy: ModuleType,
    opcode: int,
    payload: bytes,
    fin: bool,
    rsv1: bool,
    key: bytes | None,
) -> None:
    assert speedups.encode_frame(opcode, payload, fin, rsv1, key) == purepy.encode_frame(
        opcode, payload, fin, rsv1, key
    )


ODD_CALLS = [
    ("mask", ("abc", b"abcd")),
    ("mask", (b"abc", "abcd")),
    ("mask", (b"abc", 1234)),
    ("mask", (b"abc", b"abcd", 1.5)),
    ("mask", (b"", b"abcd", "not checked for empty data")),
    ("mask", (memoryview(b"abcdef")[::2], b"abcd")),
    ("mask", (b"abc", [1, 2, 3, 4])),
    ("mask_inplace", ("abc", b"abcd")),
    ("mask_inplace", (b"abc", b"abcd")),
    ("mask_inplace", (bytearray(b"abc"), b"ab")),
    ("mask_inplace", (memoryview(bytearray(b"abcdef"))[::2], b"abcd")),
    ("validate_utf8", ("abc",)),
    ("validate_utf8", ([104, 105, 255],)),
    ("validate_utf8", (3,)),
    ("encode_frame", (1, "text")),
    ("encode_frame", (1, "text", True, False, b"abcd")),
    ("encode_frame", (1.0, b"x")),
    ("encode_frame", ("1", b"x")),
    ("encode_frame", (1, b"x", True, False, b"abc")),
    ("encode_frame", (1, memoryview(b"abcdef")[::2])),
    ("FrameReader.feed", ("text",)),
    ("FrameReader.feed", (memoryview(b"abcdef")[::2],)),
    ("FrameReader.feed", ([0x82, 0x80],)),
    ("FrameReader.feed", (5,)),
    ("Utf8Validator.feed", ("text",)),
    ("Utf8Validator.feed", ([0xE2, 0x82, 0xAC],)),
]


@pytest.mark.parametrize("name, args", ODD_CALLS)
def test_odd_arguments_fail_alike(speedups: ModuleType, purepy: ModuleType, name: str, args: tuple) -> None:
    def outcome(module: ModuleType) -> tuple[Any, ...]:
        try:
            if "." in name:
                cls, method = name.split(".")
                return ("ok", getattr(getattr(module, cls)(), method)(*args))
            return ("ok", getattr(module, name)(*args))
        except Exception as exc:  # noqa: BLE001 - the point is to compare whatever happens
            return ("error", type(exc), str(exc))

    assert outcome(speedups) == outcome(purepy)


def test_same_public_names(speedups: ModuleType, purepy: ModuleType) -> None:
    assert speedups.__all__ == purepy.__all__
    for name in purepy.__all__:
        assert hasattr(speedups, name), name
        if name.startswith("OP_"):
            assert getattr(speedups, name) == getattr(purepy, name)
