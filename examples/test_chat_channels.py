"""How to test an app built on zzz: ``zzz.testing.serve`` runs it on a free port, and
``zzz.testing.ChannelClient`` talks to its Channels endpoint, here the rooms of chat_channels.py.

Run it with ``pytest examples/test_chat_channels.py`` (pytest and pytest-asyncio installed).
Each ``expect_...`` returns what it waited for, or fails the test with an ``AssertionError`` that
says what it waited for and what came instead.
"""

from __future__ import annotations

import pytest
from chat_channels import build_app  # examples/chat_channels.py, beside this file

import zzz.testing
from zzz.testing import ChannelClient

pytestmark = pytest.mark.asyncio


async def test_a_name_is_needed_to_join() -> None:
    async with zzz.testing.serve(build_app()) as srv, ChannelClient(srv.ws_url + "/socket") as client:
        reply = await client.join("room:lobby", {})
        assert reply == {
            "status": "error",
            "response": {"reason": "a name of 1 to 32 characters, please"},
        }


async def test_what_one_says_everyone_in_the_room_hears() -> None:
    async with zzz.testing.serve(build_app()) as srv:
        url = srv.ws_url + "/socket"
        async with ChannelClient(url) as ann, ChannelClient(url) as bob:
            assert (await ann.join("room:lobby", {"name": "ann"}))["status"] == "ok"
            assert (await bob.join("room:lobby", {"name": "bob"}))["status"] == "ok"
            # The channel pushes the room's presence to each new member.
            assert await bob.expect_push("room:lobby", "presence_state") == {}

            ref = ann.push("room:lobby", "say", {"text": "hi"})
            assert await ann.expect_reply(ref) == {"status": "ok", "response": {"ok": True}}
            for client in (ann, bob):  # the sender too: broadcast reaches every subscriber
                assert await client.expect_broadcast("room:lobby", "said") == {"name": "ann", "text": "hi"}


async def test_an_empty_message_is_refused_and_nobody_hears_it() -> None:
    async with zzz.testing.serve(build_app()) as srv:
        url = srv.ws_url + "/socket"
        async with ChannelClient(url) as ann, ChannelClient(url) as bob:
            await ann.join("room:lobby", {"name": "ann"})
            await bob.join("room:lobby", {"name": "bob"})
            ref = ann.push("room:lobby", "say", {"text": ""})
            assert await ann.expect_reply(ref) == {
                "status": "error",
                "response": {"reason": "nothing to say"},
            }
            # Expecting what must not happen: the AssertionError is the passing case.
            with pytest.raises(AssertionError, match="a broadcast of 'said' on 'room:lobby'"):
                await bob.expect_broadcast("room:lobby", "said", timeout=0.3)
