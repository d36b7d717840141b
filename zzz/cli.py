"""The command line: ``python -m zzz MODULE:ATTR [options]`` and the ``zzz`` console script serve an
app with uvicorn's conventions; without MODULE:ATTR they serve the demo (``zzz.demo``).

Everything is checked before anything binds or prints that it serves: a bad value is one line on
stderr naming the option and the problem, and exit status 2. ``--reload`` is ``zzz.reload``,
``--workers`` the supervisor of ``zzz.runner``. ``--interface`` says how ATTR is served: ``auto``
(a ``zzz.App`` natively, any other callable as an ASGI 3 app, ``zzz.asgi``) or ``asgi``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import ipaddress
import logging
import os
import socket
import ssl as ssl_module
import stat
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from zzz import reload, runner
from zzz.reload import LISTEN_FD_ENV
from zzz.server import App

__all__ = ["UsageError", "load_app", "main", "use_redis"]

logger = logging.getLogger("zzz")

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
INTERFACES = ("auto", "asgi")
# The longest path a Unix socket address holds on Linux (sun_path is 108 bytes with its NUL).
_UDS_MAX = 107


class UsageError(Exception):
    """A bad command line: its message is the one line printed after ``zzz: ``."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints the usage and then the error: two lines. One is the contract.
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="zzz",
        description="Serve a zzz app (MODULE:ATTR, imported from the current directory), or the demo.",
        allow_abbrev=False,  # --reload must be spelt out: the reloader removes it from the child's options
    )
    p.add_argument(
        "app",
        nargs="?",
        metavar="MODULE:ATTR",
        help="a zzz.App or an ASGI app, e.g. myapp:app (none: the demo)",
    )
    p.add_argument("--factory", action="store_true", help="ATTR is a callable that returns the app")
    p.add_argument(
        "--interface",
        default="auto",
        choices=INTERFACES,
        help="auto: a zzz.App natively, any other callable as ASGI 3; asgi: ASGI 3 (auto)",
    )
    p.add_argument("--host", help="address to bind (127.0.0.1)")
    p.add_argument("--port", help="TCP port, 0-65535 (8080; 0: any free one)")
    p.add_argument("--uds", metavar="PATH", help="listen on this Unix socket instead of host and port")
    p.add_argument("--workers", metavar="N", help="N supervised worker processes sharing the socket")
    p.add_argument("--loop", default="auto", choices=["auto", "uvloop", "asyncio"], help="event loop (auto)")
    p.add_argument(
        "--reload", action="store_true", help="restart when a .py file under the current directory changes"
    )
    p.add_argument("--log-level", default="info", type=str.lower, choices=LOG_LEVELS, help="(info)")
    p.add_argument("--ssl-certfile", metavar="FILE", help="serve TLS with this certificate chain (PEM)")
    p.add_argument(
        "--ssl-keyfile", metavar="FILE", help="its private key (PEM), if not in the certificate file"
    )
    p.add_argument(
        "--proxy-headers",
        action="store_true",
        default=None,
        help="believe X-Forwarded-For/-Proto and Forwarded from --forwarded-allow-ips",
    )
    p.add_argument(
        "--forwarded-allow-ips",
        metavar="LIST",
        help="comma-separated addresses or CIDRs trusted as proxies, or * (127.0.0.1)",
    )
    p.add_argument(
        "--redis",
        metavar="URL",
        help="put every Channels endpoint on the in-memory backend on RedisPubSub(URL)",
    )
    return p


@dataclasses.dataclass
class Options:
    """A checked command line."""

    app: str | None
    factory: bool
    interface: str
    listen: runner.Listen
    workers: int | None
    loop: str
    reload: bool
    log_level: str
    ssl: ssl_module.SSLContext | None
    proxy_headers: bool | None
    forwarded_allow_ips: tuple[str, ...] | None
    redis: str | None


