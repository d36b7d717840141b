"""Authentication before the upgrade: controller middleware checks a token, assigns the user.

The middleware runs before the WebSocket handshake completes: a missing or wrong token gets an
HTTP 401 and no connection is opened. Tokens are compared in constant time (``hmac.compare_digest``
on bytes, against every known token) so response timing leaks nothing about them. A good token
assigns ``user_id``, which the callbacks read with ``ws.get_assign``. ``allowed_origins`` makes zzz
answer 403 to any other ``Origin`` (and to none: non-browser clients must send one).
Run ``python examples/auth_middleware.py`` and connect to ``ws://127.0.0.1:8080/ws/me?token=ada-token``
with ``Origin: http://127.0.0.1:8080`` (or send ``Authorization: Bearer ada-token``).
"""

from __future__ import annotations

import argparse
import hmac
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence

import zzz

__all__ = ["DEMO_TOKENS", "build_app"]

DEMO_TOKENS = {"ada-token": "ada", "bob-token": "bob"}  # token -> user id; use a real store


def token_auth(tokens: Mapping[str, str]) -> Callable[..., Awaitable[zzz.Response]]:
    """A middleware that accepts ``?token=`` (browsers can't set headers) or ``Authorization: Bearer``."""
    known = [(token.encode(), user) for token, user in tokens.items()]

    async def auth(
        req: zzz.Request, call_next: Callable[[zzz.Request], Awaitable[zzz.Response]]
    ) -> zzz.Response:
        header = req.headers.get("authorization") or ""
        given = header[7:] if header.lower().startswith("bearer ") else req.query_param("token") or ""
        user_id = None
        for token, user in known:  # no early exit: every request costs the same comparisons
            if hmac.compare_digest(given.encode(), token):
                user_id = user
        if user_id is None:
            return zzz.Response("unauthorized", status=401, headers=[("WWW-Authenticate", "Bearer")])
        req.assign("user_id", user_id)  # copied into the WebSocket's assigns on upgrade
        return await call_next(req)

    return auth


def on_open(ws: zzz.WebSocket) -> None:
    ws.send(json.dumps({"hello": ws.get_assign("user_id")}))


def on_message(ws: zzz.WebSocket, msg: zzz.WsMessage) -> None:
    if isinstance(msg, zzz.Text):
        ws.send(json.dumps({"user_id": ws.get_assign("user_id"), "said": msg.data}))


def build_app(
    tokens: Mapping[str, str] = DEMO_TOKENS,
    allowed_origins: Sequence[str] = ("http://127.0.0.1:8080", "http://localhost:8080"),
) -> zzz.App:
    """The app: ``/ws/me`` behind the token middleware, open to ``allowed_origins`` only."""
    private = zzz.Controller.define(
        [zzz.Router.ws("/me", zzz.WsConfig(on_open=on_open, on_message=on_message))],
        prefix="/ws",
        middleware=[token_auth(tokens)],
    )
    return zzz.App([private], allowed_origins=list(allowed_origins))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="zzz token authentication in middleware")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    origins = [f"http://{args.host}:{args.port}", f"http://localhost:{args.port}"]
    build_app(allowed_origins=origins).run(args.host, args.port)
