"""encode_frame: the three length encodings, masked and unmasked, bits and argument errors."""

from __future__ import annotations

import os
import struct
from types import ModuleType

import pytest
from _core_frames import frame

KEY = b"\x10\x20\x30\x40"


@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("key", [None, KEY])
def test_lengths_and_masking(impl: ModuleType, n: int, key: bytes | None) -> None:
    payload = os.urandom(n)
    out = impl.encode_frame(2, payload, mask_key=key)
    assert type(out) is bytes
    assert out == frame(2, payload, key=key)
    width = 2 if n < 126 else 4 if n < 65536 else 10
    assert len(out) == width + (4 if key else 0) + n
    if n >= 126:
        assert out[1] & 0x7F == (126 if n < 65536 else 127)
        assert (struct.unpack("!H", out[2:4])[0] if n < 65536 else struct.unpack("!Q", out[2:10])[0]) == n
    reader = impl.FrameReader(require_mask=key is not None)
    assert reader.feed(out) == [(2, True, False, payload)]


@pytest.mark.parametrize("fin", [True, False])
@pytest.mark.parametrize("rsv1", [True, False])
@pytest.mark.parametrize("opcode", range(16))
def test_first_byte(impl: ModuleType, fin: bool, rsv1: bool, opcode: int) -> None:
    out = impl.encode_frame(opcode, b"x", fin=fin, rsv1=rsv1)
    assert out[0] == (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    assert out[1:] == b"\x01x"


def test_payload_types(impl: ModuleType) -> None:
    from array import array

    assert impl.encode_frame(1, bytearray(b"hi")) == b"\x81\x02hi"
    assert impl.encode_frame(1, memoryview(b"xhiy")[1:3]) == b"\x81\x02hi"
    items = array("H", [1, 2, 3])
    assert impl.encode_frame(2, items) == b"\x82\x06" + items.tobytes()
    assert impl.encode_frame(2, items, mask_key=KEY) == frame(2, items.tobytes(), key=KEY)
    assert impl.encode_frame(2, b"abc", mask_key=bytearray(KEY)) == frame(2, b"abc", key=KEY)


@pytest.mark.parametrize("opcode", [-1, 16, 255, 2**70, -(2**70)])
def test_opcode_range(impl: ModuleType, opcode: int) -> None:
    with pytest.raises(ValueError, match=r"^opcode must be 0\.\.15$"):
        impl.encode_frame(opcode, b"")


def test_int_like_opcodes(impl: ModuleType) -> None:
    import enum

    class Op(enum.IntEnum):
        TEXT = 1

    assert impl.encode_frame(Op.TEXT, b"a") == b"\x81\x01a"
    assert impl.encode_frame(True, b"a") == b"\x81\x01a"
    with pytest.raises(TypeError):
        impl.encode_frame(1.0, b"a")


@pytest.mark.parametrize("key", [b"", b"abc", b"abcde"])
def test_bad_key(impl: ModuleType, key: bytes) -> None:
    with pytest.raises(ValueError, match="^mask key must be exactly 4 bytes$"):
        impl.encode_frame(1, b"x", mask_key=key)