def parse(argv: Sequence[str]) -> Options:
    """Check the command line (nothing is imported from the app yet, nothing is bound).

    Raises:
        UsageError: the first problem found.
    """
    a = _parser().parse_args(list(argv))
    port = 8080 if a.port is None else _int_option("--port", a.port)
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port} is outside 0-65535")
    workers = None if a.workers is None else _int_option("--workers", a.workers)
    if workers is not None and workers < 1:
        raise UsageError(f"--workers {workers}: there must be at least 1 worker")
    if a.reload and workers is not None:
        raise UsageError("--reload cannot be used with --workers (it restarts one process)")
    if a.interface == "asgi" and a.app is None:
        raise UsageError("--interface asgi needs MODULE:ATTR (the demo is a zzz.App)")
    if a.factory and a.app is None:
        raise UsageError("--factory needs MODULE:ATTR (the demo has no factory)")
    if a.app is not None and not _is_spec(a.app):
        raise UsageError(f"MODULE:ATTR: {a.app!r} is not of the form MODULE:ATTR (e.g. myapp:app)")
    host = "127.0.0.1" if a.host is None else a.host
    if a.uds is not None:
        if a.host is not None or a.port is not None:
            raise UsageError("--uds cannot be used with --host or --port (it replaces them)")
        _check_uds(a.uds)
    listen = runner.Listen(host, port, a.uds, _inherited_socket())
    if a.loop == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise UsageError("--loop uvloop: uvloop is not installed (pip install 'zzz[uvloop]')") from None
    ssl = _ssl_context(a.ssl_certfile, a.ssl_keyfile)
    allow = None if a.forwarded_allow_ips is None else _allow_ips(a.forwarded_allow_ips)
    redis = a.redis or None  # an empty URL is no Redis (as an unset variable in a shell script)
    if redis is not None:
        _check_redis(redis)
    if a.app is None and workers is not None and workers > 1 and redis is None:
        # Each worker would have its own rooms and presence: users on different workers would not meet.
        raise UsageError(
            f"--workers {workers} needs --redis URL: without Redis every worker has its own rooms and presence"
        )
    return Options(
        app=a.app,
        factory=a.factory,
        interface=a.interface,
        listen=listen,
        workers=workers,
        loop=a.loop,
        reload=a.reload,
        log_level=a.log_level,
        ssl=ssl,
        proxy_headers=a.proxy_headers,
        forwarded_allow_ips=allow,
        redis=redis,
    )


def _int_option(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{name} {value!r} is not an integer") from None


def _is_spec(spec: str) -> bool:
    module, sep, attr = spec.partition(":")
    return bool(sep and module and attr)


def _check_uds(path: str) -> None:
    if len(os.fsencode(path)) > _UDS_MAX:
        raise UsageError(f"--uds {path!r}: longer than {_UDS_MAX} bytes, the most a Unix socket path holds")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"--uds {path!r}: the directory {parent!r} does not exist")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise UsageError(f"--uds {path!r}: exists and is not a socket")


def _inherited_socket() -> socket.socket | None:
    fd = os.environ.pop(LISTEN_FD_ENV, None)
    if fd is None:
        return None
    return socket.socket(fileno=int(fd))


