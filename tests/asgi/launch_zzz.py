"""Serve an ASGI app on zzz with settings its CLI has no option for (``ping_interval`` ...).

``python tests/asgi/launch_zzz.py MODULE:ATTR --port P [NAME=VALUE ...]`` imports the app and
calls ``zzz.asgi.serve(app, host="127.0.0.1", port=P, NAME=VALUE, ...)`` (values are floats when
they parse as such). Used by ``asgi_servers.zzz_command`` once zzz is in ``SERVERS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any


def _value(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def main(argv: list[str]) -> int:
    """Parse the command line, import the app, serve it until stopped."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("app", help="MODULE:ATTR")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("settings", nargs="*", help="NAME=VALUE")
    args = parser.parse_intermixed_args(argv)  # settings come after --port P
    module_name, _, attr = args.app.partition(":")
    target = getattr(importlib.import_module(module_name), attr)
    settings = {name: _value(value) for name, _, value in (s.partition("=") for s in args.settings)}
    import zzz.asgi  # type: ignore[import-not-found,unused-ignore]  # issue 17; not there before it

    zzz.asgi.serve(target, host=args.host, port=args.port, **settings)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
