"""Domain controllers found through DNS: ``LDAP_DOMAIN`` instead of (or besides) a list of URLs.

The DCs of a domain are the SRV records ``_ldap._tcp.dc._msdcs.<domain>``; those of a site
``_ldap._tcp.<site>._sites.dc._msdcs.<domain>``. The site is ``LDAP_SITE``, or else the one the
DCs say this machine is in (a CLDAP netlogon ping, :mod:`connector.directory.cldap`, to the
first DCs the domain's records name, until one answers). The site's DCs come first,
then the others, each list in RFC 2782 order: lowest priority first, and within one priority
a random choice weighted by ``weight`` (so load spreads as the administrator set it). With
``DNS_SERVERS`` the targets' addresses are asked of those servers too (the URLs then hold
addresses); without, the system's resolver is used and the URLs hold host names.

:class:`DcLocator` keeps the last answer and asks again when it is older than
``LDAP_DNS_REFRESH_SECONDS`` or when every DC it named has failed.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence

import dns.exception
import dns.rdatatype
import dns.resolver

from connector import errors
from connector.directory import cldap
from connector.settings import Settings

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Srv:
    """One SRV answer: a DC's host and port, its priority and weight, and whether it came
    from the site's records."""

    host: str
    port: int
    priority: int
    weight: int
    in_site: bool = False


def rfc2782_order(records: Sequence[Srv], rng: random.Random | None = None) -> list[Srv]:
    """Records in the order RFC 2782 says to try them: by priority, then weighted random."""
    rng = rng or random.Random()  # noqa: S311 - load spreading, not secrecy
    out: list[Srv] = []
    for priority in sorted({r.priority for r in records}):
        left = [r for r in records if r.priority == priority]
        # zero-weight records first, as the RFC arranges them, so they have a small chance
        left.sort(key=lambda r: r.weight != 0)
        while left:
            total = sum(r.weight for r in left)
            pick = rng.randint(0, total)
            running = 0
            for i, r in enumerate(left):
                running += r.weight
                if running >= pick:
                    out.append(left.pop(i))
                    break
    return out


def srv_names(domain: str, site: str | None) -> list[tuple[str, bool]]:
    """The SRV names to ask, the site's first: (name, in_site)."""
    names = []
    if site:
        names.append((f"_ldap._tcp.{site}._sites.dc._msdcs.{domain}", True))
    names.append((f"_ldap._tcp.dc._msdcs.{domain}", False))
    return names


