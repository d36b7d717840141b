"""Chat rooms on zzz Channels: join a room, say something, everyone in the room hears it.

Run ``python examples/chat_channels.py`` and open http://127.0.0.1:8080/ in two tabs.
Add ``--redis redis://127.0.0.1:6379/0`` and start it on two ports to chat across processes.
"""

from __future__ import annotations

import argparse
from typing import Any

import zzz
from zzz.channels import (
    ChannelConfig,
    ChannelDef,
    ChannelSocket,
    JoinResult,
    RedisPubSub,
    Reply,
    channel_routes,
)

PAGE = """<!doctype html><meta charset="utf-8"><title>rooms</title>
<script src="/__zzz/zzz.js"></script>
<input id="msg" placeholder="message"><ul id="log"></ul>
<script>
const name = prompt("Your name") || "anon";
const room = Zzz.socket("/socket").channel("room:lobby", {name});
room.on("said", (m) => {
  const li = document.createElement("li");
  li.textContent = m.name + ": " + m.text;   // textContent: never render user input as HTML
  document.getElementById("log").appendChild(li);
});
room.join().catch((err) => alert(err.reason));
document.getElementById("msg").onchange = (e) => { room.push("say", {text: e.target.value}); e.target.value = ""; };
</script>
"""


def join(socket: ChannelSocket, topic: str, payload: Any) -> JoinResult:
    name = payload.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= 32:
        return JoinResult.error("a name of 1 to 32 characters, please")
    socket.assign("name", name)
    return JoinResult.ok()


def say(socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
    text = payload.get("text")
    if not isinstance(text, str) or not text:
        return Reply.error("nothing to say")
    socket.broadcast(topic, "said", {"name": socket.get_assign("name"), "text": text[:1000]})
    return {"ok": True}


def build_app(redis_url: str | None = None) -> zzz.App:
    """The example app; with ``redis_url`` the rooms are shared by every process on that Redis."""
    rooms = ChannelDef("room:*", join=join, handlers={"say": say})
    pubsub = RedisPubSub(redis_url) if redis_url else None
    return zzz.App(
        [
            zzz.Router.get("/", lambda request: zzz.Response(PAGE, content_type="text/html; charset=utf-8")),
            *channel_routes("/socket", ChannelConfig(channels=[rooms], pubsub=pubsub)),
        ]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--redis", default=None)
    args = parser.parse_args()
    build_app(args.redis).run("127.0.0.1", args.port)
