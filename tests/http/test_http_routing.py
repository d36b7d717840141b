"""Routing: patterns, params, wildcards, decoding, specificity, 404/405, controllers, validation."""

from __future__ import annotations

import itertools

import pytest

from zzz.http import HttpError, Request, Response
from zzz.routing import Controller, Route, Router, RouteTable


def h(name: str):  # type: ignore[no-untyped-def]
    """A handler that says which route it is (used to tell routes apart)."""

    def handler(req: Request) -> str:
        return name

    handler.__name__ = name
    return handler


def which(table: RouteTable, path: str, method: str = "GET") -> tuple[str, dict[str, str]]:
    m = table.match(method, path)
    assert m.route.handler is not None
    return m.route.handler.__name__, m.params


def error(table: RouteTable, path: str, method: str = "GET") -> HttpError:
    with pytest.raises(HttpError) as info:
        table.match(method, path)
    return info.value


class Config:
    """Stands in for WsConfig: routing must store it without looking inside."""


# --------------------------------------------------------------------------- matching


def test_literal_param_and_root() -> None:
    t = RouteTable(
        [
            Router.get("/", h("root")),
            Router.get("/users", h("users")),
            Router.get("/users/:id", h("user")),
            Router.get("/users/:id/posts/:post_id", h("post")),
        ]
    )
    assert which(t, "/") == ("root", {})
    assert which(t, "/users") == ("users", {})
    assert which(t, "/users/42") == ("user", {"id": "42"})
    assert which(t, "/users/42/posts/7") == ("post", {"id": "42", "post_id": "7"})
    assert error(t, "/users/42/posts").status == 404
    assert error(t, "/nope").status == 404
    assert error(t, "/users/").status == 404  # trailing slash is a different path
    assert error(t, "/users//posts/1").status == 404  # a param never matches an empty segment


def test_wildcard_matches_rest_including_empty() -> None:
    t = RouteTable([Router.get("/files/*path", h("files"))])
    assert which(t, "/files/a/b/c.txt") == ("files", {"path": "a/b/c.txt"})
    assert which(t, "/files/x") == ("files", {"path": "x"})
    assert which(t, "/files/") == ("files", {"path": ""})
    assert which(t, "/files") == ("files", {"path": ""})
    assert error(t, "/filesx").status == 404


def test_percent_decoding_of_params_and_literals() -> None:
    t = RouteTable(
        [
            Router.get("/rooms/:room", h("room")),
            Router.get("/caf%C3%A9/menu", h("cafe")),
            Router.get("/static/*rest", h("static")),
        ]
    )
    assert which(t, "/rooms/caf%C3%A9%20au%20lait") == ("room", {"room": "café au lait"})
    # %2F stays inside its segment: it is a value, not a separator.
    assert which(t, "/rooms/a%2Fb") == ("room", {"room": "a/b"})
    assert which(t, "/caf%c3%a9/menu") == ("cafe", {})
    assert which(t, "/static/a%20b/c") == ("static", {"rest": "a b/c"})
    assert error(t, "/rooms/%FF%FE").status == 400  # not UTF-8


def test_specificity_regardless_of_registration_order() -> None:
    routes = [
        Router.get("/a/b/c", h("lit-lit-lit")),
        Router.get("/a/:x/c", h("lit-param-lit")),
        Router.get("/a/:x/:y", h("lit-param-param")),
        Router.get("/a/b/:y", h("lit-lit-param")),
        Router.get("/a/*rest", h("lit-wild")),
        Router.get("/:p/b/c", h("param-lit-lit")),
        Router.get("/*all", h("wild")),
    ]
    for order in itertools.islice(itertools.permutations(routes), 0, None, 37):  # 137 of the 5040 orders
        t = RouteTable(list(order))
        assert which(t, "/a/b/c")[0] == "lit-lit-lit"
        assert which(t, "/a/b/z") == ("lit-lit-param", {"y": "z"})
        assert which(t, "/a/q/c") == ("lit-param-lit", {"x": "q"})
        assert which(t, "/a/q/z") == ("lit-param-param", {"x": "q", "y": "z"})
        assert which(t, "/a/q/z/w") == ("lit-wild", {"rest": "q/z/w"})
        assert which(t, "/z/b/c") == ("param-lit-lit", {"p": "z"})
        assert which(t, "/z/y") == ("wild", {"all": "z/y"})
        assert which(t, "/") == ("wild", {"all": ""})


