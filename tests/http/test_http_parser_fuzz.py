"""Property tests for RequestParser: any split of a stream parses alike; junk only ever gives HttpError."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zzz.http import HttpError, Request
from zzz.http_parser import RequestParser

_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=12)
_value = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30).map(str.strip)
_path = st.lists(st.text(alphabet="abcXYZ019-_.~%2F", min_size=1, max_size=8), max_size=4).map(
    lambda segs: "/" + "/".join(segs)
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, tuple[str, str, list[tuple[str, str]], bytes]]:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
    path = draw(_path)
    query = draw(st.one_of(st.just(""), _token.map(lambda t: "?q=" + t)))
    headers = [
        h
        for h in draw(st.lists(st.tuples(_token, _value), max_size=6))
        if h[0] not in ("content-length", "transfer-encoding", "connection", "upgrade")
    ]
    body = draw(st.binary(max_size=200))
    framing = draw(st.sampled_from(["none", "length", "chunked"])) if body else "none"
    head = f"{method} {path}{query} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers)
    if framing == "length":
        wire_body = body
        head += f"Content-Length: {len(body)}\r\n"
        headers = [*headers, ("content-length", str(len(body)))]
    elif framing == "chunked":
        sizes = draw(st.lists(st.integers(1, 50), min_size=1, max_size=8))
        pieces, rest = [], body
        for size in sizes:
            if not rest:
                break
            piece, rest = rest[:size], rest[size:]
            ext = draw(st.sampled_from(["", ";x=1", ";name"]))
            pieces.append(b"%x%s\r\n%s\r\n" % (len(piece), ext.encode(), piece))
        if rest:
            pieces.append(b"%x\r\n%s\r\n" % (len(rest), rest))
        trailer = draw(st.sampled_from([b"", b"X-Trailer: t\r\n"]))
        wire_body = b"".join(pieces) + b"0\r\n" + trailer + b"\r\n"
        head += "Transfer-Encoding: chunked\r\n"
        headers = [*headers, ("transfer-encoding", "chunked")]
    else:
        wire_body, body = b"", b""
    wire = (head + "\r\n").encode("latin-1") + wire_body
    return wire, (method, path + query, headers, body)


def view(reqs: list[Request]) -> list[tuple[str, str, list[tuple[str, str]], bytes]]:
    return [(r.method, r.target, r.headers.items(), r.body) for r in reqs]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests(), min_size=1, max_size=4), st.data())
def test_any_split_gives_the_same_requests(
    batch: list[tuple[bytes, tuple[str, str, list[tuple[str, str]], bytes]]], data: st.DataObject
) -> None:
    stream = b"".join(wire for wire, _ in batch)
    expected = [want for _, want in batch]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    parser = RequestParser()
    got: list[Request] = []
    last = 0
    for cut in [*cuts, len(stream)]:
        got += parser.feed(stream[last:cut])
        last = cut
    assert view(got) == expected
    assert view(RequestParser().feed(stream)) == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 40))
def test_junk_only_ever_raises_http_error(junk: bytes, step: int) -> None:
    parser = RequestParser(max_head_size=256, max_body_size=64)
    prefix = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    for stream in (junk, prefix + junk, b"GET / HTTP/1.1\r\n" + junk):
        parser = RequestParser(max_head_size=256, max_body_size=64)
        try:
            for i in range(0, len(stream), step):
                for req in parser.feed(stream[i : i + step]):
                    assert isinstance(req, Request)
                if parser.stopped:
                    break
        except HttpError as exc:
            assert exc.status in (400, 413, 414, 431, 501)
