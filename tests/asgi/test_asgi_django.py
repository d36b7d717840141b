"""A Django Channels app (``apps/asgi_django_app.py``) on each server of ``SERVERS``: Django HTTP,
a sync and an async JSON consumer, a group through the in-memory channel layer, a refusal."""

from __future__ import annotations

import json
import os

import httpx
import pytest
from asgi_servers import Running, ServerKind, ServerPool
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect


@pytest.fixture
def django_server(servers: ServerPool, server_kind: ServerKind) -> Running:
    """The Channels app, served by the server under test."""
    return servers.get(server_kind, "asgi_django_app:app")


def test_django_view(django_server: Running) -> None:
    with httpx.Client(base_url=django_server.http, timeout=20) as c:
        r = c.get("/django/hello", params={"name": "pony"})
        missing = c.get("/django/nowhere")
    assert r.status_code == 200
    assert r.json()["hello"] == "pony"
    assert r.json()["pid"] in django_server.pids()  # answered by Django inside the server
    assert missing.status_code == 404


def test_sync_consumer_echo_and_close(django_server: Running) -> None:
    with connect(f"{django_server.ws}/ws/echo", open_timeout=20, close_timeout=10) as ws:
        ws.send("bonjour")
        assert ws.recv(timeout=10) == "bonjour"
        blob = os.urandom(10_000)
        ws.send(blob)
        assert ws.recv(timeout=10) == blob
        ws.send("close:4321")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert ws.close_code == 4321


def test_group_message_reaches_every_member(django_server: Running) -> None:
    url = f"{django_server.ws}/ws/room/lobby"
    with connect(url, open_timeout=20) as alice, connect(url, open_timeout=20) as bob:
        assert json.loads(alice.recv(timeout=10)) == {"joined": "room-lobby"}
        assert json.loads(bob.recv(timeout=10)) == {"joined": "room-lobby"}
        alice.send(json.dumps({"text": "hi bob"}))
        assert json.loads(bob.recv(timeout=10)) == {"message": {"text": "hi bob"}}
        assert json.loads(alice.recv(timeout=10)) == {"message": {"text": "hi bob"}}


def test_refusing_consumer_is_http_403(django_server: Running) -> None:
    with pytest.raises(InvalidStatus) as caught:
        connect(f"{django_server.ws}/ws/deny", open_timeout=20)
    assert caught.value.response.status_code == 403
