"""Micro-benchmarks of the core: masking, UTF-8 validation and frame parsing, zzz against peers.

Run ``python bench/micro.py`` for a throughput table (GB/s, frames/s), or
``python -m pytest bench/micro.py`` for pytest-benchmark's own timing table. Never part of the
test run (it lives outside ``tests/``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zzz import _purepy

try:
    from zzz import _speedups
except ImportError:  # the table then says the extension is missing
    _speedups = None  # type: ignore[assignment]

__all__ = ["main"]

KEY = b"\x9a\x21\x7c\x03"
MASK_SIZES = [16, 125, 1 << 10, 64 << 10, 1 << 20, 16 << 20]
UTF8_SIZES = [125, 4 << 10, 1 << 20]
FRAME_COUNT = 10_000


def _sized(unit: str, n: int) -> bytes:
    """``n`` bytes of repeated ``unit`` text, cut back to a whole character."""
    raw = (unit * (n // len(unit.encode()) + 2)).encode()[:n]
    while True:
        try:
            raw.decode()
            return raw
        except UnicodeDecodeError:
            raw = raw[:-1]


MIXED_UNIT = "Grüße, señor! 日本語のテキスト 🎉🚀 naïve café — Ωμέγα. "
UTF8_INPUTS = {
    "ascii": {n: _sized("The quick brown fox jumps over the lazy dog. ", n) for n in UTF8_SIZES},
    "mixed": {n: _sized(MIXED_UNIT, n) for n in UTF8_SIZES},
}


# --- peers (each optional: a missing one is just absent from the table) ----------------------


# Each masking case is (name, mode, call) where call(src, buf) returns (function, args): the
# function is called directly by pytest-benchmark, with no Python wrapper between, so the figure
# is the library's cost plus one call.
_MaskCall = Callable[[bytes, bytearray], tuple[Callable[..., Any], tuple[Any, ...]]]


def _mask_cases() -> list[Any]:
    cases: list[Any] = []

    def add(name: str, mode: str, call: _MaskCall) -> None:
        cases.append(pytest.param(name, mode, call, id=f"{name}-{mode}"))

    for name, mod in _impls().items():
        add(name, "inplace", lambda src, buf, m=mod: (m.mask_inplace, (buf, KEY)))
        add(name, "copy", lambda src, buf, m=mod: (m.mask, (src, KEY)))
    try:
        from aiohttp._websocket.mask import _websocket_mask_cython

        add("aiohttp", "inplace", lambda src, buf: (_websocket_mask_cython, (KEY, buf)))
    except ImportError:
        pass
    try:
        from websockets.speedups import apply_mask

        add("websockets", "copy", lambda src, buf: (apply_mask, (src, KEY)))
    except ImportError:
        pass
    try:
        from wsaccel.xormask import XorMaskerSimple

        add("wsaccel", "copy", lambda src, buf: (XorMaskerSimple(KEY).process, (src,)))
    except ImportError:
        pass
    # The physical references: the same bytes moved (into place, or into a new object), nothing computed.
    add("memory copy", "inplace", lambda src, buf: (memoryview(buf).__setitem__, (slice(None), src)))
    add("memory copy", "copy", lambda src, buf: (bytearray, (src,)))
    return cases


def _impls() -> dict[str, Any]:
    impls: dict[str, Any] = {"zzz (python)": _purepy}
    if _speedups is not None:
        impls = {"zzz (cython)": _speedups, **impls}
    return impls


def _read_all(mod: Any, data: bytes) -> int:
    return len(mod.FrameReader().feed(data))


@pytest.mark.parametrize("size", MASK_SIZES)
@pytest.mark.parametrize("name, mode, call", _mask_cases())
def test_mask(benchmark: Any, name: str, mode: str, call: _MaskCall, size: int) -> None:
    src = os.urandom(size)
    buf = bytearray(src)
    benchmark.group = f"mask {mode} {size}"
    benchmark.extra_info.update(kind=f"mask {mode}", size=size, impl=name, work=size, unit="GB/s")
    fn, args = call(src, buf)
    out = benchmark(fn, *args)
    if mode == "copy":
        assert len(out) == size


def _utf8_cases() -> list[Any]:
    cases = []
    for name, mod in _impls().items():
        cases.append(pytest.param(name, mod.validate_utf8, id=name))  # called directly
        validator = mod.Utf8Validator()

        def incremental(data: bytes, v: Any = validator) -> bool:
            v.reset()
            return v.feed(data) == -1 and v.complete

        cases.append(pytest.param(f"{name} Utf8Validator", incremental, id=f"{name}-incremental"))
    try:
        from wsaccel.utf8validator import Utf8Validator as WsaccelValidator

        wv = WsaccelValidator()

        def wsaccel(data: bytes) -> Any:
            wv.reset()
            return wv.validate(data)

        cases.append(pytest.param("wsaccel", wsaccel, id="wsaccel"))
    except ImportError:
        pass
    cases.append(pytest.param("bytes.decode", bytes.decode, id="bytes.decode"))
    return cases


@pytest.mark.parametrize("size", UTF8_SIZES)
@pytest.mark.parametrize("text", ["ascii", "mixed"])
@pytest.mark.parametrize("name, fn", _utf8_cases())
def test_utf8(benchmark: Any, name: str, fn: Callable[[bytes], Any], text: str, size: int) -> None:
    data = UTF8_INPUTS[text][size]
    benchmark.group = f"utf8 {text} {size}"
    benchmark.extra_info.update(kind=f"utf8 {text}", size=size, impl=name, work=len(data), unit="GB/s")
    result = benchmark(fn, data)
    assert result in (-1, True) or isinstance(result, (str, tuple))


# --- frame parsing ------------------------------------------------------------------------------


def _stream(kind: str) -> tuple[bytes, int]:
    if kind == "text-32":
        payload, opcode = b"0123456789abcdefghijklmnopqrstuv", 1
    else:
        payload, opcode = os.urandom(1024), 2
    keys = [os.urandom(4) for _ in range(16)]
    frames = [_purepy.encode_frame(opcode, payload, mask_key=keys[i % 16]) for i in range(FRAME_COUNT)]
    return b"".join(frames), len(payload)


class _Paused:
    _reading_paused = False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _parsers() -> list[Any]:
    cases = []
    for name, mod in _impls().items():
        cases.append(pytest.param(name, functools.partial(_read_all, mod), id=name))
    try:
        from aiohttp._websocket.reader_c import WebSocketDataQueue, WebSocketReader

        loop = asyncio.new_event_loop()

        def aiohttp_reader(data: bytes) -> int:
            queue = WebSocketDataQueue(_Paused(), 1 << 30, loop=loop)
            WebSocketReader(queue, 0, False, True).feed_data(data)
            count = len(queue._buffer)
            queue._buffer.clear()
            return count

        cases.append(pytest.param("aiohttp", aiohttp_reader, id="aiohttp"))
    except ImportError:
        pass
    try:
        from websockets.protocol import Protocol, Side, State

        def websockets_reader(data: bytes) -> int:
            proto = Protocol(Side.SERVER, state=State.OPEN, max_size=None)
            proto.receive_data(data)
            return len(proto.events_received())

        cases.append(pytest.param("websockets", websockets_reader, id="websockets"))
    except ImportError:
        pass
    return cases


STREAMS: dict[str, tuple[bytes, int]] = {}


@pytest.mark.parametrize("kind", ["text-32", "binary-1k"])
@pytest.mark.parametrize("name, fn", _parsers())
def test_parse(benchmark: Any, name: str, fn: Callable[[bytes], int], kind: str) -> None:
    if kind not in STREAMS:
        STREAMS[kind] = _stream(kind)
    data, _ = STREAMS[kind]
    benchmark.group = f"parse {kind}"
    benchmark.extra_info.update(
        kind=f"parse {kind} x{FRAME_COUNT}", size=len(data), impl=name, work=FRAME_COUNT, unit="frames/s"
    )
    assert benchmark(fn, data) == FRAME_COUNT


# --- report ---------------------------------------------------------------------------------------


def _fmt(value: float, unit: str) -> str:
    if unit == "frames/s":
        return f"{value / 1e6:.2f} M"
    return f"{value / 1e9:.2f}" if value >= 1e8 else f"{value / 1e9:.3f}"


def _table(results: list[dict[str, Any]]) -> str:
    rows: dict[tuple[str, int], dict[str, float]] = {}
    units: dict[str, str] = {}
    impls: dict[str, list[str]] = {}
    for bench in results:
        info = bench["extra_info"]
        rate = info["work"] / bench["stats"]["median"]
        rows.setdefault((info["kind"], info["size"]), {})[info["impl"]] = rate
        units[info["kind"]] = info["unit"]
        impls.setdefault(info["kind"], [])
        if info["impl"] not in impls[info["kind"]]:
            impls[info["kind"]].append(info["impl"])
    out = []
    for kind, names in impls.items():
        unit = units[kind]
        out.append(f"\n**{kind}** ({unit}, median)\n")
        out.append("| size | " + " | ".join(names) + " |")
        out.append("|---:|" + "---:|" * len(names))
        for (k, size), rates in sorted(rows.items(), key=lambda kv: kv[0][1]):
            if k != kind:
                continue
            label = size if unit == "frames/s" else _human(size)
            out.append(
                f"| {label} | "
                + " | ".join(_fmt(rates[n], unit) if n in rates else "–" for n in names)
                + " |"
            )
    return "\n".join(out)


def _human(n: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def main() -> int:
    """Run the benchmarks and print a Markdown table of throughputs."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-k", default=None, help="pytest -k expression to select benchmarks")
    parser.add_argument("--max-time", default="0.5", help="seconds per benchmark (pytest-benchmark)")
    parser.add_argument("--json", default=None, help="keep pytest-benchmark's JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.json or Path(tmp) / "micro.json")
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            str(Path(__file__)),
            "-q",
            "-p",
            "no:cacheprovider",
            "--benchmark-only",
            f"--benchmark-json={path}",
            f"--benchmark-max-time={args.max_time}",
            # Rounds of at least 0.2 ms, so that a round is many calls and the timer's own cost
            # (about 100 ns) does not swamp a 20 ns call.
            "--benchmark-min-time=0.0002",
            "--benchmark-warmup=on",
            "--benchmark-disable-gc",
            "--benchmark-columns=median,iqr,rounds",
            "-o",
            "addopts=",
            "--timeout=0",
        ]
        if args.k:
            cmd += ["-k", args.k]
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, check=False)
        if proc.returncode != 0 or not path.exists():
            print("benchmark run failed", file=sys.stderr)
            return 1
        results = json.loads(path.read_text())["benchmarks"]
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    kernels = _speedups._select_kernels() if _speedups is not None else ("-", "-")
    print(
        f"{datetime.date.today()}, {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"zzz kernels: mask {kernels[0]}, ASCII {kernels[1]}"
    )
    print(f"command: python bench/micro.py{' -k ' + repr(args.k) if args.k else ''}")
    print(_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
