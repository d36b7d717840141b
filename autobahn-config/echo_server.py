"""Echo server under test for the Autobahn fuzzingclient run.
Built only with zzz's public API: what the suite passes is what users get.

Usage: ``python autobahn-config/echo_server.py [HOST] [PORT]`` (defaults: ``$ZZZ_AUTOBAHN_HOST`` or
127.0.0.1, ``$ZZZ_AUTOBAHN_PORT`` or 9001). When ``$ZZZ_AUTOBAHN_IMPL`` is set (the runner sets it),
the server refuses to start unless ``zzz.core.IMPLEMENTATION`` matches it, so a run labelled
"cython" can never silently test the pure-Python twin.
"""

from __future__ import annotations

import os
import sys

import zzz
import zzz.core

__all__ = ["MAX_BACKPRESSURE", "MAX_FRAGMENTS", "MAX_SIZE", "build_app", "main", "on_message"]

# The suite's 9.x cases send messages and frames of up to 16 MiB,
MAX_SIZE = 16 * 2**20
# and 4 MiB messages in 64-byte fragments (9.3.1, 9.4.1): 65,536 frames, plus the empty final frame
# wstest adds when the size divides evenly.
MAX_FRAGMENTS = 4 * 2**20 // 64 + 1
# Echoing a 16 MiB message puts it in the write buffer whole, possibly behind the previous one.
MAX_BACKPRESSURE = 2 * MAX_SIZE + 2**20


def on_message(ws: zzz.WebSocket, msg: zzz.Text | zzz.Binary) -> None:
    """Send every message back unchanged, with the same type.

    Args:
        ws: The connection the message came in on.
        msg: The complete (reassembled, inflated, validated) message.
    """
    match msg:
        case zzz.Text(text):
            ws.send(text)
        case zzz.Binary(data):
            ws.send_binary(data)


def build_app() -> zzz.App:
    """Return the echo app: one WebSocket route at ``/`` with limits the suite's cases fit in.

    Returns:
        The app, permessage-deflate left at zzz's default (enabled), as the suite's
        12.x and 13.x cases need it.
    """
    return zzz.App(
        [zzz.Router.ws("/", zzz.WsConfig(on_message=on_message))],
        max_message_size=MAX_SIZE,
        max_frame_size=MAX_SIZE,
        max_fragments=MAX_FRAGMENTS,
        max_backpressure=MAX_BACKPRESSURE,
    )


def main(argv: list[str]) -> int:
    """Run the echo server until it is stopped.

    Args:
        argv: ``[HOST] [PORT]``; environment variables and defaults fill in what is missing.

    Returns:
        The process exit status.
    """
    host = argv[0] if len(argv) > 0 else os.environ.get("ZZZ_AUTOBAHN_HOST", "127.0.0.1")
    port = int(argv[1] if len(argv) > 1 else os.environ.get("ZZZ_AUTOBAHN_PORT", "9001"))
    expected = os.environ.get("ZZZ_AUTOBAHN_IMPL")
    actual = zzz.core.IMPLEMENTATION
    if expected and expected != actual:
        print(
            f"echo_server: expected the {expected} implementation but zzz.core uses {actual}"
            " (is the extension built? is ZZZ_NO_EXTENSIONS set?)",
            file=sys.stderr,
        )
        return 2
    print(f"echo_server: zzz {actual} on ws://{host}:{port}/", file=sys.stderr, flush=True)
    build_app().run(host=host, port=port, loop="uvloop")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
