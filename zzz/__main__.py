"""``python -m zzz``: the demo server on 127.0.0.1:8080: a Channels chat with rooms and presence
at ``/`` (zzz.js), plus raw WebSocket routes ``/ws/echo`` and ``/ws/chat/:room`` (page at ``/raw``).

Options: ``--host``, ``--port``, ``--loop auto|uvloop|asyncio``, ``--workers N``, ``--redis URL``
(the Channels chat's rooms and presence on ``zzz.RedisPubSub(URL)``, required with ``--workers`` > 1).
"""

from __future__ import annotations

import argparse
import itertools
import logging
from collections import defaultdict
from typing import Any

import zzz
from zzz import core
from zzz.channels import demo as channels_demo
from zzz.runner import http_url

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>zzz demo</title>
<style>
 body { font: 15px/1.4 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; }
 #log { border: 1px solid #ccc; height: 18rem; overflow-y: auto; padding: .5rem; white-space: pre-wrap; }
 input { font: inherit; } .sys { color: #777; }
</style></head>
<body>
<h1>zzz</h1>
<p>Core: <b>%(impl)s</b>. Echo at <code>/ws/echo</code>; chat rooms at <code>/ws/chat/:room?name=…</code>.</p>
<p><label>Room <input id="room" value="lobby" size="10"></label>
   <label>Name <input id="name" value="guest" size="10"></label>
   <button id="join">Join</button></p>
<div id="log"></div>
<form id="form"><input id="msg" size="50" autocomplete="off" placeholder="say something">
<button>Send</button></form>
<script>
let ws = null;
const log = (text, cls) => { const d = document.createElement("div"); d.textContent = text;
  if (cls) d.className = cls; const l = document.getElementById("log"); l.appendChild(d);
  l.scrollTop = l.scrollHeight; };
document.getElementById("join").onclick = () => {
  if (ws) ws.close();
  const room = encodeURIComponent(document.getElementById("room").value);
  const name = encodeURIComponent(document.getElementById("name").value);
  const proto = location.protocol === "https:" ? "wss" : "ws";
  ws = new WebSocket(`${proto}://${location.host}/ws/chat/${room}?name=${name}`);
  ws.onopen = () => log(`joined ${decodeURIComponent(room)}`, "sys");
  ws.onmessage = (e) => log(e.data);
  ws.onclose = (e) => log(`closed (${e.code})`, "sys");
};
document.getElementById("form").onsubmit = (e) => { e.preventDefault();
  const box = document.getElementById("msg"); if (ws && box.value) ws.send(box.value); box.value = ""; };
document.getElementById("join").click();
</script></body></html>
"""

_ids = itertools.count(1)


async def identify(req: zzz.Request, call_next: Any) -> zzz.Response:
    """Middleware: give every chat connection a user id (a real app would check a token here)."""
    req.assign("user_id", f"u{next(_ids)}")
    response: zzz.Response = await call_next(req)
    return response


def build_app(pubsub: zzz.PubSub | None = None, **settings: Any) -> zzz.App:
    """The demo app: the Channels chat, echo, raw chat rooms with broadcast, and their pages.

    Args:
        pubsub: the Channels chat's backend (``None``: rooms and presence in this process).
        **settings: keyword arguments of ``zzz.App``.
    """
    rooms: dict[str, set[zzz.WebSocket]] = defaultdict(set)

    def echo(ws: zzz.WebSocket, msg: zzz.WsMessage) -> None:
        match msg:
            case zzz.Text(text):
                ws.send(text)
            case zzz.Binary(data):
                ws.send_binary(data)

    def join(ws: zzz.WebSocket) -> None:
        room = ws.param("room") or "lobby"
        rooms[room].add(ws)
        zzz.broadcast(list(rooms[room]), f"* {_name(ws)} joined {room} ({len(rooms[room])} here)")

    def say(ws: zzz.WebSocket, msg: zzz.WsMessage) -> None:
        if isinstance(msg, zzz.Text):
            zzz.broadcast(list(rooms[ws.param("room") or "lobby"]), f"{_name(ws)}: {msg.data}")

    def leave(ws: zzz.WebSocket, code: int, reason: str) -> None:
        room = ws.param("room") or "lobby"
        rooms[room].discard(ws)
        if rooms[room]:
            zzz.broadcast(list(rooms[room]), f"* {_name(ws)} left")
        else:
            del rooms[room]

    page = PAGE % {"impl": core.IMPLEMENTATION}
    chat = zzz.Controller.define(
        [zzz.Router.ws("/ws/chat/:room", zzz.WsConfig(on_open=join, on_message=say, on_close=leave))],
        middleware=[identify],
    )
    raw_routes = [
        zzz.Router.get("/raw", lambda req: zzz.Response(page, content_type="text/html; charset=utf-8")),
        zzz.Router.ws("/ws/echo", zzz.WsConfig(on_message=echo)),
        chat,
    ]
    app: zzz.App = channels_demo.build_app(extra_routes=raw_routes, pubsub=pubsub, **settings)
    return app


def _name(ws: zzz.WebSocket) -> str:
    return f"{ws.query_param('name') or 'guest'}#{ws.get_assign('user_id')}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m zzz", description="Run the zzz demo server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--loop", default="auto", choices=["auto", "uvloop", "asyncio"])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--redis", metavar="URL", help="keep the chat's rooms and presence in this Redis")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:  # one line and exit 2, before anything binds
        parser.exit(2, f"{parser.prog}: error: --port {args.port} is outside 0-65535\n")
    if args.workers > 1 and not args.redis:
        # Each worker would have its own rooms and presence: users on different workers would not meet.
        parser.exit(
            2,
            f"zzz: --workers {args.workers} needs --redis URL: "
            "without Redis every worker has its own rooms and presence\n",
        )
    pubsub: zzz.PubSub | None = None
    if args.redis:
        try:
            pubsub = zzz.RedisPubSub(args.redis)
        except ImportError as exc:
            parser.exit(2, f"zzz: {exc}\n")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    print(
        f"zzz demo: core={core.IMPLEMENTATION}; open {http_url(args.host, args.port)} "
        f"(Channels chat) or /raw (raw WebSocket chat)",
        flush=True,
    )
    if args.workers > 1:
        logging.getLogger("zzz.demo").warning(
            "the raw chat at /raw keeps its rooms per worker (only the chat at / uses Redis)"
        )
    build_app(pubsub=pubsub).run(host=args.host, port=args.port, loop=args.loop, workers=args.workers)


if __name__ == "__main__":
    main()
