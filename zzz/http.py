"""The HTTP/1.1 model of zzz: Headers, Request, Response and HttpError.

Plain objects: ``Response.encode`` gives the bytes to write, and a ``Request`` is what the parser
(``zzz.http_parser``) produces or what a test builds by hand. Header names and values are checked
against ``zzz._grammar`` whenever an application sets them, so CR, LF and NUL cannot reach the wire.
"""

from __future__ import annotations

import json as _json
import time
from collections.abc import Iterable, Iterator, Mapping
from email.utils import formatdate
from typing import Any, Union
from urllib.parse import parse_qsl, unquote, urlsplit

from zzz._grammar import REASONS, is_field_value, is_token, reason_phrase
from zzz.errors import HttpRefusal

__all__ = [
    "Headers",
    "HeadersInit",
    "HttpError",
    "Request",
    "Response",
    "error_response",
    "reason_phrase",
]

HeadersInit = Union["Headers", Mapping[str, str], Iterable[tuple[str, str]], None]

# Statuses whose responses never carry a body or Content-Length (RFC 9110 sections 6.4.1, 8.6).
_NO_BODY_STATUSES = frozenset({204, 304}) | frozenset(range(100, 200))
# Set by encode() from the body; an application-supplied value could only disagree with it.
_RESERVED_HEADERS = frozenset({"content-length", "transfer-encoding"})


# --------------------------------------------------------------------------- headers


