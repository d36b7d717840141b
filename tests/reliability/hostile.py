"""Tools for the hostile-input tests: blocking and bulk raw sockets, hand-made frames, deflate
bombs, and memory measurements of the in-process server (tracemalloc and RSS).

The server under test runs in the test's own process, so tracemalloc sees its allocations;
clients that must not disturb the measurement use plain sockets, which allocate next to nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import struct
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from typing import Any

from server.helpers import read_head, upgrade_request

import zzz
from zzz import core

__all__ = [
    "DEFLATE_OFFER",
    "Memory",
    "ask",
    "blocking_upgrade",
    "bomb",
    "compress_message",
    "cpu_seconds",
    "frame",
    "header",
    "read_frame_sync",
    "rss_kib",
    "sock_upgrade",
    "traced",
    "ws_app",
]

DEFLATE_OFFER = "Sec-WebSocket-Extensions: permessage-deflate\r\n"
TAIL = b"\x00\x00\xff\xff"


def ws_app(config: zzz.WsConfig, path: str = "/ws", **settings: Any) -> zzz.App:
    """One WebSocket route with the given callbacks and App settings."""
    return zzz.App([zzz.Router.ws(path, config)], **settings)


def frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, rsv1: bool = False, masked: bool = True
) -> bytes:
    """A whole client frame (masked unless told otherwise)."""
    return core.encode_frame(opcode, payload, fin, rsv1, os.urandom(4) if masked else None)


def header(b0: int, length: int, *, masked: bool = True) -> bytes:
    """Just a frame header with an arbitrary first byte and declared ``length`` (no payload)."""
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head = bytes((b0, mask_bit | length))
    elif length < 1 << 16:
        head = struct.pack("!BBH", b0, mask_bit | 126, length)
    else:
        head = struct.pack("!BBQ", b0, mask_bit | 127, length)
    return head + (b"\x01\x02\x03\x04" if masked else b"")


def compress_message(data: bytes, wbits: int = 15) -> bytes:
    """One message compressed as a fresh permessage-deflate stream (tail removed)."""
    enc = zlib.compressobj(9, zlib.DEFLATED, -wbits)
    out = enc.compress(data) + enc.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


_BOMBS: dict[int, bytes] = {}


def bomb(mib: int) -> bytes:
    """A raw deflate stream (tail removed) that inflates to ``mib`` MiB of zeros.

    Built from sync-flushed 1 MiB blocks, which repeat byte for byte once the window is full of
    zeros, so a 1 GiB bomb (about 1 MiB) takes milliseconds instead of compressing 1 GiB.
    """
    if mib not in _BOMBS:
        enc = zlib.compressobj(9, zlib.DEFLATED, -15)
        zeros = b"\x00" * (1 << 20)
        blocks = [enc.compress(zeros) + enc.flush(zlib.Z_SYNC_FLUSH) for _ in range(min(mib, 3))]
        body = b"".join(blocks[:2]) + blocks[-1] * max(mib - 2, 0) if mib > 2 else b"".join(blocks)
        assert body.endswith(TAIL)
        _BOMBS[mib] = body[:-4]
    return _BOMBS[mib]


def rss_kib() -> int:
    """Resident set size of this process, in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def cpu_seconds() -> float:
    """CPU time of this process: unlike the wall clock, barely moved by other busy processes."""
    return time.process_time()


class Memory:
    """Traced-memory readings inside a ``traced()`` block: ``growth()`` and ``peak_growth()``
    relative to the baseline taken when the block started (after a full collection)."""

    def __init__(self) -> None:
        gc.collect()
        self.base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()

    def growth(self) -> int:
        gc.collect()
        current, _ = tracemalloc.get_traced_memory()
        return current - self.base

    def peak_growth(self) -> int:
        _, peak = tracemalloc.get_traced_memory()
        return peak - self.base

    def rebase(self) -> None:
        gc.collect()
        self.base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()


@contextlib.contextmanager
def traced() -> Iterator[Memory]:
    """Trace Python-level allocations (zlib's too: it allocates through PyMem_RawMalloc)."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start(1)
    try:
        yield Memory()
    finally:
        if started:
            tracemalloc.stop()


# Blocking sockets: for clients run in a thread, whose sends allocate nothing in Python.


def blocking_upgrade(
    port: int, extra: str = "", path: str = "/ws", rcvbuf: int | None = None
) -> socket.socket:
    """Connect, upgrade and return a blocking socket (timeout 10 s) positioned after the 101 head."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(upgrade_request(path, extra=extra))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    status = int(head.split(b" ", 2)[1])
    if status != 101:
        raise ConnectionError(f"status {status}")
    return sock


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return bytes(buf)


def read_frame_sync(sock: socket.socket) -> tuple[int, bytes]:
    """Read one unmasked server frame from a blocking socket: (first byte, payload)."""
    b0, b1 = _recv_exactly(sock, 2)
    length = b1 & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", _recv_exactly(sock, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", _recv_exactly(sock, 8))
    return b0, _recv_exactly(sock, length)


# Non-blocking sockets driven by the running loop: many cheap clients.


async def sock_upgrade(port: int, extra: str = "", path: str = "/ws") -> socket.socket:
    """Connect and upgrade a non-blocking socket with the loop's sock_* calls."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, upgrade_request(path, extra=extra))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await loop.sock_recv(sock, 4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head[:40]
    return sock


async def ask(port: int, data: bytes, timeout: float = 5) -> tuple[int, dict[str, str], bytes]:
    """Send raw request bytes, return the response's (status, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await asyncio.wait_for(read_head(reader), timeout)
    finally:
        writer.close()