class DcLocator:
    """The domain's DCs as LDAP URLs, from DNS, refreshed when stale or after failures.

    Args:
        settings: ``LDAP_DOMAIN``, ``LDAP_SITE``, ``DNS_SERVERS``, ``LDAP_DNS_REFRESH_SECONDS``,
            ``LDAP_DOMAIN_SCHEME`` and the connect timeout.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        if not settings.ldap_domain:
            raise ValueError("LDAP_DOMAIN is not set")
        self.settings = settings
        self.domain = settings.ldap_domain.rstrip(".")
        self._clock = clock
        self._lock = threading.Lock()
        self._urls: tuple[str, ...] = ()
        self._at: float | None = None
        self.answers: list[Srv] = []  # the last SRV answers, in the order tried
        self.last_error: str | None = None
        self.lookups = 0
        #: the site whose DCs come first, and where it came from (LDAP_SITE or CLDAP)
        self.site: str | None = settings.ldap_site
        self.site_source: str | None = "LDAP_SITE" if settings.ldap_site else None

    def _resolver(self) -> dns.resolver.Resolver:
        servers = self.settings.dns_servers
        resolver = dns.resolver.Resolver(configure=not servers)
        if servers:
            resolver.nameservers = list(servers)
        resolver.lifetime = self.settings.ldap_connect_timeout
        return resolver

    def lookup(self) -> list[Srv]:
        """Ask DNS now: the site's DCs, then the domain's, each in RFC 2782 order (a DC in
        both is listed once, with the site). Without a site yet, the DCs are asked which
        site this machine is in, and DNS again for that site's DCs.

        Raises:
            dns.exception.DNSException: no answer at all for the domain's records.
        """
        resolver = self._resolver()
        found = self._ask(resolver, self.site)
        if self.site is None:
            site = self.learn_site(found, resolver)
            if site:
                found = self._ask(resolver, site)
        return found

    def learn_site(self, found: Sequence[Srv], resolver: dns.resolver.Resolver) -> str | None:
        """The client's site from a netlogon ping to the first DCs (three at most) until one
        answers with a site; remembered in :attr:`site`. None: no DC said."""
        timeout = min(self.settings.ldap_connect_timeout, 2.0)
        for srv in found[:3]:
            for host in self._addresses(srv, resolver):
                try:
                    answer = cldap.ping(host, self.domain, timeout)
                except errors.DirectoryError as exc:
                    log.info("CLDAP: no site from %s (%s): %s", srv.host, host, exc)
                    continue
                if answer.client_site:
                    log.info(
                        "CLDAP: this machine is in site %s (said %s, itself in site %s)",
                        answer.client_site,
                        answer.dc_host or srv.host,
                        answer.dc_site,
                    )
                    self.site, self.site_source = answer.client_site, "CLDAP"
                    return answer.client_site
        return None

    def _ask(self, resolver: dns.resolver.Resolver, site: str | None) -> list[Srv]:
        found: list[Srv] = []
        seen: set[tuple[str, int]] = set()
        failure: Exception | None = None
        for name, in_site in srv_names(self.domain, site):
            try:
                answer = resolver.resolve(name, dns.rdatatype.SRV, tcp=False)
            except dns.exception.DNSException as exc:
                if not in_site:
                    failure = exc
                log.info("DNS: no answer for %s (%s)", name, type(exc).__name__)
                continue
            records = [
                Srv(str(r.target).rstrip("."), r.port, r.priority, r.weight, in_site)
                for r in answer
            ]
            for srv in rfc2782_order(records):
                if (srv.host.lower(), srv.port) not in seen:
                    seen.add((srv.host.lower(), srv.port))
                    found.append(srv)
        if not found and failure is not None:
            raise failure
        return found

    def _addresses(self, srv: Srv, resolver: dns.resolver.Resolver) -> list[str]:
        """The DC's addresses from ``DNS_SERVERS``; without, its name (the system resolves)."""
        if not self.settings.dns_servers:
            return [srv.host]
        try:
            return [r.address for r in resolver.resolve(srv.host, dns.rdatatype.A)]
        except dns.exception.DNSException as exc:
            log.warning("DNS: no address for DC %s (%s)", srv.host, type(exc).__name__)
            return []

    def _url(self, srv: Srv, resolver: dns.resolver.Resolver) -> list[str]:
        scheme = self.settings.ldap_domain_scheme
        port = srv.port if scheme == "ldap" else 636
        return [f"{scheme}://{a}:{port}" for a in self._addresses(srv, resolver)]

    def refresh(self) -> tuple[str, ...]:
        """Ask DNS now and keep the answer; on failure keep the last one.

        Raises:
            Nothing: a failed lookup is logged and remembered in :attr:`last_error`.
        """
        self.lookups += 1
        try:
            answers = self.lookup()
            resolver = self._resolver()
            urls = tuple(dict.fromkeys(u for srv in answers for u in self._url(srv, resolver)))
        except dns.exception.DNSException as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("DNS: cannot find the DCs of %s: %s", self.domain, self.last_error)
            with self._lock:
                self._at = self._clock()
                return self._urls
        with self._lock:
            changed = urls != self._urls
            self.answers, self._urls, self._at = answers, urls, self._clock()
            self.last_error = None
        if changed:
            log.info("DCs of %s from DNS: %s", self.domain, ", ".join(urls) or "none")
        return urls

    def urls(self) -> tuple[str, ...]:
        """The DCs' URLs, asked of DNS again when the answer is older than the refresh time."""
        with self._lock:
            at, urls = self._at, self._urls
        if at is None or self._clock() - at >= self.settings.ldap_dns_refresh_seconds:
            return self.refresh()
        return urls
