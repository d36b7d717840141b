"""The one place that picks the per-read fast path's build, following ``zzz.core``: the compiled
``zzz._readloop_c`` over the compiled core, the text ``zzz._readloop`` over the twin. Its
``Counters`` (``zzz.metrics.Counters``) come from the same build, so the compiled loop adds to
their C fields.

Both are built from ``_readloop.py`` (the read loop, the send handle and ``broadcast``);
``IMPLEMENTATION`` says which one runs ("cython" or "python"). Should the compiled loop be
missing beside a compiled core (a partial build), the text runs over the compiled core too:
slower, never wrong, as both cores have the names it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zzz import core

__all__ = ["EARLY_FLUSH_SIZE", "IMPLEMENTATION", "Counters", "ReadLoop", "SendHandle", "Writer", "broadcast"]

if TYPE_CHECKING or core.IMPLEMENTATION == "python":
    from zzz._readloop import EARLY_FLUSH_SIZE, Counters, ReadLoop, SendHandle, Writer, broadcast

    IMPLEMENTATION = "python"
else:
    try:
        from zzz._readloop_c import EARLY_FLUSH_SIZE, Counters, ReadLoop, SendHandle, Writer, broadcast

        IMPLEMENTATION = "cython"
    except ImportError:
        from zzz._readloop import EARLY_FLUSH_SIZE, Counters, ReadLoop, SendHandle, Writer, broadcast

        IMPLEMENTATION = "python"
