"""Type stub for the compiled byte core (fields and C methods: ``_speedups.pxd``); ``zzz._purepy`` is
its twin and the reference for behaviour."""

from collections.abc import Callable
from typing import TypeAlias

from zzz.errors import WebSocketError as WebSocketError

_Buffer: TypeAlias = bytes | bytearray | memoryview
_Frame: TypeAlias = tuple[int, bool, bool, bytes | str]

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
    @property
    def error(self) -> WebSocketError | None: ...
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

class Outbox:
    open: bool
    in_read: bool
    messages: int
    encoder: Callable[[_Buffer, int], bytes] | None
    @property
    def size(self) -> int: ...
    def __init__(self, encoder: Callable[[_Buffer, int], bytes] | None = None) -> None: ...
    @property
    def pending(self) -> bool: ...
    def text(self, text: str) -> None: ...
    def binary(self, data: _Buffer) -> None: ...
    def raw(self, frame: bytes) -> None: ...
    def take(self) -> list[bytes]: ...
    def take_one(self) -> bytes | None: ...
    def share(self, frame: bytes, fresh: Run | None) -> Run | None: ...

class Run:
    """Frames of a turn's broadcasts shared by their receivers' outboxes (opaque)."""

def _thread_ident() -> int:
    """``threading.get_ident()`` for C callers (``_readloop_c``). Not in the twin."""
