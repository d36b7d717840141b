"""zzz.proxy, without sockets: whom to trust, the Forwarded grammar, and the client a request names."""

from __future__ import annotations

import ipaddress

import pytest

from zzz.http import Headers
from zzz.proxy import TrustedProxies, parse_forwarded, parse_node, resolve

PEER = ("127.0.0.1", 50000)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


# Whom to trust


def test_addresses_and_networks_of_both_families() -> None:
    trusted = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"])
    assert ip("127.0.0.1") in trusted and ip("10.200.3.4") in trusted
    assert ip("::1") in trusted and ip("fd12::5") in trusted
    assert ip("127.0.0.2") not in trusted and ip("11.0.0.1") not in trusted and ip("fe80::1") not in trusted


def test_an_ipv4_mapped_peer_matches_the_ipv4_entries() -> None:
    trusted = TrustedProxies(["127.0.0.1", "10.0.0.0/8"])
    assert trusted.trusts_peer(("::ffff:127.0.0.1", 80, 0, 0))
    assert trusted.trusts_peer(("::ffff:10.1.1.1", 80, 0, 0))
    assert not trusted.trusts_peer(("::ffff:192.0.2.1", 80, 0, 0))


def test_star_trusts_everyone_and_a_string_is_a_comma_list() -> None:
    assert TrustedProxies(["*"]).trusts_peer(("203.0.113.5", 1))
    assert TrustedProxies("*").trusts_peer(("2001:db8::1", 1, 0, 0))
    listed = TrustedProxies("127.0.0.1, 192.0.2.0/24")
    assert listed.trusts_peer(("192.0.2.77", 1)) and not listed.trusts_peer(("192.0.3.1", 1))


def test_a_unix_socket_peer_is_trusted_and_an_unknown_peer_is_not() -> None:
    trusted = TrustedProxies(["10.9.9.9"])
    assert trusted.trusts_peer("") and trusted.trusts_peer("/run/zzz.sock") and trusted.trusts_peer(b"")
    assert not trusted.trusts_peer(None)
    assert not trusted.trusts_peer(("127.0.0.1", 80))
    assert not trusted.trusts_peer(("not-an-address", 80))


@pytest.mark.parametrize("entry", ["localhost", "10.0.0.0/33", "1.2.3", "", "unix:"])
def test_an_entry_that_is_no_address_is_refused_by_name(entry: str) -> None:
    with pytest.raises(ValueError, match="forwarded_allow_ips"):
        TrustedProxies(["127.0.0.1", entry])


def test_entries_must_be_strings() -> None:
    with pytest.raises(TypeError):
        TrustedProxies([127])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        TrustedProxies(None)  # type: ignore[arg-type]


# Nodes (RFC 7239 section 6) and X-Forwarded-For entries


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.60", ("192.0.2.60", 0)),
        ("192.0.2.60:4711", ("192.0.2.60", 4711)),
        ("[2001:db8:cafe::17]", ("2001:db8:cafe::17", 0)),
        ("[2001:db8:cafe::17]:4711", ("2001:db8:cafe::17", 4711)),
        ("2001:db8:cafe::17", ("2001:db8:cafe::17", 0)),
        (" 10.0.0.1 ", ("10.0.0.1", 0)),
    ],
)
def test_nodes(text: str, expected: tuple[str, int]) -> None:
    node = parse_node(text)
    assert node is not None and (str(node[0]), node[1]) == expected


@pytest.mark.parametrize(
    "text",
    [
        "unknown",
        "_gazonk",
        "example.com",
        "192.0.2.60:",
        "192.0.2.60:99999",
        "192.0.2.60:_port",
        "[2001:db8::1",
        "[2001:db8::1]x",
        "[192.0.2.1]",
        "",
        "1.2.3.4.5",
    ],
)
def test_what_is_no_node(text: str) -> None:
    assert parse_node(text) is None


# The Forwarded grammar (RFC 7239 section 4)


def test_forwarded_elements_as_the_rfc_writes_them() -> None:
    assert parse_forwarded('for="_gazonk"') == [{"for": "_gazonk"}]
    assert parse_forwarded('For="[2001:db8:cafe::17]:4711"') == [{"for": "[2001:db8:cafe::17]:4711"}]
    assert parse_forwarded("for=192.0.2.60;proto=http;by=203.0.113.43") == [
        {"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"}
    ]
    assert parse_forwarded("for=192.0.2.43, for=198.51.100.17") == [
        {"for": "192.0.2.43"},
        {"for": "198.51.100.17"},
    ]
    # Empty list members and empty pairs are allowed; quoted-pairs are unescaped.
    assert parse_forwarded(' , for=1.2.3.4 ;; proto="ht\\tp" ,') == [{"for": "1.2.3.4", "proto": "http"}]


@pytest.mark.parametrize(
    "text",
    [
        "for",
        "for=",
        'for="1.2.3.4',
        "for=1.2.3.4 junk",
        "for=1.2.3.4;for=5.6.7.8",
        "=1.2.3.4",
        'for="a\x01b"',
        "fo r=1",
        "for=[::1]",
    ],
)
def test_malformed_forwarded(text: str) -> None:
    assert parse_forwarded(text) is None


# resolve


def resolved(
    headers: list[tuple[str, str]],
    allow: list[str] | str = "127.0.0.1",
    peer: object = PEER,
    scheme: str = "http",
) -> tuple[object, str]:
    return resolve(TrustedProxies(allow), Headers(headers), peer, scheme)


