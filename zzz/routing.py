"""Routing for zzz: routes with ``:param`` and ``*wildcard`` patterns, controllers, middleware chains.

Pure and sans-I/O: ``RouteTable.match`` maps (method, path) to a route, its decoded parameters and
its middleware chain through a segment trie; ``run_chain`` runs middleware around an endpoint;
``RouteTable.handle`` does both for every request the server answers (HTTP routes, WebSocket
upgrades, 404 and 405).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

from zzz._grammar import is_token
from zzz.http import HttpError, Request, Response

__all__ = [
    "CallNext",
    "Controller",
    "Handler",
    "Middleware",
    "MountsRoutes",
    "ResponseLike",
    "Route",
    "RouteMatch",
    "RouteTable",
    "Router",
    "run_chain",
    "to_response",
]

ResponseLike = Response | str | bytes
Handler = Callable[[Request], ResponseLike | Awaitable[ResponseLike]]
CallNext = Callable[..., Awaitable[Response]]
Middleware = Callable[[Request, CallNext], ResponseLike | Awaitable[ResponseLike]]

_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Allow header order: the common methods first, anything custom after them alphabetically.
_METHOD_ORDER = {m: i for i, m in enumerate(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))}

_LITERAL = 0
_PARAM = 1
_WILD = 2


# --------------------------------------------------------------------------- routes


@dataclass(frozen=True, eq=False)
class Route:
    """One endpoint: a method, a path pattern, and a handler or a WebSocket config.

    Build routes with ``Router.get(...)``, ``Router.ws(...)`` etc. rather than directly.

    Attributes:
        method: upper-case method (``"GET"`` for WebSocket routes).
        pattern: the path pattern; inside a ``RouteTable`` it includes every controller prefix.
        handler: ``handler(request) -> Response | str | bytes`` (sync or async); None for
            WebSocket routes.
        ws_config: the WebSocket configuration object, stored as given; None for HTTP routes.
        middleware: middleware run just before the handler; inside a ``RouteTable`` the full
            chain (app, then controllers from the outside in, then the route's own).
    """

    method: str
    pattern: str
    handler: Handler | None = None
    ws_config: Any = None
    middleware: tuple[Middleware, ...] = ()

    @property
    def is_websocket(self) -> bool:
        """True for routes made by ``Router.ws``."""
        return self.ws_config is not None

    def __repr__(self) -> str:
        kind = "ws" if self.is_websocket else self.method
        return f"<Route {kind} {self.pattern}>"


class MountsRoutes(Protocol):
    """What ``Router.channel`` mounts: an object that makes its own routes for a path."""

    def routes(self, path: str) -> Iterable[Route | Controller]:
        """The routes (and controllers) to serve at ``path``."""
        ...


def _parse_pattern(pattern: str) -> list[tuple[int, str]]:
    """Split a pattern into (kind, text) segments, rejecting anything ambiguous."""
    if not isinstance(pattern, str) or not pattern.startswith("/"):
        raise ValueError(f"route pattern must be a str starting with '/': {pattern!r}")
    if pattern == "/":
        return []
    raw = pattern[1:].split("/")
    out: list[tuple[int, str]] = []
    names: set[str] = set()
    for i, seg in enumerate(raw):
        last = i == len(raw) - 1
        if seg[:1] in (":", "*"):
            name = seg[1:]
            if not _PARAM_NAME.match(name):
                raise ValueError(f"route pattern {pattern!r}: invalid parameter name {seg!r}")
            if name in names:
                raise ValueError(f"route pattern {pattern!r}: parameter {name!r} appears twice")
            names.add(name)
            if seg[0] == "*" and not last:
                raise ValueError(f"route pattern {pattern!r}: wildcard {seg!r} must be the last segment")
            out.append((_PARAM if seg[0] == ":" else _WILD, name))
        else:
            if seg == "" and not last:
                raise ValueError(f"route pattern {pattern!r}: empty segment")
            out.append((_LITERAL, unquote(seg, errors="strict") if "%" in seg else seg))
    return out


def _check_callable(obj: object, what: str) -> None:
    if not callable(obj):
        raise TypeError(f"{what} must be callable, got {type(obj).__name__}")


class Router:
    """Route constructors: ``Router.get("/users/:id", handler)``, ``Router.ws("/chat", config)``."""

    @staticmethod
    def route(method: str, pattern: str, handler: Handler, *, middleware: Sequence[Middleware] = ()) -> Route:
        """A plain HTTP route for any method.

        Args:
            method: the method, e.g. ``"GET"`` (case-insensitive).
            pattern: literal segments, ``:name`` segments and an optional trailing ``*name``.
            handler: ``handler(request)`` returning a Response, str or bytes (sync or async).
            middleware: middleware for this route only, run after the controllers' middleware.

        Raises:
            ValueError: invalid method or pattern.
            TypeError: handler or a middleware is not callable.
        """
        if not isinstance(method, str) or not is_token(method.upper()):
            raise ValueError(f"invalid HTTP method: {method!r}")
        _parse_pattern(pattern)
        _check_callable(handler, "route handler")
        for mw in middleware:
            _check_callable(mw, "middleware")
        return Route(method.upper(), pattern, handler, None, tuple(middleware))

    @staticmethod
    def get(pattern: str, handler: Handler, *, middleware: Sequence[Middleware] = ()) -> Route:
        """A GET route (HEAD requests are served by it too, without the body)."""
        return Router.route("GET", pattern, handler, middleware=middleware)

    @staticmethod
    def post(pattern: str, handler: Handler, *, middleware: Sequence[Middleware] = ()) -> Route:
        """A POST route."""
        return Router.route("POST", pattern, handler, middleware=middleware)

    @staticmethod
    def put(pattern: str, handler: Handler, *, middleware: Sequence[Middleware] = ()) -> Route:
        """A PUT route."""
        return Router.route("PUT", pattern, handler, middleware=middleware)

    @staticmethod
    def patch(pattern: str, handler: Handler, *, middleware: Sequence[Middleware] = ()) -> Route:
        """A PATCH route."""
        return Router.route("PATCH", pattern, handler, middleware=middleware)

    @staticmethod
    def delete(pattern: str, handler: Handler, *, middleware: Sequence[Middleware] = ()) -> Route:
        """A DELETE route."""
        return Router.route("DELETE", pattern, handler, middleware=middleware)

    @staticmethod
    def head(pattern: str, handler: Handler, *, middleware: Sequence[Middleware] = ()) -> Route:
        """An explicit HEAD route (takes precedence over the GET route's implicit HEAD)."""
        return Router.route("HEAD", pattern, handler, middleware=middleware)

    @staticmethod
    def options(pattern: str, handler: Handler, *, middleware: Sequence[Middleware] = ()) -> Route:
        """An OPTIONS route."""
        return Router.route("OPTIONS", pattern, handler, middleware=middleware)

    @staticmethod
    def ws(pattern: str, config: Any, *, middleware: Sequence[Middleware] = ()) -> Route:
        """A WebSocket route: a GET that upgrades. ``config`` is stored as given.

        Raises:
            ValueError: invalid pattern, or ``config`` is None.
        """
        _parse_pattern(pattern)
        if config is None:
            raise ValueError("Router.ws needs a WebSocket config")
        for mw in middleware:
            _check_callable(mw, "middleware")
        return Route("GET", pattern, None, config, tuple(middleware))

    @staticmethod
    def channel(path: str, config: MountsRoutes, *, middleware: Sequence[Middleware] = ()) -> Controller:
        """A Channels endpoint (``zzz.ChannelConfig``) at ``path`` and at ``path + "/websocket"``
        (where phoenix.js connects), grouped as one controller with ``middleware``.

        ``config`` is anything with a ``routes(path)`` method, so routing needs no import of the
        feature that provides it: ``ChannelConfig.routes`` builds the endpoint's routes.
        """
        return Controller.define(config.routes(path), middleware=middleware)


@dataclass(frozen=True, eq=False)
class Controller:
    """A group of routes (and nested controllers) sharing a path prefix and middleware.

    Attributes:
        routes: the routes and controllers, as given.
        prefix: prepended to every pattern inside (``""`` for none).
        middleware: run, outermost first, before each route inside (and before an upgrade).
    """

    routes: tuple[Route | Controller, ...]
    prefix: str = ""
    middleware: tuple[Middleware, ...] = ()

    @classmethod
    def define(
        cls,
        routes: Iterable[Route | Controller],
        *,
        prefix: str = "",
        middleware: Sequence[Middleware] = (),
    ) -> Controller:
        """Group ``routes`` under ``prefix`` with ``middleware``.

        Raises:
            ValueError: invalid prefix, or two routes for the same method and pattern shape.
            TypeError: an entry is neither a Route nor a Controller, or a middleware isn't callable.
        """
        if not isinstance(prefix, str) or (prefix and not prefix.startswith("/")):
            raise ValueError(f"controller prefix must be '' or start with '/': {prefix!r}")
        if prefix and any(kind == _WILD for kind, _ in _parse_pattern(prefix)):
            raise ValueError(f"controller prefix may not contain a wildcard: {prefix!r}")
        items = tuple(routes)
        for item in items:
            if not isinstance(item, (Route, Controller)):
                raise TypeError(f"expected a Route or Controller, got {type(item).__name__}")
        for mw in middleware:
            _check_callable(mw, "middleware")
        ctrl = cls(items, prefix, tuple(middleware))
        RouteTable([ctrl])  # reports duplicates and bad joined patterns now, not at App start
        return ctrl


def _join(prefix: str, pattern: str) -> str:
    base = prefix.rstrip("/")
    if not base:
        return pattern
    return base if pattern == "/" else base + pattern


# --------------------------------------------------------------------------- matching


@dataclass(frozen=True, eq=False)
class RouteMatch:
    """The result of ``RouteTable.match``.

    Attributes:
        route: the matched route (pattern with prefixes, full middleware chain).
        params: decoded path parameters, name -> value.
        middleware: the chain to run before the endpoint: app, controllers, route.
    """

    route: Route
    params: dict[str, str]
    middleware: tuple[Middleware, ...]


class _Leaf:
    __slots__ = ("names", "route")

    def __init__(self, route: Route, names: tuple[str, ...]) -> None:
        self.route = route
        self.names = names


class _Node:
    __slots__ = ("literal", "param", "routes", "wild")

    def __init__(self) -> None:
        self.literal: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.wild: dict[str, _Leaf] = {}  # method -> route whose "*name" starts here
        self.routes: dict[str, _Leaf] = {}  # method -> route ending here


def _pick(leaves: dict[str, _Leaf], method: str) -> _Leaf | None:
    leaf = leaves.get(method)
    if leaf is None and method == "HEAD":
        leaf = leaves.get("GET")
        if leaf is not None and leaf.route.is_websocket:
            return None
    return leaf


def _find(node: _Node, segs: list[str], i: int, method: str, values: list[str]) -> _Leaf | None:
    # Depth first, most specific branch first: literal, then :param, then *wildcard.
    if i == len(segs):
        leaf = _pick(node.routes, method) if node.routes else None
        if leaf is None and node.wild:
            leaf = _pick(node.wild, method)
            if leaf is not None:
                values.append("")
        return leaf
    seg = segs[i]
    child = node.literal.get(seg)
    if child is not None:
        leaf = _find(child, segs, i + 1, method, values)
        if leaf is not None:
            return leaf
    if node.param is not None and seg:
        values.append(seg)
        leaf = _find(node.param, segs, i + 1, method, values)
        if leaf is not None:
            return leaf
        values.pop()
    if node.wild:
        leaf = _pick(node.wild, method)
        if leaf is not None:
            values.append("/".join(segs[i:]))
            return leaf
    return None


def _collect(node: _Node, segs: list[str], i: int, out: dict[str, _Leaf]) -> None:
    # Every route whose pattern matches the path, whatever its method (for 405's Allow).
    if node.wild:
        out.update(node.wild)
    if i == len(segs):
        out.update(node.routes)
        return
    child = node.literal.get(segs[i])
    if child is not None:
        _collect(child, segs, i + 1, out)
    if node.param is not None and segs[i]:
        _collect(node.param, segs, i + 1, out)


def _split_path(path: str) -> list[str]:
    if not path.startswith("/"):
        raise HttpError(404)
    if path == "/":
        return []
    segs = path[1:].split("/")
    if "%" in path:
        try:
            segs = [unquote(s, errors="strict") if "%" in s else s for s in segs]
        except UnicodeDecodeError:
            raise HttpError(400, "invalid percent-encoding in path") from None
    return segs


class RouteTable:
    """All routes of an application, flattened from controllers into a segment trie.

    Matching costs one dict lookup per path segment for literal routes, whatever the number of
    routes; a literal segment beats ``:param``, which beats ``*wildcard``, segment by segment,
    whatever the registration order.
    """

    def __init__(
        self,
        routes: Iterable[Route | Controller] | Route | Controller,
        app_middleware: Sequence[Middleware] = (),
    ) -> None:
        """Flatten ``routes`` (prefixes joined, middleware chains built) into the trie.

        Args:
            routes: routes and controllers, in any order.
            app_middleware: middleware run first for every request, including 404s and 405s.

        Raises:
            ValueError: two routes share a method and a pattern shape (``/a/:x`` and ``/a/:y``
                count as the same), or a joined pattern is invalid.
            TypeError: an entry is neither a Route nor a Controller.
        """
        if isinstance(routes, (Route, Controller)):
            routes = [routes]
        for mw in app_middleware:
            _check_callable(mw, "middleware")
        self.middleware: tuple[Middleware, ...] = tuple(app_middleware)
        self.routes: list[Route] = []
        self._root = _Node()
        self._add_all(routes, "", self.middleware)

    def _add_all(
        self, items: Iterable[Route | Controller], prefix: str, chain: tuple[Middleware, ...]
    ) -> None:
        for item in items:
            if isinstance(item, Controller):
                self._add_all(
                    item.routes,
                    _join(prefix, item.prefix) if item.prefix else prefix,
                    chain + item.middleware,
                )
            elif isinstance(item, Route):
                full = Route(
                    item.method,
                    _join(prefix, item.pattern),
                    item.handler,
                    item.ws_config,
                    chain + item.middleware,
                )
                self._insert(full)
            else:
                raise TypeError(f"expected a Route or Controller, got {type(item).__name__}")

    def _insert(self, route: Route) -> None:
        node = self._root
        names: list[str] = []
        leaves = None
        for kind, text in _parse_pattern(route.pattern):
            if kind == _LITERAL:
                child = node.literal.get(text)
                if child is None:
                    child = node.literal[text] = _Node()
                node = child
            elif kind == _PARAM:
                names.append(text)
                if node.param is None:
                    node.param = _Node()
                node = node.param
            else:
                names.append(text)
                leaves = node.wild
        if leaves is None:
            leaves = node.routes
        existing = leaves.get(route.method)
        if existing is not None:
            raise ValueError(
                f"duplicate route: {route.method} {route.pattern} conflicts with "
                f"{existing.route.method} {existing.route.pattern}"
            )
        leaves[route.method] = _Leaf(route, tuple(names))
        self.routes.append(route)

    def match(self, method: str, path: str) -> RouteMatch:
        """Find the route for ``method`` and ``path``.

        Args:
            method: the request method; HEAD falls back to the GET route (not for WebSocket).
            path: the percent-encoded path (``request.raw_path``); each segment is decoded after
                splitting, so ``%2F`` stays inside its segment.

        Returns:
            The route, its decoded parameters and its middleware chain.

        Raises:
            HttpError: 404 when no pattern matches; 405 with an ``Allow`` header when patterns
                match but not for this method; 400 when a segment is not valid UTF-8.
        """
        segs = _split_path(path)
        values: list[str] = []
        leaf = _find(self._root, segs, 0, method, values)
        if leaf is not None:
            route = leaf.route
            return RouteMatch(route, dict(zip(leaf.names, values)), route.middleware)
        allowed = self._allowed(segs)
        if allowed:
            raise HttpError(405, headers=[("Allow", ", ".join(allowed))])
        raise HttpError(404)

    def allowed_methods(self, path: str) -> list[str]:
        """The methods some route accepts for ``path`` (HEAD included where GET serves it)."""
        return self._allowed(_split_path(path))

    def _allowed(self, segs: list[str]) -> list[str]:
        found: dict[str, _Leaf] = {}
        _collect(self._root, segs, 0, found)
        methods = set(found)
        if "GET" in found and not found["GET"].route.is_websocket:
            methods.add("HEAD")
        return sorted(methods, key=lambda m: (_METHOD_ORDER.get(m, len(_METHOD_ORDER)), m))

    async def handle(
        self,
        request: Request,
        *,
        websocket_endpoint: Callable[[Request, Route], Any] | None = None,
        before_upgrade: Callable[[Request, Route], Response | None] | None = None,
    ) -> Response:
        """Route ``request`` and run its middleware chain and endpoint: the one dispatcher.

        Sets ``request.params``. A 404/405 (and a 400 for a path that is not valid UTF-8) is
        rendered as a response after the app middleware ran, so logging or CORS middleware see
        it too.

        Args:
            request: the parsed request.
            websocket_endpoint: ``endpoint(request, route)`` for WebSocket routes (sync or async),
                called after the route's middleware let the request through; it returns the
                upgrade response.
            before_upgrade: ``check(request, route)`` for WebSocket routes, called before any
                middleware: a Response it returns is the answer (the middleware and the endpoint
                don't run), None goes on. The server checks the opening handshake here, so a
                request that cannot be upgraded is refused whatever the middleware would do.

        Returns:
            The response. Exceptions other than HttpError from user code propagate.
        """
        try:
            m = self.match(request.method, request.raw_path)
        except HttpError as exc:
            error = exc

            def fail(_req: Request) -> Response:
                return error.to_response()

            return await run_chain(self.middleware, request, fail)
        request.params = m.params
        route = m.route
        if route.is_websocket:
            if websocket_endpoint is None:
                raise RuntimeError(f"{route!r} is a WebSocket route but no websocket_endpoint was given")
            if before_upgrade is not None:
                refusal = before_upgrade(request, route)
                if refusal is not None:
                    return refusal
            ws_endpoint = websocket_endpoint

            def endpoint(req: Request) -> Any:
                return ws_endpoint(req, route)

            return await run_chain(m.middleware, request, endpoint)
        assert route.handler is not None
        return await run_chain(m.middleware, request, route.handler)


# --------------------------------------------------------------------------- middleware


def to_response(result: object) -> Response:
    """Normalise what a handler or middleware returned into a Response.

    Response objects (subclasses included) pass through untouched; ``str`` becomes a 200
    ``text/plain; charset=utf-8`` response, ``bytes`` a 200 ``application/octet-stream`` one.

    Raises:
        TypeError: anything else (including None).
    """
    if isinstance(result, Response):
        return result
    if isinstance(result, (str, bytes, bytearray, memoryview)):
        return Response(result)
    raise TypeError(
        f"handlers and middleware must return a Response, str or bytes, not {type(result).__name__}"
    )


async def run_chain(
    middleware: Sequence[Middleware],
    request: Request,
    endpoint: Callable[[Request], Any],
) -> Response:
    """Run ``middleware`` (first = outermost) around ``endpoint`` for ``request``.

    Each middleware is ``mw(request, call_next)``, sync or async. ``await call_next(request)``
    (the argument may be omitted or be a different Request) runs the rest of the chain and gives
    its Response; it may be called at most once. Returning without calling it short-circuits.
    An ``HttpError`` raised at any level becomes that level's response, so outer middleware see
    it as a Response. Other exceptions propagate.

    Returns:
        The Response from the outermost middleware (or the endpoint if there is none).

    Raises:
        RuntimeError: a middleware called ``call_next`` twice.
        TypeError: something returned neither Response, str nor bytes.
    """
    chain = tuple(middleware)
    depth = len(chain)

    async def step(i: int, req: Request) -> Response:
        try:
            if i == depth:
                result = endpoint(req)
            else:
                result = chain[i](req, _next(i + 1, req))
            if inspect.isawaitable(result):
                result = await result
        except HttpError as exc:
            return exc.to_response()
        return to_response(result)

    def _next(i: int, current: Request) -> CallNext:
        called = False

        async def call_next(req: Request | None = None) -> Response:
            nonlocal called
            if called:
                raise RuntimeError("call_next() may be called only once per middleware invocation")
            called = True
            return await step(i, current if req is None else req)

        return call_next

    return await step(0, request)
