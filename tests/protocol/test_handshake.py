"""Tests of zzz.handshake: upgrade validation, header parsers, response and request building."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zzz.errors import HttpRefusal
from zzz.handshake import (
    GUID,
    HandshakeError,
    InvalidHandshake,
    accept_key,
    build_request,
    build_response,
    check_response,
    generate_key,
    is_token,
    parse_extensions,
    parse_header_tokens,
    select_subprotocol,
    validate_request,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def good_headers(**overrides: str | None) -> list[tuple[str, str]]:
    base = {
        "host": "example.com",
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-key": KEY,
        "sec-websocket-version": "13",
    }
    for name, value in overrides.items():
        name = name.replace("_", "-")
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return list(base.items())


def parse_head(raw: bytes) -> tuple[str, list[tuple[str, str]]]:
    """A deliberately simple independent parser of an HTTP head, for checking our output."""
    assert raw.endswith(b"\r\n\r\n")
    lines = raw[:-4].decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        assert sep, line
        headers.append((name.lower(), value.strip()))
    return lines[0], headers


# --- accept key ---------------------------------------------------------------------------------


def test_accept_key_rfc6455_vector() -> None:
    assert accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert GUID == "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def test_generate_key_is_random_valid_key() -> None:
    keys = {generate_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert len(base64.b64decode(key, validate=True)) == 16
        assert validate_request("GET", "1.1", good_headers(sec_websocket_key=key)) == key


# --- validate_request ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.1", "HTTP/1.1", "2.0", "1.2"])
def test_valid_request_returns_key(version: str) -> None:
    assert validate_request("GET", version, good_headers()) == KEY


@pytest.mark.parametrize("method", ["POST", "HEAD", "get", "PUT", "OPTIONS", ""])
def test_wrong_method_is_405_with_allow(method: str) -> None:
    with pytest.raises(HandshakeError) as info:
        validate_request(method, "1.1", good_headers())
    assert info.value.status == 405
    assert ("Allow", "GET") in info.value.headers


@pytest.mark.parametrize("version", ["1.0", "HTTP/1.0", "0.9", "", "1", "x.y", "1.1.1", "١.١"])
def test_old_or_garbled_http_version_is_400(version: str) -> None:
    with pytest.raises(HandshakeError) as info:
        validate_request("GET", version, good_headers())
    assert info.value.status == 400


@pytest.mark.parametrize(
    "upgrade",
    ["websocket", "WebSocket", "WEBSOCKET", "h2c, websocket", " websocket ,", "foo,WebSocket,bar"],
)
def test_upgrade_token_any_case_in_list(upgrade: str) -> None:
    assert validate_request("GET", "1.1", good_headers(upgrade=upgrade)) == KEY


@pytest.mark.parametrize(
    "connection",
    ["Upgrade", "upgrade", "UPGRADE", "keep-alive, Upgrade", "Upgrade, keep-alive", "keep-alive,upgrade"],
)
def test_connection_token_any_case_in_list(connection: str) -> None:
    assert validate_request("GET", "1.1", good_headers(connection=connection)) == KEY


def test_repeated_connection_headers_are_one_list() -> None:
    headers = good_headers(connection=None) + [("connection", "keep-alive"), ("connection", "Upgrade")]
    assert validate_request("GET", "1.1", headers) == KEY


@pytest.mark.parametrize(
    "hosts", [[], [("host", "a")] * 2, [("host", "a"), ("host", "b")]], ids=["none", "twice", "two"]
)
def test_missing_or_repeated_host_is_400(hosts: list[tuple[str, str]]) -> None:
    # RFC 6455 section 4.2.1 asks for a Host field, RFC 9112 section 3.2 for exactly one.
    with pytest.raises(HandshakeError) as info:
        validate_request("GET", "1.1", good_headers(host=None) + hosts)
    assert info.value.status == 400
    assert "Host" in info.value.message


@pytest.mark.parametrize(
    "body",
    [
        [("content-length", "5")],
        [("content-length", " 1 ")],
        [("content-length", "0"), ("content-length", "2")],
        [("content-length", "x")],
        [("transfer-encoding", "chunked")],
        [("transfer-encoding", "")],
    ],
)
def test_upgrade_with_a_body_is_400(body: list[tuple[str, str]]) -> None:
    # Its bytes would otherwise be read as the first frames (smuggled past a proxy).
    with pytest.raises(HandshakeError) as info:
        validate_request("GET", "1.1", good_headers() + body)
    assert info.value.status == 400
    assert "body" in info.value.message


@pytest.mark.parametrize("length", ["0", " 0", "00"])
def test_content_length_zero_is_no_body(length: str) -> None:
    assert validate_request("GET", "1.1", good_headers(content_length=length)) == KEY


def _assert_426_upgrade(info: pytest.ExceptionInfo[HandshakeError]) -> None:
    assert info.value.status == 426
    assert ("Upgrade", "websocket") in info.value.headers
    assert ("Connection", "Upgrade") in info.value.headers
    assert ("Sec-WebSocket-Version", "13") in info.value.headers


@pytest.mark.parametrize("upgrade", [None, "", "h2c", "websocketx", "web socket", "websocket/13x"])
def test_missing_or_wrong_upgrade_is_426(upgrade: str | None) -> None:
    with pytest.raises(HandshakeError) as info:
        validate_request("GET", "1.1", good_headers(upgrade=upgrade))
    _assert_426_upgrade(info)


@pytest.mark.parametrize("connection", [None, "", "keep-alive", "close", "upgrades", "up grade"])
def test_missing_or_wrong_connection_is_426(connection: str | None) -> None:
    with pytest.raises(HandshakeError) as info:
        validate_request("GET", "1.1", good_headers(connection=connection))
    _assert_426_upgrade(info)


@pytest.mark.parametrize("version", [None, "8", "14", "13, 8", "8, 13", "", "013", "13.0", "thirteen"])
def test_unsupported_websocket_version_is_426(version: str | None) -> None:
    with pytest.raises(HandshakeError) as info:
        validate_request("GET", "1.1", good_headers(sec_websocket_version=version))
    assert info.value.status == 426
    assert info.value.headers == [("Sec-WebSocket-Version", "13")]


def test_two_version_headers_are_426() -> None:
    headers = good_headers() + [("sec-websocket-version", "13")]
    with pytest.raises(HandshakeError) as info:
        validate_request("GET", "1.1", headers)
    assert info.value.status == 426


def test_version_with_surrounding_whitespace_is_fine() -> None:
    assert validate_request("GET", "1.1", good_headers(sec_websocket_version=" 13\t")) == KEY


@pytest.mark.parametrize(
    "key",
    [
        None,
        "",
        "not base64 at all!!!!!!!",
        base64.b64encode(b"x" * 15).decode(),
        base64.b64encode(b"x" * 17).decode(),
        base64.b64encode(b"x" * 32).decode(),
        "dGhlIHNhbXBsZSBub25jZQ",  # no padding
        "dGhlIHNhbXBsZSBub25jZQ=",  # short padding
        "dGhlIHNhbXBsZSBub25jZ-_",  # URL-safe alphabet
        "dGhlIHNhbXBsZSBub25j ZQ==",
        "dGhlIHNhbXBsZSBub25jZQ==\x00",
        "dGhlIHNhbXBsZSBub25jZé==",
    ],
)
def test_bad_key_is_400(key: str | None) -> None:
    with pytest.raises(HandshakeError) as info:
        validate_request("GET", "1.1", good_headers(sec_websocket_key=key))
    assert info.value.status == 400


def test_duplicate_key_is_400() -> None:
    headers = good_headers() + [("sec-websocket-key", KEY)]
    with pytest.raises(HandshakeError) as info:
        validate_request("GET", "1.1", headers)
    assert info.value.status == 400
    assert "more than one" in info.value.message


def test_key_whitespace_is_trimmed() -> None:
    assert validate_request("GET", "1.1", good_headers(sec_websocket_key=f"  {KEY} ")) == KEY


def test_order_method_first() -> None:
    with pytest.raises(HandshakeError) as info:
        validate_request("POST", "1.0", [])
    assert info.value.status == 405


def test_order_http_version_before_upgrade() -> None:
    with pytest.raises(HandshakeError) as info:
        validate_request("GET", "1.0", [])
    assert info.value.status == 400


def test_order_upgrade_before_version_and_key() -> None:
    with pytest.raises(HandshakeError) as info:
        validate_request("GET", "1.1", [("sec-websocket-version", "8")])
    _assert_426_upgrade(info)


def test_order_version_before_key() -> None:
    headers = good_headers(sec_websocket_version="8", sec_websocket_key="bad")
    with pytest.raises(HandshakeError) as info:
        validate_request("GET", "1.1", headers)
    assert info.value.status == 426


def test_error_message_does_not_echo_request_bytes() -> None:
    evil = "<script>" + "A" * 16
    with pytest.raises(HandshakeError) as info:
        validate_request("GET", "1.1", good_headers(sec_websocket_key=evil))
    assert "<script>" not in info.value.message


# --- token lists and subprotocols ---------------------------------------------------------------


def test_parse_header_tokens() -> None:
    assert parse_header_tokens(["a, b", " ,c,,", "", "\td \t"]) == ["a", "b", "c", "d"]
    assert parse_header_tokens([]) == []


def test_parse_header_tokens_hostile_input_completes() -> None:
    assert parse_header_tokens([" " * 65536]) == []
    assert parse_header_tokens(["," * 65536]) == []
    assert parse_header_tokens(["b" + " " * 65536 + "x"]) == ["b" + " " * 65536 + "x"]


def test_is_token() -> None:
    assert is_token("chat.v2+json")
    assert not is_token("")
    assert not is_token("a b")
    assert not is_token('a"b')
    assert not is_token("é")


def test_select_subprotocol_server_preference_wins() -> None:
    assert select_subprotocol(["chat, superchat"], ["superchat", "chat"]) == "superchat"
    assert select_subprotocol(["chat", "superchat"], ["chat", "superchat"]) == "chat"


def test_select_subprotocol_none_cases() -> None:
    assert select_subprotocol([], ["chat"]) is None
    assert select_subprotocol(["chat"], []) is None
    assert select_subprotocol(["other"], ["chat"]) is None
    # Names are case-sensitive.
    assert select_subprotocol(["Chat"], ["chat"]) is None


def test_select_subprotocol_ignores_invalid_tokens() -> None:
    assert select_subprotocol(['"chat", chat v2, ok'], ['"chat"', "chat v2", "ok"]) == "ok"


def test_select_subprotocol_hostile_input_completes() -> None:
    # The shape of node ws CVE-2021-32640: a name, a long run of spaces, another character.
    hostile = "b" + " " * 65536 + "x"
    assert select_subprotocol([hostile], ["b", "x"]) is None
    assert select_subprotocol([" " * 65536 + "b"], ["b"]) == "b"
    assert select_subprotocol(["," * 65536 + "b"], ["b"]) == "b"


# --- Sec-WebSocket-Extensions parser ------------------------------------------------------------


@pytest.mark.parametrize(
    "values, expected",
    [
        (["permessage-deflate"], [("permessage-deflate", [])]),
        (
            ["permessage-deflate; client_max_window_bits"],
            [("permessage-deflate", [("client_max_window_bits", None)])],
        ),
        (
            ["permessage-deflate;server_max_window_bits=10;client_no_context_takeover"],
            [
                (
                    "permessage-deflate",
                    [("server_max_window_bits", "10"), ("client_no_context_takeover", None)],
                )
            ],
        ),
        (
            ['permessage-deflate ; server_max_window_bits = "10" '],
            [("permessage-deflate", [("server_max_window_bits", "10")])],
        ),
        (['a; b="\\c\\d"'], [("a", [("b", "cd")])]),
        (
            ["a; x=1, b", "c;y"],
            [("a", [("x", "1")]), ("b", []), ("c", [("y", None)])],
        ),
        ([", ,a,, ", ""], [("a", [])]),
        ([], []),
        (["  "], []),
        (["\ta\t;\tb\t=\tc\t"], [("a", [("b", "c")])]),
        (["a; b; b"], [("a", [("b", None), ("b", None)])]),  # duplicates are the caller's business
    ],
)
def test_parse_extensions_valid(values: list[str], expected: object) -> None:
    assert parse_extensions(values) == expected


@pytest.mark.parametrize(
    "value",
    [
        "a;",
        "a; ",
        ";a",
        "a; =b",
        "a; b=",
        "a; b= ,c",
        "a b",
        "a; b c",
        "a; b=c d",
        'a; b="c',
        'a; b="c\\"',
        'a; b="c d"',  # unescaped value must be a token
        'a; b=""',
        'a; b="c"d',
        "a; b=c=d",
        "a/b",
        "a; b/c",
        'a; "b"',
        "é",
        'a; b="\x00"',
        'a; b="\\\x01"',
        "a,;",
    ],
)
def test_parse_extensions_malformed(value: str) -> None:
    with pytest.raises(ValueError):
        parse_extensions([value])


def test_parse_extensions_magic_names_are_plain_strings() -> None:
    parsed = parse_extensions(['__proto__; constructor=1; __init__, constructor; __proto__="x"'])
    assert parsed == [
        ("__proto__", [("constructor", "1"), ("__init__", None)]),
        ("constructor", [("__proto__", "x")]),
    ]
    assert all(type(entry) is tuple for entry in parsed)


def test_parse_extensions_hostile_inputs_complete() -> None:
    # Each of these took super-linear time in some regex-based parser (see the hardening notes).
    assert parse_extensions([" " * 65536]) == []
    assert parse_extensions(["a" + " " * 65536]) == [("a", [])]
    with pytest.raises(ValueError):
        parse_extensions(['a; b="' + "\\c" * 65536])  # unterminated quoted string
    with pytest.raises(ValueError):
        parse_extensions(["a" + " " * 65536 + "b"])
    with pytest.raises(ValueError):
        parse_extensions(["a;" + " " * 65536])
    many = ", ".join(["permessage-deflate; client_max_window_bits"] * 5000)
    assert len(parse_extensions([many])) == 5000


# --- build_response -------------------------------------------------------------------------


def test_build_response_minimal() -> None:
    raw = build_response(KEY)
    assert raw == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"Server: zzz\r\n"
        b"\r\n"
    )


def test_build_response_full() -> None:
    raw = build_response(
        KEY,
        subprotocol="chat",
        extensions="permessage-deflate; server_max_window_bits=12",
        extra_headers=[("X-Trace", "abc")],
    )
    start, headers = parse_head(raw)
    assert start == "HTTP/1.1 101 Switching Protocols"
    assert ("sec-websocket-protocol", "chat") in headers
    assert ("sec-websocket-extensions", "permessage-deflate; server_max_window_bits=12") in headers
    assert ("x-trace", "abc") in headers
    assert ("server", "zzz") in headers


def test_build_response_server_header_can_be_replaced() -> None:
    _, headers = parse_head(build_response(KEY, extra_headers=[("Server", "custom")]))
    assert [v for n, v in headers if n == "server"] == ["custom"]


@pytest.mark.parametrize("bad", ["a\r\nSet-Cookie: x=1", "a\nb", "a\rb", "a\x00b", "a\x7fb", "a\x01b"])
def test_build_response_rejects_control_characters(bad: str) -> None:
    with pytest.raises(ValueError):
        build_response(KEY, extra_headers=[("X-Bad", bad)])
    with pytest.raises(ValueError):
        build_response(KEY, extensions=bad)


def test_build_response_rejects_bad_names_subprotocols_and_non_latin1() -> None:
    with pytest.raises(ValueError):
        build_response(KEY, extra_headers=[("X Bad", "v")])
    with pytest.raises(ValueError):
        build_response(KEY, extra_headers=[("X-Bad\r\n", "v")])
    with pytest.raises(ValueError):
        build_response(KEY, subprotocol="chat\r\nX: y")
    with pytest.raises(ValueError):
        build_response(KEY, subprotocol="")
    with pytest.raises(ValueError):
        build_response(KEY, extra_headers=[("X-Name", "snow ☃")])


def test_build_response_allows_tab_and_latin1() -> None:
    _, headers = parse_head(build_response(KEY, extra_headers=[("X-A", "a\tb"), ("X-B", "café")]))
    assert ("x-a", "a\tb") in headers
    assert ("x-b", "café") in headers


def test_handshake_error_is_an_http_refusal() -> None:
    with pytest.raises(HttpRefusal) as info:
        validate_request("POST", "1.1", good_headers())
    err = info.value
    assert isinstance(err, HandshakeError)
    assert (err.status, err.headers) == (405, [("Allow", "GET")])
    assert str(err) == f"405 {err.message}"


# --- client side --------------------------------------------------------------------------------


def test_build_request() -> None:
    raw = build_request(
        "example.com:8080",
        "/chat?room=1",
        KEY,
        subprotocols=["chat", "superchat"],
        extensions="permessage-deflate; client_max_window_bits",
        extra_headers=[("Origin", "http://example.com")],
    )
    start, headers = parse_head(raw)
    assert start == "GET /chat?room=1 HTTP/1.1"
    assert headers[:5] == [
        ("host", "example.com:8080"),
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", KEY),
        ("sec-websocket-version", "13"),
    ]
    assert ("sec-websocket-protocol", "chat, superchat") in headers
    assert ("sec-websocket-extensions", "permessage-deflate; client_max_window_bits") in headers
    assert ("origin", "http://example.com") in headers


@pytest.mark.parametrize(
    "host, path",
    [
        ("a b", "/"),
        ("h\r\nX: y", "/"),
        ("h", "/a b"),
        ("h", "/\r\n"),
        ("h", "relative"),
        ("", "/"),
        ("h", ""),
    ],
)
def test_build_request_rejects_bad_target(host: str, path: str) -> None:
    with pytest.raises(ValueError):
        build_request(host, path, KEY)


def test_build_request_rejects_bad_subprotocol() -> None:
    with pytest.raises(ValueError):
        build_request("h", "/", KEY, subprotocols=["a,b"])


def test_request_response_round_trip() -> None:
    key = generate_key()
    request = build_request("localhost", "/ws", key, subprotocols=["v2", "v1"])
    start, headers = parse_head(request)
    method, _, rest = start.partition(" ")
    version = rest.rpartition(" ")[2]
    got_key = validate_request(method, version, headers)
    protocol = select_subprotocol([v for n, v in headers if n == "sec-websocket-protocol"], ["v1", "v2"])
    assert protocol == "v1"
    response = build_response(got_key, subprotocol=protocol)
    status_line, response_headers = parse_head(response)
    status = int(status_line.split(" ")[1])
    assert check_response(status, response_headers, key, subprotocols_offered=["v2", "v1"]) == "v1"


def _response_headers(key: str = KEY, **overrides: str | None) -> list[tuple[str, str]]:
    base: dict[str, str] = {
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-accept": accept_key(key),
    }
    for name, value in overrides.items():
        name = name.replace("_", "-")
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return list(base.items())


def test_check_response_accepts_valid() -> None:
    assert check_response(101, _response_headers(), KEY, subprotocols_offered=None) is None
    headers = _response_headers(sec_websocket_protocol="chat", connection="keep-alive, UPGRADE")
    assert check_response(101, headers, KEY, subprotocols_offered=["x", "chat"]) == "chat"


@pytest.mark.parametrize(
    "status, overrides, offered",
    [
        (200, {}, None),
        (426, {}, None),
        (101, {"upgrade": None}, None),
        (101, {"upgrade": "h2c"}, None),
        (101, {"connection": None}, None),
        (101, {"connection": "close"}, None),
        (101, {"sec_websocket_accept": None}, None),
        (101, {"sec_websocket_accept": "s3pPLMBiTxaQ9kYGzzhZRbK+xOo"}, None),
        (101, {"sec_websocket_accept": accept_key(KEY).lower()}, None),
        (101, {"sec_websocket_protocol": "chat"}, None),
        (101, {"sec_websocket_protocol": "chat"}, ["other"]),
        (101, {"sec_websocket_protocol": "chat, other"}, ["chat", "other"]),
    ],
)
def test_check_response_rejects(
    status: int, overrides: dict[str, str | None], offered: list[str] | None
) -> None:
    with pytest.raises(InvalidHandshake):
        check_response(status, _response_headers(**overrides), KEY, subprotocols_offered=offered)


def test_check_response_rejects_duplicate_accept() -> None:
    headers = _response_headers() + [("sec-websocket-accept", accept_key(KEY))]
    with pytest.raises(InvalidHandshake) as info:
        check_response(101, headers, KEY, subprotocols_offered=None)
    assert "exactly one" in info.value.message


# --- property tests -----------------------------------------------------------------------------

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
tokens = st.text(alphabet=TCHARS, min_size=1, max_size=12)
ows = st.sampled_from(["", " ", "\t", "  "])


Parsed = list[tuple[str, list[tuple[str, "str | None"]]]]


@st.composite
def extension_headers(draw: st.DrawFn) -> tuple[str, Parsed]:
    expected = draw(
        st.lists(st.tuples(tokens, st.lists(st.tuples(tokens, st.none() | tokens), max_size=4)), max_size=4)
    )
    parts = []
    for name, params in expected:
        text = name
        for param, value in params:
            text += draw(ows) + ";" + draw(ows) + param
            if value is not None:
                if draw(st.booleans()):
                    # Quote it, escaping some characters that need no escape.
                    quoted = "".join("\\" + c if draw(st.booleans()) else c for c in value)
                    value_text = '"' + quoted + '"'
                else:
                    value_text = value
                text += draw(ows) + "=" + draw(ows) + value_text
        parts.append(draw(ows) + text + draw(ows))
    return ",".join(parts), expected


@settings(max_examples=300, deadline=None)
@given(extension_headers())
def test_parse_extensions_round_trip(case: tuple[str, Parsed]) -> None:
    header, expected = case
    assert parse_extensions([header]) == expected


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(' \t,;="\\ab1é\x00\r\n')), max_size=60))
def test_parse_extensions_only_raises_value_error(header: str) -> None:
    try:
        result = parse_extensions([header])
    except ValueError:
        return
    for name, params in result:
        assert is_token(name)
        for param, value in params:
            assert is_token(param)
            assert value is None or is_token(value)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=4), st.lists(tokens, max_size=4))
def test_select_subprotocol_only_returns_offered_supported(values: list[str], supported: list[str]) -> None:
    chosen = select_subprotocol(values, supported)
    if chosen is not None:
        assert chosen in supported
        assert chosen in parse_header_tokens(values)