def test_nothing_forwarded_gives_the_peer_and_own_scheme() -> None:
    assert resolved([]) == (PEER, "http")
    assert resolved([], scheme="https") == (PEER, "https")


def test_x_forwarded_from_a_trusted_peer() -> None:
    assert resolved([("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-Proto", "https")]) == (
        ("203.0.113.9", 0),
        "https",
    )


def test_x_forwarded_from_an_untrusted_peer_is_ignored() -> None:
    headers = [("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-Proto", "https")]
    assert resolved(headers, allow=["10.0.0.1"]) == (PEER, "http")


def test_multi_hop_takes_the_right_most_untrusted_address() -> None:
    allow = ["127.0.0.1", "10.0.0.0/8"]
    # The client's own claim (1.1.1.1) is left of what the first trusted proxy saw: not believed.
    headers = [("X-Forwarded-For", "1.1.1.1, 203.0.113.9, 10.1.2.3")]
    assert resolved(headers, allow)[0] == ("203.0.113.9", 0)
    # Several header lines are one list.
    headers = [("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "203.0.113.9, 10.1.2.3")]
    assert resolved(headers, allow)[0] == ("203.0.113.9", 0)
    # Every hop trusted: the left-most one is the client.
    assert resolved([("X-Forwarded-For", "10.0.0.7, 10.0.0.8")], allow)[0] == ("10.0.0.7", 0)
    # "*": every hop is trusted, so the left-most.
    assert resolved([("X-Forwarded-For", "1.1.1.1, 203.0.113.9")], "*")[0] == ("1.1.1.1", 0)


def test_ports_and_ipv6_in_x_forwarded_for() -> None:
    assert resolved([("X-Forwarded-For", "203.0.113.9:6000")])[0] == ("203.0.113.9", 6000)
    assert resolved([("X-Forwarded-For", "[2001:db8::9]:6000")])[0] == ("2001:db8::9", 6000)
    assert resolved([("X-Forwarded-For", "2001:db8::9, ::1")], ["::1", "127.0.0.1"])[0] == ("2001:db8::9", 0)


def test_x_forwarded_proto_per_hop() -> None:
    allow = ["127.0.0.1", "10.0.0.0/8"]
    # One value per hop: the chosen hop's; one value: it; otherwise the last.
    two = [("X-Forwarded-For", "203.0.113.9, 10.0.0.5"), ("X-Forwarded-Proto", "https, http")]
    assert resolved(two, allow) == (("203.0.113.9", 0), "https")
    assert resolved([("X-Forwarded-Proto", "HTTPS")]) == (PEER, "https")
    assert resolved([("X-Forwarded-Proto", "wss")]) == (PEER, "wss")
    odd = [("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-Proto", "https, http")]
    assert resolved(odd, allow) == (("203.0.113.9", 0), "http")


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Forwarded-For", "garbage")],
        [("X-Forwarded-For", "unknown, 127.0.0.1")],
        [("X-Forwarded-For", "203.0.113.9,,127.0.0.1")],
        [("X-Forwarded-For", "")],
        [("X-Forwarded-Proto", "ftp")],
        [("X-Forwarded-Proto", "")],
        [("Forwarded", "for=")],
        [("Forwarded", 'for="203.0.113.9;proto=https')],
        [("Forwarded", "proto=gopher")],
        [("Forwarded", "for=unknown")],
    ],
)
def test_malformed_headers_give_the_peer_never_an_error(headers: list[tuple[str, str]]) -> None:
    assert resolved(headers) == (PEER, "http")


def test_a_malformed_hop_is_not_skipped_to_believe_one_further_left() -> None:
    # The right-most untrusted hop is junk: the peer, not 203.0.113.9 which nobody trusted wrote.
    assert resolved([("X-Forwarded-For", "203.0.113.9, junk")])[0] == PEER


def test_forwarded() -> None:
    assert resolved([("Forwarded", 'for="[2001:db8:cafe::17]:4711";proto=https')]) == (
        ("2001:db8:cafe::17", 4711),
        "https",
    )
    allow = ["127.0.0.1", "10.0.0.0/8"]
    hops = [("Forwarded", "for=1.1.1.1;proto=http, for=203.0.113.9;proto=https, for=10.0.0.5;proto=http")]
    assert resolved(hops, allow) == (("203.0.113.9", 0), "https")
    # An element without for=: the peer, with that element's proto.
    assert resolved([("Forwarded", "proto=https;by=10.0.0.1")]) == (PEER, "https")
    # An obfuscated client: the peer, the scheme still believed.
    assert resolved([("Forwarded", 'for="_hidden";proto=https')]) == (PEER, "https")


def test_forwarded_decides_alone() -> None:
    headers = [
        ("Forwarded", "for=203.0.113.9"),
        ("X-Forwarded-For", "198.51.100.1"),
        ("X-Forwarded-Proto", "https"),
    ]
    assert resolved(headers) == (("203.0.113.9", 0), "http")
    # Even when it is malformed: X-Forwarded-* are not a fallback for a broken Forwarded.
    headers = [("Forwarded", "for"), ("X-Forwarded-For", "198.51.100.1")]
    assert resolved(headers) == (PEER, "http")


def test_forwarded_from_an_untrusted_peer_is_ignored() -> None:
    assert resolved([("Forwarded", "for=203.0.113.9;proto=https")], ["10.0.0.1"]) == (PEER, "http")


def test_a_unix_socket_peer_is_believed() -> None:
    assert resolved([("X-Forwarded-For", "203.0.113.9")], ["10.0.0.1"], peer="") == (
        ("203.0.113.9", 0),
        "http",
    )
