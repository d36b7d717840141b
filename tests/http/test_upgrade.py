"""zzz.upgrade, without a loop or a socket: the checks before middleware, the endpoint after it."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from zzz import handshake, upgrade
from zzz.http import Request
from zzz.settings import Settings
from zzz.websocket import WsConfig

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def _request(extra: Sequence[tuple[str, str]] = (), method: str = "GET") -> Request:
    headers = [
        ("Host", "h"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", KEY),
        ("Sec-WebSocket-Version", "13"),
        *extra,
    ]
    return Request(method, "/ws", headers=headers)


def test_check_returns_the_key_and_refuses_in_the_documented_order() -> None:
    assert upgrade.check(_request(), Settings()) == KEY
    strict = Settings(allowed_origins=["https://a.example"])
    assert upgrade.check(_request([("Origin", "HTTPS://A.example/")]), strict) == KEY
    with pytest.raises(handshake.HandshakeError) as info:
        upgrade.check(_request([("Origin", "https://b.example")]), strict)
    assert info.value.status == 403
    with pytest.raises(handshake.HandshakeError) as info:
        upgrade.check(_request(), strict)  # no Origin at all
    assert info.value.status == 403
    # The RFC 6455 checks come first: a bad version is a 426 even from a refused origin.
    with pytest.raises(handshake.HandshakeError) as info:
        upgrade.check(Request("GET", "/ws", headers=[("Host", "h"), ("Origin", "https://b.example")]), strict)
    assert info.value.status == 426


def test_accept_picks_the_servers_subprotocol_and_negotiates_deflate() -> None:
    offer = [("Sec-WebSocket-Protocol", "b, a"), ("Sec-WebSocket-Extensions", "permessage-deflate")]
    up = upgrade.accept(_request(offer), WsConfig(subprotocols=("a", "b")), KEY, Settings())
    assert (up.status, up.subprotocol, up.key) == (101, "a", KEY)
    assert up.ext_header is not None and up.ext_header.startswith("permessage-deflate")
    assert up.deflate is not None
    plain = upgrade.accept(_request(offer), WsConfig(), KEY, Settings(compression=False))
    assert (plain.subprotocol, plain.ext_header, plain.deflate) == (None, None, None)


def test_upgrade_response_encodes_the_101() -> None:
    up = upgrade.accept(
        _request([("Sec-WebSocket-Protocol", "chat")]), WsConfig(subprotocols=["chat"]), KEY, Settings()
    )
    head = up.encode()
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n") and head.endswith(b"\r\n\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head
    assert b"Sec-WebSocket-Protocol: chat\r\n" in head
