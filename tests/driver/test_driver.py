"""The shared driver's phases: the transition table, its one setter, and the read loop's mirror
of the phase (``readloop.enabled is (phase is Phase.OPEN)``), on a bare driver and on a server
connection whose ``on_open`` is awaited.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import zzz
from tests.server.helpers import RawClient, serve
from zzz.driver import TRANSITIONS, Change, ConnectionDriver, Phase
from zzz.settings import FlowControl, Timeouts


class FakeReadLoop:
    enabled = True


def bare(phase: Phase) -> ConnectionDriver:
    driver = ConnectionDriver(
        asyncio.new_event_loop(),
        phase=phase,
        timeouts=Timeouts(close=None, ping_interval=None, ping_timeout=None),
        flow=FlowControl(max_backpressure=None),
    )
    driver.loop.close()
    driver._readloop = FakeReadLoop()  # type: ignore[assignment]
    return driver


def test_every_phase_has_its_row_and_every_path_ends_reported() -> None:
    assert set(TRANSITIONS) == set(Phase)
    # From every phase, some sequence of changes reaches REPORTED, and REPORTED is final.
    for start in Phase:
        seen, todo = {start}, [start]
        while todo:
            for nxt in TRANSITIONS[todo.pop()].values():
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert Phase.REPORTED in seen, start
    assert set(TRANSITIONS[Phase.REPORTED].values()) == {Phase.REPORTED}


@pytest.mark.parametrize(
    "changes, phases",
    [
        pytest.param(
            [Change.AWAITING, Change.RETURNED, Change.LOST, Change.REPORTED],
            [Phase.IN_CALLBACK, Phase.OPEN, Phase.LOST, Phase.REPORTED],
            id="a callback, then the peer leaves",
        ),
        pytest.param(
            [
                Change.AWAITING,
                Change.LOST,
                Change.RETURNED,
                Change.AWAITING,
                Change.RETURNED,
                Change.REPORTED,
            ],
            [
                Phase.IN_CALLBACK,
                Phase.LOST_IN_CALLBACK,
                Phase.LOST,
                Phase.LOST_IN_CALLBACK,
                Phase.LOST,
                Phase.REPORTED,
            ],
            id="lost during a callback; what was received still runs",
        ),
        pytest.param(
            [Change.AWAITING, Change.CANCELLED, Change.REPORTED, Change.LOST],
            [Phase.IN_CALLBACK, Phase.LOST, Phase.REPORTED, Phase.REPORTED],
            id="cancelled at shutdown, connection_lost after",
        ),
    ],
)
def test_the_read_loop_runs_exactly_in_the_open_phase(changes: list[Change], phases: list[Phase]) -> None:
    driver = bare(Phase.OPEN)
    readloop = driver._readloop
    assert readloop is not None
    for change, phase in zip(changes, phases, strict=True):
        assert driver._advance(change) is phase
        assert driver.phase is phase
        assert readloop.enabled is (phase is Phase.OPEN)


def test_the_module_docstring_lists_exactly_the_table() -> None:
    import re

    import zzz.driver

    listed: set[tuple[Phase, Change, Phase]] = set()
    for line in (zzz.driver.__doc__ or "").splitlines():
        m = re.match(r"\s+([A-Z_, ]+?)\s+--([A-Z]+)-->\s+([A-Z_]+)", line)
        if m:
            for name in m[1].split(","):
                listed.add((Phase[name.strip()], Change[m[2]], Phase[m[3]]))
    table = {(src, change, dst) for src, row in TRANSITIONS.items() for change, dst in row.items()}
    assert listed == table


def test_a_change_the_table_does_not_allow_raises() -> None:
    driver = bare(Phase.OPEN)
    with pytest.raises(RuntimeError, match="'returned' cannot happen in phase OPEN"):
        driver._advance(Change.RETURNED)
    driver = bare(Phase.CONNECTING)
    with pytest.raises(RuntimeError, match="cannot happen in phase CONNECTING"):
        driver._advance(Change.AWAITING)
    assert driver.phase is Phase.CONNECTING


def test_the_end_is_1006_until_a_code_is_known() -> None:
    driver = bare(Phase.OPEN)
    assert driver.final_close == (1006, "")
    driver._close = (1000, "bye")
    assert driver.final_close == (1000, "bye")


async def test_a_server_connection_walks_the_phases_with_the_read_loop_in_step() -> None:
    seen: list[tuple[str, Phase, bool]] = []
    release = asyncio.Event()

    def record(where: str, ws: zzz.WebSocket) -> None:
        proto: Any = ws._proto
        seen.append((where, proto.phase, proto._readloop.enabled))

    async def on_open(ws: zzz.WebSocket) -> None:
        record("on_open", ws)
        await release.wait()

    def on_message(ws: zzz.WebSocket, msg: Any) -> None:
        record("on_message", ws)
        ws.send(msg.data)

    def on_close(ws: zzz.WebSocket, code: int, reason: str) -> None:
        record("on_close", ws)

    config = zzz.WsConfig(on_open=on_open, on_message=on_message, on_close=on_close)
    async with serve(zzz.App([zzz.Router.ws("/ws", config)])) as server:
        client = await RawClient.connect(server.port)
        client.send_frame(1, b"early")  # arrives while on_open is awaited: it waits for it
        await asyncio.sleep(0.2)
        assert [s[0] for s in seen] == ["on_open"]
        release.set()
        assert (await client.read_frame())[1] == b"early"
        client.send_frame(1, b"later")  # the fast path again
        assert (await client.read_frame())[1] == b"later"
        client.writer.transport.abort()
        for _ in range(100):
            if len(seen) == 4:
                break
            await asyncio.sleep(0.02)
    assert seen == [
        ("on_open", Phase.IN_CALLBACK, False),
        ("on_message", Phase.OPEN, True),
        ("on_message", Phase.OPEN, True),
        ("on_close", Phase.REPORTED, False),
    ]
