"""How ``PubSub._deliver`` fans a broadcast out: one ``zzz.broadcast`` call per group of subscribers
(wire form, skip threshold, passed as its ``skip_if_buffered_over``) from any thread (``zzz.broadcast``
hands it to the loop), and the groups made again whenever the subscribers change.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from tests.channels.fakes import FakeWebSocket
from zzz.channels import ChannelSocket, InMemoryPubSub
from zzz.channels import pubsub as pubsub_module

Call = tuple[int, list[Any], str]


@pytest.fixture
def skips() -> dict[int, int | None]:
    """id(ws) -> the skip_if_buffered_over of the last broadcast that reached it."""
    return {}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, skips: dict[int, int | None]) -> list[Call]:
    made: list[Call] = []

    def record(targets: list[Any], text: str, *, skip_if_buffered_over: int | None = None) -> int:
        made.append((threading.get_ident(), list(targets), text))
        for ws in targets:
            skips[id(ws)] = skip_if_buffered_over
        return len(targets)

    monkeypatch.setattr(pubsub_module, "broadcast", record)
    return made


def sockets(ps: InMemoryPubSub, n: int) -> list[ChannelSocket]:
    """``n`` subscribers of ``t``, every other one in the array form, standing for zzz.WebSockets."""
    socks = [ChannelSocket(FakeWebSocket(), ps, array_form=i % 2 == 1) for i in range(n)]
    for sock in socks:
        sock.fanout_target = sock.ws  # as for a real connection made on this thread
        ps.subscribe("t", sock)
    return socks


def norm(lists: Any) -> list[list[int]]:
    """Groups of connections, comparable whatever their order."""
    return sorted(sorted(id(ws) for ws in group) for group in lists)


def groups(calls: list[Call]) -> list[list[int]]:
    return norm(targets for _, targets, _ in calls)


def test_one_call_per_wire_form_with_one_text_each(calls: list[Call]) -> None:
    ps = InMemoryPubSub()
    s = sockets(ps, 4)
    ps.broadcast("t", "e", {"n": 1})
    assert groups(calls) == norm([[s[0].ws, s[2].ws], [s[1].ws, s[3].ws]])
    assert all(thread == threading.get_ident() for thread, _, _ in calls)
    by_form = {json.loads(text).__class__: text for _, _, text in calls}
    assert json.loads(by_form[dict])["payload"] == {"n": 1} and json.loads(by_form[list])[4] == {"n": 1}
    assert all(sock.ws.sent == [] for sock in s)  # nothing went one by one


def test_exclude_skip_and_presence(calls: list[Call], skips: dict[int, int | None]) -> None:
    ps = InMemoryPubSub()
    s = sockets(ps, 4)
    s[3].skip_over = 10
    ps.unsubscribe("t", s[3])
    ps.subscribe("t", s[3])  # its threshold is read again with the groups
    ps.broadcast("t", "e", {}, exclude=s[0].id)
    assert groups(calls) == norm([[s[2].ws], [s[1].ws], [s[3].ws]])
    assert skips == {id(s[1].ws): None, id(s[2].ws): None, id(s[3].ws): 10}  # zzz.broadcast skips it
    calls.clear()
    ps.broadcast("t", "presence_diff", {"joins": {}, "leaves": {}})  # never skipped
    assert [id(s[3].ws)] in groups(calls) and skips[id(s[3].ws)] is None


def test_off_the_loop_thread_the_groups_go_through_zzz_broadcast_too(
    calls: list[Call], skips: dict[int, int | None]
) -> None:
    ps = InMemoryPubSub()
    s = sockets(ps, 3)
    s[2].skip_over = 10
    ps.unsubscribe("t", s[2])
    ps.subscribe("t", s[2])
    thread = threading.Thread(target=ps.broadcast, args=("t", "e", {"n": 2}), kwargs={"exclude": s[1].id})
    thread.start()
    thread.join(10)
    # One call per group, made on the publishing thread: zzz.broadcast hands each to the loop.
    assert groups(calls) == norm([[s[0].ws], [s[2].ws]])
    assert all(t != threading.get_ident() for t, _, _ in calls)
    assert skips == {id(s[0].ws): None, id(s[2].ws): 10}
    assert all(sock.ws.sent == [] for sock in s)


def test_groups_follow_subscriptions_and_wire_form_changes(calls: list[Call]) -> None:
    ps = InMemoryPubSub()
    s = sockets(ps, 2)
    ps.broadcast("t", "e", {})
    assert groups(calls) == norm([[s[0].ws], [s[1].ws]])
    calls.clear()
    late = ChannelSocket(FakeWebSocket(), ps)
    late.fanout_target = late.ws
    ps.subscribe("t", late)
    ps.broadcast("t", "e", {})
    assert groups(calls) == norm([[s[0].ws, late.ws], [s[1].ws]])
    calls.clear()
    ps.unsubscribe("t", s[1])
    ps.broadcast("t", "e", {})
    assert groups(calls) == norm([[s[0].ws, late.ws]])
    calls.clear()
    late.array_form = True
    ps.subscriber_changed(late)
    ps.broadcast("t", "e", {})
    assert groups(calls) == norm([[s[0].ws], [late.ws]])
    assert [isinstance(json.loads(text), list) for _, targets, text in calls if targets == [late.ws]] == [
        True
    ]
    ps.forget(s[0])
    ps.forget(late)
    calls.clear()
    ps.broadcast("t", "e", {})
    assert calls == [] and ps._fanouts == {}  # nothing left of the topic


def test_handles_that_are_not_zzz_websockets_get_send_text(calls: list[Call]) -> None:
    ps = InMemoryPubSub()
    plain = ChannelSocket(FakeWebSocket(), ps)  # a test double: no fanout_target
    assert plain.fanout_target is None
    ps.subscribe("t", plain)
    ps.broadcast("t", "e", {"n": 3})
    assert calls == [] and [json.loads(t)["payload"] for t in plain.ws.sent] == [{"n": 3}]
