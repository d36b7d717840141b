"""A transport double that counts the calls that write: one write per loop turn is a claim tests check.

Shared by the tests of the broadcast loop (a sink under the compiled writer), of broadcasts over real
connections and of the ASGI WebSocket (both passing the writes on to the real transport).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any


class CountingTransport:
    """Records every call that writes, and on which thread; passes it on to ``transport`` if given.

    Attributes:
        writes: one entry per ``write``/``writelines`` call, its bytes joined.
        written: every buffer as it was given, in order.
        threads: the threads the writes came from.
        extra: added to ``get_write_buffer_size`` (a receiver made to look slow); without a real
            transport it is the whole write buffer.
    """

    def __init__(self, transport: Any = None, buffered: int = 0) -> None:
        self._transport = transport
        self.writes: list[bytes] = []
        self.written: list[Any] = []
        self.threads: set[int] = set()
        self.extra = buffered

    def write(self, data: Any) -> None:
        self.written.append(data)
        self.writes.append(bytes(data))
        self.threads.add(threading.get_ident())
        if self._transport is not None:
            self._transport.write(data)

    def writelines(self, buffers: Iterable[Any]) -> None:
        buffers = list(buffers)
        self.written.extend(buffers)
        self.writes.append(b"".join(bytes(b) for b in buffers))
        self.threads.add(threading.get_ident())
        if self._transport is not None:
            self._transport.writelines(buffers)

    def get_write_buffer_size(self) -> int:
        real = 0 if self._transport is None else int(self._transport.get_write_buffer_size())
        return real + self.extra

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or self._transport is None:
            raise AttributeError(name)
        return getattr(self._transport, name)
