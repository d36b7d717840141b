"""Presence: who is on a topic, as a dict of keys to the metas of their connections (Phoenix's shape).

Entries live in the pub/sub backend's replica; this module is the public face over every backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zzz.channels.pubsub import PubSub, active_backends

if TYPE_CHECKING:
    from zzz.channels.socket import ChannelSocket

__all__ = ["Presence"]

PresenceList = dict[str, dict[str, list[dict[str, Any]]]]


class Presence:
    """Track and list presences; clients receive ``presence_state`` on join and ``presence_diff`` after.

    ``list`` returns ``{key: {"metas": [meta, ...]}}``; every meta carries its ``phx_ref`` (and
    ``phx_ref_prev`` after an update), so phoenix.js's ``Presence`` and zzz.js's can sync from it.
    With ``RedisPubSub`` the list covers every process (each keeps a replica fed by the diffs).
    """

    @staticmethod
    def track(socket: ChannelSocket, topic: str, key: str, meta: dict[str, Any] | None = None) -> str:
        """Same as ``socket.track(topic, key, meta)``."""
        return socket.track(topic, key, meta)

    @staticmethod
    def untrack(socket: ChannelSocket, topic: str, key: str | None = None) -> None:
        """Same as ``socket.untrack(topic, key)``."""
        socket.untrack(topic, key)

    @staticmethod
    def list(topic: str, pubsub: PubSub | None = None) -> PresenceList:
        """The presences on ``topic``.

        Args:
            topic: the topic.
            pubsub: the backend to read; None merges every backend of this process (usually there is one).

        Returns:
            ``{key: {"metas": [meta, ...]}}``.
        """
        backends = [pubsub] if pubsub is not None else active_backends()
        merged: PresenceList = {}
        seen: set[str] = set()  # two backends on one Redis hold the same entries
        for backend in backends:
            for key, value in backend.presence_list(topic).items():
                metas = merged.setdefault(key, {"metas": []})["metas"]
                for meta in value["metas"]:
                    if meta["phx_ref"] not in seen:
                        seen.add(meta["phx_ref"])
                        metas.append(meta)
        return merged
