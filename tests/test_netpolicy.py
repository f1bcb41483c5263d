"""connector.netpolicy: client address behind proxies, Negotiate ranges and user agents."""

from __future__ import annotations

import ipaddress
import re

import pytest

from connector.netpolicy import (
    NegotiatePolicy,
    client_address,
    in_networks,
    is_loopback_host,
    parse_address,
    parse_networks,
    split_host_port,
)

ip = ipaddress.ip_address

PROXIES = parse_networks(["10.0.0.5", "10.0.1.0/24", "2001:db8:ff::/48"])


# ----------------------------------------------------------------------- parse_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("  192.0.2.1  ", "192.0.2.1"),
        ("192.0.2.1:8080", "192.0.2.1"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("::1", "::1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("[::ffff:10.0.0.1]:80", "10.0.0.1"),
        ("::ffff:a00:1", "10.0.0.1"),
    ],
)
def test_parse_address_accepts(text: str, expected: str) -> None:
    assert parse_address(text) == ip(expected)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "unknown",
        "_hidden",
        "192.0.2.256",
        "192.0.2.1:",
        "192.0.2.1:http",
        "[2001:db8::1",
        "[2001:db8::1]x",
        "[2001:db8::1]:",
        "2001:db8::g",
        "1.2.3.4.5",
        "for=192.0.2.1",
        "192.0.2.1/24",
        "\x00",
        "<script>",
    ],
)
def test_parse_address_rejects(text: str) -> None:
    assert parse_address(text) is None


# ----------------------------------------------------------------------- parse_networks


def test_parse_networks_cidrs_and_single_addresses() -> None:
    nets = parse_networks(["10.0.0.0/8", "192.168.1.7", "2001:db8::/32", "::1", " 172.16.0.0/12 "])
    assert [str(n) for n in nets] == [
        "10.0.0.0/8",
        "192.168.1.7/32",
        "2001:db8::/32",
        "::1/128",
        "172.16.0.0/12",
    ]


def test_parse_networks_host_bits_allowed() -> None:
    assert [str(n) for n in parse_networks(["10.1.2.3/8"])] == ["10.0.0.0/8"]


def test_parse_networks_mapped_ranges_become_ipv4() -> None:
    nets = parse_networks(["::ffff:10.0.0.0/104", "::ffff:192.0.2.9"])
    assert [str(n) for n in nets] == ["10.0.0.0/8", "192.0.2.9/32"]
    assert all(n.version == 4 for n in nets)