def test_backtracks_when_the_literal_branch_dead_ends() -> None:
    t = RouteTable([Router.get("/a/b/c", h("abc")), Router.get("/a/:x/d", h("axd"))])
    assert which(t, "/a/b/d") == ("axd", {"x": "b"})


def test_same_shape_different_methods_keep_their_own_param_names() -> None:
    t = RouteTable([Router.get("/u/:id", h("get")), Router.delete("/u/:uid", h("del"))])
    assert which(t, "/u/1") == ("get", {"id": "1"})
    assert which(t, "/u/1", "DELETE") == ("del", {"uid": "1"})


def test_literal_heavy_table() -> None:
    # Many literal routes: a lookup walks one trie branch (one dict lookup per segment).
    t = RouteTable([Router.get(f"/api/v1/item{i}/detail", h(f"item{i}")) for i in range(5000)])
    assert which(t, "/api/v1/item4321/detail") == ("item4321", {})
    assert error(t, "/api/v1/item5000/detail").status == 404


# --------------------------------------------------------------------------- methods


def test_405_lists_allowed_methods() -> None:
    t = RouteTable(
        [
            Router.get("/things", h("list")),
            Router.post("/things", h("create")),
            Router.delete("/things/:id", h("del")),
        ]
    )
    err = error(t, "/things", "PUT")
    assert err.status == 405
    assert err.headers == [("Allow", "GET, HEAD, POST")]
    assert error(t, "/things/1", "GET").headers == [("Allow", "DELETE")]
    assert err.to_response().headers.get("allow") == "GET, HEAD, POST"


def test_405_allow_is_the_union_over_matching_patterns() -> None:
    t = RouteTable([Router.post("/users/new", h("new")), Router.get("/users/:id", h("show"))])
    assert which(t, "/users/new") == ("show", {"id": "new"})  # falls through to the param route
    assert error(t, "/users/new", "PATCH").headers == [("Allow", "GET, HEAD, POST")]
    assert t.allowed_methods("/users/7") == ["GET", "HEAD"]


def test_head_falls_back_to_get_but_not_for_websocket() -> None:
    t = RouteTable([Router.get("/page", h("page")), Router.ws("/ws", Config())])
    assert which(t, "/page", "HEAD") == ("page", {})
    assert error(t, "/ws", "HEAD").status == 405
    assert error(t, "/ws", "POST").headers == [("Allow", "GET")]


def test_explicit_head_and_options_routes() -> None:
    t = RouteTable([Router.get("/x", h("get")), Router.head("/x", h("head")), Router.options("/x", h("opt"))])
    assert which(t, "/x", "HEAD") == ("head", {})
    assert which(t, "/x", "OPTIONS") == ("opt", {})


def test_custom_method_and_put_patch() -> None:
    t = RouteTable(
        [Router.route("purge", "/c", h("purge")), Router.put("/c", h("put")), Router.patch("/c", h("patch"))]
    )
    assert which(t, "/c", "PURGE") == ("purge", {})
    assert error(t, "/c", "GET").headers == [("Allow", "PUT, PATCH, PURGE")]


# --------------------------------------------------------------------------- websocket routes


def test_ws_route_stores_config_opaquely() -> None:
    cfg = Config()
    route = Router.ws("/ws/chat/:room", cfg)
    assert route.is_websocket and route.method == "GET" and route.ws_config is cfg and route.handler is None
    t = RouteTable([route])
    m = t.match("GET", "/ws/chat/lobby")
    assert m.route.ws_config is cfg and m.params == {"room": "lobby"}


# --------------------------------------------------------------------------- controllers


def mw(name: str):  # type: ignore[no-untyped-def]
    async def middleware(req: Request, call_next):  # type: ignore[no-untyped-def]
        return await call_next(req)

    middleware.__name__ = name
    return middleware


def test_controller_prefix_and_middleware_chain() -> None:
    a, b, c, r, app = mw("a"), mw("b"), mw("c"), mw("r"), mw("app")
    inner = Controller.define(
        [Router.get("/:id", h("item"), middleware=[r]), Router.get("/", h("index"))],
        prefix="/items",
        middleware=[c],
    )
    outer = Controller.define([inner, Router.ws("/ws/:room", Config())], prefix="/api/", middleware=[a, b])
    t = RouteTable([outer, Router.get("/", h("home"))], app_middleware=[app])
    m = t.match("GET", "/api/items/9")
    assert m.route.pattern == "/api/items/:id"
    assert m.params == {"id": "9"}
    assert [f.__name__ for f in m.middleware] == ["app", "a", "b", "c", "r"]
    assert which(t, "/api/items") == ("index", {})
    ws = t.match("GET", "/api/ws/lobby")
    assert ws.route.is_websocket and [f.__name__ for f in ws.middleware] == ["app", "a", "b"]
    home = t.match("GET", "/")
    assert [f.__name__ for f in home.middleware] == ["app"]
    assert sorted(r.pattern for r in t.routes) == ["/", "/api/items", "/api/items/:id", "/api/ws/:room"]


