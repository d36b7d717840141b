"""``python -m zzz MODULE:ATTR [options]`` serves an app, ``python -m zzz [options]`` the demo (``zzz.cli``)."""

from __future__ import annotations

from zzz.cli import main
from zzz.demo import build_app

__all__ = ["build_app", "main"]

if __name__ == "__main__":
    main()
