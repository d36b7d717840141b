"""A channel app for the Redis fault tests: it publishes numbered broadcasts itself and shows its stats.

Run as ``python -m tests.channels.fault_app --port P --redis URL --name A [--heartbeat S]
[--outage-buffer N]`` (``AppProcess(module="tests.channels.fault_app", args=[...])``).

* ``room:*`` topics have no history, ``feed:*`` topics keep 10,000 broadcasts (``History``).
* The event ``pub`` ``{"count": N, "interval": S}`` on a joined topic makes this process broadcast
  ``msg`` ``{"from": name, "n": 0..N-1}`` on it, one every ``S`` seconds, in a background task (so the
  publishing goes on whatever Redis does, as a server's would); the push gets an ok reply at once.
* The event ``say`` ``{"n": N}`` broadcasts ``msg`` ``{"from": name, "n": N}`` once, from the push's
  own handler (a client that pushes fast publishes as fast as the server reads it).
* ``GET /stats`` answers ``RedisPubSub.stats()`` plus this process's ``node`` id and ``pid``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from typing import Any

import zzz
from tests import redis_parser
from zzz.channels import ChannelConfig, ChannelDef, ChannelSocket, RedisPubSub, channel_routes
from zzz.channels.history import History

_tasks: set[asyncio.Task[None]] = set()


def build_app(redis_url: str, name: str, node_ttl: float, heartbeat: float, outage_buffer: int) -> zzz.App:
    """The fault-test app on ``redis_url``; ``name`` marks the broadcasts this process publishes."""
    pubsub = RedisPubSub(
        redis_url, prefix="zzzfault", node_ttl=node_ttl, heartbeat=heartbeat, outage_buffer=outage_buffer
    )

    def pub(socket: ChannelSocket, topic: str, event: str, payload: Any) -> Any:
        count, interval = int(payload["count"]), float(payload["interval"])

        async def run() -> None:
            for n in range(count):
                pubsub.broadcast(topic, "msg", {"from": name, "n": n})
                await asyncio.sleep(interval)

        task = asyncio.get_running_loop().create_task(run())
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)
        return {}

    def say(socket: ChannelSocket, topic: str, event: str, payload: Any) -> None:
        pubsub.broadcast(topic, "msg", {"from": name, "n": payload["n"]})

    def stats(request: Any) -> zzz.Response:
        body = dict(pubsub.stats(), node=pubsub.node_id, pid=os.getpid())
        return zzz.Response(json.dumps(body), content_type="application/json")

    channels = [
        ChannelDef("room:*", handlers={"pub": pub, "say": say}),
        ChannelDef("feed:*", handlers={"pub": pub, "say": say}, history=History(size=10_000)),
    ]
    config = ChannelConfig(channels=channels, pubsub=pubsub, heartbeat_timeout=None)
    return zzz.App([*channel_routes("/socket", config), zzz.Router.get("/stats", stats)])


def main() -> None:
    redis_parser.apply()  # the twin's run: redis-py's Python reply parser too
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--node-ttl", type=float, default=15.0)
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop", "auto"])
    parser.add_argument("--name", required=True)
    parser.add_argument("--heartbeat", type=float, default=5.0)
    parser.add_argument("--outage-buffer", type=int, default=10_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format=f"[{args.name}] %(levelname)s %(message)s")
    app = build_app(args.redis, args.name, args.node_ttl, args.heartbeat, args.outage_buffer)
    app.run("127.0.0.1", args.port, loop=args.loop)


if __name__ == "__main__":
    main()
