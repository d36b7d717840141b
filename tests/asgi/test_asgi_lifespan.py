"""The ``lifespan`` scope on each server of ``SERVERS``: shutdown runs on SIGTERM and SIGINT, a
failed startup exits non-zero without serving, an app without lifespan support is served anyway.
(Startup and ``state`` are checked by every HTTP and WebSocket test: the token they read is set
by lifespan startup in the server's process.)
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest
from asgi_servers import ServerKind, ServerPool, run_until_exit
from websockets.sync.client import connect

FRAMEWORKS = {"fastapi": "asgi_fastapi_app", "starlette": "asgi_starlette_app", "raw": "asgi_raw_app"}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("name", list(FRAMEWORKS))
def test_shutdown_runs_on_signal(
    servers: ServerPool, server_kind: ServerKind, name: str, sig: signal.Signals, tmp_path: Path
) -> None:
    marker = tmp_path / "shutdown.txt"
    server = servers.fresh(
        server_kind, f"{FRAMEWORKS[name]}:app", env={"ZZZ_ASGI_SHUTDOWN_FILE": str(marker)}
    )
    with httpx.Client(base_url=server.http, timeout=20) as c:
        assert c.get("/anything-at-all").status_code in (200, 404)  # it serves
    assert not marker.exists()  # shutdown has not run while serving
    pids = server.pids()
    status = server.stop(sig)
    lines = marker.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"shutdown {name} ")  # shutdown ran, once
    assert int(lines[0].split()[2]) in pids  # in the server
    assert status == (server_kind.expect.sigterm_status if sig == signal.SIGTERM else 0)


@pytest.mark.parametrize(
    "app",
    ["asgi_fastapi_app:failing_app", "asgi_starlette_app:failing_app", "asgi_raw_app:startup_failed_app"],
)
def test_failed_startup_exits_non_zero_without_serving(
    server_kind: ServerKind, app: str, tmp_path: Path
) -> None:
    status, listened = run_until_exit(server_kind, app, tmp_path / "server.log")
    assert status != 0
    assert not listened
    log = (tmp_path / "server.log").read_text()
    assert "startup failed on purpose" in log or "no database" in log  # the app's reason is logged


def test_app_without_lifespan_is_served(servers: ServerPool, server_kind: ServerKind) -> None:
    server = servers.get(server_kind, "asgi_raw_app:no_lifespan_app")
    with httpx.Client(base_url=server.http, timeout=20) as c:
        r = c.get("/")
    assert r.status_code == 200 and r.content == b"no lifespan"
    with connect(f"{server.ws}/", open_timeout=20, close_timeout=10) as ws:
        assert ws.recv(timeout=10) == "no lifespan"
