"""WebSockets under ASGI: the FastAPI and Starlette apps, served by each server of ``SERVERS``,
with the websockets client.

Covers issue 17's ``websocket`` scope: accept with subprotocol and headers, text and bytes both
ways, permessage-deflate, close with code and reason (either side first), the code the app gets
in ``websocket.disconnect``, denial with the app's own 403 (``websocket.http.response``), the
scope fields and lifespan ``state``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

import httpx
import pytest
from asgi_servers import HOST, Running
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect


def ws_connect(server: Running, path: str, **kwargs: Any) -> ClientConnection:
    """A websockets client on ``path`` of ``server``, with bounded timeouts."""
    ws: ClientConnection = connect(
        f"{server.ws}{path}", open_timeout=20, close_timeout=10, max_size=32 * 2**20, **kwargs
    )
    return ws


def probe(server: Running, key: str, timeout: float = 10.0) -> list[Any]:
    """What the app recorded under ``key``, waiting until it recorded something."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.http, timeout=10) as c:
        while True:
            events: list[Any] = c.get(f"/_probe/{key}").json()
            if events or time.monotonic() > deadline:
                return events
            time.sleep(0.05)


def test_echo_text_and_bytes(framework_server: Running, framework: str) -> None:
    with ws_connect(framework_server, "/ws/echo") as ws:
        assert ws.response is not None
        assert ws.response.headers["x-accepted"] == framework  # the app's accept headers
        for message in ("hello", "", "ünïcødé ☃ 🎉", b"\x00\x01\xff", b"", os.urandom(70_000)):
            ws.send(message)
            got = ws.recv(timeout=10)
            assert type(got) is type(message)
            assert got == message


def test_large_message_echo(framework_server: Running) -> None:
    data = os.urandom(4 * 2**20)
    with ws_connect(framework_server, "/ws/echo") as ws:
        ws.send(data)
        assert ws.recv(timeout=30) == data


def test_permessage_deflate_negotiated_and_used(framework_server: Running) -> None:
    text = json.dumps([{"user": "alice", "text": "compress me " * 20}] * 50)
    with ws_connect(framework_server, "/ws/echo", compression="deflate") as ws:
        assert ws.response is not None
        assert "permessage-deflate" in ws.response.headers.get("sec-websocket-extensions", "")
        ws.send(text)
        assert ws.recv(timeout=10) == text


def test_no_compression_when_not_offered(framework_server: Running) -> None:
    with ws_connect(framework_server, "/ws/echo", compression=None) as ws:
        assert ws.response is not None
        assert "sec-websocket-extensions" not in ws.response.headers
        ws.send("plain")
        assert ws.recv(timeout=10) == "plain"


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [(["chat.v1", "chat.v2"], "chat.v2"), (["other", "chat.v1"], "chat.v1"), (["other"], None), (None, None)],
)
def test_subprotocol_negotiation(
    framework_server: Running, offered: list[str] | None, chosen: str | None
) -> None:
    with ws_connect(framework_server, "/ws/echo", subprotocols=offered) as ws:
        assert ws.subprotocol == chosen
        assert ws.response is not None
        assert ws.response.headers.get("sec-websocket-protocol") == chosen
        ws.send("scope")
        assert json.loads(ws.recv(timeout=10))["subprotocols"] == (offered or [])


def test_scope_and_state(framework_server: Running) -> None:
    with ws_connect(framework_server, "/ws/echo?x=1", additional_headers={"X-Test": "ws"}) as ws:
        ws.send("scope")
        scope = json.loads(ws.recv(timeout=10))
        ws.send("state")
        state = str(ws.recv(timeout=10))
    assert scope["type"] == "websocket"
    assert scope["asgi_version"] == "3.0"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/ws/echo"
    assert scope["raw_path"] == "/ws/echo"
    assert scope["query_string"] == "x=1" and scope["query_string_is_bytes"]
    assert scope["root_path"] == ""
    assert scope["server"] == [HOST, framework_server.port]
    assert scope["client"][0] == HOST
    assert scope["headers_are_bytes"] and scope["header_names_lower"]
    assert scope["x_test"] == ["ws"]
    assert state.startswith("started:") and int(state.split(":")[1]) in framework_server.pids()


def test_app_closes_with_code_and_reason(framework_server: Running) -> None:
    with ws_connect(framework_server, "/ws/echo") as ws:
        ws.send("close:4001:bye now ☃")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert ws.close_code == 4001
    assert ws.close_reason == "bye now ☃"


def test_server_initiated_close_after_a_message(framework_server: Running) -> None:
    with ws_connect(framework_server, "/ws/goodbye") as ws:
        assert ws.recv(timeout=10) == "goodbye"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert ws.close_code == 4000
    assert ws.close_reason == "server says bye"


@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (4002, "client leaves")])
def test_client_close_reaches_the_app_with_its_code(
    framework_server: Running, code: int, reason: str
) -> None:
    key = uuid.uuid4().hex
    with ws_connect(framework_server, f"/ws/echo?id={key}") as ws:
        ws.send("ping")
        assert ws.recv(timeout=10) == "ping"
        ws.close(code, reason)
    events = probe(framework_server, f"disconnect:{key}")
    assert [e["code"] for e in events] == [code]
    assert ws.close_code == code  # the server echoed the close with the client's code


def test_denial_with_the_apps_own_response(framework_server: Running, framework: str) -> None:
    with pytest.raises(InvalidStatus) as caught:
        ws_connect(framework_server, "/ws/deny")
    response = caught.value.response
    assert response.status_code == 403
    assert response.headers["x-denied"] == "yes"
    assert response.body == f"denied by {framework}".encode()


def test_unknown_websocket_path_is_refused(framework_server: Running) -> None:
    # Starlette/FastAPI close an unmatched WebSocket before accepting: the server answers 403.
    with pytest.raises(InvalidStatus) as caught:
        ws_connect(framework_server, "/ws/nowhere")
    assert caught.value.response.status_code == 403


def test_many_messages_in_flight_keep_their_order(framework_server: Running) -> None:
    with ws_connect(framework_server, "/ws/echo") as ws:
        for i in range(500):
            ws.send(f"m{i}")
        got = [ws.recv(timeout=10) for _ in range(500)]
    assert got == [f"m{i}" for i in range(500)]


def test_connection_closed_is_reported_to_a_blocked_reader(framework_server: Running) -> None:
    with ws_connect(framework_server, "/ws/echo") as ws:
        ws.send("close:1001:going away")
        with pytest.raises(ConnectionClosed) as caught:
            ws.recv(timeout=10)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1001