def _ssl_context(certfile: str | None, keyfile: str | None) -> ssl_module.SSLContext | None:
    if certfile is None:
        if keyfile is not None:
            raise UsageError("--ssl-keyfile needs --ssl-certfile")
        return None
    for option, path in (("--ssl-certfile", certfile), ("--ssl-keyfile", keyfile)):
        if path is not None and not os.path.isfile(path):
            raise UsageError(f"{option} {path!r}: no such file")
    context = ssl_module.SSLContext(ssl_module.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (ssl_module.SSLError, OSError) as exc:
        keys = f" with the key {keyfile!r}" if keyfile else ""
        raise UsageError(f"--ssl-certfile {certfile!r}: cannot load it{keys}: {_one_line(exc)}") from None
    return context


def _allow_ips(value: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in value.split(",") if item.strip())
    if not items:
        raise UsageError("--forwarded-allow-ips: empty (give addresses, CIDRs or *)")
    for item in items:
        if item == "*":
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise UsageError(f"--forwarded-allow-ips: {item!r} is not an IP address, a CIDR or *") from None
    return items


def _check_redis(url: str) -> None:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise UsageError(f"--redis {url!r}: not a redis://, rediss:// or unix:// URL")
    try:
        import redis.asyncio  # noqa: F401
    except ImportError:
        raise UsageError("--redis needs the 'redis' package: pip install 'zzz[redis]'") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- the app ---------------------------------------------------------------------------------------


def load_app(spec: str, factory: bool = False, interface: str = "native") -> Any:
    """Import ``MODULE:ATTR`` from the current directory (then ``sys.path``) and return the app.

    ``ATTR`` may be dotted (``module:holder.app``). With ``factory``, ``ATTR`` is called with no
    arguments and must return the app.

    Args:
        interface: what the app must be: ``"native"`` a ``zzz.App``; ``"auto"`` a ``zzz.App`` or
            any other callable (an ASGI 3 app); ``"asgi"`` a callable that is not a ``zzz.App``.

    Raises:
        UsageError: the module does not import, has no such attribute, or it is not what
            ``interface`` asks for.
    """
    module_name, _, attr = spec.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)  # uvicorn's convention, also for the console script
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise UsageError(
                f"MODULE:ATTR {spec!r}: no module named {exc.name!r} in {cwd} or on sys.path"
            ) from None
        raise UsageError(
            f"MODULE:ATTR {spec!r}: importing it failed: {_one_line(exc)}{_where(exc)}"
        ) from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - whatever the module raised: one line, exit 2
        raise UsageError(
            f"MODULE:ATTR {spec!r}: importing it failed: {_one_line(exc)}{_where(exc)}"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(
                f"MODULE:ATTR {spec!r}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    if factory:
        if not callable(obj):
            raise UsageError(f"--factory: {spec!r} is {_a(obj)}, not a callable")
        try:
            obj = obj()
        except Exception as exc:  # noqa: BLE001 - whatever the factory raised: one line, exit 2
            raise UsageError(f"--factory: calling {spec!r} failed: {_one_line(exc)}{_where(exc)}") from None
        _check_kind(obj, interface, f"--factory: {spec!r} returned {_a(obj)}")
    elif interface == "native" and not isinstance(obj, App):
        hint = " (with --factory if it returns one)" if callable(obj) else ""
        raise UsageError(f"MODULE:ATTR {spec!r} is {_a(obj)}, not a zzz.App{hint}")
    else:
        _check_kind(
            obj, interface, f"MODULE:ATTR {spec!r} is {_a(obj)}", " (with --factory if it returns one)"
        )
    return obj


def _check_kind(obj: Any, interface: str, what: str, factory_hint: str = "") -> None:
    if isinstance(obj, App):
        if interface == "asgi":
            raise UsageError(f"{what}, a zzz.App and not an ASGI app (serve it with --interface auto)")
        return
    if interface == "native":
        raise UsageError(f"{what}, not a zzz.App")
    if not callable(obj):
        raise UsageError(f"{what}, not a zzz.App nor an ASGI app (a callable)")
    if not _takes_three(obj):
        # Most likely a factory named without --factory (an ASGI 3 app is app(scope, receive, send)).
        raise UsageError(f"{what}, not a zzz.App nor an ASGI 3 app (scope, receive, send){factory_hint}")


def _takes_three(obj: Any) -> bool:
    try:
        inspect.signature(obj).bind(None, None, None)
    except TypeError:
        return False
    except ValueError:  # no signature to read (a builtin): let it be tried
        return True
    return True


def _a(obj: Any) -> str:
    name = type(obj).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _where(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return ""  # its message names the file and line already
    frames = traceback.extract_tb(exc.__traceback__)
    return f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def channel_endpoints(app: App) -> list[Any]:
    """The Channels endpoints an app serves, each once (found through its WebSocket routes)."""
    from zzz.channels.socket import ChannelEndpoint

    found: list[Any] = []
    for route in app.route_table.routes:
        config = route.ws_config
        endpoint = getattr(getattr(config, "on_open", None), "__self__", None)
        if isinstance(endpoint, ChannelEndpoint) and not any(endpoint is e for e in found):
            found.append(endpoint)
    return found


def use_redis(app: App, url: str) -> int:
    """Put every Channels endpoint of ``app`` that is on the in-memory backend on ``RedisPubSub(url)``.

    Endpoints that shared one in-memory backend share one Redis backend; the first backend has
    RedisPubSub's default prefix (``zzz``), any further one the prefix ``zzz:<its path>`` so that
    separate endpoints stay separate as they were. Returns how many endpoints moved.
    """
    from zzz.channels.pubsub import InMemoryPubSub
    from zzz.channels.redis import RedisPubSub

    replaced: dict[int, Any] = {}
    moved = 0
    for endpoint in channel_endpoints(app):
        old = endpoint.pubsub
        if type(old) is not InMemoryPubSub:
            continue
        new = replaced.get(id(old))
        if new is None:
            prefix = "zzz" if not replaced else f"zzz:{_path_of(app, endpoint)}"
            new = replaced[id(old)] = RedisPubSub(url, prefix=prefix)
        new.register_channels(endpoint.config.channels)
        endpoint.pubsub = new
        endpoint.config.pubsub = new
        moved += 1
    return moved


def _path_of(app: App, endpoint: Any) -> str:
    for route in app.route_table.routes:
        if getattr(getattr(route.ws_config, "on_open", None), "__self__", None) is endpoint:
            return route.pattern
    return "?"


def configure(app: App, options: Options) -> int:
    """Apply the options that change the app (proxy headers, Redis); how many endpoints moved to Redis."""
    if not isinstance(app, App):  # an ASGI app: asgi_target took the options
        return 0
    security = app.settings.security
    changes: dict[str, Any] = {}
    if options.proxy_headers is not None:
        changes["proxy_headers"] = options.proxy_headers
    if options.forwarded_allow_ips is not None:
        changes["forwarded_allow_ips"] = options.forwarded_allow_ips
    if changes:
        app.settings = dataclasses.replace(app.settings, security=dataclasses.replace(security, **changes))
    return 0 if options.redis is None else use_redis(app, options.redis)


def _warnings(app: App, options: Options, moved: int) -> None:
    # Said once, by the process that checks the app (not by every worker).
    from zzz.channels.pubsub import InMemoryPubSub

    if options.redis is not None and not moved:
        logger.warning("zzz: --redis: no Channels endpoint of this app is on the in-memory backend")
    elif (
        options.workers is not None
        and options.workers > 1
        and options.redis is None
        and any(type(e.pubsub) is InMemoryPubSub for e in channel_endpoints(app))
    ):
        logger.warning(
            "zzz: --workers %d with Channels on the in-memory backend: each worker has its own "
            "topics and presence (use --redis URL to share them)",
            options.workers,
        )


def asgi_target(app: Any, options: Options) -> Any:
    """An ASGI callable with the options that apply to it, as a ``zzz.asgi.AsgiApp``.

    Raises:
        UsageError: ``--redis`` (an ASGI app has no zzz Channels endpoints).
    """
    from zzz.asgi import AsgiApp

    if options.redis is not None:
        raise UsageError("--redis: an ASGI app has no zzz Channels endpoints to put on Redis")
    settings: dict[str, Any] = {}
    if options.proxy_headers is not None:
        settings["proxy_headers"] = options.proxy_headers
    if options.forwarded_allow_ips is not None:
        settings["forwarded_allow_ips"] = options.forwarded_allow_ips
    return AsgiApp(app, **settings)


def _loader(options: Options, warn: bool) -> Callable[[], Any]:
    def load() -> Any:
        if options.app is None:
            from zzz.demo import build_app

            app: Any = build_app()
        else:
            app = load_app(options.app, options.factory, options.interface)
        if not isinstance(app, App):
            return asgi_target(app, options)
        moved = configure(app, options)
        if warn:
            _warnings(app, options, moved)
        return app

    return load


def _load_in_worker(load: Callable[[], Any]) -> Callable[[], Any]:
    # In a worker the CLI's one line and exit 2 still apply to an app that stopped importing.
    def load_or_exit() -> Any:
        try:
            return load()
        except UsageError as exc:
            _fail(str(exc), 2)

    return load_or_exit


def _check_in_a_fork(load: Callable[[], Any]) -> None:
    """Load the app once in a child process, so that the supervisor itself never imports it.

    Each worker then imports it afresh, and a rolling restart (SIGHUP) runs the code as it is on
    disk at that moment.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            load()
        except UsageError as exc:
            sys.stderr.write(f"zzz: {exc}\n")
            code = 2
        except BaseException as exc:  # noqa: BLE001 - the child must end here, with one line
            sys.stderr.write(f"zzz: MODULE:ATTR: loading the app failed: {_one_line(exc)}\n")
            code = 2
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 2:
        raise SystemExit(2)  # the child said why, in one line
    if code != 0:
        _fail(f"MODULE:ATTR: loading the app crashed the process ({_status(code)})", 2)


def _status(code: int) -> str:
    return f"exit code {code}" if code >= 0 else f"signal {-code}"


def _fail(message: str, code: int) -> NoReturn:
    sys.stderr.write(f"zzz: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line (``sys.argv[1:]`` by default); exits 2 on a bad one."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        options = parse(args)
    except UsageError as exc:
        _fail(str(exc), 2)
    logging.basicConfig(
        level=options.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    if options.reload:
        raise SystemExit(reload.run([a for a in args if a != "--reload"], options.listen))
    if options.workers is None:
        try:
            app = _loader(options, warn=True)()
        except UsageError as exc:
            _fail(str(exc), 2)
        target: Any = app
    else:
        _check_in_a_fork(_loader(options, warn=True))
        target = _load_in_worker(_loader(options, warn=False))
    if options.app is None:
        from zzz import core

        print(
            f"zzz demo: core={core.IMPLEMENTATION}; open {options.listen.url()} "
            f"(Channels chat) or /raw (raw WebSocket chat)",
            flush=True,
        )
        if options.workers is not None and options.workers > 1:
            logger.warning("the raw chat at /raw keeps its rooms per worker (only the chat at / uses Redis)")
    if options.workers is None and not isinstance(target, App):
        from zzz import asgi

        # An ASGI app (a zzz.asgi.AsgiApp): a failed lifespan startup exits 3. In a worker it
        # ends that worker, and the supervisor stops with 1 once they keep dying.
        asgi.run(target, options.listen, options.loop, options.ssl, options.workers)
        return
    runner.run(target, options.listen, options.loop, options.ssl, options.workers)
