"""What channel handlers answer: ``Reply`` to a push, ``JoinResult`` to a join.

Plain data, imported by ``zzz.channels.socket`` (which holds the declarations that name the socket:
``ChannelDef``, ``ChannelConfig``) and by applications.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["JoinResult", "Reply"]


def _as_response(value: Any) -> Any:
    # A bare string is a reason: clients (and phoenix.js users) look for ``response.reason``.
    return {"reason": value} if isinstance(value, str) else value


@dataclass(frozen=True, slots=True)
class Reply:
    """A handler's reply to a client push, sent as ``phx_reply``.

    A handler may also return a plain value (an ok reply with that response) or None (no reply).

    Attributes:
        status: ``"ok"`` or ``"error"``.
        response: the JSON-serialisable response; a str given to ``error`` becomes ``{"reason": str}``.
    """

    status: Literal["ok", "error"]
    response: Any = None

    @classmethod
    def ok(cls, response: Any = None) -> Reply:
        """An ok reply; ``None`` is sent as ``{}``."""
        return cls("ok", response)

    @classmethod
    def error(cls, response: Any = "error") -> Reply:
        """An error reply; a string becomes ``{"reason": string}``."""
        return cls("error", _as_response(response))


@dataclass(frozen=True, slots=True)
class JoinResult(Reply):
    """What a join callback decides; ``True``/``False`` and a ``Reply`` are accepted too.

    Attributes:
        status: ``"ok"`` (joined) or ``"error"`` (rejected).
        response: what the client's ``join()`` resolves or rejects with.
    """

    @classmethod
    def ok(cls, response: Any = None) -> JoinResult:
        """Accept the join; the client's ``join()`` resolves with ``response`` (``{}`` when None)."""
        return cls("ok", response)

    @classmethod
    def error(cls, response: Any = "join rejected") -> JoinResult:
        """Reject the join; a string becomes ``{"reason": string}``."""
        return cls("error", _as_response(response))