class Headers:
    """A case-insensitive multi-map of HTTP header fields, order preserved.

    Names are stored lower-cased (``items()`` yields lower-case names); the spelling given by the
    application is kept for serialisation. Values are ``str`` (latin-1 on the wire).
    Mutations validate names and values, so CR/LF/NUL cannot reach the wire through them.
    """

    __slots__ = ("_items", "_spelling")

    def __init__(self, init: HeadersInit = None) -> None:
        """Build from a mapping, an iterable of ``(name, value)`` pairs, or another ``Headers``.

        Raises:
            ValueError: a name is not an RFC 9110 token or a value holds a control character.
        """
        self._items: list[tuple[str, str]] = []
        self._spelling: dict[str, str] = {}
        if init is None:
            return
        if isinstance(init, Headers):
            self._items = list(init._items)
            self._spelling = dict(init._spelling)
            return
        pairs = init.items() if isinstance(init, Mapping) else init
        for name, value in pairs:
            self.add(name, value)

    @classmethod
    def _trusted(cls, items: list[tuple[str, str]]) -> Headers:
        # For the parser: names already lower-cased, values already checked.
        obj = cls.__new__(cls)
        obj._items = items
        obj._spelling = {}
        return obj

    @staticmethod
    def _check(name: str, value: str) -> None:
        if not isinstance(name, str) or not is_token(name):
            raise ValueError(f"invalid HTTP header name: {name!r}")
        if not isinstance(value, str):
            raise TypeError(f"header {name!r}: value must be str, not {type(value).__name__}")
        if not is_field_value(value):
            raise ValueError(f"header {name!r}: value contains a control or non-latin-1 character")

    # Reading

    def get(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of ``name``, or ``default`` when absent."""
        key = name.lower()
        for k, v in self._items:
            if k == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Return every value of ``name`` in order (empty list when absent)."""
        key = name.lower()
        return [v for k, v in self._items if k == key]

    def items(self) -> list[tuple[str, str]]:
        """Return all fields as ``(lower-case name, value)`` pairs, in order."""
        return list(self._items)

    def keys(self) -> list[str]:
        """Return the distinct lower-case names, in order of first appearance."""
        return list(dict.fromkeys(k for k, _ in self._items))

    def raw_items(self) -> list[tuple[str, str]]:
        """Return all fields with the names spelled as they were added (for serialisation)."""
        sp = self._spelling
        return [(sp.get(k, k), v) for k, v in self._items]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = name.lower()
        return any(k == key for k, _ in self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._items == other._items
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    # Writing

    def add(self, name: str, value: str) -> None:
        """Append a field, keeping any existing ones with the same name.

        Raises:
            ValueError: invalid name, or a value with CR/LF/NUL/other control characters.
        """
        self._check(name, value)
        key = name.lower()
        if key != name:
            self._spelling.setdefault(key, name)
        self._items.append((key, value))

    def set(self, name: str, value: str) -> None:
        """Replace every field named ``name`` by a single one (appended if it was absent)."""
        self._check(name, value)
        key = name.lower()
        for i, (k, _) in enumerate(self._items):
            if k == key:
                self._items[i] = (key, value)
                self._items[i + 1 :] = [kv for kv in self._items[i + 1 :] if kv[0] != key]
                break
        else:
            self._items.append((key, value))
        if key != name:
            self._spelling[key] = name

    __setitem__ = set

    def setdefault(self, name: str, value: str) -> str:
        """Add ``name: value`` unless ``name`` is present; return the value now in effect."""
        current = self.get(name)
        if current is not None:
            return current
        self.add(name, value)
        return value

    def remove(self, name: str) -> None:
        """Remove every field named ``name`` (no error when absent)."""
        key = name.lower()
        self._items = [kv for kv in self._items if kv[0] != key]
        self._spelling.pop(key, None)

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self.remove(name)

    def copy(self) -> Headers:
        """Return an independent copy."""
        return Headers(self)


# --------------------------------------------------------------------------- errors


class HttpError(HttpRefusal):
    """An HTTP-level failure that maps to a response status.

    Raised by the parser (400, 413, 414, 431, 501), by the router (404, 405) and by applications.
    The rendered body is ``message`` if given, otherwise the reason phrase: code that raises it
    must never put request bytes in ``message``.

    Attributes:
        status: the HTTP status code.
        message: text for the response body (defaults to the reason phrase).
        headers: extra response headers, e.g. ``[("Allow", "GET, HEAD")]`` for a 405.
    """

    def to_response(self) -> Response:
        """Render as a plain-text ``Response`` carrying the status, message and headers."""
        return Response(self.message, status=self.status, headers=self.headers)


def error_response(exc: HttpRefusal) -> Response:
    """Render any refusal (an ``HttpError``, a ``HandshakeError``) as a plain-text ``Response``."""
    return Response(exc.message, status=exc.status, headers=exc.headers)


# --------------------------------------------------------------------------- request


class Request:
    """One HTTP request, as parsed from the wire or built by hand (e.g. in tests).

    Attributes:
        method: upper-case method, e.g. ``"GET"``.
        target: the request-target exactly as sent (``"/a%20b?x=1"``).
        raw_path: the path part of the target, still percent-encoded.
        path: the path, percent-decoded as UTF-8 (undecodable bytes become U+FFFD).
        query_string: the query part of the target without ``?``, still encoded.
        headers: request header fields (``Headers``, lower-case names).
        http_version: ``"1.1"`` or ``"1.0"``.
        body: the complete body (``b""`` when none).
        keep_alive: whether the client lets the connection stay open after the response.
        upgrade: True when the parser stopped at this request because it asks for a protocol
            upgrade (``Connection: upgrade`` + ``Upgrade``, or CONNECT).
        remote_address: the peer's address tuple (behind a proxy: the proxy's), set by the
            server, or None.
        client: the client's address: ``remote_address``, or with ``proxy_headers`` the
            ``(host, port)`` a trusted proxy named (port 0 when it gave none).
        scheme: ``"http"`` or ``"https"``: the connection's own (TLS or not), or with
            ``proxy_headers`` the one a trusted proxy named.
        params: path parameters filled by the router (decoded ``str`` values).
        assigns: per-request storage for middleware and handlers.
    """

    __slots__ = (
        "_path",
        "_query",
        "_query_list",
        "assigns",
        "body",
        "client",
        "headers",
        "http_version",
        "keep_alive",
        "method",
        "params",
        "query_string",
        "raw_path",
        "remote_address",
        "scheme",
        "target",
        "upgrade",
    )

    def __init__(
        self,
        method: str = "GET",
        target: str = "/",
        *,
        headers: HeadersInit = None,
        body: bytes = b"",
        http_version: str = "1.1",
        keep_alive: bool = True,
        upgrade: bool = False,
        remote_address: tuple[Any, ...] | None = None,
        params: dict[str, str] | None = None,
        client: Any = None,
        scheme: str = "http",
    ) -> None:
        """Build a request; ``target`` is the request-target (``"/path?query"``); ``client``
        defaults to ``remote_address``."""
        self.method = method.upper()
        self.target = target
        self.raw_path, self.query_string = _split_target(target)
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body = bytes(body)
        self.http_version = http_version
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.remote_address = remote_address
        self.client: Any = remote_address if client is None else client
        self.scheme = scheme
        self.params: dict[str, str] = {} if params is None else params
        self.assigns: dict[str, Any] = {}
        self._path: str | None = None
        self._query_list: list[tuple[str, str]] | None = None
        self._query: dict[str, str] | None = None

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target!r} HTTP/{self.http_version}>"

    @property
    def path(self) -> str:
        """The percent-decoded path."""
        if self._path is None:
            raw = self.raw_path
            self._path = unquote(raw, errors="replace") if "%" in raw else raw
        return self._path

    @property
    def query_list(self) -> list[tuple[str, str]]:
        """All query parameters as decoded ``(name, value)`` pairs, in order (``+`` is a space)."""
        if self._query_list is None:
            qs = self.query_string
            self._query_list = parse_qsl(qs, keep_blank_values=True, errors="replace") if qs else []
        return self._query_list

    @property
    def query(self) -> dict[str, str]:
        """Query parameters, name -> first value."""
        if self._query is None:
            q: dict[str, str] = {}
            for k, v in self.query_list:
                q.setdefault(k, v)
            self._query = q
        return self._query

    def query_param(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of query parameter ``name``, or ``default``."""
        return self.query.get(name, default)

    def query_all(self, name: str) -> list[str]:
        """Return every value of query parameter ``name``, in order."""
        return [v for k, v in self.query_list if k == name]

    def param(self, name: str, default: str | None = None) -> str | None:
        """Return path parameter ``name`` (from ``:name`` or ``*name``), or ``default``."""
        return self.params.get(name, default)

    def assign(self, name: str, value: Any) -> None:
        """Store ``value`` under ``name`` in ``assigns`` for later middleware and the handler."""
        self.assigns[name] = value

    def get_assign(self, name: str, default: Any = None) -> Any:
        """Return ``assigns[name]``, or ``default`` (None) when unset."""
        return self.assigns.get(name, default)

    def text(self) -> str:
        """Decode the body using the Content-Type charset (UTF-8 by default).

        Raises:
            HttpError: 400 when the body does not decode.
        """
        charset = "utf-8"
        ctype = self.headers.get("content-type")
        if ctype:
            for part in ctype.split(";")[1:]:
                key, _, val = part.strip().partition("=")
                if key.lower() == "charset" and val:
                    charset = val.strip('"')
        try:
            return self.body.decode(charset)
        except (LookupError, UnicodeDecodeError):
            raise HttpError(400, "request body is not valid text") from None

    def json(self) -> Any:
        """Parse the body as JSON.

        Raises:
            HttpError: 400 when the body is not valid JSON.
        """
        try:
            return _json.loads(self.body)
        except ValueError:
            raise HttpError(400, "request body is not valid JSON") from None


def _split_target(target: str) -> tuple[str, str]:
    """Split a request-target into (raw path, raw query); fragments are dropped."""
    if target.startswith("/"):
        path, _, rest = target.partition("?")
        if "#" in path:
            return path.partition("#")[0], ""
        return path, rest.partition("#")[0]
    if target == "*":
        return "*", ""
    if "://" in target:  # absolute-form (RFC 9112 section 3.2.2)
        parts = urlsplit(target)
        return parts.path or "/", parts.query
    return target, ""  # authority-form (CONNECT)


# --------------------------------------------------------------------------- response

_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    # One formatdate() per second instead of per response.
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


class Response:
    """An HTTP response: status, headers, body.

    A ``str`` body is sent as UTF-8 with ``text/plain; charset=utf-8`` unless ``content_type``
    (or a Content-Type header) says otherwise; a ``bytes`` body defaults to
    ``application/octet-stream``. Content-Length, Connection, Server and Date are added by
    ``encode``. Subclasses (e.g. the WebSocket upgrade response) may override ``encode``.

    Attributes:
        status: the status code (100-599).
        headers: the application's header fields (``Headers``).
        body: the body bytes.
    """

    __slots__ = ("body", "headers", "status")

    def __init__(
        self,
        body: str | bytes | bytearray | memoryview = b"",
        status: int = 200,
        headers: HeadersInit = None,
        content_type: str | None = None,
    ) -> None:
        """Build a response.

        Raises:
            ValueError: bad status, invalid or reserved header (Content-Length, Transfer-Encoding),
                or a header value with CR/LF/NUL/other control characters.
            TypeError: body of another type.
        """
        if isinstance(body, str):
            data = body.encode("utf-8")
            default_type = "text/plain; charset=utf-8"
        elif isinstance(body, (bytes, bytearray, memoryview)):
            data = bytes(body)
            default_type = "application/octet-stream"
        else:
            raise TypeError(f"response body must be str or bytes, not {type(body).__name__}")
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"invalid HTTP status: {status!r}")
        hdrs = Headers(headers)  # copies and validates
        for reserved in _RESERVED_HEADERS:
            if reserved in hdrs:
                raise ValueError(f"{reserved} is computed by zzz and may not be set by the application")
        if content_type is not None:
            hdrs.set("Content-Type", content_type)
        elif status not in _NO_BODY_STATUSES and "content-type" not in hdrs:
            hdrs.add("Content-Type", default_type)
        self.status = status
        self.headers = hdrs
        self.body = data

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.status} {len(self.body)} bytes>"

    @classmethod
    def json(cls, obj: Any, status: int = 200, headers: HeadersInit = None) -> Response:
        """Serialise ``obj`` as compact UTF-8 JSON with ``application/json``."""
        data = _json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return cls(data, status=status, headers=headers, content_type="application/json")

    @classmethod
    def html(cls, text: str, status: int = 200, headers: HeadersInit = None) -> Response:
        """An HTML response (``text/html; charset=utf-8``)."""
        return cls(text, status=status, headers=headers, content_type="text/html; charset=utf-8")

    @classmethod
    def redirect(cls, location: str, status: int = 302) -> Response:
        """A redirect to ``location`` (validated like any header value)."""
        return cls(b"", status=status, headers=[("Location", location)])

    @property
    def content_type(self) -> str | None:
        """The Content-Type header, if any."""
        return self.headers.get("content-type")

    @property
    def close_connection(self) -> bool:
        """True when the application set ``Connection: close``."""
        conn = self.headers.get("connection")
        return conn is not None and "close" in conn.lower()

    def encode(self, *, keep_alive: bool = True, head: bool = False, date: bool = True) -> bytes:
        """Serialise as an HTTP/1.1 response.

        Args:
            keep_alive: send ``Connection: keep-alive`` (else ``close``), unless the application
                set its own Connection header.
            head: the request was HEAD: send the headers of the full response but no body.
            date: include a Date header.

        Returns:
            The status line, headers and (unless ``head`` or a no-body status) the body.
        """
        status = self.status
        parts = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\nServer: zzz\r\n"]
        if date:
            parts.append(f"Date: {_http_date()}\r\n")
        has_connection = False
        for name, value in self.headers.raw_items():
            if not has_connection and name.lower() == "connection":
                has_connection = True
            parts.append(f"{name}: {value}\r\n")
        if not has_connection:
            parts.append("Connection: keep-alive\r\n" if keep_alive else "Connection: close\r\n")
        no_body = status in _NO_BODY_STATUSES
        if not no_body:
            parts.append(f"Content-Length: {len(self.body)}\r\n")
        parts.append("\r\n")
        head_bytes = "".join(parts).encode("latin-1")
        if head or no_body or not self.body:
            return head_bytes
        return head_bytes + self.body
