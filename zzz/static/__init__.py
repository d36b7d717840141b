"""zzz's own files, served under ``/__zzz/``: the browser client (``zzz.js``, ``zzz.mjs``).

``static_route(name, max_age)`` is the GET route for one of them: read once, sent with an ETag
and ``Cache-Control``, and answered 304 when ``If-None-Match`` matches (RFC 9110 section 13.1.2).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from zzz.http import HttpError, Request, Response
from zzz.routing import Route, Router

__all__ = ["CLIENT_FILES", "static_route"]

_HERE = Path(__file__).parent

# What every App serves: the browser client, as a classic script and as an ES module.
CLIENT_FILES = ("zzz.js", "zzz.mjs")


def static_route(name: str, max_age: int) -> Route:
    """The route ``GET /__zzz/<name>`` serving the file ``name`` of this folder.

    The file is read on the first request and kept; a missing file is a 404.

    Args:
        name: a file name in ``zzz/static``.
        max_age: the ``Cache-Control: public, max-age`` value, in seconds.
    """
    cache: dict[str, tuple[bytes, str]] = {}

    def handler(request: Request) -> Response:
        if name not in cache:
            try:
                body = (_HERE / name).read_bytes()
            except OSError:
                raise HttpError(404) from None
            cache[name] = (body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
        body, etag = cache[name]
        headers = [("Cache-Control", f"public, max-age={max_age}"), ("ETag", etag)]
        if none_match(request.headers.get_all("if-none-match"), etag):
            return Response(b"", status=304, headers=headers)
        return Response(body, headers=headers, content_type="application/javascript; charset=utf-8")

    return Router.get(f"/__zzz/{name}", handler)


# An entity-tag, weak or strong (RFC 9110 section 8.8.3): etagc is any visible byte but DQUOTE.
# Empty list members are allowed (section 5.6.1), hence the leading commas.
_ENTITY_TAG = re.compile(r'[\s,]*(?:W/)?("[\x21\x23-\x7e\x80-\xff]*")[ \t]*(?:,|\Z)')


def none_match(values: list[str], etag: str) -> bool:
    """Whether an ``If-None-Match`` (all its field lines) matches ``etag`` (RFC 9110 section 13.1.2).

    ``*`` matches any current representation; otherwise the comparison is weak: ``W/"x"`` matches
    ``"x"``. A member that is not an entity-tag ends the list (a malformed field matches nothing
    after it, so the full response is sent, which is always safe).
    """
    for value in values:
        if value.strip() == "*":
            return True
        pos, end = 0, len(value)
        while pos < end:
            m = _ENTITY_TAG.match(value, pos)
            if m is None:
                break
            if m.group(1) == etag:
                return True
            pos = m.end()
    return False
