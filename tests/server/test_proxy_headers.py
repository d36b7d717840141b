"""Proxy headers over real sockets: Request.client / Request.scheme, ws.remote_address / ws.scheme,
from trusted and untrusted peers, over TCP (IPv4 and IPv6) and a Unix socket."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import tempfile
from typing import Any

import pytest

import zzz
from zzz.http import Request

from .helpers import self_signed_cert


def who(request: Request) -> zzz.Response:
    client = request.client
    return zzz.Response(
        json.dumps(
            {
                "client": list(client) if isinstance(client, tuple) else client,
                "scheme": request.scheme,
                "remote": list(request.remote_address) if isinstance(request.remote_address, tuple) else None,
            }
        ),
        content_type="application/json",
    )


def on_open(ws: zzz.WebSocket) -> None:
    addr = ws.remote_address
    ws.send(json.dumps({"client": list(addr) if isinstance(addr, tuple) else addr, "scheme": ws.scheme}))


def build(**settings: Any) -> zzz.App:
    return zzz.App(
        [zzz.Router.get("/who", who), zzz.Router.ws("/ws", zzz.WsConfig(on_open=on_open))], **settings
    )


async def ask(port: int, headers: Any = (), host: str = "127.0.0.1") -> dict[str, Any]:
    """GET /who with ``headers``; the JSON answer."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        return await _ask(reader, writer, headers)
    finally:
        writer.close()


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: Any) -> dict[str, Any]:
    items = headers.items() if isinstance(headers, dict) else headers
    extra = "".join(f"{k}: {v}\r\n" for k, v in items)
    writer.write(f"GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return json.loads(body)  # type: ignore[no-any-return]


async def test_off_by_default_even_from_localhost() -> None:
    server = await build().start(port=0)
    try:
        got = await ask(server.port, {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
        assert got["client"][0] == "127.0.0.1" and got["client"] == got["remote"]
        assert got["scheme"] == "http"
    finally:
        await server.close()


async def test_trusted_peer_x_forwarded_for_and_proto() -> None:
    server = await build(proxy_headers=True).start(port=0)
    try:
        got = await ask(server.port, {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
        assert got["client"] == ["203.0.113.9", 0]
        assert got["scheme"] == "https"
        assert got["remote"][0] == "127.0.0.1"  # remote_address stays the TCP peer (the proxy)
        # Without headers: the peer and the connection's own scheme.
        plain = await ask(server.port)
        assert plain["client"] == plain["remote"] and plain["scheme"] == "http"
    finally:
        await server.close()


async def test_untrusted_peer_is_ignored() -> None:
    server = await build(proxy_headers=True, forwarded_allow_ips=["10.0.0.1", "192.168.0.0/16"]).start(port=0)
    try:
        got = await ask(
            server.port,
            {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "Forwarded": "for=198.51.100.2"},
        )
        assert got["client"][0] == "127.0.0.1" and got["scheme"] == "http"
    finally:
        await server.close()


async def test_cidr_and_star() -> None:
    for allow in (["127.0.0.0/8"], ["*"]):
        server = await build(proxy_headers=True, forwarded_allow_ips=allow).start(port=0)
        try:
            got = await ask(server.port, {"X-Forwarded-For": "203.0.113.9"})
            assert got["client"] == ["203.0.113.9", 0], allow
        finally:
            await server.close()


async def test_multi_hop_x_forwarded_for() -> None:
    server = await build(proxy_headers=True, forwarded_allow_ips=["127.0.0.1", "10.0.0.0/8"]).start(port=0)
    try:
        # 1.1.1.1 is what the client claimed; 203.0.113.9 is what the first trusted proxy saw.
        got = await ask(
            server.port, [("X-Forwarded-For", "1.1.1.1, 203.0.113.9"), ("X-Forwarded-For", "10.2.3.4")]
        )
        assert got["client"] == ["203.0.113.9", 0]
    finally:
        await server.close()


async def test_forwarded_header_wins_and_gives_ipv6_client_with_port() -> None:
    server = await build(proxy_headers=True).start(port=0)
    try:
        got = await ask(
            server.port,
            {"Forwarded": 'for="[2001:db8:cafe::17]:4711";proto=https', "X-Forwarded-For": "198.51.100.1"},
        )
        assert got == {"client": ["2001:db8:cafe::17", 4711], "scheme": "https", "remote": got["remote"]}
    finally:
        await server.close()


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-For": "not-an-ip"},
        {"Forwarded": 'for="203.0.113.9'},
        {"X-Forwarded-Proto": "gopher"},
        {"Forwarded": "for=203.0.113.9;for=198.51.100.1"},
    ],
)
async def test_malformed_headers_are_ignored(headers: dict[str, str]) -> None:
    server = await build(proxy_headers=True).start(port=0)
    try:
        got = await ask(server.port, headers)
        assert got["client"] == got["remote"] and got["scheme"] == "http"
    finally:
        await server.close()


async def test_ipv6_peer() -> None:
    for allow, trusted in ((["::1"], True), (["::/0"], True), (["127.0.0.1"], False)):
        server = await build(proxy_headers=True, forwarded_allow_ips=allow).start(host="::1", port=0)
        try:
            got = await ask(server.port, {"X-Forwarded-For": "2001:db8::5"}, host="::1")
            if trusted:
                assert got["client"] == ["2001:db8::5", 0], allow
            else:
                assert got["client"][0] == "::1", allow
        finally:
            await server.close()


async def test_websocket_remote_address_and_scheme() -> None:
    server = await build(proxy_headers=True).start(port=0)
    try:
        url = f"ws://127.0.0.1:{server.port}/ws"
        headers = {"X-Forwarded-For": "203.0.113.9, 127.0.0.1", "X-Forwarded-Proto": "https"}
        async with zzz.connect(url, extra_headers=headers) as ws:
            assert json.loads((await asyncio.wait_for(ws.recv(), 5)).data) == {
                "client": ["203.0.113.9", 0],
                "scheme": "wss",
            }
        async with zzz.connect(url, extra_headers={"Forwarded": "for=198.51.100.4;proto=wss"}) as ws:
            assert json.loads((await asyncio.wait_for(ws.recv(), 5)).data) == {
                "client": ["198.51.100.4", 0],
                "scheme": "wss",
            }
        async with zzz.connect(url) as ws:
            got = json.loads((await asyncio.wait_for(ws.recv(), 5)).data)
            assert got["client"][0] == "127.0.0.1" and got["scheme"] == "ws"
    finally:
        await server.close()


async def test_websocket_from_an_untrusted_peer() -> None:
    server = await build(proxy_headers=True, forwarded_allow_ips=["10.0.0.1"]).start(port=0)
    try:
        headers = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
        async with zzz.connect(f"ws://127.0.0.1:{server.port}/ws", extra_headers=headers) as ws:
            got = json.loads((await asyncio.wait_for(ws.recv(), 5)).data)
            assert got["client"][0] == "127.0.0.1" and got["scheme"] == "ws"
    finally:
        await server.close()


async def test_middleware_sees_the_client_before_the_upgrade() -> None:
    seen: list[Any] = []

    async def mw(request: Request, call_next: Any) -> Any:
        seen.append((request.client, request.scheme))
        return await call_next(request)

    app = zzz.App([zzz.Router.ws("/ws", zzz.WsConfig(on_open=on_open))], middleware=[mw], proxy_headers=True)
    server = await app.start(port=0)
    try:
        headers = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
        async with zzz.connect(f"ws://127.0.0.1:{server.port}/ws", extra_headers=headers) as ws:
            await asyncio.wait_for(ws.recv(), 5)
    finally:
        await server.close()
    assert seen == [(("203.0.113.9", 0), "https")]


async def test_a_unix_socket_peer_is_trusted() -> None:
    path = os.path.join(tempfile.mkdtemp(prefix="zzz-uds-"), "s")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    # Not listed: a Unix-socket peer is trusted whatever forwarded_allow_ips says.
    server = await build(proxy_headers=True, forwarded_allow_ips=["10.0.0.1"]).start(sock=sock)
    try:
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            got = await _ask(reader, writer, {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
        finally:
            writer.close()
        assert got["client"] == ["203.0.113.9", 0] and got["scheme"] == "https"
    finally:
        await server.close()
        os.unlink(path)
        os.rmdir(os.path.dirname(path))


def test_a_bad_allow_entry_is_refused_when_the_app_is_made() -> None:
    with pytest.raises(ValueError, match="forwarded_allow_ips: 'localhost'"):
        zzz.App([], proxy_headers=True, forwarded_allow_ips=["127.0.0.1", "localhost"])


async def test_the_connections_own_scheme_over_tls(tmp_path: Any) -> None:
    import ssl

    cert, key = self_signed_cert(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    # proxy_headers on, a trusted peer, no headers: the connection's own scheme.
    server = await build(proxy_headers=True).start(port=0, ssl=server_ctx)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=client_ctx)
        try:
            got = await _ask(reader, writer, {})
        finally:
            writer.close()
        assert got["scheme"] == "https"
        async with zzz.connect(f"wss://127.0.0.1:{server.port}/ws", ssl=client_ctx) as ws:
            assert json.loads((await asyncio.wait_for(ws.recv(), 5)).data)["scheme"] == "wss"
        # A trusted proxy that says http (TLS ended before it) is believed.
        async with zzz.connect(
            f"wss://127.0.0.1:{server.port}/ws", ssl=client_ctx, extra_headers={"X-Forwarded-Proto": "http"}
        ) as ws:
            assert json.loads((await asyncio.wait_for(ws.recv(), 5)).data)["scheme"] == "ws"
    finally:
        await server.close()
