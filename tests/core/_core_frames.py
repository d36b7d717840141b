"""Frame building for the core tests, independent of both cores' encoders.

Can write what an encoder never would: any opcode, reserved bits, non-minimal or lying lengths.
"""

from __future__ import annotations

import struct


def xor(data: bytes, key: bytes) -> bytes:
    n = len(data)
    if not n:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def header(
    opcode: int,
    length: int,
    *,
    fin: bool = True,
    rsv: int = 0,
    key: bytes | None = b"\x01\x02\x03\x04",
    width: int | None = None,
) -> bytes:
    """A frame header; ``width`` forces 7-bit (0), 16-bit (2) or 64-bit (8) length encoding."""
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if key is not None else 0
    if width is None:
        width = 0 if length < 126 else 2 if length < 0x10000 else 8
    if width == 0:
        head = bytes((b0, mask_bit | length))
    elif width == 2:
        head = struct.pack("!BBH", b0, mask_bit | 126, length)
    else:
        head = struct.pack("!BBQ", b0, mask_bit | 127, length)
    return head + (key or b"")


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    key: bytes | None = b"\x01\x02\x03\x04",
    width: int | None = None,
) -> bytes:
    """A whole frame carrying ``payload`` (masked with ``key`` unless it is None)."""
    body = payload if key is None else xor(payload, key)
    return header(opcode, len(payload), fin=fin, rsv=rsv, key=key, width=width) + body
