"""RequestParser: pipelining, bodies, every limit (also dribbled byte by byte), CTLs, upgrades.

Pure unit tests: bytes in, Request objects or HttpError out.
"""

from __future__ import annotations

import pytest

from zzz.http import HttpError, Request
from zzz.http_parser import RequestParser

GET = b"GET /a HTTP/1.1\r\nHost: example\r\n\r\n"


def feed_all(parser: RequestParser, data: bytes, step: int | None = None) -> list[Request]:
    """Feed ``data`` in pieces of ``step`` bytes (all at once when None)."""
    if step is None:
        return parser.feed(data)
    out: list[Request] = []
    for i in range(0, len(data), step):
        out += parser.feed(data[i : i + step])
    return out


def status_of(data: bytes, step: int | None = None, **limits: int | None) -> int:
    with pytest.raises(HttpError) as info:
        feed_all(RequestParser(**limits), data, step)  # type: ignore[arg-type]
    return info.value.status


# --------------------------------------------------------------------------- basics


def test_simple_get() -> None:
    (req,) = RequestParser().feed(
        b"GET /a/b%20c?x=1&y=%C3%A9&x=2 HTTP/1.1\r\nHost: h\r\nX-Multi: 1\r\nx-multi: 2\r\n\r\n"
    )
    assert req.method == "GET"
    assert req.target == "/a/b%20c?x=1&y=%C3%A9&x=2"
    assert req.raw_path == "/a/b%20c"
    assert req.path == "/a/b c"
    assert req.query_string == "x=1&y=%C3%A9&x=2"
    assert req.query == {"x": "1", "y": "é"}
    assert req.query_all("x") == ["1", "2"]
    assert req.http_version == "1.1"
    assert req.keep_alive is True
    assert req.upgrade is False
    assert req.body == b""
    assert req.headers.get("HOST") == "h"
    assert req.headers.get_all("X-MULTI") == ["1", "2"]
    assert req.headers.items() == [("host", "h"), ("x-multi", "1"), ("x-multi", "2")]
    assert req.params == {} and req.assigns == {}


def test_needs_more_bytes_returns_nothing() -> None:
    parser = RequestParser()
    assert parser.feed(GET[:-1]) == []
    (req,) = parser.feed(GET[-1:])
    assert req.raw_path == "/a"


def test_pipelining_several_requests_in_one_feed() -> None:
    data = (
        b"GET /1 HTTP/1.1\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
        b"POST /3 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n"
        b"\r\n"  # an empty line between requests is tolerated
        b"GET /4 HTTP/1.1\r\n\r\n"
    )
    reqs = RequestParser().feed(data)
    assert [r.raw_path for r in reqs] == ["/1", "/2", "/3", "/4"]
    assert [r.body for r in reqs] == [b"", b"hello", b"abcde", b""]


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64])
def test_pipelining_any_split(step: int) -> None:
    data = (
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n"
        b"POST /l HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz"
        b"GET /g?q=1 HTTP/1.1\r\nA: b\r\n\r\n"
    )
    reqs = feed_all(RequestParser(), data, step)
    assert [(r.method, r.target, r.body) for r in reqs] == [
        ("POST", "/c", b"abc"),
        ("POST", "/l", b"xyz"),
        ("GET", "/g?q=1", b""),
    ]
    assert "x-trailer" not in reqs[0].headers  # trailers are framed, not exposed


def test_body_content_length_dribbled() -> None:
    body = bytes(range(256)) * 4
    data = b"PUT /x HTTP/1.1\r\nContent-Length: 1024\r\n\r\n" + body + GET
    reqs = feed_all(RequestParser(), data, 1)
    assert [r.body for r in reqs] == [body, b""]


