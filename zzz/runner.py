"""Running an app until a signal: in this process, or as supervised worker processes sharing one
listening socket.

``App.run`` and the CLI check their arguments and call ``run``; everything here happens after that,
around ``app.start`` and ``server.close``. The app is known only by those two methods, so this module
sits beside the server rather than above it.

The supervisor (``workers=N``) binds the socket once, before any worker exists, and forks the workers;
they all accept from that one socket, so port 0 works and no SO_REUSEPORT is needed. It never accepts
itself, but it keeps the socket open until it exits: the kernel's queue of connections waiting to be
accepted lives as long as one process holds the socket, whichever worker comes and goes.

A rolling restart (SIGHUP) replaces the workers one at a time, and that queue is why no client is
refused or reset meanwhile:

1. the supervisor forks the new worker, which starts accepting and then says so on a pipe;
2. only then is the old worker told to drain (SIGUSR1): it stops accepting, i.e. it takes its copy
   of the socket out of its loop, and leaves the queue to the new worker; a connection it accepted
   before that is served as usual (its request answered with ``Connection: close``, a WebSocket
   closed with 1012 in a later round of the drain);
3. the old worker closes its WebSockets in rounds (``drain_batch``, ``drain_interval``), waits for
   the rest, and exits; then the next old worker is replaced.

At every instant some process is accepting, and a connection is only ever in the kernel's queue or
in the hands of a process that answers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib
import logging
import os
import select
import shutil
import signal
import socket
import ssl as ssl_module
import stat
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "Listen",
    "WorkerInfo",
    "bind",
    "current_worker",
    "http_url",
    "loop_factory",
    "multiprocess_metrics",
    "run",
    "unix_path",
    "unlink_socket",
]

logger = logging.getLogger("zzz")

# Close codes of a worker's drain: SIGTERM/SIGINT shut down, SIGUSR1 (from the supervisor) restarts.
_GOING_AWAY = 1001
_SERVICE_RESTART = 1012
# A crash loop: this many unexpected worker exits within _DEATH_WINDOW seconds stop the server.
_MAX_DEATHS = 5
_DEATH_WINDOW = 10.0
# A worker that has not said it is accepting after this long is killed (and counts as a death).
_READY_TIMEOUT = 60.0
# How often a worker checks that its supervisor is still there (it shuts down when it is not).
_ORPHAN_CHECK = 1.0


class _Running(Protocol):
    @property
    def port(self) -> int: ...

    async def close(self, code: int = ..., reason: str = ...) -> None: ...


class _Startable(Protocol):
    async def start(
        self,
        host: str = ...,
        port: int = ...,
        *,
        ssl: ssl_module.SSLContext | None = ...,
        sock: socket.socket | None = ...,
    ) -> Any: ...


# What `run` serves: an app, or a function that loads one (called in each worker, so that a
# rolling restart runs the code as it is on disk now).
AppLoader = Callable[[], _Startable]


@dataclass(frozen=True)
class Listen:
    """Where to listen: ``host``/``port``, a Unix socket path, or a socket already listening.

    Attributes:
        host: the address to bind (``"0.0.0.0"``, ``"::"``, a name).
        port: the TCP port (0: one the system picks).
        uds: a Unix socket path; ``host`` and ``port`` are unused then.
        sock: a listening socket to serve (the reloader's); the others are unused then.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    uds: str | None = None
    sock: socket.socket | None = None

    def url(self, sock: socket.socket | None = None) -> str:
        """What a banner prints: ``http://host:port/`` or ``unix:PATH``, with ``sock``'s real port."""
        if sock is not None and sock.family == socket.AF_UNIX:
            return f"unix:{sock.getsockname()}"
        if self.uds is not None:
            return f"unix:{self.uds}"
        port = self.port if sock is None else int(sock.getsockname()[1])
        return http_url(self.host, port)


@dataclass(frozen=True)
class WorkerInfo:
    """Who this process is among the supervisor's workers (``current_worker()``).

    Attributes:
        index: its slot, 1 to N; a worker that replaces another (after a death, in a restart)
            takes its slot.
        id: unique among the workers of this supervisor, in order of start.
        pid: its process id.
    """

    index: int
    id: int
    pid: int


_worker: WorkerInfo | None = None


def current_worker() -> WorkerInfo | None:
    """This process's ``WorkerInfo`` in a supervised worker, None otherwise."""
    return _worker


def http_url(host: str, port: int) -> str:
    """``http://host:port/``, with an IPv6 address in brackets (RFC 3986 section 3.2.2)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The factory of the event loop ``kind`` names: uvloop for "auto" when installed.

    Raises:
        RuntimeError: "uvloop" but uvloop is not installed.
    """
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise RuntimeError(
                    "loop='uvloop' but uvloop is not installed (pip install zzz[uvloop])"
                ) from None
            return asyncio.new_event_loop
        return uvloop.new_event_loop
    return asyncio.new_event_loop


def bind(listen: Listen, backlog: int = 2048) -> socket.socket:
    """A listening socket for ``listen`` (TCP, or a Unix socket whose stale file is replaced).

    Raises:
        OSError: the address is taken or cannot be bound.
    """
    if listen.sock is not None:
        return listen.sock
    if listen.uds is not None:
        _remove_stale_socket(listen.uds)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(listen.uds)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        return sock
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listen.host.strip("[]"), listen.port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _remove_stale_socket(path: str) -> None:
    # A Unix socket file outlives its server when that one was killed; nobody answers on it then.
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"a server already listens on {path}")


