"""The WebSocket opening handshake (RFC 6455 §4), sans-I/O: pure functions over parsed headers.

Validates upgrade requests, builds 101 responses, parses header lists, checks server answers.

Headers come in as ``list[tuple[str, str]]`` with lowercase names and latin-1 decoded values,
possibly repeated, exactly as the HTTP layer hands them over. Nothing here touches a socket.

Server-side checks run in this order, and the first failure decides the answer:

1. method: anything but ``GET`` → 405 with ``Allow: GET``;
2. HTTP version: below 1.1 (e.g. ``1.0``) → 400. An upgrade needs HTTP/1.1 (RFC 6455 §4.1); 426
   would tell the client to switch *protocols*, which it cannot do over HTTP/1.0, so 400 it is;
3. ``Upgrade`` must list the token ``websocket`` and ``Connection`` the token ``upgrade`` (any case,
   anywhere in a comma-separated list such as ``keep-alive, Upgrade``) → else 426 with
   ``Upgrade: websocket``, ``Connection: Upgrade`` and ``Sec-WebSocket-Version: 13``;
4. exactly one ``Host`` header (RFC 6455 §4.2.1, RFC 9112 §3.2) → else 400;
5. no body: a ``Transfer-Encoding`` header or a ``Content-Length`` other than ``0`` → 400. The
   HTTP layer does not read the body of an upgrade request, so those bytes would be taken as the
   client's first frames: frames smuggled past a proxy that forwarded them as a body;
6. ``Sec-WebSocket-Version`` must be exactly ``13`` in exactly one header (missing, ``8``, ``14``,
   ``13, 8`` all fail) → 426 with ``Sec-WebSocket-Version: 13`` (RFC 6455 §4.4);
7. exactly one ``Sec-WebSocket-Key`` whose value is standard base64 (with padding) of exactly
   16 bytes → else 400.

Hostile input: every parser here is a single left-to-right scan (no regular expressions, no
backtracking), so 64 KiB of spaces or an unterminated quoted string costs linear time. Parsed
extension offers are lists of tuples, never dicts or attributes, so names such as ``__proto__``
or ``constructor`` are plain strings with no special meaning.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable, Sequence

from zzz._grammar import CTL, OWS, QDTEXT, QUOTABLE, TCHAR, is_token
from zzz.errors import HttpRefusal

__all__ = [
    "GUID",
    "HandshakeError",
    "InvalidHandshake",
    "accept_key",
    "build_request",
    "build_response",
    "check_response",
    "generate_key",
    "is_token",
    "parse_extensions",
    "parse_header_tokens",
    "select_subprotocol",
    "validate_request",
]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

Headers = Iterable[tuple[str, str]]


class HandshakeError(HttpRefusal):
    """The server refuses an upgrade request; the fields say what to answer.

    Attributes:
        status: HTTP status code of the refusal (400, 405, 426, ...).
        message: short human-readable reason, safe to send as the response body (it never
            echoes request bytes).
        headers: extra response headers the status calls for (e.g. ``Allow: GET`` with 405).
    """


class InvalidHandshake(Exception):
    """Client side: the server's answer to our upgrade request is not a valid acceptance.

    Attributes:
        message: what was wrong with the response.
        status: the HTTP status the server answered with.
        headers: the response's headers (lower-case names).
    """

    def __init__(self, message: str, status: int | None = None, headers: Headers = ()) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.headers = list(headers)


def accept_key(key: str) -> str:
    """Compute ``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2).

    Args:
        key: the client's key, as sent (base64 text).

    Returns:
        base64 of SHA-1 over the key followed by the RFC's GUID.
    """
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def generate_key() -> str:
    """Return a fresh random ``Sec-WebSocket-Key``: base64 of 16 bytes from ``os.urandom``."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def _is_zero(value: str) -> bool:
    return value.isascii() and value.isdigit() and int(value) == 0


def _values(headers: Headers, name: str) -> list[str]:
    return [value for key, value in headers if key == name]


def parse_header_tokens(values: Sequence[str]) -> list[str]:
    """Split comma-separated header values into their elements.

    Repeated headers are treated as one list (RFC 7230 §3.2.2). Optional whitespace around
    elements is removed and empty elements are dropped, as the ``#rule`` allows (RFC 7230 §7).
    Elements are not validated here; callers check them against what they expect.

    Args:
        values: every value of one header field, in order.

    Returns:
        The non-empty elements, in order. Linear in the total input length.
    """
    out: list[str] = []
    for value in values:
        for element in value.split(","):
            element = element.strip(OWS)
            if element:
                out.append(element)
    return out


