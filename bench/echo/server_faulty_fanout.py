"""A deliberately misbehaving broadcast server, to prove the load client checks every delivery.

It speaks the three wires of the fan-out rows (``--wire``): plain WebSocket broadcast, Phoenix
Channels (join, ``pub`` broadcast as ``msg``, ``echo`` reply) and Socket.IO over Engine.IO v4
(open packet, namespace connect, ``pub`` emitted as ``msg``, ``echo`` acked), by hand, with the
chosen ``--fault`` applied to one receiver (the last to join) at every 30th message from the
30th on (``--meta`` gives every Phoenix broadcast a history position, ``"meta":{"offset":N,
"epoch":E}``, as zzz's topics with history do):

* faults the client must flag: ``flip`` (one character of the payload changed), ``drop`` (the
  delivery skipped), ``dup`` (delivered twice), ``swap`` (delivered after the next one);
* legal variations it must accept: ``none``, ``reencode`` (JSON written another way: spaces,
  ``\\uXXXX`` escapes for every non-ASCII character, ``\\/``; for the plain wire, which has no
  JSON, each delivery split into two continuation frames instead).

For request/response (``echo``) only ``flip`` applies (the reply's payload). Used by
``python bench/run.py --self-test``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
from typing import Any

from common import raise_nofile_limit

__all__ = ["FaultyFanOut", "main"]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
EVERY = 30
FAULTS = ("none", "reencode", "flip", "drop", "dup", "swap")


def frame(first: int, payload: bytes) -> bytes:
    """A server frame (unmasked)."""
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return bytes((first, 126)) + n.to_bytes(2, "big") + payload
    return bytes((first, 127)) + n.to_bytes(8, "big") + payload


def unmask(key: bytes, data: bytes) -> bytes:
    """XOR with the repeated 4-byte key."""
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little") if n else b""


def flip_text(text: str) -> str:
    """The same text with one ASCII letter of its body (or, without JSON, of its text) changed."""
    i = text.find("body")
    start = i + 4 if i >= 0 else 17  # past "round NNNNNNNNNN " on the plain wire
    for j in range(start, len(text)):
        if text[j].isascii() and text[j].isalpha():
            return text[:j] + ("x" if text[j] != "x" else "y") + text[j + 1 :]
    return text + "x"


class Hub:
    """Members and the fault schedule."""

    def __init__(self, wire: str, fault: str, meta: bool = False) -> None:
        self.wire = wire
        self.fault = fault
        self.meta = meta
        self.members: list[FaultyFanOut] = []
        self.held: tuple[FaultyFanOut, str] | None = None

    def encode(self, value: Any) -> str:
        """JSON as the wire would write it; ``reencode`` writes it the other legal ways."""
        if self.fault == "reencode":
            return json.dumps(value, ensure_ascii=True, separators=(", ", " : ")).replace("/", "\\/")
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    def publish(self, idx: int, text_for: Any) -> None:
        """Deliver message ``idx`` (``text_for()`` gives its text) to every member, with the fault."""
        victim = self.members[-1] if self.members else None
        faulty = idx >= EVERY and idx % EVERY == 0
        for m in self.members:
            text = text_for()
            if m is victim and faulty:
                if self.fault == "flip":
                    text = flip_text(text)
                elif self.fault == "drop":
                    continue
                elif self.fault == "dup":
                    m.send_text(text)
                elif self.fault == "swap":
                    self.held = (m, text)
                    continue
                elif self.fault == "reencode" and self.wire == "ws":
                    m.send_fragmented(text)
                    continue
            m.send_text(text)
            if self.held is not None and self.held[0] is m and not (m is victim and faulty):
                held, self.held = self.held, None
                m.send_text(held[1])


class FaultyFanOut(asyncio.Protocol):
    """One connection of any of the three wires."""

    transport: asyncio.Transport

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.buf = bytearray()
        self.upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        """Leave."""
        if self in self.hub.members:
            self.hub.members.remove(self)

    def send_text(self, text: str) -> None:
        """One text frame."""
        self.transport.write(frame(0x81, text.encode()))

    def send_fragmented(self, text: str) -> None:
        """The same message as two frames: text without FIN, then a final continuation."""
        data = text.encode()
        cut = len(data) // 2
        self.transport.write(frame(0x01, data[:cut]) + frame(0x80, data[cut:]))

    def data_received(self, data: bytes) -> None:
        """Handshake, then every complete frame."""
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
                if ln.lower().startswith("sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
            )
            self.upgraded = True
            if self.hub.wire == "ws":
                self.hub.members.append(self)
            elif self.hub.wire == "socketio":
                self.send_text(
                    '0{"sid":"s","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'
                )
        while len(self.buf) >= 6:
            n = self.buf[1] & 127
            pos = 2 if n < 126 else 4 if n == 126 else 10
            if n >= 126:
                if len(self.buf) < pos:
                    return
                n = int.from_bytes(self.buf[2:pos], "big")
            if len(self.buf) < pos + 4 + n:
                return
            op = self.buf[0] & 15
            payload = unmask(bytes(self.buf[pos : pos + 4]), bytes(self.buf[pos + 4 : pos + 4 + n]))
            del self.buf[: pos + 4 + n]
            if op == 8:
                self.transport.close()
                return
            if op == 1:
                self.message(payload.decode())

    def message(self, text: str) -> None:
        """One client text message on the chosen wire."""
        hub = self.hub
        if hub.wire == "ws":
            idx = int(text[6:16])
            hub.publish(idx, lambda: text)
        elif hub.wire == "phoenix":
            msg = json.loads(text)
            topic, event, payload, ref = msg["topic"], msg["event"], msg.get("payload"), msg.get("ref")
            if event == "phx_join":
                hub.members.append(self)
                reply = {"status": "ok", "response": {}}
                self.send_text(
                    hub.encode({"topic": topic, "event": "phx_reply", "payload": reply, "ref": ref})
                )
            elif event == "pub":
                out = {"topic": topic, "event": "msg", "payload": payload, "ref": None, "join_ref": None}
                if hub.meta:
                    out["meta"] = {"offset": payload["seq"] + 1, "epoch": "selftest-epoch"}
                hub.publish(payload["seq"], lambda: hub.encode(out))
            elif event == "echo":
                reply = {"status": "ok", "response": payload}
                text = hub.encode({"topic": topic, "event": "phx_reply", "payload": reply, "ref": ref})
                self.send_text(
                    flip_text(text) if hub.fault == "flip" and payload["seq"] % EVERY == 7 else text
                )
        else:
            if text == "40":
                hub.members.append(self)
                self.send_text('40{"sid":"n"}')
                return
            if not text.startswith("42"):
                return
            i = 2
            while text[i].isdigit():
                i += 1
            args = json.loads(text[i:])
            if args[0] == "pub":
                hub.publish(args[1]["seq"], lambda: "42" + hub.encode(["msg", args[1]]))
            elif args[0] == "echo":
                reply = "43" + text[2:i] + hub.encode([args[1]])
                self.send_text(
                    flip_text(reply) if hub.fault == "flip" and args[1]["seq"] % EVERY == 7 else reply
                )


async def serve(host: str, port: int, wire: str, fault: str, meta: bool) -> None:
    """Listen until killed."""
    loop = asyncio.get_running_loop()
    hub = Hub(wire, fault, meta)
    server = await loop.create_server(lambda: FaultyFanOut(hub), host, port)
    await server.serve_forever()


def main() -> None:
    """Entry point: ``python server_faulty_fanout.py --port P --wire W --fault F [--meta]``."""
    parser = argparse.ArgumentParser(description="faulty broadcast server (load client self-test)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--wire", choices=("ws", "phoenix", "socketio"), default="ws")
    parser.add_argument("--fault", choices=FAULTS, default="none")
    parser.add_argument("--meta", action="store_true", help="Phoenix broadcasts carry a history position")
    args = parser.parse_args()
    raise_nofile_limit()
    asyncio.run(serve(args.host, args.port, args.wire, args.fault, args.meta))


if __name__ == "__main__":
    main()
