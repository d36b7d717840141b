"""zzz echo and broadcast server, for the echo benchmark: the public API only.

zzz negotiates permessage-deflate by default whenever the client offers it, so compression is
chosen by the client (the load client offers it only with ``--deflate``); ``--compression`` is
accepted for symmetry with the other scripts and changes nothing here.
"""

from __future__ import annotations

from typing import Any

from common import BROADCAST_PATH, ECHO_PATH, parse_args

import zzz
from zzz import Binary, Text

__all__ = ["build_app", "main"]

_members: set[Any] = set()


def on_message(ws: Any, msg: Any) -> None:
    """Echo: same type, same content.

    ``case Text():`` and ``msg.data`` rather than ``case Text(text):``: on CPython 3.11 a class
    pattern with a positional capture looks ``__match_args__`` up by name on every match, which
    costs about 130 ns per message here (bench/README.md).
    """
    match msg:
        case Text():
            ws.send(msg.data)
        case Binary():
            ws.send_binary(msg.data)


def join(ws: Any, *_: Any) -> None:
    """Register a broadcast member."""
    _members.add(ws)


def leave(ws: Any, *_: Any) -> None:
    """Forget a broadcast member (whatever the close code)."""
    _members.discard(ws)


def fan_out(ws: Any, msg: Any) -> None:
    """A text message from any member goes to every member, encoded once."""
    if type(msg) is Text:
        zzz.broadcast(list(_members), msg.data)


def build_app() -> Any:
    """The app: echo on ``/``, broadcast on ``/broadcast``."""
    return zzz.App(
        [
            zzz.Router.ws(ECHO_PATH, zzz.WsConfig(on_message=on_message)),
            zzz.Router.ws(BROADCAST_PATH, zzz.WsConfig(on_open=join, on_message=fan_out, on_close=leave)),
        ],
        max_message_size=2**24,
    )


def main() -> None:
    """Entry point: ``python server_zzz.py --port P``."""
    args = parse_args("zzz echo server")
    build_app().run(host=args.host, port=args.port, loop="uvloop")


if __name__ == "__main__":
    main()
