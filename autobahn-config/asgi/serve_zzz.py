"""Serve an Autobahn ASGI echo app on zzz (issue 17) with the limits the suite needs.

``python autobahn-config/asgi/serve_zzz.py MODULE:ATTR HOST PORT``: the settings are those of
``autobahn-config/echo_server.py`` (16 MiB messages and frames, 4 MiB in 64-byte fragments,
room for two 16 MiB echoes in the write buffer). When ``$ZZZ_AUTOBAHN_IMPL`` is set it refuses to
start on another core, so a run labelled "cython" never tests the pure-Python twin.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import echo_server  # autobahn-config/echo_server.py: the native run's limits

import zzz.asgi  # type: ignore[import-not-found,unused-ignore]  # issue 17; not there before it
import zzz.core


def main(argv: list[str]) -> int:
    """Import the app, check the core, serve until stopped."""
    ref, host, port = argv
    expected = os.environ.get("ZZZ_AUTOBAHN_IMPL")
    if expected and expected != zzz.core.IMPLEMENTATION:
        print(
            f"serve_zzz: expected the {expected} core, zzz.core uses {zzz.core.IMPLEMENTATION}",
            file=sys.stderr,
        )
        return 2
    module, _, attr = ref.partition(":")
    app = getattr(importlib.import_module(module), attr)
    zzz.asgi.serve(
        app,
        host=host,
        port=int(port),
        max_message_size=echo_server.MAX_SIZE,
        max_frame_size=echo_server.MAX_SIZE,
        max_fragments=echo_server.MAX_FRAGMENTS,
        max_backpressure=echo_server.MAX_BACKPRESSURE,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