def _has_token(values: Sequence[str], wanted: str) -> bool:
    # Case-insensitive per RFC 7230 §6.1/§6.7 (connection options and protocol names).
    for element in parse_header_tokens(values):
        if element.lower() == wanted:
            return True
    return False


def _valid_key(value: str) -> bool:
    # 16 random bytes in base64 are always 24 characters ending in "=="; checking the length
    # first keeps the decode cheap on hostile input.
    if len(value) != 24:
        return False
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        return False
    return len(raw) == 16


def _parse_http_version(version: str) -> tuple[int, int] | None:
    version = version.removeprefix("HTTP/")
    major, dot, minor = version.partition(".")
    if not dot or not major.isdigit() or not minor.isdigit() or not major.isascii() or not minor.isascii():
        return None
    return int(major), int(minor)


_UPGRADE_REQUIRED = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Version", "13"),
]


def validate_request(method: str, http_version: str, headers: Headers) -> str:
    """Check that a request is a valid WebSocket upgrade and return its key.

    The order of the checks and the status of each failure are in the module docstring.

    Args:
        method: the request method as received (case-sensitive: ``get`` is not ``GET``).
        http_version: ``"1.1"`` or ``"HTTP/1.1"`` style version string.
        headers: lowercase header names with their values, possibly repeated.

    Returns:
        The ``Sec-WebSocket-Key`` value (optional whitespace removed), ready for ``accept_key``.

    Raises:
        HandshakeError: the request cannot be upgraded; its ``status`` and ``headers`` say what
            to answer.
    """
    headers = list(headers)
    if method != "GET":
        raise HandshakeError(405, "method not allowed: a WebSocket upgrade must use GET", [("Allow", "GET")])
    version = _parse_http_version(http_version)
    if version is None or version < (1, 1):
        raise HandshakeError(400, "a WebSocket upgrade needs HTTP/1.1")
    if not _has_token(_values(headers, "upgrade"), "websocket"):
        raise HandshakeError(426, "missing or invalid Upgrade header: expected websocket", _UPGRADE_REQUIRED)
    if not _has_token(_values(headers, "connection"), "upgrade"):
        raise HandshakeError(426, "missing or invalid Connection header: expected Upgrade", _UPGRADE_REQUIRED)
    hosts = _values(headers, "host")
    if len(hosts) != 1:
        raise HandshakeError(400, "missing Host header" if not hosts else "more than one Host header")
    if _values(headers, "transfer-encoding") or any(
        not _is_zero(value.strip(OWS)) for value in _values(headers, "content-length")
    ):
        raise HandshakeError(400, "a WebSocket upgrade request must not have a body")
    versions = _values(headers, "sec-websocket-version")
    if len(versions) != 1 or versions[0].strip(OWS) != "13":
        raise HandshakeError(
            426, "unsupported WebSocket version: only 13 is supported", [("Sec-WebSocket-Version", "13")]
        )
    keys = _values(headers, "sec-websocket-key")
    if not keys:
        raise HandshakeError(400, "missing Sec-WebSocket-Key header")
    if len(keys) > 1:
        raise HandshakeError(400, "more than one Sec-WebSocket-Key header")
    key = keys[0].strip(OWS)
    if not _valid_key(key):
        raise HandshakeError(400, "invalid Sec-WebSocket-Key: must be base64 of 16 bytes")
    return key


def select_subprotocol(header_values: Sequence[str], supported: Sequence[str]) -> str | None:
    """Pick the subprotocol to answer with, if any.

    The server's preference wins: the result is the first entry of ``supported`` that the client
    offered, whatever order the client listed them in. A server lists what it speaks best first,
    and the client's order is only a hint (RFC 6455 §4.2.2 leaves the choice to the server).
    Elements that are not valid tokens are ignored. Names compare case-sensitively.

    Args:
        header_values: every ``Sec-WebSocket-Protocol`` value of the request, in order.
        supported: the server's subprotocols, most preferred first.

    Returns:
        The chosen subprotocol, or ``None`` when nothing matches (the handshake then proceeds
        without one). Linear in the size of the header plus ``supported``.
    """
    if not supported:
        return None
    offered = {element for element in parse_header_tokens(header_values) if is_token(element)}
    for name in supported:
        if name in offered:
            return name
    return None


