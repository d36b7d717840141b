"""Middleware chains: order, short-circuit, assigns, sync and async, call_next rules, RouteTable.handle."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from zzz.http import HttpError, Request, Response
from zzz.routing import CallNext, Controller, Router, RouteTable, run_chain, to_response


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def recorder(log: list[str], name: str):  # type: ignore[no-untyped-def]
    async def middleware(req: Request, call_next: CallNext) -> Response:
        log.append(f"{name}>")
        resp = await call_next(req)
        log.append(f"<{name}")
        return resp

    return middleware


async def auth(req: Request, call_next: CallNext) -> Response:
    if req.query_param("token") != "secret":
        return Response("unauthorized", status=401)
    req.assign("user_id", "u42")
    return await call_next(req)


class Config:
    pass


def test_order_app_controller_route() -> None:
    log: list[str] = []

    def handler(req: Request) -> str:
        log.append("handler")
        return "ok"

    ctrl = Controller.define(
        [
            Controller.define(
                [Router.get("/x", handler, middleware=[recorder(log, "route")])],
                middleware=[recorder(log, "inner")],
                prefix="/in",
            )
        ],
        middleware=[recorder(log, "outer")],
        prefix="/out",
    )
    table = RouteTable([ctrl], app_middleware=[recorder(log, "app")])
    resp = run(table.handle(Request("GET", "/out/in/x")))
    assert resp.status == 200 and resp.body == b"ok"
    assert log == ["app>", "outer>", "inner>", "route>", "handler", "<route", "<inner", "<outer", "<app"]


def test_short_circuit_401_and_assigns_visible_after() -> None:
    seen: dict[str, Any] = {}

    def handler(req: Request) -> Response:
        seen["user"] = req.get_assign("user_id")
        seen["missing"] = req.get_assign("nope")
        return Response.json({"user": req.assigns["user_id"]})

    table = RouteTable([Controller.define([Router.get("/me", handler)], middleware=[auth])])
    denied = run(table.handle(Request("GET", "/me?token=wrong")))
    assert denied.status == 401 and denied.body == b"unauthorized"
    assert seen == {}
    ok = run(table.handle(Request("GET", "/me?token=secret")))
    assert ok.status == 200 and ok.body == b'{"user":"u42"}'
    assert seen == {"user": "u42", "missing": None}


def test_sync_middleware_short_circuit_and_pass_through() -> None:
    def block(req: Request, call_next: CallNext) -> Any:
        if req.headers.get("x-block"):
            return "blocked"  # str is normalised
        return call_next(req)  # the coroutine is awaited by the chain

    async def handler(req: Request) -> bytes:
        return b"\x00raw"

    table = RouteTable([Router.get("/", handler)], app_middleware=[block])
    blocked = run(table.handle(Request("GET", "/", headers={"X-Block": "1"})))
    assert blocked.body == b"blocked" and blocked.content_type == "text/plain; charset=utf-8"
    passed = run(table.handle(Request("GET", "/")))
    assert passed.body == b"\x00raw" and passed.content_type == "application/octet-stream"


def test_middleware_can_modify_the_response_and_replace_the_request() -> None:
    async def add_header(req: Request, call_next: CallNext) -> Response:
        resp = await call_next()  # no argument: the same request
        resp.headers.add("X-Seen", "1")
        return resp

    async def swap(req: Request, call_next: CallNext) -> Response:
        other = Request("GET", "/swapped")
        return await call_next(other)

    resp = run(run_chain([add_header, swap], Request("GET", "/"), lambda r: r.target))
    assert resp.body == b"/swapped" and resp.headers.get("x-seen") == "1"


def test_call_next_at_most_once() -> None:
    async def twice(req: Request, call_next: CallNext) -> Response:
        await call_next(req)
        return await call_next(req)

    with pytest.raises(RuntimeError, match="once"):
        run(run_chain([twice], Request(), lambda r: "x"))


def test_http_error_becomes_a_response_seen_by_outer_middleware() -> None:
    statuses: list[int] = []

    async def observe(req: Request, call_next: CallNext) -> Response:
        resp = await call_next(req)
        statuses.append(resp.status)
        return resp

    def forbidden(req: Request) -> Response:
        raise HttpError(403, "no entry")

    resp = run(run_chain([observe], Request(), forbidden))
    assert resp.status == 403 and resp.body == b"no entry" and statuses == [403]


def test_other_exceptions_propagate() -> None:
    def boom(req: Request) -> Response:
        raise KeyError("x")

    with pytest.raises(KeyError):
        run(run_chain([recorder([], "m")], Request(), boom))


def test_bad_return_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="NoneType"):
        run(run_chain([], Request(), lambda r: None))
    with pytest.raises(TypeError):
        to_response(42)


def test_response_subclasses_pass_through_untouched() -> None:
    class Upgrade(Response):
        pass

    up = Upgrade(b"", status=101)

    async def mw(req: Request, call_next: CallNext) -> Response:
        return await call_next(req)

    assert run(run_chain([mw, mw], Request(), lambda r: up)) is up


def test_handle_sets_params_and_runs_ws_endpoint_after_middleware() -> None:
    log: list[str] = []
    cfg = Config()

    def ws_endpoint(req: Request, route: Any) -> Response:
        log.append(f"upgrade {route.ws_config is cfg} {req.params} {req.get_assign('user_id')}")
        return Response(b"", status=101)

    chat = Controller.define([Router.ws("/ws/chat/:room", cfg)], middleware=[auth])
    table = RouteTable([chat, Router.get("/", lambda req: Response("<h1>hi</h1>", content_type="text/html"))])
    denied = run(table.handle(Request("GET", "/ws/chat/lobby"), websocket_endpoint=ws_endpoint))
    assert denied.status == 401 and log == []
    ok = run(table.handle(Request("GET", "/ws/chat/lobby?token=secret"), websocket_endpoint=ws_endpoint))
    assert ok.status == 101 and log == ["upgrade True {'room': 'lobby'} u42"]
    home = run(table.handle(Request("GET", "/")))
    assert home.body == b"<h1>hi</h1>" and home.content_type == "text/html"


def test_handle_calls_before_upgrade_before_any_middleware() -> None:
    log: list[str] = []
    cfg = Config()

    def before(req: Request, route: Any) -> Response | None:
        log.append(f"check {route.pattern} {req.params}")
        return Response("no", status=426) if req.query_param("old") else None

    def ws_endpoint(req: Request, route: Any) -> Response:
        log.append("upgrade")
        return Response(b"", status=101)

    table = RouteTable(
        [
            Controller.define([Router.ws("/ws/:room", cfg)], middleware=[recorder(log, "ctrl")]),
            Router.get("/", lambda r: "x"),
        ],
        app_middleware=[recorder(log, "app")],
    )
    refused = run(
        table.handle(Request("GET", "/ws/a?old=1"), websocket_endpoint=ws_endpoint, before_upgrade=before)
    )
    assert refused.status == 426 and log == ["check /ws/:room {'room': 'a'}"]
    log.clear()
    ok = run(table.handle(Request("GET", "/ws/b"), websocket_endpoint=ws_endpoint, before_upgrade=before))
    assert ok.status == 101
    assert log == ["check /ws/:room {'room': 'b'}", "app>", "ctrl>", "upgrade", "<ctrl", "<app"]
    log.clear()
    run(table.handle(Request("GET", "/"), websocket_endpoint=ws_endpoint, before_upgrade=before))
    assert "check" not in " ".join(log)  # only WebSocket routes are checked


def test_handle_renders_404_and_405_through_app_middleware() -> None:
    log: list[str] = []
    table = RouteTable([Router.post("/p", lambda r: "x")], app_middleware=[recorder(log, "app")])
    nf = run(table.handle(Request("GET", "/missing")))
    assert nf.status == 404 and nf.body == b"Not Found"
    na = run(table.handle(Request("GET", "/p")))
    assert na.status == 405 and na.headers.get("allow") == "POST"
    assert log == ["app>", "<app", "app>", "<app"]


def test_handle_head_uses_get_handler() -> None:
    table = RouteTable([Router.get("/page", lambda r: f"method={r.method}")])
    resp = run(table.handle(Request("HEAD", "/page")))
    assert resp.body == b"method=HEAD"
    wire = resp.encode(head=True)
    assert wire.endswith(b"\r\n\r\n") and b"Content-Length: 11\r\n" in wire


def test_handle_routes_on_the_encoded_path() -> None:
    table = RouteTable([Router.get("/f/:name", lambda r: r.param("name") or "")])
    resp = run(table.handle(Request("GET", "/f/a%2Fb%20c")))
    assert resp.body == b"a/b c"
