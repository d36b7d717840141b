"""Edge cases of the ASGI contract with raw ASGI apps (issue 17, "Edge cases as uvicorn answers
them"), on each server of ``SERVERS``.

Where the issue lets zzz answer differently from uvicorn (an app that raises after accepting, the
code a heartbeat timeout gives the app) the expectation comes from the server's ``Expect`` entry.
"""

from __future__ import annotations

import socket
import time
import uuid
from typing import Any

import httpx
import pytest
from asgi_servers import HOST, Options, Running, ServerKind, ServerPool
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect


def ws_connect(server: Running, path: str, **kwargs: Any) -> ClientConnection:
    """A websockets client on ``path`` of ``server``, with bounded timeouts."""
    ws: ClientConnection = connect(f"{server.ws}{path}", open_timeout=20, close_timeout=10, **kwargs)
    return ws


def probe(server: Running, key: str, count: int = 1, timeout: float = 10.0) -> list[Any]:
    """What the app recorded under ``key``, waiting until there are ``count`` events."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.http, timeout=10) as c:
        while True:
            events: list[Any] = c.get(f"/_probe/{key}").json()
            if len(events) >= count or time.monotonic() > deadline:
                return events
            time.sleep(0.05)


# ---------------------------------------------------------------------------------------- WebSocket


def test_returning_without_accepting_is_http_500(raw_server: Running) -> None:
    with pytest.raises(InvalidStatus) as caught:
        ws_connect(raw_server, "/ws/no-accept")
    assert caught.value.response.status_code == 500


def test_close_before_accept_is_http_403(raw_server: Running) -> None:
    with pytest.raises(InvalidStatus) as caught:
        ws_connect(raw_server, "/ws/close-before-accept")
    assert caught.value.response.status_code == 403


def test_raw_denial_response_in_two_parts(raw_server: Running) -> None:
    with pytest.raises(InvalidStatus) as caught:
        ws_connect(raw_server, "/ws/deny")
    response = caught.value.response
    assert response.status_code == 403
    assert response.headers["x-denied"] == "raw"
    assert response.body == b"denied by raw app"  # both more_body parts, in order


def test_second_accept_raises_runtime_error_in_the_app(raw_server: Running) -> None:
    key = uuid.uuid4().hex
    with ws_connect(raw_server, f"/ws/double-accept?id={key}") as ws:
        assert ws.recv(timeout=10) == "RuntimeError"  # the app tells what its second accept raised
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert ws.close_code == 1000  # and the connection is still good enough to close properly
    assert probe(raw_server, f"double-accept:{key}") == ["RuntimeError"]


def test_send_after_close_raises_runtime_error_in_the_app(raw_server: Running) -> None:
    key = uuid.uuid4().hex
    with ws_connect(raw_server, f"/ws/send-after-close?id={key}") as ws, pytest.raises(ConnectionClosed):
        ws.recv(timeout=10)  # no "too late" message before the close
    assert ws.close_code == 1000 and ws.close_reason == "closing first"
    assert probe(raw_server, f"send-after-close:{key}") == ["RuntimeError"]


def test_app_raising_after_accept(raw_server: Running, server_kind: ServerKind) -> None:
    with ws_connect(raw_server, "/ws/raise-after-accept") as ws:
        assert ws.recv(timeout=10) == "about to fail"
        with pytest.raises(ConnectionClosed) as caught:
            ws.recv(timeout=10)
    expected = server_kind.expect.raise_after_accept_close
    if expected is None:  # uvicorn: the TCP connection is dropped, no close frame
        assert caught.value.rcvd is None
        assert ws.close_code == 1006
    else:  # zzz: a proper close with that code
        assert caught.value.rcvd is not None and caught.value.rcvd.code == expected


def test_raw_echo_records_disconnect_code(raw_server: Running) -> None:
    key = uuid.uuid4().hex
    with ws_connect(raw_server, f"/ws/echo?id={key}") as ws:
        ws.send(b"\x00bin")
        assert ws.recv(timeout=10) == b"\x00bin"
        ws.send("txt")
        assert ws.recv(timeout=10) == "txt"
        ws.close(4100, "done")
    assert probe(raw_server, f"ws-disconnect:{key}") == [{"code": 4100}]


def _raw_handshake(port: int, path: str) -> socket.socket:
    """Open a WebSocket with a raw socket that will never answer a ping."""
    sock = socket.create_connection((HOST, port), timeout=20)
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, f"closed during the handshake: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def test_heartbeat_timeout_reaches_the_app(servers: ServerPool, server_kind: ServerKind) -> None:
    server = servers.get(server_kind, "asgi_raw_app:app", Options(ping_interval=0.5, ping_timeout=0.5))
    key = uuid.uuid4().hex
    sock = _raw_handshake(server.port, f"/ws/echo?id={key}")
    try:
        # The client reads nothing and sends no pong; within a few intervals the server gives up.
        events = probe(server, f"ws-disconnect:{key}", timeout=20)
    finally:
        sock.close()
    assert events == [{"code": server_kind.expect.heartbeat_disconnect_code}]


# ---------------------------------------------------------------------------------------- HTTP


def test_body_after_response_complete_raises_runtime_error(raw_server: Running) -> None:
    key = uuid.uuid4().hex
    with httpx.Client(base_url=raw_server.http, timeout=20) as c:
        r = c.get("/body-after-complete", params={"id": key})
        assert r.status_code == 200 and r.content == b"complete"
        # The extra body reached no one: the next response on this connection is intact.
        again = c.get("/anything")
        assert again.status_code == 200 and again.content == b"raw"
    assert probe(raw_server, f"body-after-complete:{key}") == ["RuntimeError"]


def test_app_raising_before_responding_is_http_500(raw_server: Running) -> None:
    with httpx.Client(base_url=raw_server.http, timeout=20) as c:
        r = c.get("/raise")
    assert r.status_code == 500


def test_response_in_more_body_parts(raw_server: Running) -> None:
    with httpx.Client(base_url=raw_server.http, timeout=20) as c:
        r = c.get("/chunks")
    assert r.status_code == 200
    assert r.headers.get("transfer-encoding") == "chunked"
    assert r.content == b"one,two,three"


def test_http_disconnect_reaches_the_app(raw_server: Running) -> None:
    key = uuid.uuid4().hex
    with socket.create_connection((HOST, raw_server.port), timeout=20) as sock:
        sock.sendall(
            f"POST /disconnect?id={key} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc".encode()
        )
        assert probe(raw_server, f"disconnect:{key}") == ["waiting"]  # body read, no response yet
    # The client went away: the app's next receive() returns http.disconnect.
    assert probe(raw_server, f"disconnect:{key}", count=2) == ["waiting", "http.disconnect"]
