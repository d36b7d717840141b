"""The HTTP grammar zzz checks against, in one place: tokens, field values, Host, reason phrases.

RFC 9110 and RFC 9112 names; the HTTP model (``zzz.http``), its parser, the router and the
WebSocket handshake all take their tables from here. Plain data and predicates, no imports of zzz.
"""

from __future__ import annotations

import re
from http import HTTPStatus

__all__ = [
    "CTL",
    "HEAD_CTLS",
    "HOST",
    "OWS",
    "QDTEXT",
    "QUOTABLE",
    "REASONS",
    "TCHAR",
    "is_field_value",
    "is_token",
    "reason_phrase",
]

# RFC 9110 section 5.6.2: tchar, the characters a token (a method, a header name, a parameter
# name) may consist of.
TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")

# RFC 9110 section 5.6.3: optional whitespace.
OWS = " \t"
# RFC 9110 section 5.6.4: qdtext (HTAB, SP, 0x21, 0x23-0x5B, 0x5D-0x7E, obs-text 0x80-0xFF), and
# what a quoted-pair may escape (HTAB, SP, VCHAR, obs-text).
QDTEXT = frozenset(
    "\t \x21" + "".join(chr(c) for c in (*range(0x23, 0x5C), *range(0x5D, 0x7F), *range(0x80, 0x100)))
)
QUOTABLE = frozenset("\t " + "".join(chr(c) for c in (*range(0x21, 0x7F), *range(0x80, 0x100))))

# Control characters other than HTAB, and DEL (RFC 5234 CTL without HTAB): a field-value may not
# hold them (RFC 9110 section 5.5). NUL, CR and LF would split or smuggle a header when written.
CTL = frozenset(chr(c) for c in range(0x20) if c != 0x09) | {"\x7f"}
# Anything but HTAB, visible ASCII, SP and obs-text: what a field value written by zzz may not hold
# (the CTLs, and characters beyond latin-1, which have no byte on the wire).
_NOT_FIELD_VALUE = re.compile(r"[^\t\x20-\x7e\x80-\xff]")

# Control bytes never valid in a request head as received (CR and LF are checked as CRLF pairs).
HEAD_CTLS = bytes([*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])

# RFC 9112 section 3.2 / RFC 3986 section 3.2.2: uri-host [ ":" port ], where uri-host is an
# IP-literal in brackets, an IPv4 address or a reg-name (unreserved, pct-encoded, sub-delims).
HOST = re.compile(r"(?:\[[0-9A-Za-z:._~!$&'()*+,;=%-]+\]|[0-9A-Za-z._~!$&'()*+,;=%-]*)(?::[0-9]*)?\Z")

# Status code -> reason phrase (RFC 9110 section 15), for every status Python knows.
REASONS: dict[int, str] = {s.value: s.phrase for s in HTTPStatus}


def is_token(value: str) -> bool:
    """Tell whether ``value`` is a non-empty token (RFC 9110 section 5.6.2)."""
    return _TOKEN.match(value) is not None


def is_field_value(value: str) -> bool:
    """Tell whether ``value`` may be written as a field value: no CTL but HTAB, latin-1 only."""
    return _NOT_FIELD_VALUE.search(value) is None


def reason_phrase(status: int) -> str:
    """Return the standard reason phrase for ``status`` (``"Unknown"`` if it has none)."""
    return REASONS.get(status, "Unknown")
