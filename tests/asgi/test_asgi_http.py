"""HTTP under ASGI: the FastAPI and Starlette apps, served by each server of ``SERVERS``, with httpx.

Covers issue 17's ``http`` scope: JSON GET/HEAD/POST, the scope fields, keep-alive, a streaming
response, multipart and urlencoded forms, request bodies streamed in (Content-Length and
chunked), ``Expect: 100-continue``, lifespan ``state``.
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from collections.abc import Iterator

import httpx
import pytest
from asgi_servers import HOST, Running

TIMEOUT = httpx.Timeout(20.0)


@pytest.fixture
def client(framework_server: Running) -> Iterator[httpx.Client]:
    """An httpx client (keep-alive) on the framework app."""
    with httpx.Client(base_url=framework_server.http, timeout=TIMEOUT) as c:
        yield c


def test_json_get_and_lifespan_state(client: httpx.Client, framework_server: Running) -> None:
    r = client.get("/json", params={"name": "zoë"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["hello"] == "zoë"
    # The token lifespan startup put in state names its process: startup ran in the server.
    assert body["state"].startswith("started:")
    assert int(body["state"].split(":")[1]) in framework_server.pids()


def test_json_post(client: httpx.Client) -> None:
    r = client.post("/json", json={"numbers": [1, 2, 3.5]})
    assert r.status_code == 201
    assert r.json() == {"sum": 6.5, "count": 3}


def test_scope_fields(client: httpx.Client, framework_server: Running) -> None:
    r = client.get("/scope?a=1&b=%C3%A9", headers={"X-Test": "hello"})
    assert r.status_code == 200
    scope = r.json()
    assert scope["type"] == "http"
    assert scope["asgi_version"] == "3.0"
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/scope"
    assert scope["raw_path"] == "/scope"
    assert scope["query_string"] == "a=1&b=%C3%A9"
    assert scope["query_string_is_bytes"]
    assert scope["root_path"] == ""
    assert scope["server"] == [HOST, framework_server.port]
    assert scope["client"][0] == HOST and isinstance(scope["client"][1], int)
    assert scope["headers_are_bytes"] and scope["header_names_lower"]
    assert scope["x_test"] == ["hello"]
    assert scope["has_state"]


def test_percent_encoded_path_and_raw_path(client: httpx.Client) -> None:
    # path is percent-decoded (so the route matches), raw_path is the bytes of the request line.
    r = client.get(httpx.URL(client.base_url.join("/scope"), raw_path=b"/sc%6Fpe?q=%20"))
    assert r.status_code == 200
    scope = r.json()
    assert scope["path"] == "/scope"
    assert scope["raw_path"] == "/sc%6Fpe"
    assert scope["query_string"] == "q=%20"


def test_keep_alive_reuses_one_connection(client: httpx.Client) -> None:
    ports = {client.get("/scope").json()["client"][1] for _ in range(5)}
    assert len(ports) == 1  # five requests, one TCP connection (its client port)


def test_head_has_headers_and_no_body(client: httpx.Client) -> None:
    get = client.get("/json")
    head = client.head("/json")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(get.content))
    # A body leaked after the HEAD response would be read as the start of this one.
    after = client.get("/json", params={"name": "after-head"})
    assert after.status_code == 200 and after.json()["hello"] == "after-head"


def test_streaming_response_is_sent_as_it_is_produced(
    client: httpx.Client, framework_server: Running
) -> None:
    token = uuid.uuid4().hex
    with client.stream("GET", f"/stream/{token}") as r:
        assert r.status_code == 200
        assert "content-length" not in r.headers
        assert r.headers["transfer-encoding"] == "chunked"
        parts = r.iter_raw()
        # The second part waits for the release below: a server that buffered the response
        # would never deliver the first one and this read would time out.
        first = next(parts)
        assert first == b"part-1\n"
        with httpx.Client(base_url=framework_server.http, timeout=TIMEOUT) as other:
            assert other.post(f"/release/{token}").text == "released"
        rest = b"".join(parts)
    assert rest == b"part-2\npart-3\n"


def test_multipart_upload(client: httpx.Client) -> None:
    data = os.urandom(300_000)
    r = client.post(
        "/upload",
        data={"title": "holiday ☀"},
        files={"file": ("photo.bin", data, "application/octet-stream")},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "title": "holiday ☀",
        "filename": "photo.bin",
        "content_type": "application/octet-stream",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def test_urlencoded_form(client: httpx.Client) -> None:
    r = client.post("/form", data={"a": ["1", "2"], "b": "x y&z"})
    assert r.status_code == 200
    assert r.json() == {"a": ["1", "2"], "b": ["x y&z"]}


def test_large_body_with_content_length_is_streamed_to_the_app(client: httpx.Client) -> None:
    data = os.urandom(8 * 2**20)
    r = client.post("/body", content=data)
    assert r.status_code == 200
    got = r.json()
    assert got["size"] == len(data)
    assert got["sha256"] == hashlib.sha256(data).hexdigest()
    assert got["chunks"] > 1  # streamed in pieces (more_body), not handed over whole


def test_chunked_request_body(client: httpx.Client) -> None:
    pieces = [os.urandom(n) for n in (1, 1000, 65536, 3, 500_000)]

    def body() -> Iterator[bytes]:
        yield from pieces  # a generator: httpx sends Transfer-Encoding: chunked

    r = client.post("/body", content=body())
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert r.status_code == 200
    joined = b"".join(pieces)
    assert r.json()["size"] == len(joined)
    assert r.json()["sha256"] == hashlib.sha256(joined).hexdigest()


def _read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read one response with a Content-Length from a raw socket: (head, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {buf!r}"
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")[1:]
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return head, body


def test_expect_100_continue(framework_server: Running) -> None:
    # httpx has no Expect support: this is the protocol as curl speaks it, over a raw socket.
    body = os.urandom(100_000)
    with socket.create_connection((HOST, framework_server.port), timeout=20) as sock:
        sock.sendall(
            b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        interim = b""
        while b"\r\n\r\n" not in interim:
            chunk = sock.recv(1)
            assert chunk, "closed before 100 Continue"
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n"), interim
        sock.sendall(body)
        head, got = _read_response(sock)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert httpx.Response(200, content=got).json()["sha256"] == hashlib.sha256(body).hexdigest()


def test_no_100_continue_when_the_app_does_not_read(framework_server: Running) -> None:
    with socket.create_connection((HOST, framework_server.port), timeout=20) as sock:
        sock.sendall(
            b"POST /no-read HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n"
        )
        head, body = _read_response(sock)
    assert head.startswith(b"HTTP/1.1 200 "), head  # the final answer, with no 100 before it
    assert body == b"not read"
