"""How the C wire path and its Python reference are compared: by ``tests/channels/test_wire_c.py``
and by ``fuzz/fuzz_wire.py`` (which imports this after instrumenting ``wire``).
"""

from __future__ import annotations

import math
from typing import Any

from zzz.channels.wire import MalformedMessage

__all__ = ["outcome", "same"]


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 is not 1.0 nor True; -0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return math.copysign(1.0, a) == math.copysign(1.0, b) and (
            a == b or (math.isnan(a) and math.isnan(b))
        )
    return bool(a == b)


def outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    """``fn(*args)`` as ``("value", result)``, or the error it raised in a comparable form."""
    try:
        return ("value", fn(*args))
    except MalformedMessage as exc:
        return ("malformed", (exc.reason, exc.ref, exc.topic, exc.join_ref, exc.not_json, exc.array_form))
    except Exception as exc:  # noqa: BLE001 - the same exception type and message is what is compared
        return (type(exc).__name__, str(exc))
