"""Helpers for the server tests: run an App on a free port, raw HTTP/WebSocket clients."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
from collections.abc import AsyncIterator
from typing import Any

import zzz

KEY = base64.b64encode(b"0123456789abcdef").decode()


@contextlib.asynccontextmanager
async def serve(app: zzz.App) -> AsyncIterator[zzz.Server]:
    server = await app.start(host="127.0.0.1", port=0)
    try:
        yield server
    finally:
        await server.close()


def url(server: zzz.Server, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


def upgrade_request(path: str = "/ws", *, extra: str = "", key: str = KEY, version: str = "13") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n{extra}\r\n"
    ).encode()


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Read an HTTP response head (and the body, by Content-Length when there is one)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = b""
    if "content-length" in headers and status != 101:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    return status, headers, body


async def raw_request(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await read_head(reader)
    finally:
        writer.close()


class RawClient:
    """A minimal WebSocket client over a StreamReader/Writer, for cases real clients won't do."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, path: str = "/ws", extra: str = "") -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(upgrade_request(path, extra=extra))
        status, _headers, _ = await read_head(reader)
        assert status == 101, status
        return cls(reader, writer)

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True, masked: bool = True) -> None:
        key = os.urandom(4) if masked else None
        self.writer.write(_encode(opcode, payload, fin, key))

    async def read_frame(self, timeout: float = 5) -> tuple[int, bytes]:
        head = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        length = head[1] & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        payload = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        return head[0] & 0x0F, payload

    async def read_close(self, timeout: float = 5) -> tuple[int, str]:
        """Skip data frames up to the close frame; return its code and reason."""
        while True:
            opcode, payload = await self.read_frame(timeout)
            if opcode == 8:
                code = int.from_bytes(payload[:2], "big") if payload else 1005
                return code, payload[2:].decode()

    async def at_eof(self, timeout: float = 5) -> bool:
        data = await asyncio.wait_for(self.reader.read(65536), timeout)
        while data:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
        return True

    def close(self) -> None:
        self.writer.close()


def _encode(opcode: int, payload: bytes, fin: bool, key: bytes | None) -> bytes:
    from zzz import core

    return core.encode_frame(opcode, payload, fin, False, key)


def recorder() -> tuple[dict[str, Any], zzz.WsConfig]:
    """An echo WsConfig that records what reached its callbacks."""
    seen: dict[str, Any] = {"open": 0, "messages": [], "close": [], "closed": asyncio.Event()}

    def on_open(ws: zzz.WebSocket) -> None:
        seen["open"] += 1

    def on_message(ws: zzz.WebSocket, msg: Any) -> None:
        seen["messages"].append(msg)
        match msg:
            case zzz.Text(text):
                ws.send(text)
            case zzz.Binary(data):
                ws.send_binary(data)

    def on_close(ws: zzz.WebSocket, code: int, reason: str) -> None:
        seen["close"].append((code, reason))
        seen["closed"].set()

    return seen, zzz.WsConfig(on_open=on_open, on_message=on_message, on_close=on_close)


def self_signed_cert(directory: Any, cert: str = "cert.pem", key: str = "key.pem") -> tuple[Any, Any]:
    """A throw-away certificate for 127.0.0.1 (openssl, valid one day) and its key, in ``directory``."""
    import subprocess

    cert_path, key_path = directory / cert, directory / key
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key_path), "-out", str(cert_path)],
        check=True,
        capture_output=True,
    )
    return cert_path, key_path
