"""zzz echo, broadcast and Channels server, for the echo and fan-out benchmarks: the public API only.

Paths: ``/`` echoes, ``/broadcast`` fans each text message out with ``zzz.broadcast``, and
``/socket`` (and ``/socket/websocket``) is a Channels endpoint (``zzz.Router.channel``) whose
channel ``bench:*`` has two sync handlers: ``pub`` broadcasts the pushed payload to the topic as
event ``msg`` (no reply) and ``echo`` replies with the payload (push + reply request/response).

zzz negotiates permessage-deflate by default whenever the client offers it, so compression is
chosen by the client (the load client offers it only with ``--deflate``); ``--compression`` is
accepted for symmetry with the other scripts and changes nothing here.
``--server-no-context-takeover`` answers every offer with ``server_no_context_takeover``
(``DeflateConfig(server_no_context_takeover=True)``), which lets a broadcast compress once for
all receivers; with a zzz whose ``DeflateConfig`` has no such field the script says so and exits.
``--history N`` gives ``bench:*`` a ``zzz.History(N)`` (issue #15): every broadcast is numbered,
stored and carries its position as ``meta``; the cost of that is the ``zzz history`` rows.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from common import BROADCAST_PATH, CHANNEL_PATH, ECHO_PATH, parse_args

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


def on_pub(socket: Any, topic: str, event: str, payload: Any) -> None:
    """A sync handler: broadcast the pushed payload to the topic (sender included), no reply."""
    socket.broadcast(topic, "msg", payload)


def on_echo(socket: Any, topic: str, event: str, payload: Any) -> Any:
    """A sync handler: the ok reply carries the payload back (push + reply request/response)."""
    return payload


def deflate_settings(no_context_takeover: bool) -> dict[str, Any]:
    """The App settings for compression: ``server_no_context_takeover`` when asked and supported.

    Raises:
        SystemExit: asked for, but this zzz's ``DeflateConfig`` has no such field.
    """
    if not no_context_takeover:
        return {}
    from zzz.deflate import DeflateConfig

    if "server_no_context_takeover" not in {f.name for f in dataclasses.fields(DeflateConfig)}:
        raise SystemExit("this zzz's DeflateConfig has no server_no_context_takeover")
    return {"deflate": DeflateConfig(server_no_context_takeover=True)}


def build_app(no_context_takeover: bool = False, history: int = 0) -> Any:
    """The app: echo on ``/``, broadcast on ``/broadcast``, Channels on ``/socket``.

    Args:
        no_context_takeover: see ``deflate_settings``.
        history: when > 0, ``bench:*`` keeps that many broadcasts (``zzz.History``).
    """
    # history= only when asked: the same script also runs an older zzz (ZZZ_BENCH_BASE in run.py)
    extra = {"history": zzz.History(history)} if history > 0 else {}
    bench = zzz.ChannelDef("bench:*", handlers={"pub": on_pub, "echo": on_echo}, **extra)
    # Heartbeats off: the load client's receivers send nothing after joining.
    channels = zzz.ChannelConfig(channels=[bench], heartbeat_timeout=None, max_topics_per_socket=None)
    return zzz.App(
        [
            zzz.Router.ws(ECHO_PATH, zzz.WsConfig(on_message=on_message)),
            zzz.Router.ws(BROADCAST_PATH, zzz.WsConfig(on_open=join, on_message=fan_out, on_close=leave)),
            zzz.Router.channel(CHANNEL_PATH, channels),
        ],
        max_message_size=2**24,
        **deflate_settings(no_context_takeover),
    )


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server-no-context-takeover",
        action="store_true",
        help="answer every permessage-deflate offer with server_no_context_takeover",
    )
    parser.add_argument(
        "--history",
        type=int,
        default=0,
        metavar="N",
        help="give the Channels topics a History(N): numbered, stored broadcasts (0: none)",
    )


def main() -> None:
    """Entry point: ``python server_zzz.py --port P [--server-no-context-takeover] [--history N]``."""
    args = parse_args("zzz echo, broadcast and Channels server", _options)
    app = build_app(args.server_no_context_takeover, args.history)
    app.run(host=args.host, port=args.port, loop="uvloop")


if __name__ == "__main__":
    main()
