"""Shared pieces of the atheris targets: import both cores, pick limits and chunkings from the
fuzzer's bytes, and describe an outcome (frames or the error) so two cores can be compared.
"""

from __future__ import annotations

import os
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

__all__ = ["ROOT", "chunks", "limit", "outcome"]


def limit(fdp: Any, choices: tuple[int | None, ...]) -> int | None:
    """One of ``choices`` (None = no limit), chosen by the fuzzer."""
    return choices[fdp.ConsumeIntInRange(0, len(choices) - 1)]


def chunks(fdp: Any, data: bytes, max_cuts: int = 12) -> list[bytes]:
    """Split ``data`` at fuzzer-chosen offsets (possibly into empty pieces)."""
    cuts = sorted(fdp.ConsumeIntInRange(0, len(data)) for _ in range(fdp.ConsumeIntInRange(0, max_cuts)))
    out = []
    start = 0
    for cut in cuts + [len(data)]:
        out.append(data[start:cut])
        start = cut
    return out


def plain(item: Any) -> Any:
    """A reader's item in a form both cores share: each core has its own Text/Binary classes."""
    kind = type(item).__name__
    return (kind, item.data) if kind in ("Text", "Binary") else item


def outcome(fn: Any, *args: Any) -> tuple[Any, ...]:
    """("ok", result) or ("error", exception type name, args, frames completed before it);
    lists of frames with their messages as ``plain`` tuples."""
    try:
        result = fn(*args)
    except Exception as exc:  # noqa: BLE001 - compared, not swallowed: the caller asserts on it
        frames = getattr(exc, "frames", None)
        return ("error", type(exc).__name__, exc.args, None if frames is None else [plain(f) for f in frames])
    return ("ok", [plain(f) for f in result] if isinstance(result, list) else result)
