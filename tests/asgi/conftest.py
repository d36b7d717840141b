"""Fixtures of the ASGI suite: every test runs once per entry of ``asgi_servers.SERVERS``.

``server_kind`` is parametrized over the servers; ``servers`` starts a server on an app the
first time a test asks for that pair and reuses it for the session (tests that stop a server
start their own with ``servers.fresh``); ``framework`` runs a test on the FastAPI and the
Starlette app, which answer the same contract.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from asgi_servers import SERVERS, Running, ServerKind, ServerPool

FRAMEWORK_APPS = {"fastapi": "asgi_fastapi_app:app", "starlette": "asgi_starlette_app:app"}


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    """The session's pool of servers."""
    pool = ServerPool(tmp_path_factory.mktemp("asgi-server-logs"))
    try:
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture(scope="session", params=list(SERVERS))
def server_kind(request: pytest.FixtureRequest) -> ServerKind:
    """Each server of ``SERVERS`` in turn."""
    return SERVERS[request.param]


@pytest.fixture(params=list(FRAMEWORK_APPS))
def framework(request: pytest.FixtureRequest) -> str:
    """``fastapi`` or ``starlette``."""
    return str(request.param)


@pytest.fixture
def framework_server(servers: ServerPool, server_kind: ServerKind, framework: str) -> Running:
    """The framework's app, served by the server under test."""
    return servers.get(server_kind, FRAMEWORK_APPS[framework])


@pytest.fixture
def raw_server(servers: ServerPool, server_kind: ServerKind) -> Running:
    """The raw ASGI edge-case app, served by the server under test."""
    return servers.get(server_kind, "asgi_raw_app:app")