def test_http10_and_connection_close_are_not_keep_alive() -> None:
    (req,) = RequestParser().feed(b"GET / HTTP/1.0\r\n\r\n")
    assert req.keep_alive is False and req.http_version == "1.0"
    (req,) = RequestParser().feed(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert req.keep_alive is False
    (req,) = RequestParser().feed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert req.keep_alive is True


def test_nothing_is_read_after_connection_close() -> None:
    parser = RequestParser()
    reqs = parser.feed(b"GET /1 HTTP/1.1\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")
    assert [r.raw_path for r in reqs] == ["/1"]
    assert parser.stopped
    assert parser.feed(b"garbage that is never parsed") == []


def test_header_names_lowercase_values_latin1() -> None:
    (req,) = RequestParser().feed(b"GET / HTTP/1.1\r\nX-CamelCase: caf\xe9\tx\r\n\r\n")
    assert req.headers.items() == [("x-camelcase", "caf\xe9\tx")]


def test_absolute_form_target() -> None:
    (req,) = RequestParser().feed(b"GET http://example.com/p/q?a=1 HTTP/1.1\r\n\r\n")
    assert req.raw_path == "/p/q" and req.query == {"a": "1"}


def test_json_and_text_helpers() -> None:
    body = '{"a": [1, "é"]}'.encode()
    head = b"POST / HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    (req,) = RequestParser().feed(head + body)
    assert req.json() == {"a": [1, "é"]}
    assert req.text() == '{"a": [1, "é"]}'
    bad = Request("POST", "/", body=b"{nope")
    with pytest.raises(HttpError) as info:
        bad.json()
    assert info.value.status == 400
    with pytest.raises(HttpError):
        Request("POST", "/", body=b"\xff").text()
    latin = Request("POST", "/", body=b"caf\xe9", headers={"Content-Type": "text/plain; charset=latin-1"})
    assert latin.text() == "café"


# --------------------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\nHost: a\n\n",  # bare LF
        b"GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n",  # obsolete line folding
        b"GET / HTTP/1.1\r\nBad Name: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
        b"get / HTTP/1.1\r\n\r\n",
        b"GET /a b HTTP/1.1\r\n\r\n",
        b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n",  # raw non-ASCII in the target
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
    ],
)
def test_malformed_is_400(data: bytes) -> None:
    assert status_of(data) == 400
    assert status_of(data, step=1) == 400


@pytest.mark.parametrize(
    "ctl", [b"\x00", b"\x01", b"\x08", b"\x0b", b"\x0c", b"\x1f", b"\x7f", b"\r", b"\rX"]
)
def test_control_characters_in_header_values_are_400(ctl: bytes) -> None:
    data = b"GET / HTTP/1.1\r\nX-Evil: a" + ctl + b"b\r\n\r\n"
    assert status_of(data) == 400
    assert status_of(data, step=1) == 400


@pytest.mark.parametrize("step", [None, 1, 2, 3, 5])
@pytest.mark.parametrize("evil", [b"a\nInjected: 1", b"a\rInjected: 1", b"a\r\r\nInjected: 1", b"a\n\rb"])
def test_lone_cr_or_lf_cannot_inject_a_header(evil: bytes, step: int | None) -> None:
    # Whatever the split across feeds, "a<LF>Injected: 1" never turns into two fields.
    assert status_of(b"GET / HTTP/1.1\r\nX: " + evil + b"\r\n\r\n", step) == 400


def test_htab_and_obs_text_in_values_are_fine() -> None:
    (req,) = RequestParser().feed(b"GET / HTTP/1.1\r\nX: a\tb\xff\r\n\r\n")
    assert req.headers["x"] == "a\tb\xff"


@pytest.mark.parametrize("te", [b"gzip, chunked", b"deflate", b"identity"])
def test_unsupported_transfer_encoding_is_501(te: bytes) -> None:
    data = b"POST / HTTP/1.1\r\nTransfer-Encoding: " + te + b"\r\n\r\n0\r\n\r\n"
    assert status_of(data) == 501


