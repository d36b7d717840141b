"""Helpers for the tests of apps built on zzz: ``serve`` (the app on a free port of 127.0.0.1, for
the length of an ``async with``) and ``ChannelClient`` (a Channels client that remembers what it
received, so a test can say what it expects).

Everything goes over real sockets, as in production::

    async with zzz.testing.serve(app) as srv:
        async with zzz.testing.ChannelClient(srv.ws_url + "/socket") as client:
            assert (await client.join("room:lobby", {"name": "ann"}))["status"] == "ok"
            ref = client.push("room:lobby", "say", {"text": "hi"})
            assert await client.expect_broadcast("room:lobby", "said") == {"name": "ann", "text": "hi"}
            assert (await client.expect_reply(ref))["status"] == "ok"
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from zzz.client import ClientWebSocket, connect
from zzz.errors import ConnectionClosed
from zzz.frames import Text
from zzz.server import App, Server

__all__ = ["ChannelClient", "Frame", "Served", "serve"]

DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Served:
    """An app being served by ``serve``.

    Attributes:
        server: the ``zzz.Server``.
        host: the address it listens on.
        port: the port it got.
        url: ``http://host:port`` (no trailing slash: append a path).
        ws_url: ``ws://host:port``.
    """

    server: Server
    host: str
    port: int
    url: str
    ws_url: str

    def stats(self) -> dict[str, Any]:
        """The server's ``stats()``."""
        return self.server.stats()


@contextlib.asynccontextmanager
async def serve(app: App, *, host: str = "127.0.0.1") -> AsyncIterator[Served]:
    """Serve ``app`` on an ephemeral port of ``host`` inside the ``async with``, then shut it down
    gracefully (WebSockets get 1001, callbacks finish).

    Args:
        app: the ``zzz.App``.
        host: where to listen (``"::1"`` for IPv6).

    Yields:
        A ``Served`` with the port and the URLs.
    """
    server = await app.start(host=host, port=0)
    name = f"[{host}]" if ":" in host else host
    try:
        yield Served(server, host, server.port, f"http://{name}:{server.port}", f"ws://{name}:{server.port}")
    finally:
        await server.close()


@dataclass(frozen=True)
class Frame:
    """One Channels message the client received.

    Attributes:
        topic: its topic.
        event: its event (``phx_reply`` for replies).
        payload: its payload (for a reply ``{"status": ..., "response": ...}``).
        ref: the ref of the message it answers (replies), else None.
        join_ref: the join it belongs to: set on pushes to this client (``ChannelSocket.push``),
            None on broadcasts (``broadcast``, ``broadcast_from``, ``push_to``).
    """

    topic: str
    event: str
    payload: Any
    ref: str | None
    join_ref: str | None

    def __str__(self) -> str:
        kind = "reply" if self.event == "phx_reply" else "push" if self.join_ref is not None else "broadcast"
        where = f" to ref {self.ref!r}" if self.ref is not None else ""
        return f"{kind} {self.topic!r} {self.event!r}{where} {self.payload!r}"


