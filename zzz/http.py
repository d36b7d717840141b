"""HTTP/1.1 for zzz: Request, Response, Headers, HttpError, and an incremental request parser.

Sans-I/O: bytes go into ``RequestParser.feed`` and complete ``Request`` objects come out;
``Response.encode`` gives the bytes to write. Parsing is done by httptools (llhttp); the limits
are enforced here, on the raw bytes, before llhttp sees them.
"""

from __future__ import annotations

import json as _json
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, NoReturn, Union
from urllib.parse import parse_qsl, unquote, urlsplit

import httptools

__all__ = [
    "Headers",
    "HeadersInit",
    "HttpError",
    "Request",
    "RequestParser",
    "Response",
    "error_response",
    "reason_phrase",
]

HeadersInit = Union["Headers", Mapping[str, str], Iterable[tuple[str, str]], None]

# RFC 9110 token characters: what a header name may consist of.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# Anything but HTAB, visible ASCII, SP and obs-text: CR/LF/NUL and friends would let an
# application (or whoever controls the data it echoes) split or smuggle responses.
_BAD_VALUE = re.compile(r"[^\t\x20-\x7e\x80-\xff]")
# Control characters never valid in a request head (CR and LF are checked as CRLF pairs).
_HEAD_CTLS = bytes([*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
# Empty lines a client may send between pipelined requests (RFC 9112 section 2.2).
_LEADING_EOL = re.compile(rb"[\r\n]*")

_REASONS: dict[int, str] = {s.value: s.phrase for s in HTTPStatus}
# Statuses whose responses never carry a body or Content-Length (RFC 9110 sections 6.4.1, 8.6).
_NO_BODY_STATUSES = frozenset({204, 304}) | frozenset(range(100, 200))
# Set by encode() from the body; an application-supplied value could only disagree with it.
_RESERVED_HEADERS = frozenset({"content-length", "transfer-encoding"})
_UNLIMITED = 1 << 62


def reason_phrase(status: int) -> str:
    """Return the standard reason phrase for ``status`` (``"Unknown"`` if it has none)."""
    return _REASONS.get(status, "Unknown")


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
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise ValueError(f"invalid HTTP header name: {name!r}")
        if not isinstance(value, str):
            raise TypeError(f"header {name!r}: value must be str, not {type(value).__name__}")
        if _BAD_VALUE.search(value):
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
                self._items[i + 1:] = [kv for kv in self._items[i + 1:] if kv[0] != key]
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


class HttpError(Exception):
    """An HTTP-level failure that maps to a response status.

    Raised by the parser (400, 413, 414, 431, 501), by the router (404, 405) and by applications.
    The rendered body is ``message`` if given, otherwise the reason phrase: code that raises it
    must never put request bytes in ``message``.

    Attributes:
        status: the HTTP status code.
        message: text for the response body (defaults to the reason phrase).
        headers: extra response headers, e.g. ``[("Allow", "GET, HEAD")]`` for a 405.
    """

    def __init__(self, status: int, message: str = "", headers: Iterable[tuple[str, str]] = ()) -> None:
        self.status = int(status)
        self.message = message or reason_phrase(self.status)
        self.headers: list[tuple[str, str]] = list(headers)
        super().__init__(self.status, self.message)

    def __str__(self) -> str:
        return f"{self.status} {self.message}"

    def to_response(self) -> Response:
        """Render as a plain-text ``Response`` carrying the status, message and headers."""
        return Response(self.message, status=self.status, headers=self.headers)


def error_response(exc: HttpError) -> Response:
    """Render an ``HttpError`` as a plain-text ``Response`` (same as ``exc.to_response()``)."""
    return exc.to_response()


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
        remote_address: the peer's address tuple, set by the server, or None.
        params: path parameters filled by the router (decoded ``str`` values).
        assigns: per-request storage for middleware and handlers.
    """

    __slots__ = (
        "_path",
        "_query",
        "_query_list",
        "assigns",
        "body",
        "headers",
        "http_version",
        "keep_alive",
        "method",
        "params",
        "query_string",
        "raw_path",
        "remote_address",
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
    ) -> None:
        """Build a request; ``target`` is the request-target (``"/path?query"``)."""
        self.method = method.upper()
        self.target = target
        self.raw_path, self.query_string = _split_target(target)
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body = bytes(body)
        self.http_version = http_version
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.remote_address = remote_address
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
        parts = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\nServer: zzz\r\n"]
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


# --------------------------------------------------------------------------- parser

# Framing states of RequestParser (ours, kept in step with llhttp's).
_HEAD = 0  # between messages or inside a head
_BODY_LENGTH = 1  # Content-Length body
_BODY_CHUNKED = 2  # chunked body
_NO_BODY = 3  # head done, llhttp will complete the message without a body
_UPGRADED = 4
_FAILED = 5
_CLOSED = 6  # after a request without keep-alive: RFC 9112 section 9.6 says read no further

# Chunked-framing sub-states.
_CK_SIZE = 0
_CK_DATA = 1
_CK_DATA_END = 2
_CK_TRAILER = 3
_MAX_CHUNK_LINE = 4096


class RequestParser:
    """Incremental HTTP/1.1 request parser with enforced limits (sans-I/O).

    llhttp (through httptools) does the parsing. This class finds message boundaries itself
    (head end, Content-Length, chunk framing) so that every limit is checked on the raw bytes
    *before* they are handed to llhttp: a head dribbled one byte at a time costs linear time and
    is cut off at the limit. Whenever llhttp and our framing disagree, the request is rejected
    (400) rather than guessed at, which also shuts the door on request smuggling.

    Limits are in bytes, line limits include the CRLF; ``None`` turns a limit off.

    After a request that asks for an upgrade the parser stops: that request comes back with
    ``upgrade = True`` and the bytes that followed its head are in ``upgrade_tail``.
    After a request with ``keep_alive == False`` (HTTP/1.0, ``Connection: close``) the parser
    also stops: later bytes on that connection are ignored and ``feed`` returns ``[]``.
    After an ``HttpError`` the parser is dead and raises the same error again.
    """

    def __init__(
        self,
        *,
        # Limits
        max_request_line: int | None = 8192,
        max_header_size: int | None = 8192,
        max_header_count: int | None = 128,
        max_head_size: int | None = 65536,
        max_body_size: int | None = 1 << 20,
    ) -> None:
        """Create a parser for one connection.

        Args:
            max_request_line: longest request line (method, target, version) -> 414.
            max_header_size: longest header field line -> 431.
            max_header_count: most header fields in a head (and in chunked trailers) -> 431.
            max_head_size: longest head (request line + fields + blank line) -> 431.
            max_body_size: largest body, by Content-Length or chunked total -> 413.
        """
        self.max_request_line = _UNLIMITED if max_request_line is None else max_request_line
        self.max_header_size = _UNLIMITED if max_header_size is None else max_header_size
        self.max_header_count = _UNLIMITED if max_header_count is None else max_header_count
        self.max_head_size = _UNLIMITED if max_head_size is None else max_head_size
        self.max_body_size = _UNLIMITED if max_body_size is None else max_body_size
        self.upgrade_tail: bytes = b""
        self._parser = httptools.HttpRequestParser(self)
        self._mode = _HEAD
        self._error: HttpError | None = None
        self._pending: HttpError | None = None  # raised inside an llhttp callback
        self._out: list[Request] = []
        self._headers_done = False
        self._reset_message()

    def _reset_message(self) -> None:
        # Raw-byte accounting for the head in progress.
        self._head_len = 0  # bytes of this head fed so far
        self._lines = 0  # complete lines in this head
        self._line_len = 0  # bytes of the line in progress
        self._head_tail = b""  # last 3 bytes of this head, to see a CRLFCRLF split across feeds
        # What llhttp reports.
        self._url: list[bytes] = []
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._body_len = 0
        self._in_trailers = False
        self._keep_alive = True
        # Body framing.
        self._remaining = 0
        self._ck = _CK_SIZE
        self._ck_buf = b""
        self._ck_left = 0
        self._ck_line = 0
        self._ck_trailer_len = 0
        self._ck_trailer_count = 0

    # ------------------------------------------------------------------ public

    @property
    def stopped(self) -> bool:
        """True once the parser will not parse any more: after an upgrade, an error, or a
        request without keep-alive."""
        return self._mode in (_UPGRADED, _FAILED, _CLOSED)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Request]:
        """Parse ``data`` and return every request it completes, in order (pipelining).

        Returns:
            The complete requests; an empty list when more bytes are needed.

        Raises:
            HttpError: 400 malformed, 413 body too large, 414 request line too long,
                431 header/head too large or too many headers, 501 unsupported
                Transfer-Encoding. Requests completed earlier in the same ``data`` are dropped
                with it; the parser stays failed.
            RuntimeError: the parser stopped after an upgrade.
        """
        if self._mode == _FAILED:
            assert self._error is not None
            raise self._error
        if self._mode == _UPGRADED:
            raise RuntimeError("the parser stopped at an upgrade request; use upgrade_tail")
        if self._mode == _CLOSED:
            return []
        if not isinstance(data, bytes):
            data = bytes(data)
        out: list[Request] = []
        self._out = out
        try:
            self._feed(data)
        except HttpError as exc:
            self._mode = _FAILED
            self._error = exc
            raise
        finally:
            self._out = []  # do not keep the caller's requests (and bodies) alive
        return out

    # ------------------------------------------------------------------ framing

    def _feed(self, data: bytes) -> None:
        pos = 0
        n = len(data)
        while pos < n:
            mode = self._mode
            if mode == _HEAD:
                if self._head_len == 0:
                    pos = _LEADING_EOL.match(data, pos).end()  # type: ignore[union-attr]
                    if pos == n:
                        return
                end = self._find_head_end(data, pos)
                stop = n if end < 0 else end
                self._check_head(data, pos, stop)
                seg = data[pos:stop]
                self._check_head_bytes(seg)
                self._headers_done = False
                try:
                    self._llhttp(seg)
                except httptools.HttpParserUpgrade as exc:
                    self._upgraded(seg, int(exc.args[0]), data[stop:])
                    return
                if end < 0:
                    self._head_tail = (self._head_tail + seg[-3:])[-3:]
                elif not self._headers_done:
                    raise HttpError(400, "malformed request head")
                pos = stop
            elif mode == _BODY_LENGTH:
                stop = min(n, pos + self._remaining)
                self._remaining -= stop - pos
                self._llhttp(data[pos:stop])
                if (self._remaining == 0) != (self._mode in (_HEAD, _CLOSED)):
                    raise HttpError(400, "malformed request body")
                pos = stop
            elif mode == _BODY_CHUNKED:
                end = self._scan_chunked(data, pos)
                stop = n if end < 0 else end
                self._llhttp(data[pos:stop])
                if (end >= 0) != (self._mode in (_HEAD, _CLOSED)):
                    raise HttpError(400, "malformed chunked body")
                pos = stop
            elif mode == _CLOSED:
                return
            else:  # _NO_BODY: llhttp completes such messages in the same call as their head
                raise HttpError(400, "malformed request")

    def _llhttp(self, seg: bytes) -> None:
        try:
            self._parser.feed_data(seg)
        except httptools.HttpParserError:
            err, self._pending = self._pending, None
            if err is not None:
                raise err from None
            raise HttpError(400, "malformed request") from None

    def _upgraded(self, seg: bytes, offset: int, rest: bytes) -> None:
        if self._mode not in (_HEAD, _CLOSED) or not self._out:  # complete precedes the pause
            raise HttpError(400, "malformed upgrade request")
        self._out[-1].upgrade = True
        self.upgrade_tail = seg[offset:] + rest
        self._mode = _UPGRADED

    def _find_head_end(self, data: bytes, pos: int) -> int:
        """Index just past the CRLFCRLF ending the head in progress, or -1 if not in ``data``."""
        if self._head_tail:
            joint = self._head_tail + data[pos:pos + 3]
            i = joint.find(b"\r\n\r\n")
            if i >= 0:
                return pos + i + 4 - len(self._head_tail)
        i = data.find(b"\r\n\r\n", pos)
        return i + 4 if i >= 0 else -1

    def _check_head(self, data: bytes, pos: int, stop: int) -> None:
        """Apply the head limits to ``data[pos:stop]``, all of which belongs to the current head."""
        # Most specific verdict first: a too-long request line is a 414 even when the head is
        # also over its limit.
        seg_len = stop - pos
        first_nl = data.find(b"\n", pos, stop)
        if first_nl < 0:
            self._check_line(self._line_len + seg_len, self._lines == 0)
        else:
            self._check_line(self._line_len + first_nl - pos + 1, self._lines == 0)
        if self._head_len + seg_len > self.max_head_size:
            raise HttpError(431, "request head too large")
        if first_nl < 0:
            self._line_len += seg_len
        else:
            count = data.count(b"\n", first_nl, stop)
            self._lines += count
            if self._lines > self.max_header_count + 2:  # + request line + blank line
                raise HttpError(431, "too many header fields")
            last_nl = data.rfind(b"\n", first_nl, stop)
            if count > 1 and last_nl - first_nl > self.max_header_size:
                longest = max(map(len, data[first_nl + 1:last_nl].split(b"\n"))) + 1
                self._check_line(longest, False)
            self._line_len = stop - last_nl - 1
            self._check_line(self._line_len, False)
        self._head_len += seg_len

    def _check_head_bytes(self, seg: bytes) -> None:
        """Refuse control characters and lone CR or LF in a head, whatever llhttp would do."""
        # C-speed counts instead of a regex: a regex alternation costs ~40 ns per byte.
        if self._head_tail.endswith(b"\r"):  # the CR of a CRLF split across pieces
            seg = b"\r" + seg
        crlf = seg.count(b"\r\n")
        if (
            seg.count(b"\n") != crlf
            or seg.count(b"\r") != crlf + seg.endswith(b"\r")
            or len(seg.translate(None, _HEAD_CTLS)) != len(seg)
        ):
            raise HttpError(400, "invalid character in request head")

    def _check_line(self, length: int, request_line: bool) -> None:
        if request_line:
            if length > self.max_request_line:
                raise HttpError(414, "request line too long")
        elif length > self.max_header_size:
            raise HttpError(431, "header field too large")

    def _scan_chunked(self, data: bytes, pos: int) -> int:
        """Follow chunk framing from ``pos``; index just past the message end, or -1."""
        n = len(data)
        while pos < n:
            st = self._ck
            if st == _CK_DATA:
                take = min(self._ck_left, n - pos)
                pos += take
                self._ck_left -= take
                if self._ck_left == 0:
                    self._ck = _CK_DATA_END
                continue
            nl = data.find(b"\n", pos)
            if st == _CK_SIZE:
                if nl < 0:
                    self._ck_buf += data[pos:]
                    if len(self._ck_buf) > _MAX_CHUNK_LINE:
                        raise HttpError(400, "chunk size line too long")
                    return -1
                line = self._ck_buf + data[pos:nl]
                self._ck_buf = b""
                pos = nl + 1
                if len(line) > _MAX_CHUNK_LINE:
                    raise HttpError(400, "chunk size line too long")
                try:
                    size = int(line.split(b";", 1)[0].strip(b" \t\r"), 16)
                except ValueError:
                    raise HttpError(400, "malformed chunk size") from None
                if size < 0:
                    raise HttpError(400, "malformed chunk size")
                if self._body_len + size > self.max_body_size:
                    raise HttpError(413, "request body too large")
                if size == 0:
                    self._ck = _CK_TRAILER
                    self._ck_line = 0
                else:
                    self._ck = _CK_DATA
                    self._ck_left = size
            elif st == _CK_DATA_END:
                if nl < 0:
                    return -1  # llhttp rejects anything but CRLF here, so this stays tiny
                pos = nl + 1
                self._ck = _CK_SIZE
            else:  # _CK_TRAILER
                # httptools grows a field by concatenation, so a field dribbled byte by byte
                # costs its length squared: the per-field limit keeps that small.
                if nl < 0:
                    self._ck_line += n - pos
                    if self._ck_line > self.max_header_size:
                        raise HttpError(431, "trailer field too large")
                    if self._ck_trailer_len + self._ck_line > self.max_head_size:
                        raise HttpError(431, "request trailers too large")
                    return -1
                line_len = self._ck_line + nl - pos
                pos = nl + 1
                self._ck_line = 0
                self._ck_trailer_len += line_len + 1
                if line_len + 1 > self.max_header_size:
                    raise HttpError(431, "trailer field too large")
                if self._ck_trailer_len > self.max_head_size:
                    raise HttpError(431, "request trailers too large")
                if line_len <= 1:  # the blank line ("\r\n") ends the message
                    self._ck = _CK_SIZE
                    return pos
                self._ck_trailer_count += 1
                if self._ck_trailer_count > self.max_header_count:
                    raise HttpError(431, "too many trailer fields")
        return -1

    # ------------------------------------------------------------------ llhttp callbacks

    def _fail(self, status: int, message: str) -> NoReturn:
        err = HttpError(status, message)
        self._pending = err
        raise err

    def on_message_begin(self) -> None:
        if self._mode != _HEAD:
            self._fail(400, "malformed request")

    def on_url(self, url: bytes) -> None:
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # Control characters were refused on the raw head bytes before llhttp saw them.
        if self._in_trailers:
            return  # trailer fields are framed and limited, but not exposed
        self._headers.append((name.lower().decode("latin-1"), value.decode("latin-1")))
        if len(self._headers) > self.max_header_count:
            self._fail(431, "too many header fields")

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._in_trailers = True
        parser = self._parser
        self._keep_alive = parser.should_keep_alive()
        if parser.should_upgrade():
            self._mode = _NO_BODY  # llhttp skips any body and pauses after message_complete
            return
        te: str | None = None
        cl: str | None = None
        for name, value in self._headers:
            if name == "transfer-encoding":
                te = value if te is None else f"{te}, {value}"
            elif name == "content-length":
                cl = value
        if te is not None:
            if te.strip().lower() != "chunked":
                self._fail(501, "unsupported transfer-encoding")
            self._mode = _BODY_CHUNKED
            self._ck = _CK_SIZE
            return
        if cl is not None:
            try:
                length = int(cl.strip())
            except ValueError:
                self._fail(400, "invalid content-length")
            if length > self.max_body_size:
                self._fail(413, "request body too large")
            if length > 0:
                self._mode = _BODY_LENGTH
                self._remaining = length
                return
        self._mode = _NO_BODY

    def on_body(self, body: bytes) -> None:
        self._body_len += len(body)
        if self._body_len > self.max_body_size:
            self._fail(413, "request body too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        url = b"".join(self._url).decode("latin-1")
        req = Request.__new__(Request)
        req.method = parser.get_method().decode("ascii")
        req.target = url
        req.raw_path, req.query_string = _split_target(url)
        req.headers = Headers._trusted(self._headers)
        req.body = b"".join(self._body) if self._body else b""
        req.http_version = parser.get_http_version()
        req.keep_alive = self._keep_alive
        req.upgrade = False
        req.remote_address = None
        req.params = {}
        req.assigns = {}
        req._path = None
        req._query_list = None
        req._query = None
        self._out.append(req)
        self._mode = _HEAD if self._keep_alive else _CLOSED
        self._reset_message()