def test_repeated_chunked_is_refused() -> None:
    # llhttp already refuses it as malformed; either way the body is never misframed.
    assert status_of(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n") in (400, 501)


def test_parser_stays_failed() -> None:
    parser = RequestParser()
    with pytest.raises(HttpError):
        parser.feed(b"BAD\x00 / HTTP/1.1\r\n\r\n")
    assert parser.stopped
    with pytest.raises(HttpError) as info:
        parser.feed(GET)
    assert info.value.status == 400


# --------------------------------------------------------------------------- limits


def test_request_line_limit_is_414() -> None:
    ok = b"GET /" + b"a" * 80 + b" HTTP/1.1\r\n\r\n"
    line = len(ok) - 2  # the request line with its CRLF
    assert RequestParser(max_request_line=line).feed(ok)
    assert status_of(ok, max_request_line=line - 1) == 414
    assert status_of(ok, step=1, max_request_line=line - 1) == 414
    huge = b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n"
    assert status_of(huge) == 414


def test_request_line_dribble_is_cut_at_the_limit() -> None:
    parser = RequestParser(max_request_line=1000)
    parser.feed(b"GET /")
    fed = 5
    with pytest.raises(HttpError) as info:
        for _ in range(10_000):
            parser.feed(b"a")
            fed += 1
    assert info.value.status == 414
    assert fed == 1000  # the byte that would make it 1001 is refused


def test_header_line_limit_is_431() -> None:
    line = b"X: " + b"v" * 95 + b"\r\n"  # 100 bytes with its CRLF
    ok = b"GET / HTTP/1.1\r\n" + line + b"\r\n"
    assert RequestParser(max_header_size=100).feed(ok)
    assert status_of(ok, max_header_size=99) == 431
    assert status_of(ok, step=1, max_header_size=99) == 431
    # A long field in the middle of a head that arrives at once.
    mid = b"GET / HTTP/1.1\r\nA: 1\r\n" + line + b"B: 2\r\n\r\n"
    assert status_of(mid, max_header_size=99) == 431
    assert RequestParser(max_header_size=100).feed(mid)


def test_header_dribble_is_cut_at_the_limit_in_linear_time() -> None:
    # 1 byte per feed: refused at the limit, long before the 10 MB would have been buffered.
    parser = RequestParser(max_header_size=8192)
    parser.feed(b"GET / HTTP/1.1\r\nX-Long: ")
    fed = 8
    with pytest.raises(HttpError) as info:
        for _ in range(10_000_000):
            parser.feed(b"v")
            fed += 1
    assert info.value.status == 431
    assert fed == 8192


def test_head_size_limit_is_431() -> None:
    headers = b"".join(b"H%03d: %s\r\n" % (i, b"v" * 90) for i in range(100))  # ~9.7 KB
    data = b"GET / HTTP/1.1\r\n" + headers + b"\r\n"
    assert RequestParser(max_head_size=len(data)).feed(data)
    assert status_of(data, max_head_size=len(data) - 1) == 431
    assert status_of(data, step=1, max_head_size=len(data) - 1) == 431
    assert status_of(data, step=1000, max_head_size=4096) == 431


def test_head_of_many_small_headers_dribbled_is_cut_at_head_limit() -> None:
    parser = RequestParser(max_head_size=4096, max_header_count=None)
    parser.feed(b"GET / HTTP/1.1\r\n")
    total = 16
    with pytest.raises(HttpError) as info:
        for _ in range(100_000):
            parser.feed(b"a: b\r\n")
            total += 6
    assert info.value.status == 431
    assert total <= 4096


@pytest.mark.parametrize("step", [None, 1, 1000])
def test_two_thousand_headers_is_431(step: int | None) -> None:
    data = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(2000)) + b"\r\n"
    assert status_of(data, step) == 431


def test_header_count_limit_exact() -> None:
    def head(n: int) -> bytes:
        return b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(n)) + b"\r\n"

    (req,) = RequestParser(max_header_count=10).feed(head(10))
    assert len(req.headers) == 10
    assert status_of(head(11), max_header_count=10) == 431
    assert status_of(head(11), step=1, max_header_count=10) == 431