def _skip_ows(text: str, pos: int) -> int:
    end = len(text)
    while pos < end and text[pos] in OWS:
        pos += 1
    return pos


def _scan_token(text: str, pos: int) -> int:
    end = len(text)
    while pos < end and text[pos] in TCHAR:
        pos += 1
    return pos


def _scan_quoted(text: str, pos: int) -> tuple[str, int]:
    # ``pos`` is just past the opening quote; every character is looked at once.
    end = len(text)
    chars: list[str] = []
    while pos < end:
        char = text[pos]
        if char == '"':
            return "".join(chars), pos + 1
        if char == "\\":
            pos += 1
            if pos >= end or text[pos] not in QUOTABLE:
                raise ValueError("invalid escape in quoted string")
            chars.append(text[pos])
        elif char in QDTEXT:
            chars.append(char)
        else:
            raise ValueError("invalid character in quoted string")
        pos += 1
    raise ValueError("unterminated quoted string")


def parse_extensions(header_values: Sequence[str]) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Parse ``Sec-WebSocket-Extensions`` values (RFC 6455 §9.1) with one linear scan.

    Grammar: a comma-separated list of ``token *( OWS ";" OWS param )`` where ``param`` is
    ``token [ OWS "=" OWS ( token / quoted-string ) ]``. Repeated headers are concatenated as one
    list. Quoted values are unescaped, and must then be tokens (RFC 6455 §9.1). Empty list
    elements are skipped. Names keep their case; the caller compares.

    Args:
        header_values: every ``Sec-WebSocket-Extensions`` value, in order.

    Returns:
        ``[(extension_name, [(param_name, value_or_None), ...]), ...]`` in offer order.

    Raises:
        ValueError: the header is malformed. A server should then decline every extension and
            go on with the handshake (RFC 7692 lets a server decline), not refuse the upgrade.
    """
    result: list[tuple[str, list[tuple[str, str | None]]]] = []
    for text in header_values:
        end = len(text)
        pos = 0
        while True:
            pos = _skip_ows(text, pos)
            if pos >= end:
                break
            if text[pos] == ",":
                pos += 1  # empty list element
                continue
            start = pos
            pos = _scan_token(text, pos)
            if pos == start:
                raise ValueError(f"expected an extension name at offset {start}")
            name = text[start:pos]
            params: list[tuple[str, str | None]] = []
            pos = _skip_ows(text, pos)
            while pos < end and text[pos] == ";":
                pos = _skip_ows(text, pos + 1)
                start = pos
                pos = _scan_token(text, pos)
                if pos == start:
                    raise ValueError(f"expected a parameter name at offset {start}")
                param = text[start:pos]
                value: str | None = None
                pos = _skip_ows(text, pos)
                if pos < end and text[pos] == "=":
                    pos = _skip_ows(text, pos + 1)
                    if pos < end and text[pos] == '"':
                        value, pos = _scan_quoted(text, pos + 1)
                        if not is_token(value):
                            raise ValueError("quoted parameter value is not a token")
                    else:
                        start = pos
                        pos = _scan_token(text, pos)
                        if pos == start:
                            raise ValueError(f"expected a parameter value at offset {start}")
                        value = text[start:pos]
                    pos = _skip_ows(text, pos)
                params.append((param, value))
            result.append((name, params))
            if pos >= end:
                break
            if text[pos] != ",":
                raise ValueError(f"unexpected character at offset {pos}")
            pos += 1
    return result


def _check_header(name: str, value: str) -> None:
    if not is_token(name):
        raise ValueError(f"invalid header name {name!r}")
    for char in value:
        if char in CTL:
            raise ValueError(f"control character in value of header {name!r}")


def _encode_head(start_line: str, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [start_line]
    for name, value in headers:
        _check_header(name, value)
        lines.append(f"{name}: {value}")
    lines.append("")
    lines.append("")
    # latin-1 mirrors how values were decoded; characters beyond it raise UnicodeEncodeError,
    # which is a ValueError.
    return "\r\n".join(lines).encode("latin-1")


def build_response(
    key: str,
    *,
    subprotocol: str | None = None,
    extensions: str | None = None,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """Build the ``101 Switching Protocols`` response that accepts an upgrade.

    Args:
        key: the client's ``Sec-WebSocket-Key`` (as returned by ``validate_request``).
        subprotocol: the chosen subprotocol, if any (must be a token).
        extensions: the ``Sec-WebSocket-Extensions`` value to send, if any.
        extra_headers: more headers to append; a ``Server`` header here replaces ``Server: zzz``.

    Returns:
        The whole response head, ending with the blank line.

    Raises:
        ValueError: a header name is not a token, a value holds CR, LF, NUL or another control
            character, a value is not latin-1, or the subprotocol is not a token.
    """
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(key)),
    ]
    if subprotocol is not None:
        if not is_token(subprotocol):
            raise ValueError(f"invalid subprotocol {subprotocol!r}")
        headers.append(("Sec-WebSocket-Protocol", subprotocol))
    if extensions is not None:
        headers.append(("Sec-WebSocket-Extensions", extensions))
    extra = list(extra_headers)
    if not any(name.lower() == "server" for name, _ in extra):
        headers.append(("Server", "zzz"))
    headers.extend(extra)
    return _encode_head("HTTP/1.1 101 Switching Protocols", headers)


def _check_request_target(name: str, value: str) -> None:
    if not value or any(char in CTL or char == " " for char in value):
        raise ValueError(f"invalid {name} {value!r}")


def build_request(
    host: str,
    path: str,
    key: str,
    *,
    subprotocols: Sequence[str] | None = None,
    extensions: str | None = None,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """Client side: build the upgrade request head.

    Args:
        host: value of the ``Host`` header (``host`` or ``host:port``).
        path: request target, starting with ``/`` (query string included).
        key: a key from ``generate_key()``.
        subprotocols: subprotocols to offer, most preferred first.
        extensions: ``Sec-WebSocket-Extensions`` offer (e.g. from ``deflate.client_offer``).
        extra_headers: more headers (``Origin``, ``Authorization``, ...).

    Returns:
        The request head, ending with the blank line.

    Raises:
        ValueError: path or host hold spaces or control characters, the path does not start
            with ``/``, a subprotocol is not a token, or a header is invalid.
    """
    _check_request_target("host", host)
    _check_request_target("path", path)
    if not path.startswith("/"):
        raise ValueError(f"path must start with '/': {path!r}")
    headers = [
        ("Host", host),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    ]
    if subprotocols:
        for name in subprotocols:
            if not is_token(name):
                raise ValueError(f"invalid subprotocol {name!r}")
        headers.append(("Sec-WebSocket-Protocol", ", ".join(subprotocols)))
    if extensions is not None:
        headers.append(("Sec-WebSocket-Extensions", extensions))
    headers.extend(extra_headers)
    return _encode_head(f"GET {path} HTTP/1.1", headers)


def check_response(
    status: int,
    headers: Headers,
    key: str,
    *,
    subprotocols_offered: Sequence[str] | None = None,
) -> str | None:
    """Client side: check that the server accepted our upgrade request.

    Extensions are not checked here: pass the ``Sec-WebSocket-Extensions`` values to
    ``deflate.accept_response`` (or fail if any came back and none were offered).

    Args:
        status: the response status code.
        headers: lowercase response header names with values.
        key: the key we sent.
        subprotocols_offered: what we offered in ``Sec-WebSocket-Protocol``.

    Returns:
        The subprotocol the server picked, or ``None``.

    Raises:
        InvalidHandshake: status is not 101, ``Upgrade``/``Connection`` are missing or wrong,
            ``Sec-WebSocket-Accept`` is missing, repeated or wrong, or the server picked a
            subprotocol we did not offer (or more than one).
    """
    headers = list(headers)
    if status != 101:
        raise InvalidHandshake(f"server answered {status} instead of 101", status, headers)
    if not _has_token(_values(headers, "upgrade"), "websocket"):
        raise InvalidHandshake("missing or invalid Upgrade header in response")
    if not _has_token(_values(headers, "connection"), "upgrade"):
        raise InvalidHandshake("missing or invalid Connection header in response")
    accepts = _values(headers, "sec-websocket-accept")
    if len(accepts) != 1:
        raise InvalidHandshake("expected exactly one Sec-WebSocket-Accept header")
    if accepts[0].strip(OWS) != accept_key(key):
        raise InvalidHandshake("wrong Sec-WebSocket-Accept value")
    chosen = parse_header_tokens(_values(headers, "sec-websocket-protocol"))
    if not chosen:
        return None
    if len(chosen) > 1:
        raise InvalidHandshake("server picked more than one subprotocol")
    if not subprotocols_offered or chosen[0] not in subprotocols_offered:
        raise InvalidHandshake(f"server picked a subprotocol we did not offer: {chosen[0]!r}")
    return chosen[0]