def unix_path(sock: socket.socket) -> str | None:
    """The path of a Unix socket (read while it is open), None for any other."""
    if sock.family != socket.AF_UNIX:
        return None
    path = sock.getsockname()
    return path if isinstance(path, str) and path else None


def unlink_socket(path: str | None) -> None:
    """Remove the Unix socket file this process made (not a file that replaced it)."""
    if path is not None:
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)


@contextlib.contextmanager
def multiprocess_metrics() -> Iterator[Callable[[int], None]]:
    """prometheus-client's multiprocess directory, for the workers of one supervisor.

    A fresh temporary directory, named by ``PROMETHEUS_MULTIPROC_DIR`` for the workers (set before
    any of them forks, so that prometheus-client picks it up in each), removed at the end. Yields
    ``worker_exited(pid)``: it marks the gauges of a worker that exited as dead
    (``prometheus_client.multiprocess.mark_process_dead``; nothing when prometheus-client is not
    installed).
    """
    path = tempfile.mkdtemp(prefix="zzz-metrics-")
    previous = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    try:
        multiprocess: Any = importlib.import_module("prometheus_client.multiprocess")
    except ImportError:
        multiprocess = None

    def worker_exited(pid: int) -> None:
        if multiprocess is not None:
            with contextlib.suppress(Exception):
                multiprocess.mark_process_dead(pid, path)

    try:
        yield worker_exited
    finally:
        if previous is None:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        else:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = previous
        shutil.rmtree(path, ignore_errors=True)


class _CannotListen(Exception):
    pass


def run(
    app: _Startable | AppLoader,
    listen: Listen,
    loop_kind: str,
    ssl: ssl_module.SSLContext | None,
    workers: int | None,
) -> None:
    """Serve until SIGINT or SIGTERM: in this process (``workers`` None) or in supervised workers.

    Args:
        app: the app, or a function that returns it (called in each worker, after the fork).

    Raises:
        SystemExit: 1 when the address cannot be bound (one ERROR line, nothing served) or when
            the workers keep dying.
    """
    load: AppLoader = (lambda: app) if hasattr(app, "start") else app
    if workers is None:
        try:
            _serve_here(load(), listen, loop_kind, ssl)
        except _CannotListen as exc:
            logger.error("zzz: cannot listen on %s: %s", listen.url(), exc)
            raise SystemExit(1) from None
        return
    try:
        sock = bind(listen)
    except OSError as exc:
        logger.error("zzz: cannot listen on %s: %s", listen.url(), exc.strerror or exc)
        raise SystemExit(1) from None
    path = unix_path(sock)
    try:
        code = _Supervisor(load, sock, listen, loop_kind, ssl, workers).run()
    finally:
        if listen.sock is None:
            unlink_socket(path)
            sock.close()
    if code:
        raise SystemExit(code)


def _run_loop(main: Callable[[], Any], loop_kind: str) -> None:
    factory = loop_factory(loop_kind)
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main())
    else:  # pragma: no cover - Python 3.10
        ev = factory()
        try:
            ev.run_until_complete(main())
        finally:
            ev.close()


