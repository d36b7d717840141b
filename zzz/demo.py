"""The demo ``python -m zzz`` serves when it is given no app: a Channels chat with rooms and
presence at ``/`` (zzz.js), plus raw WebSocket routes ``/ws/echo`` and ``/ws/chat/:room`` (page at
``/raw``).

The CLI (``zzz.cli``) serves it with every option; ``--redis URL`` puts the Channels chat's rooms and
presence on Redis, and is required with ``--workers`` > 1.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

import zzz
from zzz import core
from zzz.channels import demo as channels_demo

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