def test_controller_without_prefix_and_prefix_with_param() -> None:
    plain = Controller.define([Router.get("/x", h("x"))])
    rooms = Controller.define([Router.get("/members", h("members"))], prefix="/rooms/:room")
    t = RouteTable([plain, rooms])
    assert which(t, "/x") == ("x", {})
    assert which(t, "/rooms/r1/members") == ("members", {"room": "r1"})


def test_controller_object_is_reusable_and_table_accepts_single_items() -> None:
    ctrl = Controller.define([Router.get("/p", h("p"))], prefix="/v1")
    assert which(RouteTable(ctrl), "/v1/p")[0] == "p"
    assert which(RouteTable(Router.get("/q", h("q"))), "/q")[0] == "q"
    assert which(RouteTable([Controller.define([ctrl], prefix="/outer")]), "/outer/v1/p")[0] == "p"


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "pattern",
    ["", "users", "/a/:", "/a/*", "/a/*rest/b", "/a/:x/:x", "/a//b", "/a/:1x", "/a/:x-y", "/:x/*x"],
)
def test_invalid_patterns_are_rejected_at_definition(pattern: str) -> None:
    with pytest.raises(ValueError):
        Router.get(pattern, h("x"))
    with pytest.raises(ValueError):
        Router.ws(pattern, Config())


def test_duplicate_routes_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate route: GET /a/:y conflicts with GET /a/:x"):
        RouteTable([Router.get("/a/:x", h("1")), Router.get("/a/:y", h("2"))])
    with pytest.raises(ValueError, match="duplicate"):
        Controller.define([Router.post("/b", h("1")), Router.post("/b", h("2"))])
    with pytest.raises(ValueError, match="duplicate"):
        RouteTable([Controller.define([Router.get("/c", h("1"))], prefix="/p"), Router.get("/p/c", h("2"))])
    with pytest.raises(ValueError, match="duplicate"):
        RouteTable([Router.get("/f/*a", h("1")), Router.get("/f/*b", h("2"))])
    with pytest.raises(ValueError, match="duplicate"):
        RouteTable([Router.ws("/w", Config()), Router.get("/w", h("2"))])
    # Different methods, or param vs literal, are not duplicates.
    RouteTable([Router.get("/a/:x", h("1")), Router.post("/a/:x", h("2")), Router.get("/a/b", h("3"))])


def test_other_definition_errors() -> None:
    with pytest.raises(TypeError):
        Router.get("/x", "not callable")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Router.route("GE T", "/x", h("x"))
    with pytest.raises(ValueError):
        Router.ws("/x", None)
    with pytest.raises(ValueError):
        Controller.define([], prefix="nope")
    with pytest.raises(ValueError):
        Controller.define([], prefix="/a/*rest")
    with pytest.raises(TypeError):
        Controller.define(["/x"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        Controller.define([], middleware=[42])  # type: ignore[list-item]


def test_route_is_a_plain_value() -> None:
    route = Router.post("/p", h("p"))
    assert isinstance(route, Route) and route.method == "POST" and route.pattern == "/p"
    assert not route.is_websocket
    assert repr(route) == "<Route POST /p>"
    assert isinstance(h("x")(Request()), str) and not isinstance(h("x")(Request()), Response)


def test_router_channel_mounts_whatever_provides_routes() -> None:
    class Mount:
        def routes(self, path: str) -> list[Route]:
            return [Router.get(path, h("a")), Router.get(path + "/b", h("b"))]

    def mw(req: Request, call_next: object) -> str:
        return "mw"

    ctrl = Router.channel("/m", Mount(), middleware=[mw])
    assert isinstance(ctrl, Controller) and ctrl.middleware == (mw,)
    table = RouteTable([ctrl])
    assert [r.pattern for r in table.routes] == ["/m", "/m/b"]
    assert table.match("GET", "/m/b").middleware == (mw,)