class ChannelClient:
    """A Channels client for tests: ``async with ChannelClient(url) as client``.

    It speaks the object form of the wire (the array form when the URL asks for ``vsn=2.x``, as
    phoenix.js does). Everything it receives is kept until an ``expect_...`` takes it, oldest
    first, so the order in which a test awaits things need not be the order they arrive in.
    An ``expect_...`` that finds nothing in time (or sees the connection close) raises an
    ``AssertionError`` that names what it waited for and lists what came meanwhile.

    Args:
        url: a ``ws://`` or ``wss://`` URL of a Channels endpoint (``Served.ws_url + "/socket"``).
        timeout: the default of every ``timeout=`` (seconds).
        **connect_kwargs: passed to ``zzz.connect`` (``extra_headers``, ...).

    Raises:
        ValueError: ``url`` is not a ``ws://`` or ``wss://`` URL.
    """

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT, **connect_kwargs: Any) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss"):
            raise ValueError(f"ChannelClient needs a ws:// or wss:// URL, not {url!r}")
        vsn = parse_qs(parts.query).get("vsn", [""])[0]
        self.url = url
        self.timeout = timeout
        self.array_form = vsn.startswith("2.")
        self._connect_kwargs = connect_kwargs
        self._ws: ClientWebSocket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._refs = itertools.count(1)
        self._join_refs: dict[str, str] = {}
        self._inbox: list[Frame] = []
        self._arrived: asyncio.Event = asyncio.Event()
        self.close_code: int | None = None
        self.closed = False

    async def __aenter__(self) -> ChannelClient:  # noqa: PYI034 - no typing.Self on 3.10
        self._ws = await connect(self.url, **self._connect_kwargs)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection (1000) and wait, at most ``timeout``, for the close handshake."""
        ws = self._ws
        if ws is not None:
            ws.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ws.wait_closed(), self.timeout)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    @property
    def received(self) -> list[Frame]:
        """What was received and not taken by an ``expect_...`` yet, oldest first."""
        return list(self._inbox)

    # Sending

    async def join(self, topic: str, payload: Any = None, *, timeout: float | None = None) -> Any:
        """Join ``topic`` and wait for the reply.

        Returns:
            The reply's payload, ``{"status": "ok" | "error", "response": ...}``.

        Raises:
            AssertionError: no reply within ``timeout``.
        """
        ref = self._next_ref()
        self._join_refs[topic] = ref
        self._send(topic, "phx_join", {} if payload is None else payload, ref, ref)
        reply = await self.expect_reply(ref, timeout=timeout)
        if not (isinstance(reply, dict) and reply.get("status") == "ok"):
            self._join_refs.pop(topic, None)
        return reply

    async def leave(self, topic: str, *, timeout: float | None = None) -> Any:
        """Leave ``topic`` and wait for the reply (its payload, as for ``join``)."""
        ref = self.push(topic, "phx_leave", {})
        self._join_refs.pop(topic, None)
        return await self.expect_reply(ref, timeout=timeout)

    def push(self, topic: str, event: str, payload: Any = None) -> str:
        """Send ``event`` on ``topic`` (with the topic's join ref when joined).

        Returns:
            The message's ref, for ``expect_reply``.
        """
        ref = self._next_ref()
        self._send(topic, event, {} if payload is None else payload, ref, self._join_refs.get(topic))
        return ref

    # Expecting

    async def expect_reply(self, ref: str, *, timeout: float | None = None) -> Any:
        """Wait for the reply to the message ``ref``.

        Returns:
            Its payload, ``{"status": ..., "response": ...}``.

        Raises:
            AssertionError: none within ``timeout``, or the connection closed first.
        """
        return await self._expect(
            lambda f: f.event == "phx_reply" and f.ref == ref, f"a reply to ref {ref!r}", timeout
        )

    async def expect_push(self, topic: str, event: str, *, timeout: float | None = None) -> Any:
        """Wait for ``event`` on ``topic`` pushed to this client (``ChannelSocket.push``: it
        carries this client's join ref).

        Returns:
            Its payload.

        Raises:
            AssertionError: none within ``timeout``, or the connection closed first.
        """
        return await self._expect(
            lambda f: f.topic == topic and f.event == event and f.ref is None and f.join_ref is not None,
            f"a push of {event!r} on {topic!r}",
            timeout,
        )

    async def expect_broadcast(self, topic: str, event: str, *, timeout: float | None = None) -> Any:
        """Wait for ``event`` on ``topic`` broadcast to the topic's subscribers (``broadcast``,
        ``broadcast_from`` of another socket, ``push_to``, presence diffs: no join ref).

        Returns:
            Its payload.

        Raises:
            AssertionError: none within ``timeout``, or the connection closed first.
        """
        return await self._expect(
            lambda f: f.topic == topic and f.event == event and f.ref is None and f.join_ref is None,
            f"a broadcast of {event!r} on {topic!r}",
            timeout,
        )

    async def _expect(self, match: Callable[[Frame], bool], what: str, timeout: float | None) -> Any:
        limit = self.timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            for i, frame in enumerate(self._inbox):
                if match(frame):
                    del self._inbox[i]
                    return frame.payload
            if self.closed:
                raise AssertionError(
                    f"expected {what}, but the connection closed (code {self.close_code}); "
                    f"received meanwhile: {self._summary()}"
                )
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(
                    f"expected {what} within {limit} s; received meanwhile: {self._summary()}"
                )
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)

    def _summary(self) -> str:
        return "; ".join(str(f) for f in self._inbox) or "nothing"

    # The wire

    def _next_ref(self) -> str:
        return str(next(self._refs))

    def _send(self, topic: str, event: str, payload: Any, ref: str, join_ref: str | None) -> None:
        if self._ws is None:
            raise RuntimeError("ChannelClient is not connected: use it as 'async with ChannelClient(url)'")
        if self.array_form:
            text = json.dumps([join_ref, ref, topic, event, payload])
        else:
            text = json.dumps(
                {"topic": topic, "event": event, "payload": payload, "ref": ref, "join_ref": join_ref}
            )
        self._ws.send(text)

    async def _read(self) -> None:
        ws = self._ws
        assert ws is not None
        try:
            async for msg in ws:
                frame = _decode(msg.data) if isinstance(msg, Text) else None
                if frame is not None:
                    self._inbox.append(frame)
                    self._arrived.set()
        except ConnectionClosed:  # an abnormal close: the waiters are told, with its code
            pass
        finally:
            self.closed = True
            self.close_code = ws.close_code
            self._arrived.set()


def _decode(text: str) -> Frame | None:
    """A Channels message in either form, or None for anything else."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, list) and len(data) >= 5:
        join_ref, ref, topic, event, payload = data[:5]
    elif isinstance(data, dict):
        join_ref, ref = data.get("join_ref"), data.get("ref")
        topic, event, payload = data.get("topic"), data.get("event"), data.get("payload")
    else:
        return None
    if not (isinstance(topic, str) and isinstance(event, str)):
        return None
    return Frame(
        topic, event, payload, None if ref is None else str(ref), None if join_ref is None else str(join_ref)
    )
