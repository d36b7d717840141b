"""examples/chat_channels.py works as written: join with a name, say something, hear it back."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from types import ModuleType

from websockets.asyncio.client import connect

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chat_channels.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chat_channels_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_example_rooms() -> None:
    srv = await load().build_app().start(host="127.0.0.1", port=0)
    try:
        async with connect(f"ws://127.0.0.1:{srv.port}/socket") as ws:
            others: list[dict[str, object]] = []

            async def call(ref: str, topic: str, event: str, payload: object) -> dict[str, object]:
                await ws.send(json.dumps({"topic": topic, "event": event, "payload": payload, "ref": ref}))
                while True:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    if frame["event"] == "phx_reply" and frame["ref"] == ref:
                        return frame["payload"]  # type: ignore[no-any-return]
                    others.append(frame)

            assert (await call("1", "room:lobby", "phx_join", {}))["response"] == {
                "reason": "a name of 1 to 32 characters, please"
            }
            assert (await call("2", "room:lobby", "phx_join", {"name": "ann"}))["status"] == "ok"
            assert await call("3", "room:lobby", "say", {"text": "hi"}) == {
                "status": "ok",
                "response": {"ok": True},
            }
            said = [f for f in others if f["event"] == "said"]
            assert [f["payload"] for f in said] == [{"name": "ann", "text": "hi"}]
            assert (await call("4", "room:lobby", "say", {"text": ""}))["response"] == {
                "reason": "nothing to say"
            }
    finally:
        await srv.close()
