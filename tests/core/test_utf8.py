"""UTF-8 validation: exact failure indices, state across calls, and CPython's decoder as oracle.

The oracle: ``bytes.decode`` fails with 'invalid start byte' at ``e.start``, 'invalid
continuation byte' at ``e.end``, and 'unexpected end of data' means a valid but cut prefix.
"""

from __future__ import annotations

import itertools
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def oracle(data: bytes) -> int | None:
    """Index of the first invalid byte; -1 when complete and valid; None when a cut valid prefix."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data":
            return None
        return exc.start if exc.reason == "invalid start byte" else exc.end
    return -1


def expected_validate(data: bytes) -> int:
    where = oracle(data)
    return len(data) if where is None else where


INVALID = [
    (b"\x80", 0),  # lone continuation
    (b"a\xbf", 1),
    (b"\xc0\x80", 0),  # overlong NUL (C0 is never valid)
    (b"\xc1\xbf", 0),
    (b"\xe0\x80\x80", 1),  # overlong 3-byte
    (b"\xe0\x9f\xbf", 1),
    (b"\xf0\x80\x80\x80", 1),  # overlong 4-byte
    (b"\xf0\x8f\xbf\xbf", 1),
    (b"\xed\xa0\x80", 1),  # U+D800
    (b"\xed\xbf\xbf", 1),  # U+DFFF
    (b"\xf4\x90\x80\x80", 1),  # U+110000
    (b"\xf5\x80\x80\x80", 0),
    (b"\xff", 0),
    (b"\xfe", 0),
    (b"\xc2A", 1),
    (b"\xe2\x82A", 2),
    (b"\xf0\x9f\x98A", 3),
    (b"abc\xe2\x28\xa1", 4),
    (b"\xf0\x9f\x98\x80\x80", 4),
]
VALID = [
    b"",
    b"plain ascii",
    "\u0080\u07ff\u0800\uffff\U00010000\U0010ffff".encode(),
    "\ud7ff\ue000".encode(),
    "héllo wörld, 日本語, 🎉🎉".encode(),
    b"\x00\x7f",
]
CUT = [b"\xc2", b"\xe2\x82", b"\xf0\x9f\x98", b"abc\xe0\xa0", b"\xed\x9f", b"\xf4\x8f\xbf"]


@pytest.mark.parametrize("data, where", INVALID)
def test_invalid_fails_at_the_first_bad_byte(impl: ModuleType, data: bytes, where: int) -> None:
    assert oracle(data) == where  # the table agrees with CPython
    assert impl.validate_utf8(data) == where
    assert impl.validate_utf8(bytearray(data)) == where
    assert impl.validate_utf8(memoryview(b"xx" + data)[2:]) == where
    v = impl.Utf8Validator()
    assert v.feed(data) == where
    assert not v.complete


@pytest.mark.parametrize("data", VALID)
def test_valid(impl: ModuleType, data: bytes) -> None:
    assert impl.validate_utf8(data) == -1
    v = impl.Utf8Validator()
    assert v.feed(data) == -1
    assert v.complete


@pytest.mark.parametrize("data", CUT)
def test_cut_prefix_is_valid_but_incomplete(impl: ModuleType, data: bytes) -> None:
    assert impl.validate_utf8(data) == len(data)
    v = impl.Utf8Validator()
    assert v.feed(data) == -1
    assert not v.complete


def test_state_carries_across_calls(impl: ModuleType) -> None:
    v = impl.Utf8Validator()
    emoji = "🎉".encode()
    for i, byte in enumerate(emoji):
        assert v.feed(emoji[i : i + 1]) == -1
        assert v.complete == (i == 3)
    assert v.feed(b"\xe2\x82") == -1
    assert v.feed(b"") == -1
    assert not v.complete
    assert v.feed(b"\xacabc") == -1
    assert v.complete


def test_failure_across_calls_indexes_the_current_chunk(impl: ModuleType) -> None:
    v = impl.Utf8Validator()
    assert v.feed(b"ok \xe2") == -1
    assert v.feed(b"A") == 0  # E2 must be followed by a continuation byte
    v = impl.Utf8Validator()
    assert v.feed(b"\xed") == -1
    assert v.feed(b"\xa0\x80") == 0  # surrogate: A0 after ED is the bad byte
    v = impl.Utf8Validator()
    assert v.feed(b"\xf0\x9f") == -1
    assert v.feed(b"\x98\x80xyz\xff") == 5


def test_failed_validator_stays_failed_until_reset(impl: ModuleType) -> None:
    v = impl.Utf8Validator()
    assert v.feed(b"ab\xff") == 2
    assert v.feed(b"fine") == 0
    assert v.feed(b"") == 0
    assert not v.complete
    v.reset()
    assert v.complete
    assert v.feed(b"fine") == -1
    v.feed(b"\xe2")
    v.reset()
    assert v.complete


@pytest.mark.parametrize("size", [1, 7, 8, 9, 31, 32, 33, 64, 127, 128, 129, 255, 256, 257, 1000, 4096])
def test_ascii_runs_of_every_size_find_the_bad_byte(impl: ModuleType, size: int) -> None:
    for where in sorted({0, 1, size // 2, size - 9, size - 8, size - 2, size - 1} - {-1} & set(range(size))):
        data = bytearray(b"a" * size)
        data[where] = 0xFF
        assert impl.validate_utf8(bytes(data)) == where
        data[where] = 0xC3  # valid lead byte followed by 'a' (or the end)
        assert impl.validate_utf8(bytes(data)) == min(size, where + 1)
    assert impl.validate_utf8(b"a" * size) == -1


BYTES = [
    0x00,
    0x41,
    0x7F,
    0x80,
    0x8F,
    0x90,
    0x9F,
    0xA0,
    0xBF,
    0xC0,
    0xC1,
    0xC2,
    0xDF,
    0xE0,
    0xE1,
    0xEC,
    0xED,
    0xEE,
    0xEF,
    0xF0,
    0xF1,
    0xF3,
    0xF4,
    0xF5,
    0xFF,
]


def test_every_boundary_sequence_up_to_four_bytes(impl: ModuleType) -> None:
    """Every sequence of up to 4 bytes from the boundary values of Table 3-7, against CPython."""
    validate = impl.validate_utf8
    for length in (1, 2, 3):
        for seq in itertools.product(BYTES, repeat=length):
            data = bytes(seq)
            assert validate(data) == expected_validate(data), data
    count = 0
    for seq in itertools.product(BYTES, repeat=4):
        if seq[0] < 0xE0:  # 1- and 2-byte leads are covered by the shorter products
            continue
        data = bytes(seq)
        count += 1
        assert validate(data) == expected_validate(data), data
    assert count > 100_000


def test_every_kernel(speedups: ModuleType) -> None:
    text = "ascii and more: héllo, 日本語, 🎉; ".encode() * 40
    try:
        for name in ("word", "avx2", "avx512"):
            try:
                speedups._select_kernels(name)
            except ValueError:
                continue
            for size in (0, 1, 63, 64, 65, 255, 256, 257, 1000):
                for where in range(0, size, max(1, size // 13)):
                    data = bytearray(b"z" * size)
                    data[where] = 0x80
                    assert speedups.validate_utf8(data) == where, (name, size, where)
            assert speedups.validate_utf8(text) == -1
            assert speedups.validate_utf8(text + b"\xf0\x9f") == len(text) + 2
    finally:
        speedups._select_kernels("best")


def test_odd_inputs_behave_like_the_twin(impl: ModuleType) -> None:
    with pytest.raises(TypeError):
        impl.validate_utf8("text")
    with pytest.raises(TypeError):
        impl.Utf8Validator().feed("text")
    from array import array

    assert impl.validate_utf8(array("H", [0xFFFF])) == 0
    assert impl.validate_utf8(memoryview(b"a\xffb")[::2]) == -1  # non-contiguous: bytes "ab"


# --- property-based: random valid and invalid text, split at random points -------------------

chunks_of_text = st.lists(
    st.one_of(
        st.text(max_size=30).map(lambda s: s.encode()),
        st.binary(max_size=8),
        st.sampled_from([b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\x80", b"\xe0\x80\x80", b"\xf0\x80"]),
        st.integers(0, 300).map(lambda n: b"a" * n),
    ),
    max_size=12,
).map(b"".join)


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=chunks_of_text, cuts=st.lists(st.integers(0, 400), max_size=6))
def test_incremental_matches_cpython(impl: ModuleType, data: bytes, cuts: list[int]) -> None:
    where = oracle(data)
    assert impl.validate_utf8(data) == (len(data) if where is None else where)
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    v = impl.Utf8Validator()
    failed_at = -1
    for a, b in itertools.pairwise(bounds):
        r = v.feed(data[a:b])
        if r >= 0:
            assert 0 <= r < b - a
            failed_at = a + r
            break
    if where is None:
        assert failed_at == -1 and not v.complete
    elif where == -1:
        assert failed_at == -1 and v.complete
    else:
        assert failed_at == where
        assert v.feed(b"more") == 0