async def _serve_until_signal(
    server: _Running,
    signals: dict[signal.Signals, tuple[int, str]],
    watch_parent: int | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    """Wait for one of ``signals`` (or, in a worker, for its supervisor to vanish), then drain.

    ``ready`` runs once the handlers are installed: whatever it announces (the banner, a worker's
    "ready" byte) can be followed by a signal at once, and that signal drains instead of killing.
    """
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[tuple[int, str]] = loop.create_future()

    def on_signal(how: tuple[int, str]) -> None:
        if not stop.done():
            stop.set_result(how)

    for sig, how in signals.items():
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, how)
    if watch_parent is not None:

        def check_parent() -> None:
            if os.getppid() != watch_parent:
                on_signal((_GOING_AWAY, "server shutting down"))
            elif not stop.done():
                loop.call_later(_ORPHAN_CHECK, check_parent)

        loop.call_later(_ORPHAN_CHECK, check_parent)
    if ready is not None:
        ready()
    code, reason = await stop
    logger.info("zzz: draining with %d (pid %d)", code, os.getpid())
    await server.close(code, reason)


def _serve_here(app: _Startable, listen: Listen, loop_kind: str, ssl: ssl_module.SSLContext | None) -> None:
    sock: socket.socket | None = None
    if listen.sock is not None or listen.uds is not None:
        try:
            sock = bind(listen)
        except OSError as exc:
            raise _CannotListen(exc.strerror or str(exc)) from None
    path = None if sock is None or listen.sock is not None else unix_path(sock)

    async def main() -> None:
        try:
            if sock is not None:
                server = await app.start(sock=sock, ssl=ssl)
            else:
                server = await app.start(listen.host, listen.port, ssl=ssl)
        except OSError as exc:
            raise _CannotListen(exc.strerror or str(exc)) from None
        where = listen.url(server.sockets[0] if server.sockets else None)
        stops = {signal.SIGINT: (_GOING_AWAY, "server shutting down")}
        stops[signal.SIGTERM] = stops[signal.SIGINT]
        # A reloader's child (it got the listening socket) leaves when the reloader vanishes.
        parent = os.getppid() if listen.sock is not None else None
        await _serve_until_signal(
            server,
            stops,
            watch_parent=parent,
            ready=lambda: print(f"zzz: serving on {where} (pid {os.getpid()})", flush=True),
        )

    try:
        _run_loop(main, loop_kind)
    finally:
        unlink_socket(path)
        if sock is not None and listen.sock is None:
            sock.close()


# -- the supervisor ----------------------------------------------------------------------------------


@dataclass
class _Child:
    index: int
    id: int
    pid: int
    generation: int
    started: float
    ready_fd: int | None  # the pipe it writes b"R" on once accepting; None once read or closed
    ready: bool = False
    draining: bool = False  # told to stop (SIGUSR1 or SIGTERM); its exit is expected
    successor: int | None = None  # pid of the worker started to replace it (a rolling restart)


_SUPERVISOR_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGCHLD,
)


