"""A stand-in for ``zzz.WebSocket`` that records what the channel layer sends, for tests without a server.

It honours the handle's contract: ``send`` takes a str, and ``send``/``close`` do nothing after close.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any

from zzz.channels import ChannelConfig, ChannelEndpoint
from zzz.frames import Binary, Text


class FakeWebSocket:
    """Records frames and the close; ``query``/``params``/``assigns`` as the upgrade would set them."""

    def __init__(
        self,
        query: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        assigns: dict[str, Any] | None = None,
    ) -> None:
        self.query = query or {}
        self.params = params or {}
        self.assigns = assigns or {}
        self.sent: list[str] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.buffered_amount = 0  # what the real handle reports as unsent bytes; tests set it

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    def param(self, name: str) -> str | None:
        return self.params.get(name)

    def query_param(self, name: str) -> str | None:
        return self.query.get(name)

    def get_assign(self, name: str) -> Any:
        return self.assigns.get(name)

    def send(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError("send() takes a str")
        text.encode("utf-8")  # a frame must be valid UTF-8, as the real handle requires
        if not self.closed:
            self.sent.append(text)

    def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed:
            self.close_code, self.close_reason = code, reason

    def take(self) -> list[Any]:
        """The decoded frames sent since the last call."""
        frames, self.sent = [json.loads(t) for t in self.sent], []
        return frames


class Client:
    """Drives one fake connection through an endpoint, like a server would."""

    def __init__(self, endpoint: ChannelEndpoint, ws: FakeWebSocket) -> None:
        self.endpoint = endpoint
        self.ws = ws
        self._ref = 0

    @classmethod
    async def open(cls, endpoint: ChannelEndpoint, **kwargs: Any) -> Client:
        client = cls(endpoint, FakeWebSocket(**kwargs))
        await _complete(endpoint.on_open(client.ws))
        return client

    def next_ref(self) -> str:
        self._ref += 1
        return str(self._ref)

    async def send_raw(self, data: str | bytes) -> None:
        msg = Text(data) if isinstance(data, str) else Binary(data)
        await _complete(self.endpoint.on_message(self.ws, msg))

    async def send(
        self,
        topic: str,
        event: str,
        payload: Any = None,
        ref: str | None = "auto",
        join_ref: str | None = None,
    ) -> str | None:
        if ref == "auto":
            ref = self.next_ref()
        frame: dict[str, Any] = {"topic": topic, "event": event, "payload": payload or {}, "ref": ref}
        if join_ref is not None:
            frame["join_ref"] = join_ref
        await self.send_raw(json.dumps(frame))
        return ref

    async def join(self, topic: str, payload: Any = None) -> dict[str, Any]:
        """Join and return the reply's payload (frames after it stay queued)."""
        ref = await self.send(topic, "phx_join", payload)
        frames = self.ws.take()
        reply = next(f for f in frames if f["event"] == "phx_reply" and f["ref"] == ref)
        self.ws.sent = [json.dumps(f) for f in frames if f is not reply]
        return reply["payload"]  # type: ignore[no-any-return]

    async def close(self, code: int = 1000) -> None:
        self.ws.close(code)
        await _complete(self.endpoint.on_close(self.ws, code, ""))


async def _complete(result: Awaitable[None] | None) -> None:
    # As the server does: a callback that returns an awaitable is finished before the next message.
    if result is not None:
        await result


def endpoint(config: ChannelConfig) -> ChannelEndpoint:
    return ChannelEndpoint(config)
