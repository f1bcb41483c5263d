"""Who is the client, and may it be offered Kerberos (pure functions, no web framework).

Three pieces, used by the web layer on every sign-in request:

* :func:`parse_networks` turns configured strings (``10.0.0.0/8``, ``2001:db8::/32``,
  ``192.168.1.7``) into network objects, failing with a message that names the bad entry.
* :func:`client_address` finds the client's address: the TCP peer, unless the peer is a
  configured trusted proxy, in which case ``X-Forwarded-For`` is walked from the right,
  skipping trusted proxies. An untrusted peer's ``X-Forwarded-For`` is never read, so a
  client cannot claim an intranet address by sending the header itself.
* :class:`NegotiatePolicy` decides whether to answer ``401 WWW-Authenticate: Negotiate``:
  the client address must be in a configured range and, if user agents are configured, the
  ``User-Agent`` must contain one of them (case-insensitive substrings, like AD FS's
  ``WIASupportedUserAgents``).

IPv4-mapped IPv6 addresses (``::ffff:10.0.0.1``, what a dual-stack socket reports for an
IPv4 client) are turned into their IPv4 address everywhere, so they match IPv4 ranges.

Two more read the connector's own addresses: :func:`split_host_port` (a ``BIND``-style
``host:port``) and :func:`is_loopback_host` (the console listens on loopback only; plain
http reaches a loopback hub only).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import TypeAlias

Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

__all__ = [
    "Address",
    "NegotiatePolicy",
    "Network",
    "client_address",
    "in_networks",
    "is_loopback_host",
    "parse_address",
    "parse_networks",
    "split_host_port",
]

_MAPPED_PREFIX = ipaddress.IPv6Network("::ffff:0:0/96")


def _unmap(addr: Address) -> Address:
    """``::ffff:a.b.c.d`` -> ``a.b.c.d``; every other address unchanged."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _unmap_network(net: Network) -> Network:
    """``::ffff:10.0.0.0/104`` -> ``10.0.0.0/8``; every other network unchanged."""
    if (
        isinstance(net, ipaddress.IPv6Network)
        and net.prefixlen >= 96
        and net.subnet_of(_MAPPED_PREFIX)
    ):
        base = int(net.network_address) & 0xFFFFFFFF
        return ipaddress.IPv4Network((base, net.prefixlen - 96))
    return net


def parse_address(value: str) -> Address | None:
    """One address as found in ``REMOTE_ADDR`` or an ``X-Forwarded-For`` entry, or None.

    Accepts ``1.2.3.4``, ``1.2.3.4:5678``, ``2001:db8::1``, ``[2001:db8::1]`` and
    ``[2001:db8::1]:443`` (some proxies append the port). Anything else (``unknown``,
    obfuscated identifiers, empty strings) gives None. IPv4-mapped IPv6 addresses come back
    as IPv4.
    """
    text = value.strip()
    if not text:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        rest = text[end + 1 :]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port; IPv6 has at least two colons
        host, _, port = text.partition(":")
        if not port.isdigit():
            return None
        text = host
    try:
        return _unmap(ipaddress.ip_address(text))
    except ValueError:
        return None


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Parse configured ranges: IPv4/IPv6 CIDRs or single addresses.

    Host bits are allowed (``10.1.2.3/8`` means ``10.0.0.0/8``). IPv4-mapped IPv6 ranges
    become IPv4 ranges.

    Raises:
        ValueError: an entry is not a network or an address; the message names it.
    """
    if isinstance(values, str):  # a lone string would be iterated character by character
        raise ValueError(f"expected a list of networks, got the string {values!r}")
    out: list[Network] = []
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise ValueError(f"network #{index + 1} is not a string: {value!r}")
        text = value.strip()
        if not text:
            raise ValueError(f"network #{index + 1} is empty")
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError as e:
            raise ValueError(f"invalid network or address {value!r}: {e}") from None
        out.append(_unmap_network(net))
    return tuple(out)


def in_networks(addr: Address, networks: Iterable[Network]) -> bool:
    """True if ``addr`` (IPv4-mapped addresses count as IPv4) is in one of ``networks``."""
    addr = _unmap(addr)
    return any(addr in net for net in networks)


def split_host_port(value: str) -> tuple[str, int] | None:
    """``host:port`` or ``[v6]:port`` as (host, port); None if it is not that shape."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface (``localhost``, 127/8, ::1)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def client_address(
    remote_addr: str,
    forwarded_for: str | None,
    trusted_proxies: Sequence[Network],
) -> Address:
    """The address of the client that made the request.

    The TCP peer (``remote_addr``) is the answer unless it is a trusted proxy. Then the
    ``X-Forwarded-For`` entries are read from the right (each proxy appends the address it
    saw): trusted proxies are skipped and the first untrusted address is the client. If
    every entry is a trusted proxy, the leftmost one is the answer. A malformed entry stops
    the walk: the answer is then the last trusted hop reached (the one whose report could
    not be read), never anything left of the garbage.

    Args:
        remote_addr: the peer address of the connection (WSGI ``REMOTE_ADDR``).
        forwarded_for: the ``X-Forwarded-For`` header (several headers joined with ``,``),
            or None.
        trusted_proxies: networks of proxies allowed to report the client address.

    Raises:
        ValueError: ``remote_addr`` is not an IP address (the web layer must pass one).
    """
    peer = parse_address(remote_addr)
    if peer is None:
        raise ValueError(f"REMOTE_ADDR is not an IP address: {remote_addr!r}")
    if not forwarded_for or not in_networks(peer, trusted_proxies):
        return peer
    current = peer
    for entry in reversed(forwarded_for.split(",")):
        hop = parse_address(entry)
        if hop is None:
            return current
        if not in_networks(hop, trusted_proxies):
            return hop
        current = hop
    return current


