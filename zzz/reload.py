"""``--reload``: serve the app in a child process, and start a new one whenever a ``.py`` file under
the current directory changes (watchfiles when installed, a poll of modification times otherwise).

The reloader binds the socket once and hands it to each child, so the address stays the same (port
0 included) and a connection that comes during a restart waits in the socket's queue. Each child is
a fresh interpreter running ``python -m zzz`` with the same options less ``--reload``.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from zzz import runner

__all__ = ["LISTEN_FD_ENV", "POLL_ENV", "run", "snapshot"]

logger = logging.getLogger("zzz")

LISTEN_FD_ENV = "ZZZ_LISTEN_FD"  # read by zzz.cli in the child
POLL_ENV = "ZZZ_RELOAD_POLL"  # set (to anything but "") to poll even when watchfiles is installed
_POLL_SECONDS = 0.5
# Directories never watched: virtualenvs, caches, VCS data, anything hidden.
_SKIP = {"__pycache__", "node_modules", "venv", "build", "dist", "site-packages"}
_STOP_TIMEOUT = 15.0  # a child that has not stopped this long after SIGTERM is killed


def run(args: list[str], listen: runner.Listen) -> int:
    """Serve ``python -m zzz ARGS`` and restart it on changes until SIGINT/SIGTERM; the exit code.

    2 when the first child exits with 2 (its options or app are bad: it said why in one line),
    1 when the address cannot be bound, 0 after a signal.
    """
    try:
        sock = runner.bind(listen)
    except OSError as exc:
        logger.error("zzz: cannot listen on %s: %s", listen.url(), exc.strerror or exc)
        return 1
    path = runner.unix_path(sock)
    root = Path.cwd()
    stopping = threading.Event()
    changes: queue.Queue[str] = queue.Queue()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()
        changes.put("")  # wake the main loop

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    watcher = threading.Thread(target=_watch, args=(root, changes, stopping), daemon=True)
    watcher.start()
    child: subprocess.Popen[bytes] | None = _start(args, sock)
    first = True
    try:
        while not stopping.is_set():
            try:
                what = changes.get(timeout=0.2)
            except queue.Empty:
                what = None
            if stopping.is_set():
                break
            if child is not None and child.poll() is not None:
                code = child.returncode
                child = None
                if first and code == 2:
                    return 2
                logger.warning("zzz: the app exited (code %s); waiting for a change to restart it", code)
            if what:
                logger.info("zzz: %s changed; restarting", what)
                _drain(changes)
                if child is not None:
                    _stop(child)
                child = _start(args, sock)
                first = False
        return 0
    finally:
        stopping.set()
        if child is not None:
            _stop(child)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        runner.unlink_socket(path)
        sock.close()


def _start(args: list[str], sock: socket.socket) -> subprocess.Popen[bytes]:
    fd = sock.fileno()
    env = dict(os.environ, **{LISTEN_FD_ENV: str(fd)})
    return subprocess.Popen([sys.executable, "-m", "zzz", *args], env=env, pass_fds=(fd,))


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _drain(changes: queue.Queue[str]) -> None:
    # One restart for a burst of changes (an editor writes a file and its backup, a checkout many).
    time.sleep(0.05)
    while True:
        try:
            changes.get_nowait()
        except queue.Empty:
            return


def _watch(root: Path, changes: queue.Queue[str], stopping: threading.Event) -> None:
    if not os.environ.get(POLL_ENV):
        try:
            import watchfiles
        except ImportError:
            pass
        else:
            logging.getLogger("watchfiles").setLevel(logging.WARNING)  # we say what changed ourselves
            for batch in watchfiles.watch(
                root, watch_filter=watchfiles.PythonFilter(), stop_event=stopping, raise_interrupt=False
            ):
                changes.put(os.path.relpath(min(path for _, path in batch), root))
            return
    seen = snapshot(root)
    while not stopping.wait(_POLL_SECONDS):
        now = snapshot(root)
        if now != seen:
            changed = sorted(set(now.items()) ^ set(seen.items()))
            seen = now
            changes.put(os.path.relpath(changed[0][0], root))


def snapshot(root: Path) -> dict[str, float]:
    """Modification times of the ``.py`` files under ``root`` (hidden and virtualenv folders skipped)."""
    return {path: mtime for path, mtime in _py_files(root)}


def _py_files(root: Path) -> Iterator[tuple[str, float]]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = [
            d
            for d in dirs
            if not d.startswith(".")
            and d not in _SKIP
            and not os.path.exists(os.path.join(folder, d, "pyvenv.cfg"))
        ]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                try:
                    yield path, os.stat(path).st_mtime_ns / 1e9
                except FileNotFoundError:
                    continue
