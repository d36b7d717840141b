"""The twin's test run also runs redis-py's pure-Python reply parser, the one users without hiredis get.

``zzz[redis]`` installs hiredis, so redis-py parses Redis's replies in C and every test run would miss
the Python parser, whose replies ``RedisPubSub`` reads too. With ``ZZZ_NO_EXTENSIONS=1`` (the run of
the pure-Python twin) ``apply()`` makes every ``RedisPubSub`` of the process use the Python parser;
``tests/conftest.py`` calls it for in-process tests and the test apps call it for their processes.
"""

from __future__ import annotations

import os
from typing import Any


def apply() -> None:
    if os.environ.get("ZZZ_NO_EXTENSIONS") != "1":
        return
    try:
        from redis._parsers import _AsyncRESP3Parser
    except ImportError:
        return
    from zzz.channels.redis import RedisPubSub

    if getattr(RedisPubSub._redis, "_python_parser", False):
        return
    original = RedisPubSub._redis

    def _redis(self: RedisPubSub, role: str, socket_timeout: float) -> Any:
        client = original(self, role, socket_timeout)
        client.connection_pool.connection_kwargs["parser_class"] = _AsyncRESP3Parser
        return client

    _redis._python_parser = True  # type: ignore[attr-defined]
    RedisPubSub._redis = _redis  # type: ignore[method-assign]
