"""A deliberately misbehaving echo server, to prove the load client catches what it must.

``--fault`` picks the misbehaviour: ``flip`` (one payload byte changed every 7th message),
``opcode`` (binary sent back as text every 5th), ``nonminimal`` (a 16-bit length where 7 bits
fit), ``truncate`` (one byte short every 9th); and two legal ones the client must accept without
complaint: ``fragment`` (each echo split into three frames) and ``ping`` (a ping before every
10th echo).  Used by ``python bench/run.py --self-test``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import struct

from common import raise_nofile_limit

__all__ = ["FaultyEcho", "main"]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(first: int, payload: bytes, nonminimal: bool = False) -> bytes:
    """A server frame (unmasked); ``nonminimal`` uses a 16-bit length for a short payload."""
    n = len(payload)
    if n < 126 and not nonminimal:
        return struct.pack("!BB", first, n) + payload
    if n < 65536:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


class FaultyEcho(asyncio.Protocol):
    """Handshake, unmask, echo, with the chosen fault."""

    def __init__(self, fault: str) -> None:
        self.fault = fault
        self.buf = bytearray()
        self.upgraded = False
        self.count = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        """Parse what is complete; the load client never fragments, so frames are messages."""
        assert self.transport is not None
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[: end + 4]
            key = next(
                ln.split(":", 1)[1].strip()
                for ln in head.split("\r\n")
                if ln.lower().startswith("sec-websocket-key")
            )
            accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
            self.transport.write(
                (
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
                ).encode()
            )
            self.upgraded = True
        out = bytearray()
        while len(self.buf) >= 2:
            b0, b1 = self.buf[0], self.buf[1]
            n, off = b1 & 127, 2
            if n == 126:
                if len(self.buf) < 4:
                    break
                n, off = struct.unpack_from("!H", self.buf, 2)[0], 4
            elif n == 127:
                if len(self.buf) < 10:
                    break
                n, off = struct.unpack_from("!Q", self.buf, 2)[0], 10
            if len(self.buf) < off + 4 + n:
                break
            key = bytes(self.buf[off : off + 4])
            masked = bytes(self.buf[off + 4 : off + 4 + n])
            del self.buf[: off + 4 + n]
            mask = (key * (n // 4 + 1))[:n]
            payload = (int.from_bytes(masked, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")
            opcode = b0 & 15
            if opcode == 8:
                out += frame(0x88, payload[:2])
                continue
            if opcode not in (1, 2):
                continue
            self.count += 1
            out += self.reply(opcode, payload)
        if out:
            self.transport.write(bytes(out))

    def reply(self, opcode: int, payload: bytes) -> bytes:
        """The echo of one message, with the fault applied."""
        c, fault = self.count, self.fault
        if fault == "flip" and c % 7 == 0 and payload:
            i = len(payload) // 2
            payload = payload[:i] + bytes([payload[i] ^ 0x20]) + payload[i + 1 :]
        elif fault == "opcode" and c % 5 == 0 and opcode == 2:
            opcode = 1
        elif fault == "truncate" and c % 9 == 0 and payload:
            payload = payload[:-1]
        elif fault == "nonminimal" and len(payload) < 126:
            return frame(0x80 | opcode, payload, nonminimal=True)
        elif fault == "fragment" and len(payload) >= 3:
            a, b = len(payload) // 3, 2 * len(payload) // 3
            return frame(opcode, payload[:a]) + frame(0, payload[a:b]) + frame(0x80, payload[b:])
        elif fault == "ping" and c % 10 == 0:
            return frame(0x89, b"are you there") + frame(0x80 | opcode, payload)
        return frame(0x80 | opcode, payload)


async def serve(host: str, port: int, fault: str) -> None:
    """Listen until killed."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FaultyEcho(fault), host, port)
    await server.serve_forever()


def main() -> None:
    """Entry point: ``python server_faulty.py --port P --fault flip``."""
    parser = argparse.ArgumentParser(description="echo server with a chosen fault")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--fault",
        choices=("none", "flip", "opcode", "truncate", "nonminimal", "fragment", "ping"),
        default="none",
    )
    args = parser.parse_args()
    raise_nofile_limit()
    asyncio.run(serve(args.host, args.port, args.fault))


if __name__ == "__main__":
    main()
