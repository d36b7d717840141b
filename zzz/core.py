"""The one place that chooses the compiled byte core (``zzz._speedups``) or its pure-Python twin.

Set ``ZZZ_NO_EXTENSIONS`` to a true value (1, true, yes, on) to force the twin. The byte core is
masking, UTF-8, the frame reader, the encoder and the outbox buffer; the per-read loop on top of
it lives in the I/O layer (``zzz.readloop``, which follows ``IMPLEMENTATION``).
"""

from __future__ import annotations

import os

__all__ = [
    "IMPLEMENTATION",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "Binary",
    "FrameReader",
    "Outbox",
    "Text",
    "Utf8Validator",
    "encode_frame",
    "mask",
    "mask_inplace",
    "validate_utf8",
]


def _extensions_disabled() -> bool:
    return os.environ.get("ZZZ_NO_EXTENSIONS", "").strip().lower() in {"1", "true", "yes", "on"}


if _extensions_disabled():
    from zzz import _purepy as _impl

    IMPLEMENTATION = "python"
else:
    try:
        from zzz import _speedups as _impl  # type: ignore[no-redef]

        IMPLEMENTATION = "cython"
    except ImportError:
        from zzz import _purepy as _impl

        IMPLEMENTATION = "python"

OP_CONT = _impl.OP_CONT
OP_TEXT = _impl.OP_TEXT
OP_BINARY = _impl.OP_BINARY
OP_CLOSE = _impl.OP_CLOSE
OP_PING = _impl.OP_PING
OP_PONG = _impl.OP_PONG
mask = _impl.mask
mask_inplace = _impl.mask_inplace
validate_utf8 = _impl.validate_utf8
Utf8Validator = _impl.Utf8Validator
FrameReader = _impl.FrameReader
encode_frame = _impl.encode_frame
Text = _impl.Text
Binary = _impl.Binary
Outbox = _impl.Outbox