class NegotiatePolicy:
    """Whether a client is offered ``WWW-Authenticate: Negotiate`` (immutable, thread-safe).

    Args:
        ranges: client networks that get Negotiate (strings are parsed with
            :func:`parse_networks`). No ranges: nobody gets Negotiate.
        user_agents: None for no restriction; otherwise case-insensitive substrings of which
            the ``User-Agent`` must contain one (``["Windows NT", "Edg/", "Firefox"]``).

    Raises:
        ValueError: a range does not parse, ``user_agents`` is an empty list (use None for
            "no restriction") or holds an empty string (it would match every browser).
    """

    __slots__ = ("_agents", "_ranges")

    def __init__(
        self,
        ranges: Iterable[Network | str],
        user_agents: Sequence[str] | None = None,
    ) -> None:
        parsed: list[Network] = []
        for item in ranges:
            if isinstance(item, str):
                parsed.extend(parse_networks([item]))
            else:
                parsed.append(_unmap_network(item))
        self._ranges: tuple[Network, ...] = tuple(parsed)
        self._agents: tuple[str, ...] | None = None
        if user_agents is not None:
            if isinstance(user_agents, str):
                raise ValueError("user_agents must be a list of substrings, not one string")
            if not user_agents:
                raise ValueError("user_agents is empty: use None for no restriction")
            agents = []
            for ua in user_agents:
                if not isinstance(ua, str) or not ua.strip():
                    raise ValueError(f"user agent substring must be non-empty text: {ua!r}")
                agents.append(ua.strip().casefold())
            self._agents = tuple(agents)

    @property
    def ranges(self) -> tuple[Network, ...]:
        """The client networks that are offered Negotiate."""
        return self._ranges

    @property
    def user_agents(self) -> tuple[str, ...] | None:
        """The (case-folded) user-agent substrings, or None for no restriction."""
        return self._agents

    def offers_negotiate(self, addr: Address | str, user_agent: str | None) -> bool:
        """True if the client at ``addr`` with ``user_agent`` should get Negotiate."""
        if isinstance(addr, str):
            parsed = parse_address(addr)
            if parsed is None:
                return False
            addr = parsed
        if not in_networks(addr, self._ranges):
            return False
        if self._agents is None:
            return True
        if not user_agent:
            return False
        ua = user_agent.casefold()
        return any(agent in ua for agent in self._agents)

    def __repr__(self) -> str:
        ranges = ", ".join(str(n) for n in self._ranges)
        return f"NegotiatePolicy(ranges=[{ranges}], user_agents={self._agents!r})"
