"""XOR masking: every length class, alignment, key phase and kernel, in both cores.

The reference here is written independently of both cores (one big-integer XOR per buffer).
"""

from __future__ import annotations

import itertools
import os
from types import ModuleType

import pytest

KEY = b"\x37\xfa\x21\x3d"
LENGTHS = [
    0,
    1,
    3,
    4,
    7,
    8,
    15,
    16,
    31,
    32,
    63,
    64,
    65,
    125,
    126,
    127,
    255,
    256,
    1023,
    1024,
    1025,
    4099,
    65535,
    65536,
]


def reference(data: bytes, key: bytes, phase: int = 0) -> bytes:
    n = len(data)
    if n == 0:
        return b""
    stream = (key[phase % 4 :] + key[: phase % 4]) * (n // 4 + 1)
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream[:n], "big")).to_bytes(n, "big")


@pytest.mark.parametrize("n", LENGTHS)
def test_mask_matches_reference(impl: ModuleType, n: int) -> None:
    data = os.urandom(n)
    out = impl.mask(data, KEY)
    assert type(out) is bytes
    assert out == reference(data, KEY)
    assert impl.mask(out, KEY) == data


def test_mask_16_mib(impl: ModuleType) -> None:
    data = os.urandom(16 << 20)
    out = impl.mask(data, KEY)
    assert out == reference(data, KEY)
    buf = bytearray(data)
    impl.mask_inplace(buf, KEY, 1)
    assert buf == reference(data, KEY, 1)


@pytest.mark.parametrize("n", [1, 3, 125, 126, 1000, 65536])
@pytest.mark.parametrize("phase", [0, 1, 2, 3, 4, 7, -1, -6, 2**70 + 2])
def test_phase_rotates_key(impl: ModuleType, n: int, phase: int) -> None:
    data = os.urandom(n)
    assert impl.mask(data, KEY, phase) == reference(data, KEY, phase % 4)


def test_chunked_masking_with_phase_equals_whole(impl: ModuleType) -> None:
    data = os.urandom(5000)
    whole = impl.mask(data, KEY)
    cuts = [0, 1, 4, 7, 70, 133, 1000, 1001, 4093, 5000]
    pieces = b"".join(impl.mask(data[a:b], KEY, a) for a, b in itertools.pairwise(cuts))
    assert pieces == whole
    buf = bytearray(data)
    for a, b in itertools.pairwise(cuts):
        impl.mask_inplace(memoryview(buf)[a:b], KEY, a)
    assert buf == whole


@pytest.mark.parametrize("n", [0, 1, 3, 125, 126, 300, 65535, 65536])
@pytest.mark.parametrize("offset", range(9))
def test_unaligned_views(impl: ModuleType, n: int, offset: int) -> None:
    data = os.urandom(n + 16)
    view = memoryview(data)[offset : offset + n]
    assert impl.mask(view, KEY, offset) == reference(bytes(view), KEY, offset)
    buf = bytearray(data)
    impl.mask_inplace(memoryview(buf)[offset : offset + n], KEY, offset)
    assert buf[:offset] == data[:offset], "bytes before the view must not change"
    assert buf[offset + n :] == data[offset + n :], "bytes after the view must not change"
    assert buf[offset : offset + n] == reference(bytes(view), KEY, offset)


def test_accepts_bytes_like(impl: ModuleType) -> None:
    data = b"hello, world"
    expected = reference(data, KEY)
    assert impl.mask(bytearray(data), KEY) == expected
    assert impl.mask(memoryview(data), KEY) == expected
    assert impl.mask(data, bytearray(KEY)) == expected
    assert impl.mask(data, memoryview(KEY), 0) == expected
    assert impl.mask(data, memoryview(KEY), 2) == reference(data, KEY, 2)


def test_multibyte_items_mask_as_raw_bytes(impl: ModuleType) -> None:
    from array import array

    items = array("H", range(100))
    assert impl.mask(items, KEY) == reference(items.tobytes(), KEY)
    impl.mask_inplace(items, KEY)
    assert items.tobytes() == reference(array("H", range(100)).tobytes(), KEY)


def test_mask_inplace_returns_none_and_masks(impl: ModuleType) -> None:
    buf = bytearray(b"abcdefgh")
    assert impl.mask_inplace(buf, KEY, 3) is None
    assert buf == reference(b"abcdefgh", KEY, 3)
    empty = bytearray()
    assert impl.mask_inplace(empty, KEY) is None
    assert empty == b""


@pytest.mark.parametrize("buf", [b"abcd", memoryview(b"abcd"), memoryview(bytearray(b"abcd")).toreadonly()])
def test_mask_inplace_refuses_read_only(impl: ModuleType, buf: object) -> None:
    with pytest.raises(TypeError, match="^mask_inplace needs a writable buffer$"):
        impl.mask_inplace(buf, KEY)


@pytest.mark.parametrize("key", [b"", b"abc", b"abcde", bytearray(5)])
def test_key_must_be_four_bytes(impl: ModuleType, key: bytes) -> None:
    with pytest.raises(ValueError, match="^mask key must be exactly 4 bytes$"):
        impl.mask(b"data", key)
    with pytest.raises(ValueError, match="^mask key must be exactly 4 bytes$"):
        impl.mask(b"", key)
    with pytest.raises(ValueError, match="^mask key must be exactly 4 bytes$"):
        impl.mask_inplace(bytearray(b"data"), key)


def test_big_masks_release_the_gil_safely(impl: ModuleType) -> None:
    import threading

    data = os.urandom(4 << 20)
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(impl.mask(data, KEY))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [reference(data, KEY)] * 4


def kernels(speedups: ModuleType) -> list[str]:
    names = []
    for name in ("word", "sse2", "avx2", "avx512"):
        try:
            speedups._select_kernels(name)
        except ValueError:
            continue
        names.append(name)
    speedups._select_kernels("best")
    return names


def test_every_kernel(speedups: ModuleType) -> None:
    """Each SIMD kernel the CPU has, over lengths, alignments and phases around its block sizes."""
    names = kernels(speedups)
    assert "word" in names
    base = os.urandom(70000)
    try:
        for name in names:
            speedups._select_kernels(name)
            for n in [
                0,
                1,
                15,
                16,
                17,
                31,
                32,
                33,
                63,
                64,
                65,
                127,
                128,
                129,
                255,
                256,
                257,
                511,
                512,
                513,
                1023,
                1024,
                1025,
                1100,
                65536,
            ]:
                for offset in (0, 1, 5, 31, 33, 63):
                    for phase in (0, 1, 2, 3):
                        src = base[offset : offset + n]
                        want = reference(src, KEY, phase)
                        assert speedups.mask(memoryview(base)[offset : offset + n], KEY, phase) == want, (
                            name,
                            n,
                            offset,
                            phase,
                        )
                        buf = bytearray(base[: n + 80])
                        speedups.mask_inplace(memoryview(buf)[offset : offset + n], KEY, phase)
                        assert buf[offset : offset + n] == want, (name, n, offset, phase)
                        assert (
                            buf[:offset] == base[:offset] and buf[offset + n :] == base[offset + n : n + 80]
                        )
    finally:
        speedups._select_kernels("best")


def test_unknown_kernel_is_refused(speedups: ModuleType) -> None:
    with pytest.raises(ValueError):
        speedups._select_kernels("avx9000")
    assert speedups._select_kernels("best")[0] in {"word", "sse2", "avx2", "avx512"}
