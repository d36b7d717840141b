"""Shared start-up of the bench/echo servers: command line, file-descriptor limit, uvloop.

Every server script serves the same two paths: ``/`` echoes each message back as it came
(same type, same bytes) and ``/broadcast`` sends a text message from any connection to all
connections on that path, the sender included.
"""

from __future__ import annotations

import argparse
import resource

__all__ = ["BROADCAST_PATH", "ECHO_PATH", "parse_args", "raise_nofile_limit"]

ECHO_PATH = "/"
BROADCAST_PATH = "/broadcast"


def raise_nofile_limit() -> int:
    """Raise the soft limit on open files to the hard limit.

    The memory benchmark opens 10,000 connections; the default soft limit (often 1024) would
    make the server refuse them long before memory says anything.

    Returns:
        The soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def parse_args(description: str) -> argparse.Namespace:
    """Parse the options every server script takes, and raise the file limit.

    Args:
        description: one line for ``--help``.

    Returns:
        The namespace with ``host``, ``port`` and ``compression``.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--compression",
        action="store_true",
        help="accept permessage-deflate when the client offers it (off by default)",
    )
    args = parser.parse_args()
    raise_nofile_limit()
    return args
