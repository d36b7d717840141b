"""The fan-out ceiling: a uvloop server with no WebSocket library that writes each turn's frames once.

It does the least a WebSocket broadcast server can: the opening handshake by hand, unmasking of
the client's text frames, and for every text message one pre-encoded server frame. The frames of
one loop turn (everything the publisher's reads brought in) are joined and written to every
connection once, at the end of the turn (``loop.call_soon`` runs after the turn's I/O callbacks):
one ``transport.write`` per receiver per turn, whatever the number of messages. No per-receiver
Python work beyond that call, no checks a real server must make (UTF-8, limits, close
handshake): an upper bound, not a server to use.

Every path is the broadcast path. With ``--compression`` a permessage-deflate offer is answered
with ``server_no_context_takeover`` and each message is compressed once for every receiver that
negotiated it (RFC 7692 §7.1.1.1: without context takeover every compressed message stands alone).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import zlib

import uvloop
from common import parse_args

__all__ = ["FanOut", "Hub", "main"]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TAIL = b"\x00\x00\xff\xff"


def header(first: int, n: int) -> bytes:
    """A server frame header (no mask) for a payload of ``n`` bytes."""
    if n < 126:
        return bytes((first, n))
    if n < 65536:
        return bytes((first, 126)) + n.to_bytes(2, "big")
    return bytes((first, 127)) + n.to_bytes(8, "big")


def unmask(key: bytes, data: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``key`` repeated (one big-integer XOR: no per-byte loop)."""
    n = len(data)
    if not n:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


class Hub:
    """The members and the frames queued in this loop turn."""

    def __init__(self, loop: asyncio.AbstractEventLoop, compression: bool) -> None:
        self.loop = loop
        self.compression = compression
        self.members: set[FanOut] = set()
        self.plain: list[bytes] = []
        self.deflated: list[bytes] = []
        self.scheduled = False

    def publish(self, payload: bytes) -> None:
        """Queue one text message for everybody; the write happens at the end of the turn."""
        self.plain.append(header(0x81, len(payload)) + payload)
        if self.compression:
            comp = zlib.compressobj(wbits=-15)  # a fresh window per message: no context takeover
            data = comp.compress(payload) + comp.flush(zlib.Z_SYNC_FLUSH)
            if data.endswith(_TAIL):
                data = data[:-4]
            self.deflated.append(header(0xC1, len(data)) + data)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """One write per member of everything queued in this turn."""
        self.scheduled = False
        plain = b"".join(self.plain)
        deflated = b"".join(self.deflated)
        self.plain.clear()
        self.deflated.clear()
        for m in self.members:
            m.transport.write(deflated if m.deflate else plain)


class FanOut(asyncio.Protocol):
    """One connection: handshake, then every text message from it goes to the hub."""

    transport: asyncio.Transport

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.buf = bytearray()
        self.upgraded = False
        self.deflate = False
        self.inflater: zlib._Decompress | None = None
        self.fragments: list[bytes] = []
        self.in_text = False
        self.frag_rsv1 = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (uvloop's is not an asyncio.Transport subclass)."""
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        """Leave the hub."""
        self.hub.members.discard(self)

    def data_received(self, data: bytes) -> None:
        """Handshake first, then every complete frame."""
        self.buf += data
        if not self.upgraded and not self._handshake():
            return
        self._frames()

    def _handshake(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        del self.buf[: end + 4]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        key = headers.get("sec-websocket-key", "").encode()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        ext = ""
        if self.hub.compression and "permessage-deflate" in headers.get("sec-websocket-extensions", ""):
            self.deflate = True
            self.inflater = zlib.decompressobj(wbits=-15)
            ext = "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n"
        self.transport.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n{ext}\r\n"
            ).encode()
        )
        self.upgraded = True
        self.hub.members.add(self)
        return True

    def _frames(self) -> None:
        buf = self.buf
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            n = b1 & 127
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n = int.from_bytes(buf[2:4], "big")
                pos = 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n = int.from_bytes(buf[2:10], "big")
                pos = 10
            if len(buf) < pos + 4 + n:
                return
            key = bytes(buf[pos : pos + 4])
            payload = unmask(key, bytes(buf[pos + 4 : pos + 4 + n]))
            del buf[: pos + 4 + n]
            self._frame(b0, payload)

    def _frame(self, b0: int, payload: bytes) -> None:
        opcode = b0 & 15
        if opcode == 8:  # close: answer and go
            self.transport.write(header(0x88, len(payload[:2])) + payload[:2])
            self.transport.close()
            return
        if opcode == 9:
            self.transport.write(header(0x8A, len(payload)) + payload)
            return
        if opcode == 1:
            self.in_text = True
            self.frag_rsv1 = bool(b0 & 0x40)
        elif opcode != 0 or not self.in_text:  # binary messages and pongs are not broadcast
            return
        self.fragments.append(payload)
        if not b0 & 0x80:
            return
        message = b"".join(self.fragments)
        self.fragments.clear()
        self.in_text = False
        if self.frag_rsv1 and self.inflater is not None:
            message = self.inflater.decompress(message + _TAIL)
        self.hub.publish(message)


async def serve(host: str, port: int, compression: bool) -> None:
    """Listen until killed."""
    loop = asyncio.get_running_loop()
    hub = Hub(loop, compression)
    server = await loop.create_server(lambda: FanOut(hub), host, port, backlog=4096)
    await server.serve_forever()


def main() -> None:
    """Entry point: ``python server_raw_fanout.py --port P [--compression]``."""
    args = parse_args("raw uvloop broadcast: each turn's frames written once per receiver (the ceiling)")
    uvloop.run(serve(args.host, args.port, args.compression))


if __name__ == "__main__":
    main()