def test_parse_networks_empty_list() -> None:
    assert parse_networks([]) == ()


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        (["10.0.0.0/8", "10.0.0.0/33"], "'10.0.0.0/33'"),
        (["not-a-network"], "'not-a-network'"),
        (["10.0.0.0/8", ""], "#2 is empty"),
        (["  "], "#1 is empty"),
        (["2001:db8::/129"], "'2001:db8::/129'"),
        (["10.0.0.0/8", 42], "#2 is not a string"),
        (["*"], "'*'"),
    ],
)
def test_parse_networks_names_the_bad_entry(values: list[object], needle: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_networks(values)  # type: ignore[arg-type]
    assert needle in str(exc.value)


def test_parse_networks_refuses_a_bare_string() -> None:
    with pytest.raises(ValueError, match="list of networks"):
        parse_networks("10.0.0.0/8")


def test_in_networks_mixed_versions_and_mapped() -> None:
    nets = parse_networks(["10.0.0.0/8", "2001:db8::/32"])
    assert in_networks(ip("10.9.9.9"), nets)
    assert in_networks(ip("::ffff:10.9.9.9"), nets)
    assert in_networks(ip("2001:db8::5"), nets)
    assert not in_networks(ip("11.0.0.1"), nets)
    assert not in_networks(ip("::ffff:11.0.0.1"), nets)
    assert not in_networks(ip("2001:db9::1"), nets)


# ----------------------------------------------------------------------- client_address


def test_no_proxy_configured_uses_peer_and_ignores_xff() -> None:
    assert client_address("198.51.100.7", "10.1.1.1", ()) == ip("198.51.100.7")


def test_spoofed_xff_from_untrusted_peer_is_ignored() -> None:
    # an outside client claims an intranet address: its own header is never read
    assert client_address("198.51.100.7", "10.1.1.1", PROXIES) == ip("198.51.100.7")
    assert client_address("198.51.100.7", "10.0.0.5, 10.1.1.1", PROXIES) == ip("198.51.100.7")


def test_trusted_proxy_without_xff_is_the_client() -> None:
    assert client_address("10.0.0.5", None, PROXIES) == ip("10.0.0.5")
    assert client_address("10.0.0.5", "", PROXIES) == ip("10.0.0.5")


def test_one_trusted_proxy() -> None:
    assert client_address("10.0.0.5", "203.0.113.9", PROXIES) == ip("203.0.113.9")


def test_client_prepended_spoof_behind_trusted_proxy_is_ignored() -> None:
    # client sent "X-Forwarded-For: 10.1.1.1"; the proxy appended the real address
    assert client_address("10.0.0.5", "10.1.1.1, 203.0.113.9", PROXIES) == ip("203.0.113.9")


def test_chain_of_trusted_proxies_is_skipped() -> None:
    xff = "203.0.113.9, 10.0.1.20, 10.0.1.21"
    assert client_address("10.0.0.5", xff, PROXIES) == ip("203.0.113.9")


def test_untrusted_hop_in_the_middle_stops_the_walk() -> None:
    # 198.51.100.1 is not ours: what it reports (203.0.113.9) cannot be believed
    xff = "203.0.113.9, 198.51.100.1, 10.0.1.20"
    assert client_address("10.0.0.5", xff, PROXIES) == ip("198.51.100.1")


def test_all_hops_trusted_gives_the_leftmost() -> None:
    assert client_address("10.0.0.5", "10.0.1.7, 10.0.1.8", PROXIES) == ip("10.0.1.7")


def test_several_headers_joined() -> None:
    # WSGI servers join repeated headers with ", "
    assert client_address("10.0.0.5", "1.1.1.1,203.0.113.9,10.0.1.2", PROXIES) == ip("203.0.113.9")


def test_ports_in_xff_entries() -> None:
    xff = "[2001:db8::77]:51000, 10.0.1.3:443"
    assert client_address("10.0.0.5", xff, PROXIES) == ip("2001:db8::77")


@pytest.mark.parametrize(
    ("xff", "expected"),
    [
        ("garbage", "10.0.0.5"),  # the peer (last trusted hop) could not be read further
        ("203.0.113.9, garbage", "10.0.0.5"),
        ("203.0.113.9, unknown, 10.0.1.9", "10.0.1.9"),  # stop; left of garbage ignored
        ("203.0.113.9,, 10.0.1.9", "10.0.1.9"),
        ("203.0.113.9, 10.0.1.9,", "10.0.0.5"),
        (",", "10.0.0.5"),
        ("   ", "10.0.0.5"),
        ("999.1.1.1", "10.0.0.5"),
        ("\x00\xff", "10.0.0.5"),
        ("a" * 10000, "10.0.0.5"),
        (", " * 5000, "10.0.0.5"),
    ],
)
def test_garbage_xff_never_crashes_and_stops(xff: str, expected: str) -> None:
    assert client_address("10.0.0.5", xff, PROXIES) == ip(expected)


def test_ipv6_proxy_and_client() -> None:
    xff = "2001:db8:1::42, 2001:db8:ff::2"
    assert client_address("2001:db8:ff::1", xff, PROXIES) == ip("2001:db8:1::42")


def test_ipv6_peer_untrusted() -> None:
    assert client_address("2001:db8:1::42", "10.1.1.1", PROXIES) == ip("2001:db8:1::42")


def test_mapped_peer_matches_ipv4_proxy_range() -> None:
    # a dual-stack listener reports an IPv4 proxy as ::ffff:10.0.0.5
    assert client_address("::ffff:10.0.0.5", "203.0.113.9", PROXIES) == ip("203.0.113.9")


def test_mapped_client_in_xff_comes_back_as_ipv4() -> None:
    got = client_address("10.0.0.5", "::ffff:203.0.113.9", PROXIES)
    assert got == ip("203.0.113.9")
    assert got.version == 4


def test_mapped_hop_in_xff_is_trusted() -> None:
    assert client_address("10.0.0.5", "203.0.113.9, ::ffff:10.0.1.4", PROXIES) == ip("203.0.113.9")


def test_peer_with_port_and_brackets() -> None:
    assert client_address("[2001:db8::9]:1234", None, PROXIES) == ip("2001:db8::9")


@pytest.mark.parametrize("peer", ["", "unix:/run/sock", "localhost"])
def test_unparseable_peer_is_a_clear_error(peer: str) -> None:
    with pytest.raises(ValueError, match="REMOTE_ADDR"):
        client_address(peer, "203.0.113.9", PROXIES)


# ----------------------------------------------------------------------- NegotiatePolicy

INTRANET = ["10.0.0.0/8", "2001:db8:1::/48"]


def test_policy_ranges_only() -> None:
    policy = NegotiatePolicy(parse_networks(INTRANET), None)
    assert policy.offers_negotiate(ip("10.2.3.4"), None)
    assert policy.offers_negotiate(ip("10.2.3.4"), "curl/8")
    assert policy.offers_negotiate(ip("2001:db8:1::9"), "")
    assert not policy.offers_negotiate(ip("192.0.2.1"), "Mozilla/5.0 (Windows NT 10.0)")
    assert not policy.offers_negotiate(ip("2001:db8:2::9"), None)


def test_policy_accepts_strings_and_address_strings() -> None:
    policy = NegotiatePolicy(INTRANET)
    assert policy.offers_negotiate("10.2.3.4", None)
    assert policy.offers_negotiate("::ffff:10.2.3.4", None)
    assert not policy.offers_negotiate("garbage", None)
    assert [str(n) for n in policy.ranges] == ["10.0.0.0/8", "2001:db8:1::/48"]


def test_policy_mapped_address_matches_ipv4_range() -> None:
    policy = NegotiatePolicy(parse_networks(["10.0.0.0/8"]))
    assert policy.offers_negotiate(ip("::ffff:10.1.1.1"), None)
    assert not policy.offers_negotiate(ip("::ffff:11.1.1.1"), None)


def test_policy_no_ranges_offers_nobody() -> None:
    policy = NegotiatePolicy([])
    assert not policy.offers_negotiate(ip("10.0.0.1"), "Mozilla/5.0")
    assert not policy.offers_negotiate(ip("127.0.0.1"), None)


EDGE = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120 Edg/120.0"
FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
SAFARI = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 Safari/605.1.15"


@pytest.mark.parametrize(
    ("ua", "offered"),
    [
        (EDGE, True),
        (FIREFOX_LINUX, True),
        (FIREFOX_LINUX.upper(), True),  # case-insensitive
        (FIREFOX_LINUX.lower(), True),
        (SAFARI, False),
        ("curl/8.5.0", False),
        ("", False),
        (None, False),
    ],
)
def test_policy_user_agent_substrings(ua: str | None, offered: bool) -> None:
    policy = NegotiatePolicy(INTRANET, ["Windows NT", "firefox"])
    assert policy.offers_negotiate(ip("10.0.0.1"), ua) is offered
    # outside the ranges the user agent never helps
    assert policy.offers_negotiate(ip("192.0.2.1"), ua) is False


def test_policy_user_agent_entries_are_trimmed_and_folded() -> None:
    policy = NegotiatePolicy(INTRANET, ["  MSIE 9.0 ", "Trident/7.0"])
    assert policy.user_agents == ("msie 9.0", "trident/7.0")
    assert policy.offers_negotiate(ip("10.0.0.1"), "Mozilla/5.0 (compatible; MSIE 9.0)")


@pytest.mark.parametrize(
    ("agents", "message"),
    [
        ([], "use None"),
        ([""], "non-empty"),
        (["Firefox", "  "], "non-empty"),
        ("Firefox", "not one string"),
    ],
)
def test_policy_rejects_ambiguous_user_agent_config(agents: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NegotiatePolicy(INTRANET, agents)  # type: ignore[arg-type]


def test_policy_bad_range_string_names_it() -> None:
    with pytest.raises(ValueError, match=re.escape("'10.0.0.0/40'")):
        NegotiatePolicy(["10.0.0.0/8", "10.0.0.0/40"])


def test_policy_repr_is_readable() -> None:
    text = repr(NegotiatePolicy(["10.0.0.0/8"], ["Firefox"]))
    assert "10.0.0.0/8" in text
    assert "firefox" in text


def test_end_to_end_spoof_cannot_get_negotiate() -> None:
    """An outside client sending X-Forwarded-For: 10.x must not be offered Negotiate."""
    policy = NegotiatePolicy(INTRANET)
    direct = client_address("198.51.100.7", "10.1.1.1", PROXIES)
    assert not policy.offers_negotiate(direct, EDGE)
    via_proxy = client_address("10.0.0.5", "10.1.1.1, 198.51.100.7", PROXIES)
    assert not policy.offers_negotiate(via_proxy, EDGE)
    inside = client_address("10.0.0.5", "10.20.30.40", PROXIES)
    assert policy.offers_negotiate(inside, EDGE)


# ----------------------------------------------------------------------- own addresses


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:4001", ("127.0.0.1", 4001)),
        (" localhost:80 ", ("localhost", 80)),
        ("[::1]:4001", ("::1", 4001)),
        ("192.0.2.10:65535", ("192.0.2.10", 65535)),
        ("127.0.0.1:0", None),
        ("127.0.0.1:65536", None),
        ("127.0.0.1:http", None),
        (":4001", None),
        ("localhost", None),
        ("", None),
    ],
)
def test_split_host_port(text: str, expected: tuple[str, int] | None) -> None:
    assert split_host_port(text) == expected


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST.", True),
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("0.0.0.0", False),  # noqa: S104 - the unspecified address is not loopback
        ("10.0.0.1", False),
        ("localhost.example.test", False),
        ("::ffff:10.0.0.1", False),
        ("", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
