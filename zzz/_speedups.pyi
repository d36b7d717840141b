"""Type stub for the compiled core; ``zzz._purepy`` is its twin and the reference for behaviour."""

from collections.abc import Callable
from typing import Any

from zzz.errors import WebSocketError as WebSocketError

_Buffer = bytes | bytearray | memoryview
_Frame = tuple[int, bool, bool, bytes | str]

OP_CONT: int
OP_TEXT: int
OP_BINARY: int
OP_CLOSE: int
OP_PING: int
OP_PONG: int

def mask(data: _Buffer, key: bytes, phase: int = 0) -> bytes: ...
def mask_inplace(buf: bytearray | memoryview, key: bytes, phase: int = 0) -> None: ...
def validate_utf8(data: _Buffer) -> int: ...

class Utf8Validator:
    def __init__(self) -> None: ...
    def reset(self) -> None: ...
    @property
    def complete(self) -> bool: ...
    def feed(self, data: _Buffer) -> int: ...

class FrameReader:
    require_mask: bool
    allow_rsv1: bool
    max_frame_size: int
    max_message_size: int
    max_fragments: int
    def __init__(
        self,
        *,
        require_mask: bool = True,
        allow_rsv1: bool = False,
        max_frame_size: int | None = None,
        max_message_size: int | None = None,
        max_fragments: int | None = None,
        messages: bool = False,
    ) -> None: ...
    messages: bool
    def feed(self, data: _Buffer) -> list[_Frame | Text | Binary]: ...

def _select_kernels(name: str = "best") -> tuple[str, str]:
    """Pick the SIMD kernels ("best", "avx512", "avx2", "sse2", "word") for tests and benchmarks;
    return (mask kernel, ASCII kernel). Not in the twin: it has no kernels."""

def encode_frame(
    opcode: int,
    payload: _Buffer,
    fin: bool = True,
    rsv1: bool = False,
    mask_key: bytes | None = None,
) -> bytes: ...

class Text:
    __match_args__ = ("data",)
    @property
    def data(self) -> str: ...
    def __init__(self, data: str) -> None: ...

class Binary:
    __match_args__ = ("data",)
    @property
    def data(self) -> bytes: ...
    def __init__(self, data: bytes) -> None: ...

EARLY_FLUSH_SIZE: int

class Outbox:
    open: bool
    in_read: bool
    encoder: Callable[[_Buffer, int], bytes] | None
    def __init__(self, encoder: Callable[[_Buffer, int], bytes] | None = None) -> None: ...
    @property
    def size(self) -> int: ...
    @property
    def pending(self) -> bool: ...
    def text(self, text: str) -> None: ...
    def binary(self, data: _Buffer) -> None: ...
    def raw(self, frame: bytes) -> None: ...
    def take(self) -> list[bytes]: ...
    def dispatch(
        self, frames: list[Any], pos: int, on_message: Callable[[Any, Any], Any], ws: Any
    ) -> tuple[int, bool, Any]: ...

class Sender:
    def __init__(
        self,
        outbox: Outbox,
        flush: Callable[[], Any],
        loop: Any,
        text_later: Callable[[str], Any],
        binary_later: Callable[[bytes], Any],
    ) -> None: ...
    def send(self, text: str) -> None: ...
    def send_binary(self, data: _Buffer) -> None: ...

class Receiver:
    enabled: bool
    def __init__(
        self,
        reader: FrameReader,
        outbox: Outbox,
        on_message: Callable[[Any, Any], Any],
        ws: Any,
        slow: Callable[[Any], Any],
        finish: Callable[..., Any],
        transport: Any,
        max_buffer: int | None,
        over_limit: Callable[[], Any],
        keepalive: Any,
    ) -> None: ...
    def feed(self, data: _Buffer) -> None: ...
