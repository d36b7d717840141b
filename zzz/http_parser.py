"""The incremental HTTP/1.1 request parser of zzz: bytes in, ``zzz.http.Request`` objects out.

Sans-I/O: bytes go into ``RequestParser.feed`` and complete requests come out. Parsing is done by
httptools (llhttp); the limits are enforced here, on the raw bytes, before llhttp sees them.
"""

from __future__ import annotations

import re
from typing import Any, NoReturn

import httptools

from zzz._grammar import HEAD_CTLS
from zzz.http import Headers, HttpError, Request, _split_target

__all__ = ["END_OF_BODY", "RequestParser"]

# Empty lines a client may send between pipelined requests (RFC 9112 section 2.2).
_LEADING_EOL = re.compile(rb"[\r\n]*")
_UNLIMITED = 1 << 62

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


class _EndOfBody:
    __slots__ = ()

    def __repr__(self) -> str:
        return "END_OF_BODY"


#: What a streaming parser (``RequestParser(stream=True)``) returns after the last body piece
#: of a request.
END_OF_BODY = _EndOfBody()


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

    With ``stream=True`` (the ASGI server) a request comes out as soon as its head is complete,
    with an empty ``body``; the body follows as ``bytes`` pieces, then ``END_OF_BODY``, in the
    list ``feed`` returns, and ``max_body_size`` does not apply (the application reads the body
    as a stream and decides). Every other limit and check is the same.
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
        stream: bool = False,
    ) -> None:
        """Create a parser for one connection.

        Args:
            max_request_line: longest request line (method, target, version) -> 414.
            max_header_size: longest header field line -> 431.
            max_header_count: most header fields in a head (and in chunked trailers) -> 431.
            max_head_size: longest head (request line + fields + blank line) -> 431.
            max_body_size: largest body, by Content-Length or chunked total -> 413 (not with
                ``stream``).
            stream: return heads, body pieces and ``END_OF_BODY`` as they come (see the class).
        """
        self.max_request_line = _UNLIMITED if max_request_line is None else max_request_line
        self.max_header_size = _UNLIMITED if max_header_size is None else max_header_size
        self.max_header_count = _UNLIMITED if max_header_count is None else max_header_count
        self.max_head_size = _UNLIMITED if max_head_size is None else max_head_size
        self.max_body_size = _UNLIMITED if max_body_size is None or stream else max_body_size
        self.stream = stream
        self.upgrade_tail: bytes = b""
        self._parser = httptools.HttpRequestParser(self)
        self._mode = _HEAD
        self._error: HttpError | None = None
        self._pending: HttpError | None = None  # raised inside an llhttp callback
        self._out: list[Any] = []
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

    def feed(self, data: bytes | bytearray | memoryview) -> list[Any]:
        """Parse ``data`` and return every request it completes, in order (pipelining).

        Returns:
            The complete requests (with ``stream``: heads, body pieces and ``END_OF_BODY``); an
            empty list when more bytes are needed.

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
        out: list[Any] = []
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
        # Streaming, the request is followed by its END_OF_BODY (an upgrade request has no body).
        request = self._out[-2] if self.stream and len(self._out) > 1 else self._out[-1]
        if not isinstance(request, Request):
            raise HttpError(400, "malformed upgrade request")
        request.upgrade = True
        self.upgrade_tail = seg[offset:] + rest
        self._mode = _UPGRADED

    def _find_head_end(self, data: bytes, pos: int) -> int:
        """Index just past the CRLFCRLF ending the head in progress, or -1 if not in ``data``."""
        if self._head_tail:
            joint = self._head_tail + data[pos : pos + 3]
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
                longest = max(map(len, data[first_nl + 1 : last_nl].split(b"\n"))) + 1
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
            or len(seg.translate(None, HEAD_CTLS)) != len(seg)
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
        self._framing()
        if self.stream:
            self._out.append(self._request(b""))

    def _framing(self) -> None:
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
        if self.stream:
            self._out.append(body)
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self.stream:
            self._out.append(END_OF_BODY)
        else:
            self._out.append(self._request(b"".join(self._body) if self._body else b""))
        self._mode = _HEAD if self._keep_alive else _CLOSED
        self._reset_message()

    def _request(self, body: bytes) -> Request:
        parser = self._parser
        url = b"".join(self._url).decode("latin-1")
        req = Request.__new__(Request)
        req.method = parser.get_method().decode("ascii")
        req.target = url
        req.raw_path, req.query_string = _split_target(url)
        req.headers = Headers._trusted(self._headers)
        req.body = body
        req.http_version = parser.get_http_version()
        req.keep_alive = self._keep_alive
        req.upgrade = False
        req.remote_address = None
        req.client = None
        req.scheme = "http"
        req.params = {}
        req.assigns = {}
        req._path = None
        req._query_list = None
        req._query = None
        return req