class _Supervisor:
    """Keeps ``target`` workers serving one socket; see the module docstring."""

    def __init__(
        self,
        load: AppLoader,
        sock: socket.socket,
        listen: Listen,
        loop_kind: str,
        ssl: ssl_module.SSLContext | None,
        workers: int,
    ) -> None:
        self.load = load
        self.sock = sock
        self.listen = listen
        self.loop_kind = loop_kind
        self.ssl = ssl
        self.target = workers
        self.children: dict[int, _Child] = {}
        self.deaths: deque[float] = deque()
        self.generation = 0  # SIGHUP makes every worker of an older generation due for a restart
        self.next_id = 1
        self.stopping = False
        self.forced = False
        self.announced = False
        self.exit_code = 0
        self.worker_exited: Callable[[int], None] = lambda pid: None
        self.wake_r = self.wake_w = -1

    # lifecycle

    def run(self) -> int:
        """Supervise until stopped; the exit code (0, or 1 after a crash loop)."""
        with multiprocess_metrics() as worker_exited:
            self.worker_exited = worker_exited
            self.wake_r, self.wake_w = os.pipe()
            os.set_blocking(self.wake_r, False)
            os.set_blocking(self.wake_w, False)
            previous = {sig: signal.signal(sig, _noop) for sig in _SUPERVISOR_SIGNALS}
            old_wakeup = signal.set_wakeup_fd(self.wake_w)
            try:
                self._fill()
                while self.children or not self.stopping:
                    self._step()
            finally:
                signal.set_wakeup_fd(old_wakeup)
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
                for child in list(self.children.values()):  # only after an exception of our own
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child.pid, signal.SIGKILL)
                os.close(self.wake_r)
                os.close(self.wake_w)
        return self.exit_code

    def _step(self) -> None:
        fds = [self.wake_r] + [c.ready_fd for c in self.children.values() if c.ready_fd is not None]
        try:
            readable, _, _ = select.select(fds, [], [], 0.5)
        except InterruptedError:  # pragma: no cover - PEP 475 retries select
            readable = []
        for fd in readable:
            if fd == self.wake_r:
                self._signals()
            else:
                self._ready(fd)
        self._reap()
        self._check_starting()
        if not self.stopping:
            self._fill()
            self._restart_next()

    def _signals(self) -> None:
        try:
            data = os.read(self.wake_r, 512)
        except BlockingIOError:
            return
        for signum in data:
            if signum in (signal.SIGINT, signal.SIGTERM):
                self._stop()
            elif self.stopping:
                continue
            elif signum == signal.SIGHUP:
                self.generation += 1
                logger.info("zzz: SIGHUP: restarting the %d workers one by one", self.target)
            elif signum == signal.SIGTTIN:
                self.target += 1
                logger.info("zzz: SIGTTIN: %d workers", self.target)
            elif signum == signal.SIGTTOU and self.target > 1:
                self.target -= 1
                logger.info("zzz: SIGTTOU: %d workers", self.target)
                self._retire_extra()

    def _stop(self) -> None:
        if self.stopping:
            if not self.forced:  # a second SIGINT/SIGTERM: do not wait for the drains
                self.forced = True
                self.exit_code = 1  # not a graceful shutdown
                logger.warning("zzz: stopping now: killing %d workers", len(self.children))
                for child in self.children.values():
                    _signal(child.pid, signal.SIGKILL)
            return
        self.stopping = True
        logger.info("zzz: shutting down %d workers", len(self.children))
        for child in self.children.values():
            child.draining = True
            _signal(child.pid, signal.SIGTERM)

    # workers

    def _spawn(self, index: int) -> _Child:
        ready_r, ready_w = os.pipe()
        worker_id = self.next_id
        self.next_id += 1
        # Blocked across the fork: until the worker has its own handlers, a signal must neither run
        # the supervisor's (which writes to the supervisor's wakeup pipe) nor be lost.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SUPERVISOR_SIGNALS)
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor's code
            code = 1
            try:
                _worker_signals()
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                os.close(ready_r)
                code = self._worker(WorkerInfo(index, worker_id, os.getpid()), ready_w)
            except BaseException:
                with contextlib.suppress(BaseException):
                    logger.exception("zzz: worker %d failed", index)
            finally:
                with contextlib.suppress(BaseException):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(ready_w)
        child = _Child(index, worker_id, pid, self.generation, time.monotonic(), ready_r)
        self.children[pid] = child
        logger.info("zzz: worker %d started (pid %d)", index, pid)
        return child

    def _worker(self, me: WorkerInfo, ready_w: int) -> int:
        global _worker
        _worker = me
        os.environ["ZZZ_WORKER"] = str(me.index)
        for fd in [self.wake_r, self.wake_w] + [c.ready_fd for c in self.children.values() if c.ready_fd]:
            with contextlib.suppress(OSError):
                os.close(fd)
        supervisor = os.getppid()
        try:
            app = self.load()
        except SystemExit as exc:  # a loader that already said why (one line) and gave a code
            return exc.code if isinstance(exc.code, int) else 1

        async def main() -> None:
            server = await app.start(sock=self.sock, ssl=self.ssl)

            def ready() -> None:  # after the handlers: a SIGUSR1 right after "R" drains, not kills
                os.write(ready_w, b"R")
                os.close(ready_w)
                logger.info("zzz: worker %d serving (pid %d)", me.index, me.pid)

            stops = {
                signal.SIGTERM: (_GOING_AWAY, "server shutting down"),
                signal.SIGINT: (_GOING_AWAY, "server shutting down"),
                signal.SIGUSR1: (_SERVICE_RESTART, "service restart"),
            }
            await _serve_until_signal(server, stops, watch_parent=supervisor, ready=ready)

        _run_loop(main, self.loop_kind)
        return 0

    def _ready(self, fd: int) -> None:
        child = next((c for c in self.children.values() if c.ready_fd == fd), None)
        try:
            data = os.read(fd, 16)
        except OSError:
            data = b""
        os.close(fd)
        if child is None:
            return
        child.ready_fd = None
        if not data:
            return  # it exited before accepting: _reap counts it
        child.ready = True
        if child.draining:
            return
        # A rolling restart: the new worker accepts, so its predecessor may stop accepting now.
        for old in self.children.values():
            if old.successor == child.pid and not old.draining:
                old.draining = True
                logger.info(
                    "zzz: worker %d (pid %d) replaced by pid %d; draining", old.index, old.pid, child.pid
                )
                _signal(old.pid, signal.SIGUSR1)
        if not self.announced and sum(c.ready for c in self.children.values()) >= self.target:
            self.announced = True
            print(
                f"zzz: serving on {self.listen.url(self.sock)} "
                f"(supervisor pid {os.getpid()}, {self.target} workers)",
                flush=True,
            )

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            self.worker_exited(pid)
            if child.ready_fd is not None:
                os.close(child.ready_fd)
            code = os.waitstatus_to_exitcode(status)
            how = f"exit code {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
            for old in self.children.values():
                if old.successor == pid:
                    old.successor = None  # the restart of that slot is tried again
            if child.draining or self.stopping:
                logger.info("zzz: worker %d (pid %d) stopped (%s)", child.index, pid, how)
                continue
            now = time.monotonic()
            self.deaths.append(now)
            while self.deaths and now - self.deaths[0] > _DEATH_WINDOW:
                self.deaths.popleft()
            if len(self.deaths) >= _MAX_DEATHS:
                logger.error(
                    "zzz: %d workers died within %g s (the last, worker %d pid %d: %s); stopping",
                    len(self.deaths),
                    _DEATH_WINDOW,
                    child.index,
                    pid,
                    how,
                )
                self.exit_code = 1
                self._stop()
            else:
                logger.warning("zzz: worker %d (pid %d) died (%s); replacing it", child.index, pid, how)

    def _check_starting(self) -> None:
        now = time.monotonic()
        for child in self.children.values():
            if not child.ready and not child.draining and now - child.started > _READY_TIMEOUT:
                logger.warning(
                    "zzz: worker %d (pid %d) not accepting after %g s; killing it",
                    child.index,
                    child.pid,
                    _READY_TIMEOUT,
                )
                _signal(child.pid, signal.SIGKILL)

    def _counted(self) -> list[_Child]:
        # The workers that make up the target: not stopping, not on their way out of a restart.
        return [c for c in self.children.values() if not c.draining and c.successor is None]

    def _fill(self) -> None:
        counted = self._counted()
        taken = {c.index for c in counted}
        free = (i for i in range(1, self.target + len(counted) + 2) if i not in taken)
        for _ in range(self.target - len(counted)):
            self._spawn(next(free))

    def _retire_extra(self) -> None:
        counted = sorted(self._counted(), key=lambda c: (not c.ready, c.index))
        while len(counted) > self.target:
            child = counted.pop()  # one not accepting yet, else the highest slot
            child.draining = True
            logger.info("zzz: worker %d (pid %d) retired", child.index, child.pid)
            _signal(child.pid, signal.SIGUSR1)

    def _restart_next(self) -> None:
        """One slot at a time: start the successor of the oldest-generation worker."""
        children = self.children.values()
        if any(c.successor is not None or c.draining for c in children):
            return  # a restart in progress (or a drain after one): wait for it
        due = sorted(
            (c for c in children if c.generation < self.generation and c.ready), key=lambda c: c.index
        )
        if not due:
            return
        old = due[0]
        old.successor = self._spawn(old.index).pid


def _worker_signals() -> None:
    """In a new worker: drop the supervisor's handlers (its loop installs its own)."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)  # the supervisor's business
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)


def _noop(signum: int, frame: Any) -> None:
    """The supervisor's handler: the signal's number arrives on the wakeup pipe."""


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
