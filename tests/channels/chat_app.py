"""A small channel app for the end-to-end tests: rooms with presence, plus pages for the browser tests.

Run as ``python -m tests.channels.chat_app --port P [--redis URL] [--node-ttl S]``; the tests start it in a
subprocess (one per "machine"), or build it in-process with ``build_app``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import Any

import zzz
from tests import redis_parser
from zzz.channels import (
    ChannelConfig,
    ChannelDef,
    ChannelSocket,
    History,
    JoinResult,
    Presence,
    RedisPubSub,
    Reply,
    channel_routes,
)

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>zzz test</title>
<script src="/__zzz/zzz.js"></script></head>
<body><p id="status">loaded</p></body></html>
"""

MODULE_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>zzz module test</title>
<script type="module">
import { Zzz } from "/t/zzz.mjs";
import Default from "/t/zzz.mjs";
window.moduleResult = { named: typeof Zzz.socket, same: Zzz === Default && Zzz === window.Zzz };
</script></head>
<body></body></html>
"""


def _join(socket: ChannelSocket, topic: str, payload: Any) -> Any:
    if payload.get("password") == "wrong":
        return False
    user = payload.get("user")
    if user:
        socket.assign("user", user)
        socket.track(topic, user, {"online_at": payload.get("at", 0)})
    return JoinResult.ok({"joined": topic})


def _new_msg(socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
    socket.broadcast(topic, "new_msg", {"user": socket.get_assign("user"), "body": payload.get("body")})
    return {"accepted": True}


def _who(socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
    return sorted(Presence.list(topic))


def _fail(socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
    return Reply.error("nope")


def _silent(socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
    return None


_tickers: set[asyncio.Task[None]] = set()


def _tick(socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
    # A background task that broadcasts as fast as it can until the process stops: the shutdown tests
    # use it so that the Redis writer is busy at the moment the server shuts down.
    async def run() -> None:
        n = 0
        while True:
            n += 1
            socket.broadcast(topic, "tick", {"n": n})
            await asyncio.sleep(0.001)

    task = asyncio.get_running_loop().create_task(run())
    _tickers.add(task)
    task.add_done_callback(_tickers.discard)
    return {}


def _static(name: str) -> Any:
    # The app serves /__zzz/zzz.js itself; these copies under /t/ let the browser tests load the module
    # wrapper (zzz.mjs imports "./zzz.js" from its own directory).
    path = Path(zzz.__file__).with_name("static") / name

    def handler(request: Any) -> zzz.Response:
        return zzz.Response(path.read_bytes(), content_type="text/javascript; charset=utf-8")

    return handler


def _echo(ws: zzz.WebSocket, msg: Any) -> None:
    ws.send(msg.data if isinstance(msg.data, str) else msg.data.decode("latin-1"))


def build_app(
    redis_url: str | None = None,
    node_ttl: float = 15.0,
    heartbeat_timeout: float = 60.0,
    **settings: Any,
) -> zzz.App:
    """The test app; with ``redis_url`` its broadcasts and presence are shared through Redis.

    ``room:*`` topics have no history; ``hist:*`` topics are the same rooms with a history of 1000.
    """
    pubsub = RedisPubSub(redis_url, prefix="zzztest", node_ttl=node_ttl) if redis_url else None
    handlers = {"new_msg": _new_msg, "who": _who, "fail": _fail, "silent": _silent, "tick": _tick}
    room = ChannelDef("room:*", join=_join, handlers=handlers)
    hist = ChannelDef("hist:*", join=_join, handlers=handlers, history=History(1000))
    config = ChannelConfig(channels=[room, hist], pubsub=pubsub, heartbeat_timeout=heartbeat_timeout)
    return zzz.App(
        [
            *channel_routes("/socket", config),
            zzz.Router.get("/", lambda req: zzz.Response(PAGE, content_type="text/html; charset=utf-8")),
            zzz.Router.get(
                "/module", lambda req: zzz.Response(MODULE_PAGE, content_type="text/html; charset=utf-8")
            ),
            zzz.Router.get("/t/zzz.js", _static("zzz.js")),
            zzz.Router.get("/t/zzz.mjs", _static("zzz.mjs")),
            # A raw echo for Zzz.connect, and a route that never answers (heartbeat timeouts).
            zzz.Router.ws("/echo", zzz.WsConfig(on_message=_echo)),
            zzz.Router.ws("/mute", zzz.WsConfig()),
            # Closes every connection at once with the code in its path (a server restarting: 1012).
            zzz.Router.ws(
                "/closes/:code", zzz.WsConfig(on_open=lambda ws: ws.close(int(ws.param("code")), "bye"))
            ),
        ],
        **settings,
    )


def main() -> None:
    redis_parser.apply()  # the twin's run: redis-py's Python reply parser too
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", default=None)
    parser.add_argument("--node-ttl", type=float, default=15.0)
    parser.add_argument("--demo", action="store_true", help="serve zzz.channels.demo instead")
    parser.add_argument("--close-timeout", type=float, default=None)
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop", "auto"])
    args = parser.parse_args()
    settings = {} if args.close_timeout is None else {"close_timeout": args.close_timeout}
    logging.basicConfig(level=logging.WARNING)
    if args.demo:
        from zzz.channels.demo import build_app as build_demo

        app = build_demo()
    else:
        app = build_app(args.redis, args.node_ttl, **settings)
    app.run("127.0.0.1", args.port, loop=args.loop)


if __name__ == "__main__":
    main()
