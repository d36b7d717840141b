"""Response serialisation, header validation (no response splitting), Headers, HttpError, Request."""

from __future__ import annotations

import re

import pytest

from zzz.errors import HttpRefusal
from zzz.handshake import HandshakeError
from zzz.http import Headers, HttpError, Request, Response, error_response, reason_phrase
from zzz.http_parser import RequestParser


def split(wire: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = wire.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return lines[0], fields, body


def test_str_body_defaults() -> None:
    resp = Response("héllo")
    assert resp.status == 200 and resp.body == "héllo".encode()
    status, fields, body = split(resp.encode())
    assert status == "HTTP/1.1 200 OK"
    assert fields["Content-Type"] == "text/plain; charset=utf-8"
    assert fields["Content-Length"] == "6"
    assert fields["Connection"] == "keep-alive"
    assert fields["Server"] == "zzz"
    assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", fields["Date"])
    assert body == "héllo".encode()


def test_bytes_body_and_explicit_content_type() -> None:
    assert Response(b"\x00\x01").content_type == "application/octet-stream"
    assert Response("<p>", content_type="text/html").content_type == "text/html"
    assert Response("x", headers={"Content-Type": "text/csv"}).content_type == "text/csv"
    assert Response.html("<b>").content_type == "text/html; charset=utf-8"


def test_json_response() -> None:
    resp = Response.json({"a": [1, "é"]}, status=201)
    status, fields, body = split(resp.encode())
    assert status == "HTTP/1.1 201 Created"
    assert fields["Content-Type"] == "application/json"
    assert body == '{"a":[1,"é"]}'.encode()


def test_close_head_and_no_date() -> None:
    resp = Response("body", status=404, headers=[("X-A", "1"), ("X-A", "2")])
    wire = resp.encode(keep_alive=False, head=True, date=False)
    assert wire == (
        b"HTTP/1.1 404 Not Found\r\nServer: zzz\r\nX-A: 1\r\nX-A: 2\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: 4\r\n\r\n"
    )


def test_no_body_statuses_have_no_length_or_body() -> None:
    for status in (101, 204, 304):
        wire = Response(b"ignored", status=status).encode(date=False)
        assert b"Content-Length" not in wire and b"Content-Type" not in wire
        assert wire.endswith(b"\r\n\r\n")


def test_application_connection_header_wins() -> None:
    resp = Response(b"", status=101, headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")])
    wire = resp.encode(date=False)
    assert wire.count(b"Connection") == 1 and b"Connection: Upgrade\r\n" in wire
    assert Response("x", headers={"Connection": "close"}).close_connection
    assert not Response("x").close_connection


def test_unknown_status_reason_and_bad_status() -> None:
    assert Response("", status=599).encode().startswith(b"HTTP/1.1 599 Unknown\r\n")
    assert reason_phrase(418) == "I'm a Teapot" or reason_phrase(418).lower() == "i'm a teapot"
    for bad in (99, 600, "200"):
        with pytest.raises(ValueError):
            Response("", status=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Response(123)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value", ["a\r\nSet-Cookie: x=1", "a\nb", "a\rb", "a\x00b", "a\x01", "\x7f", "x\x1fy", "€"]
)
def test_header_values_with_controls_are_rejected(value: str) -> None:
    with pytest.raises(ValueError):
        Response("x", headers={"X-Test": value})
    with pytest.raises(ValueError):
        Response("x", content_type=value)
    resp = Response("x")
    with pytest.raises(ValueError):
        resp.headers.add("X-Test", value)
    with pytest.raises(ValueError):
        resp.headers["X-Test"] = value
    with pytest.raises(ValueError):
        Response.redirect("/" + value)


@pytest.mark.parametrize("name", ["", "X Test", "X:Test", "X\r\nY", "Ü", "X\x00"])
def test_invalid_header_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError):
        Response("x", headers=[(name, "v")])


def test_tab_and_latin1_values_are_allowed() -> None:
    wire = Response("x", headers={"X-T": "a\tb \xe9"}).encode()
    assert b"X-T: a\tb \xe9\r\n" in wire


def test_framing_headers_are_reserved() -> None:
    for name in ("Content-Length", "transfer-encoding"):
        with pytest.raises(ValueError, match="computed by zzz"):
            Response("x", headers={name: "5"})


def test_header_non_str_value_is_type_error() -> None:
    with pytest.raises(TypeError):
        Response("x", headers={"X-N": 5})  # type: ignore[dict-item]


def test_response_roundtrips_through_a_parser_view() -> None:
    # Whatever the application sets, the wire has exactly the fields it asked for.
    resp = Response("ok", headers=[("Set-Cookie", "a=1; Path=/"), ("X-Empty", "")])
    _status, fields, body = split(resp.encode())
    assert fields["Set-Cookie"] == "a=1; Path=/" and fields["X-Empty"] == "" and body == b"ok"


# --------------------------------------------------------------------------- Headers


def test_headers_multimap() -> None:
    hd = Headers([("Content-Type", "a"), ("X-Multi", "1"), ("x-multi", "2")])
    assert hd.get("content-type") == "a" and hd["CONTENT-TYPE"] == "a"
    assert hd.get("missing") is None and hd.get("missing", "d") == "d"
    assert hd.get_all("X-MULTI") == ["1", "2"] and hd.get_all("nope") == []
    assert hd.items() == [("content-type", "a"), ("x-multi", "1"), ("x-multi", "2")]
    assert hd.raw_items()[0] == ("Content-Type", "a")
    assert "X-Multi" in hd and "nope" not in hd and 3 not in hd
    assert list(hd) == ["content-type", "x-multi"] and len(hd) == 3
    with pytest.raises(KeyError):
        hd["nope"]
    hd.set("x-multi", "3")
    assert hd.get_all("x-multi") == ["3"]
    del hd["X-MULTI"]
    assert "x-multi" not in hd
    with pytest.raises(KeyError):
        del hd["x-multi"]
    assert hd.setdefault("A", "1") == "1" and hd.setdefault("a", "2") == "1"
    copy = hd.copy()
    copy.add("b", "2")
    assert "b" not in hd and copy != hd and Headers(hd) == hd


def test_headers_from_mapping() -> None:
    assert Headers({"A": "1", "B": "2"}).items() == [("a", "1"), ("b", "2")]
    assert Headers().items() == []


# --------------------------------------------------------------------------- HttpError


def test_http_error_rendering() -> None:
    err = HttpError(405, headers=[("Allow", "GET, HEAD")])
    assert err.status == 405 and err.message == "Method Not Allowed" and str(err) == "405 Method Not Allowed"
    resp = err.to_response()
    assert resp.status == 405 and resp.body == b"Method Not Allowed"
    assert resp.headers.get("allow") == "GET, HEAD"
    assert resp.content_type == "text/plain; charset=utf-8"
    custom = error_response(HttpError(400, "bad thing"))
    assert custom.body == b"bad thing"


def test_one_refusal_type_renders_http_and_handshake_errors_alike() -> None:
    refused = HandshakeError(405, "a WebSocket upgrade must use GET", [("Allow", "GET")])
    assert isinstance(refused, HttpRefusal) and isinstance(HttpError(404), HttpRefusal)
    resp = error_response(refused)
    assert (resp.status, resp.body, resp.headers.get("allow")) == (
        405,
        b"a WebSocket upgrade must use GET",
        "GET",
    )
    wire = resp.encode(keep_alive=False)
    assert wire.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n") and b"Connection: close\r\n" in wire
    assert error_response(HttpError(418)).body == b"I'm a Teapot"


def test_parser_errors_never_reflect_request_bytes() -> None:
    evil = b"GET /<script>alert(1)</script> HTTP/1.1\r\nX-Evil: \x00<script>\r\n\r\n"
    with pytest.raises(HttpError) as info:
        RequestParser().feed(evil)
    wire = info.value.to_response().encode()
    assert b"script" not in wire and b"\x00" not in wire


# --------------------------------------------------------------------------- Request


def test_request_built_by_hand() -> None:
    req = Request(
        "post",
        "/a%20b/c?x=1&x=2&flag&sp=a+b#frag",
        headers={"Host": "h"},
        body=b"{}",
        remote_address=("127.0.0.1", 5000),
    )
    assert req.method == "POST" and req.raw_path == "/a%20b/c" and req.path == "/a b/c"
    assert req.query == {"x": "1", "flag": "", "sp": "a b"}
    assert req.query_list == [("x", "1"), ("x", "2"), ("flag", ""), ("sp", "a b")]
    assert req.query_all("x") == ["1", "2"] and req.query_param("nope") is None
    assert req.headers["host"] == "h" and req.json() == {}
    assert req.remote_address == ("127.0.0.1", 5000) and req.keep_alive and not req.upgrade
    req.params = {"id": "7"}
    assert req.param("id") == "7" and req.param("nope") is None
    req.assign("k", [1])
    assert req.assigns == {"k": [1]} and req.get_assign("k") == [1] and req.get_assign("z") is None
    assert repr(req) == "<Request POST '/a%20b/c?x=1&x=2&flag&sp=a+b#frag' HTTP/1.1>"


def test_request_path_with_invalid_utf8_is_replaced_not_raised() -> None:
    assert Request("GET", "/%FF").path == "/\ufffd"
    assert Request("GET", "/?q=%FF").query == {"q": "\ufffd"}
