"""zzz.testing over real sockets: serve's port and URLs and its shutdown, and ChannelClient's
answers and failures (each AssertionError names what was awaited)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

import zzz
import zzz.testing
from zzz.channels import ChannelConfig, ChannelDef, ChannelSocket, channel_routes
from zzz.testing import ChannelClient, serve


def shout(socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
    socket.broadcast(topic, "shout", payload)
    return {"done": True}


def whisper(socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
    socket.push(topic, "whisper", payload)
    return None


def bye(socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
    socket.close(4000, "bye")


def app() -> zzz.App:
    room = ChannelDef("room:*", handlers={"shout": shout, "whisper": whisper, "bye": bye})
    return zzz.App(
        [
            zzz.Router.get("/hi", lambda request: "hi"),
            *channel_routes("/socket", ChannelConfig(channels=[room])),
        ]
    )


async def test_serve_gives_a_port_and_urls_and_stops_the_server() -> None:
    async with serve(app()) as srv:
        assert srv.port > 0 and srv.host == "127.0.0.1"
        assert srv.url == f"http://127.0.0.1:{srv.port}" and srv.ws_url == f"ws://127.0.0.1:{srv.port}"
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(b"GET /hi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 5)).endswith(b"hi")
        writer.close()
        async with ChannelClient(srv.ws_url + "/socket") as client:
            await client.join("room:1")
        port = srv.port
    with pytest.raises(OSError):  # nothing listens once the block is left
        await asyncio.open_connection("127.0.0.1", port)


async def test_serve_on_ipv6() -> None:
    async with zzz.testing.serve(app(), host="::1") as srv:
        assert srv.ws_url == f"ws://[::1]:{srv.port}"
        async with ChannelClient(srv.ws_url + "/socket") as client:
            assert (await client.join("room:1"))["status"] == "ok"


async def test_push_reply_broadcast_and_push() -> None:
    async with serve(app()) as srv, ChannelClient(srv.ws_url + "/socket") as client:
        assert await client.join("room:1", {"x": 1}) == {"status": "ok", "response": {}}
        ref = client.push("room:1", "shout", {"n": 1})
        assert isinstance(ref, str)
        # Awaited in another order than they came: each expect takes its own message.
        assert await client.expect_broadcast("room:1", "shout") == {"n": 1}
        assert await client.expect_reply(ref) == {"status": "ok", "response": {"done": True}}
        client.push("room:1", "whisper", {"n": 2})
        assert await client.expect_push("room:1", "whisper") == {"n": 2}


async def test_a_push_is_not_a_broadcast_and_the_error_says_what_was_awaited() -> None:
    async with serve(app()) as srv, ChannelClient(srv.ws_url + "/socket", timeout=0.3) as client:
        await client.join("room:1")
        client.push("room:1", "whisper", {"n": 2})
        with pytest.raises(AssertionError) as info:
            await client.expect_broadcast("room:1", "whisper")
        message = str(info.value)
        assert "a broadcast of 'whisper' on 'room:1' within 0.3 s" in message
        assert "push 'room:1' 'whisper' {'n': 2}" in message  # what came instead
        # Still there for the right expectation.
        assert await client.expect_push("room:1", "whisper") == {"n": 2}
        with pytest.raises(AssertionError, match=re.escape("a reply to ref '99' within 0.1 s")):
            await client.expect_reply("99", timeout=0.1)
        with pytest.raises(AssertionError, match="a push of 'nothing' on 'room:1'"):
            await client.expect_push("room:1", "nothing")


async def test_a_closed_connection_ends_the_wait_at_once() -> None:
    async with serve(app()) as srv, ChannelClient(srv.ws_url + "/socket", timeout=30) as client:
        await client.join("room:1")
        client.push("room:1", "bye", {})
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(
            AssertionError, match=r"a push of 'x' on 'room:1', but the connection closed \(code 4000\)"
        ):
            await client.expect_push("room:1", "x")
        assert loop.time() - started < 10  # not the 30 s timeout
        assert client.closed and client.close_code == 4000


async def test_an_unjoined_topic_is_answered_as_phoenix_does() -> None:
    async with serve(app()) as srv, ChannelClient(srv.ws_url + "/socket") as client:
        ref = client.push("room:9", "shout", {})
        assert (await client.expect_reply(ref))["status"] == "error"


async def test_the_array_form_when_the_url_asks_for_vsn_2() -> None:
    async with serve(app()) as srv, ChannelClient(srv.ws_url + "/socket/websocket?vsn=2.0.0") as client:
        assert client.array_form
        assert (await client.join("room:1"))["status"] == "ok"
        ref = client.push("room:1", "shout", [1, 2])
        assert await client.expect_broadcast("room:1", "shout") == [1, 2]
        assert (await client.expect_reply(ref))["response"] == {"done": True}


def test_channel_client_needs_a_websocket_url() -> None:
    with pytest.raises(ValueError, match="ws:// or wss://"):
        ChannelClient("http://127.0.0.1:1/socket")
