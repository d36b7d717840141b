"""Echo server: every text message comes back as text, every binary message as binary.

Run ``python examples/echo.py [--host H] [--port N]`` and connect to ``ws://H:N/ws/echo``, for
instance with ``python examples/client.py``. Ctrl-C or SIGTERM shuts it down gracefully: every
client gets a close frame with code 1001 and the process exits with status 0.
"""

from __future__ import annotations

import argparse

import zzz

__all__ = ["build_app", "on_message"]


def on_message(ws: zzz.WebSocket, msg: zzz.WsMessage) -> None:
    """Send ``msg`` back to its sender, keeping its type."""
    match msg:
        case zzz.Text(text):
            ws.send(text)
        case zzz.Binary(data):
            ws.send_binary(data)


def build_app() -> zzz.App:
    """The echo app: one WebSocket route, ``/ws/echo``."""
    return zzz.App([zzz.Router.ws("/ws/echo", zzz.WsConfig(on_message=on_message))])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="zzz echo server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    build_app().run(args.host, args.port)  # blocks until SIGINT/SIGTERM
