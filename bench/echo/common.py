"""Shared start-up of the bench/echo servers: command line, file-descriptor limit, uvloop.

Every server script serves the same two paths: ``/`` echoes each message back as it came
(same type, same bytes) and ``/broadcast`` sends a text message from any connection to all
connections on that path, the sender included.  (The raw fan-out ceiling serves only the
broadcast; the Channels and Socket.IO servers add their own endpoints: see their docstrings.)
"""

from __future__ import annotations

import argparse
import resource
from collections.abc import Callable

__all__ = ["BROADCAST_PATH", "CHANNEL_PATH", "CHANNEL_TOPIC", "ECHO_PATH", "parse_args", "raise_nofile_limit"]

ECHO_PATH = "/"
BROADCAST_PATH = "/broadcast"
# Channels (Phoenix wire) and Socket.IO: the load client joins this topic / room name.
CHANNEL_PATH = "/socket"
CHANNEL_TOPIC = "bench:fanout"


def raise_nofile_limit() -> int:
    """Raise the soft limit on open files to the hard limit.

    The memory benchmark and the fan-out rows open 10,000 connections; the default soft limit (often 1024) would
    make the server refuse them long before memory says anything.

    Returns:
        The soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def parse_args(
    description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None
) -> argparse.Namespace:
    """Parse the options every server script takes, and raise the file limit.

    Args:
        description: one line for ``--help``.
        extra: adds a script's own options to the parser.

    Returns:
        The namespace with ``host``, ``port``, ``compression`` and the extra options.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--compression",
        action="store_true",
        help="accept permessage-deflate when the client offers it (off by default)",
    )
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    raise_nofile_limit()
    return args
