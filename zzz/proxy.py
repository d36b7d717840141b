"""Who the client is behind a reverse proxy: ``Forwarded`` (RFC 7239), or else ``X-Forwarded-For``
and ``X-Forwarded-Proto``, believed only when the connection comes from a trusted proxy.

Pure parsing: headers, the peer's address and the connection's own scheme in, the client's
address and scheme out. The server calls ``resolve`` once per request when ``proxy_headers`` is
on; nothing here reads a socket.

The rules, in order:

- The peer must be trusted: its address is in ``forwarded_allow_ips`` (an address or a CIDR
  network, IPv4 or IPv6; an IPv4-mapped IPv6 peer matches the IPv4 entries), the list is ``"*"``,
  or the peer is a Unix socket (only processes that may open the socket file reach it, as
  gunicorn assumes; uvicorn sees no address there and trusts it only with ``"*"``). Otherwise the
  headers are ignored.
- A ``Forwarded`` header, when there is one, decides alone; ``X-Forwarded-*`` are read only
  without it.
- Each proxy appends the hop it received, so the hops are walked from the right: the first one
  whose address is not a trusted proxy is the client (the ones further left were written by it,
  or by someone it talked to, and prove nothing). When every hop is trusted the left-most is.
- The scheme is that hop's ``proto`` (``Forwarded``), or the ``X-Forwarded-Proto`` value for that
  hop: its only value, the one at the same place when it lists one per ``X-Forwarded-For`` hop,
  else its last. Only ``http``, ``https``, ``ws`` and ``wss`` count.
- Anything malformed (a syntax error, a hop that is no IP address, an unknown scheme) is ignored,
  never an error: the client is then the peer and the scheme the connection's own.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from zzz._grammar import QDTEXT, QUOTABLE, TCHAR

__all__ = ["TrustedProxies", "http_scheme", "parse_forwarded", "parse_node", "resolve", "ws_scheme"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = tuple[str, int]

# The schemes a proxy may name, mapped to what a Request (http) and a WebSocket (ws) report.
_HTTP = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
_WS = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}


def http_scheme(scheme: str) -> str:
    """``"http"`` or ``"https"`` for any of the four schemes (``ws`` is ``http`` and so on)."""
    return _HTTP[scheme]


def ws_scheme(scheme: str) -> str:
    """``"ws"`` or ``"wss"`` for any of the four schemes."""
    return _WS[scheme]


class TrustedProxies:
    """The proxies whose forwarding headers are believed (``forwarded_allow_ips``).

    Args:
        allow: addresses (``"127.0.0.1"``, ``"::1"``) and networks (``"10.0.0.0/8"``,
            ``"fd00::/8"``), or ``"*"`` for everyone; a string is split at commas, as on a command
            line (``"127.0.0.1, 10.0.0.0/8"``).

    Raises:
        ValueError: an entry is neither an IP address, a network nor ``"*"`` (named in the message).
        TypeError: ``allow`` is not a string or a sequence of strings.
    """

    __slots__ = ("addresses", "everyone", "networks")

    def __init__(self, allow: str | Sequence[str]) -> None:
        if isinstance(allow, str):
            entries = [e.strip() for e in allow.split(",") if e.strip()]
        elif isinstance(allow, Iterable):
            entries = list(allow)
        else:
            raise TypeError(f"forwarded_allow_ips takes a sequence of strings, not {type(allow).__name__}")
        self.everyone = False
        self.addresses: set[IPAddress] = set()
        self.networks: list[IPNetwork] = []
        for entry in entries:
            if not isinstance(entry, str):
                raise TypeError(f"forwarded_allow_ips entries are strings, not {type(entry).__name__}")
            text = entry.strip()
            if text == "*":
                self.everyone = True
                continue
            try:
                if "/" in text:
                    # strict=False: "10.1.2.3/8" means the network it lies in, as ip_network reads it.
                    self.networks.append(ipaddress.ip_network(text, strict=False))
                else:
                    self.addresses.add(ipaddress.ip_address(text))
            except ValueError:
                raise ValueError(
                    f"forwarded_allow_ips: {entry!r} is not an IP address, a network (CIDR) or '*'"
                ) from None

    def __repr__(self) -> str:
        if self.everyone:
            return "<TrustedProxies *>"
        listed = [*map(str, sorted(self.addresses, key=str)), *map(str, self.networks)]
        return f"<TrustedProxies {', '.join(listed)}>"

    def __contains__(self, ip: object) -> bool:
        """Whether the address ``ip`` (an ``ipaddress`` object) is a trusted proxy."""
        if self.everyone:
            return True
        if not isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            return False
        if ip in self.addresses or any(ip in net for net in self.networks):
            return True
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return mapped is not None and (
            mapped in self.addresses or any(mapped in net for net in self.networks)
        )

    def trusts_peer(self, peer: Any) -> bool:
        """Whether the connection's peer (``transport.get_extra_info("peername")``) is trusted.

        A TCP peer is a tuple whose first item is its address; a Unix-socket peer is a ``str``
        or ``bytes`` (often empty), and is trusted. Anything else (None) is not.
        """
        if isinstance(peer, (str, bytes)):
            return True
        if self.everyone:
            return True
        if not isinstance(peer, tuple) or not peer or not isinstance(peer[0], str):
            return False
        try:
            return ipaddress.ip_address(peer[0]) in self
        except ValueError:
            return False


def parse_node(value: str) -> tuple[IPAddress, int] | None:
    """An address with an optional port, as proxies write hops: ``192.0.2.7``, ``192.0.2.7:4711``,
    ``[2001:db8::1]``, ``[2001:db8::1]:4711`` or a bare ``2001:db8::1``.

    Returns:
        The address and the port (0 when none was given), or None for anything else:
        ``unknown``, an obfuscated ``_name`` (RFC 7239 section 6.3), a host name, garbage.
    """
    value = value.strip()
    port = 0
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return None
            port_or_none = _port(rest[1:])
            if port_or_none is None:
                return None
            port = port_or_none
        try:
            return ipaddress.IPv6Address(host), port
        except ValueError:
            return None
    if value.count(":") == 1:  # IPv4 with a port (a bare IPv6 address has at least two colons)
        host, _, port_text = value.partition(":")
        port_or_none = _port(port_text)
        if port_or_none is None:
            return None
        try:
            return ipaddress.IPv4Address(host), port_or_none
        except ValueError:
            return None
    try:
        return ipaddress.ip_address(value), 0
    except ValueError:
        return None


def _port(text: str) -> int | None:
    if not (text.isascii() and text.isdigit() and len(text) <= 5):
        return None
    port = int(text)
    return port if port <= 65535 else None


def parse_forwarded(value: str) -> list[dict[str, str]] | None:
    """The elements of a ``Forwarded`` field value (RFC 7239 section 4), left to right.

    Each element is a dict of its parameters (names lower-cased, values unquoted); several
    ``Forwarded`` lines are one list joined with commas. An empty element (``a=1, , b=2``) is
    skipped, as the ``#rule`` allows.

    Returns:
        The elements, or None when the value is malformed: a pair without ``=``, a name that is
        not a token, a bad quoted-string, the same parameter twice in one element.
    """
    elements: list[dict[str, str]] = []
    element: dict[str, str] = {}
    i, n = 0, len(value)
    while True:
        while i < n and value[i] in " \t":
            i += 1
        if i >= n:
            break
        c = value[i]
        if c == ",":
            if element:
                elements.append(element)
            element = {}
            i += 1
            continue
        if c == ";":
            i += 1
            continue
        start = i
        while i < n and value[i] in TCHAR:
            i += 1
        name = value[start:i].lower()
        if not name or i >= n or value[i] != "=":
            return None
        i += 1
        if i < n and value[i] == '"':
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    return None  # no closing quote
                c = value[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\":  # quoted-pair
                    i += 1
                    if i >= n or value[i] not in QUOTABLE:
                        return None
                    c = value[i]
                elif c not in QDTEXT:
                    return None
                chars.append(c)
                i += 1
            param = "".join(chars)
        else:
            start = i
            while i < n and value[i] in TCHAR:
                i += 1
            param = value[start:i]
            if not param:
                return None
        if name in element:
            return None  # RFC 7239 section 4: each parameter at most once per element
        element[name] = param
        while i < n and value[i] in " \t":
            i += 1
        if i < n and value[i] not in ",;":
            return None
    if element:
        elements.append(element)
    return elements


def _pick(hops: Sequence[str | None], trusted: TrustedProxies) -> tuple[int, Address | None]:
    """The hop that names the client: the right-most whose address is not a trusted proxy (or
    the left-most when all are); with its address, or None when that hop is no IP address."""
    index = len(hops) - 1
    node = None
    while index >= 0:
        text = hops[index]
        node = parse_node(text) if text is not None else None
        if node is None or node[0] not in trusted or index == 0:
            break
        index -= 1
    if node is None:
        return index, None
    return index, (str(node[0]), node[1])


def _proto(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    return value if value in _HTTP else None


def resolve(trusted: TrustedProxies, headers: Any, peer: Any, scheme: str) -> tuple[Any, str]:
    """The client's address and scheme for a request that came from ``peer``.

    Args:
        trusted: the proxies to believe.
        headers: the request's ``zzz.Headers`` (``get_all``).
        peer: the connection's peer address (``transport.get_extra_info("peername")``).
        scheme: the connection's own: ``"http"`` or ``"https"`` (TLS).

    Returns:
        ``(client, scheme)``: the client as ``(host, port)`` (port 0 when the proxy gave none), or
        ``peer`` itself when the headers say nothing usable; and one of ``http``, ``https``, ``ws``,
        ``wss`` as the proxy named it, or ``scheme``. The caller maps it with ``http_scheme`` /
        ``ws_scheme``.
    """
    forwarded = headers.get_all("forwarded")
    xff = None if forwarded else headers.get_all("x-forwarded-for")
    xfp = None if forwarded else headers.get_all("x-forwarded-proto")
    if not (forwarded or xff or xfp) or not trusted.trusts_peer(peer):
        return peer, scheme
    if forwarded:
        elements = parse_forwarded(",".join(forwarded))
        if not elements:
            return peer, scheme
        index, client = _pick([e.get("for") for e in elements], trusted)
        proto = _proto(elements[index].get("proto"))
        return (client or peer), (proto or scheme)
    client = None
    index, hops = -1, 0
    if xff:
        entries = [e.strip() for e in ",".join(xff).split(",")]
        if all(entries):
            hops = len(entries)
            index, client = _pick(entries, trusted)
    proto = None
    if xfp:
        values = [v.strip() for v in ",".join(xfp).split(",")]
        if len(values) == 1:
            proto = _proto(values[0])
        elif len(values) == hops and index >= 0:
            proto = _proto(values[index])
        else:
            proto = _proto(values[-1])
    return (client or peer), (proto or scheme)
