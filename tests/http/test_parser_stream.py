"""``RequestParser(stream=True)``, the ASGI server's parser: heads as soon as they are complete,
then the body in pieces and ``END_OF_BODY``, with no body limit and every head limit kept."""

from __future__ import annotations

import pytest

from zzz.http import HttpError, Request
from zzz.http_parser import END_OF_BODY, RequestParser


def test_head_comes_before_the_body_and_the_body_in_pieces() -> None:
    p = RequestParser(stream=True, max_body_size=10)
    first = p.feed(b"POST /a?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\n0123456789")
    assert isinstance(first[0], Request) and first[0].body == b"" and first[0].query_string == "x=1"
    assert first[1:] == [b"0123456789"]  # over max_body_size already: no limit on a stream
    rest = p.feed(b"0123456789" * 2 + b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert rest[:2] == [b"01234567890123456789", END_OF_BODY]
    assert isinstance(rest[2], Request) and rest[2].path == "/b" and rest[3] is END_OF_BODY


def test_chunked_body_is_streamed_without_its_framing() -> None:
    p = RequestParser(stream=True)
    events = p.feed(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n"
    )
    assert events[1:] == [b"abc", b"de"]
    assert p.feed(b"0\r\n\r\n") == [END_OF_BODY]


def test_upgrade_request_stops_the_parser_and_keeps_the_tail() -> None:
    p = RequestParser(stream=True)
    events = p.feed(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nFRAMES")
    assert events[0].upgrade and events[1] is END_OF_BODY
    assert p.stopped and p.upgrade_tail == b"FRAMES"


def test_head_limits_still_apply() -> None:
    p = RequestParser(stream=True, max_header_size=100)
    with pytest.raises(HttpError) as caught:
        p.feed(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200 + b"\r\n\r\n")
    assert caught.value.status == 431


def test_without_stream_the_body_limit_holds() -> None:
    with pytest.raises(HttpError) as caught:
        RequestParser(max_body_size=10).feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\n")
    assert caught.value.status == 413