def test_content_length_over_limit_is_413_before_the_body() -> None:
    parser = RequestParser(max_body_size=100)
    with pytest.raises(HttpError) as info:
        parser.feed(b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n")  # no body byte sent yet
    assert info.value.status == 413
    (req,) = RequestParser(max_body_size=100).feed(
        b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + b"x" * 100
    )
    assert len(req.body) == 100


def test_huge_content_length_is_413() -> None:
    assert status_of(b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999\r\n\r\n") in (400, 413)


@pytest.mark.parametrize("step", [None, 1, 5])
def test_chunked_body_counted_as_it_arrives(step: int | None) -> None:
    chunks = b"".join(b"a\r\n" + b"x" * 10 + b"\r\n" for _ in range(11)) + b"0\r\n\r\n"
    data = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
    assert status_of(data, step, max_body_size=100) == 413
    (req,) = feed_all(RequestParser(max_body_size=110), data, step)
    assert req.body == b"x" * 110


def test_single_huge_chunk_refused_from_its_size_line() -> None:
    parser = RequestParser(max_body_size=1000)
    with pytest.raises(HttpError) as info:
        parser.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffff\r\n")
    assert info.value.status == 413


def test_trailers_are_limited() -> None:
    data = (
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
        + b"".join(b"T%d: v\r\n" % i for i in range(50))
        + b"\r\n"
    )
    assert status_of(data, max_header_count=20) == 431
    assert status_of(data, step=1, max_head_size=200) == 431
    long_field = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: " + b"v" * 300 + b"\r\n\r\n"
    assert status_of(long_field, max_header_size=256) == 431
    assert status_of(long_field, step=1, max_header_size=256) == 431
    (req,) = RequestParser(max_header_size=512).feed(long_field)
    assert req.body == b""


def test_limits_can_be_turned_off() -> None:
    big = b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nX: " + b"v" * 20_000 + b"\r\n\r\n"
    parser = RequestParser(max_request_line=None, max_header_size=None, max_head_size=None)
    (req,) = parser.feed(big)
    assert len(req.headers["x"]) == 20_000


def test_pipelined_requests_each_get_their_own_head_budget() -> None:
    one = b"GET / HTTP/1.1\r\nX: " + b"v" * 60 + b"\r\n\r\n"
    reqs = feed_all(RequestParser(max_head_size=len(one)), one * 20, 7)
    assert len(reqs) == 20


def test_body_bytes_do_not_count_against_the_next_request_line() -> None:
    # A newline-free body followed by a request whose line arrives in pieces.
    body = b"z" * 5000
    data = b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n" + body + b"GET /next HTTP/1.1\r\n\r\n"
    reqs = feed_all(RequestParser(max_request_line=100, max_header_size=100), data, 4999)
    assert [r.raw_path for r in reqs] == ["/", "/next"]


# --------------------------------------------------------------------------- upgrade


def test_upgrade_returns_request_and_tail() -> None:
    parser = RequestParser()
    data = (
        b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    frame = b"\x81\x85\x01\x02\x03\x04" + bytes(b ^ m for b, m in zip(b"hello", b"\x01\x02\x03\x04\x01"))
    reqs = parser.feed(GET + data + frame + GET)
    assert [r.upgrade for r in reqs] == [False, True]
    assert reqs[1].headers["upgrade"] == "websocket"
    assert parser.upgrade_tail == frame + GET
    assert parser.stopped
    with pytest.raises(RuntimeError):
        parser.feed(b"more")


def test_upgrade_dribbled_has_empty_tail() -> None:
    data = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
    parser = RequestParser()
    reqs = feed_all(parser, data, 1)
    assert len(reqs) == 1 and reqs[0].upgrade
    assert parser.upgrade_tail == b""


def test_upgrade_header_without_connection_upgrade_is_a_plain_request() -> None:
    parser = RequestParser()
    (req,) = parser.feed(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n")
    assert req.upgrade is False
    assert not parser.stopped
    assert parser.feed(GET)[0].raw_path == "/a"
