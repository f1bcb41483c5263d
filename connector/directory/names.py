"""The names people type at sign-in, turned into the one filter that finds their entry.

On Windows networks people sign in as ``alice``, ``CORP\\alice`` (the domain's NetBIOS name),
``alice@corp.example.com`` (their UPN, possibly with one of the forest's alternate UPN
suffixes) or their e-mail address. :func:`parse` tells these apart (pure);
:class:`NameResolver` knows the forest's names (read once from ``CN=Partitions`` of the
configuration naming context) and builds the filter, every value escaped. A down-level name
whose domain the forest does not know finds nobody; so does one whose entry lies outside that
domain. Which of several entries is meant is never guessed: the caller takes exactly one.

On other servers (OpenLDAP) ``user@domain`` maps by ``LDAP_USER_BY_QUALIFIED_NAME`` when set.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from collections.abc import Callable

import ldap
from ldap.filter import escape_filter_chars

from connector.directory.connections import Connection
from connector.directory.search import Entry, search
from connector.settings import Settings

log = logging.getLogger(__name__)

_ESCAPE = re.compile(r"\\([0-9a-fA-F]{2})")
#: AD users (not contacts, not computers): what a UPN or e-mail lookup may find
_AD_PERSON = "(&(objectCategory=person)(objectClass=user){0})"


@dataclasses.dataclass(frozen=True)
class TypedName:
    """A login name as typed, split into its form.

    ``kind`` is ``plain`` (``alice``), ``downlevel`` (``CORP\\alice``: ``domain`` = ``CORP``)
    or ``qualified`` (``alice@example.com``: ``domain`` = ``example.com``). ``user`` is the
    part before the ``@`` or after the ``\\``; ``text`` the whole name.
    """

    kind: str
    text: str
    user: str
    domain: str = ""


def unescape(value: str) -> str:
    """A filter value escaped RFC 4515-style (``\\5c``) back to its text."""
    raw = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value)
    try:  # escapes are bytes of UTF-8: rebuild multi-byte characters
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw


def parse(name: str) -> TypedName:
    """Which form a typed login name has (no directory needed)."""
    if "\\" in name:
        domain, _, user = name.partition("\\")
        if domain and user and "\\" not in user and "@" not in user:
            return TypedName("downlevel", name, user, domain)
        return TypedName("plain", name, name)
    user, at, domain = name.rpartition("@")
    if at and user and domain:
        return TypedName("qualified", name, user, domain)
    return TypedName("plain", name, name)


@dataclasses.dataclass(frozen=True)
class Forest:
    """The names an AD forest answers to: NetBIOS name → domain naming context, and the
    UPN suffixes (each domain's DNS name and the forest's ``uPNSuffixes``), all lower-case."""

    netbios: dict[str, str]
    upn_suffixes: frozenset[str]

    def domain_nc(self, netbios: str) -> str | None:
        """The naming context of the domain with this NetBIOS name, or None."""
        return self.netbios.get(netbios.lower())


@dataclasses.dataclass(frozen=True)
class Lookup:
    """How to find a typed name: a filter (values escaped), and for a down-level name the
    naming context its entry must lie in."""

    filter: str
    within: str | None = None

    def holds(self, entry: Entry) -> bool:
        """Whether a found entry is one this lookup may return."""
        if self.within is None:
            return True
        return _dn_within(entry.dn, self.within)


def _dn_within(dn: str, base: str) -> bool:
    try:
        child = [tuple(r) for r in ldap.dn.str2dn(dn.lower())]
        parent = [tuple(r) for r in ldap.dn.str2dn(base.lower())]
    except ldap.DECODING_ERROR:
        return False
    return len(child) >= len(parent) and child[len(child) - len(parent) :] == parent


def read_forest(conn: Connection, settings: Settings) -> Forest:
    """The forest's NetBIOS names and UPN suffixes, from the configuration naming context.

    Raises:
        ldap.LDAPError: the server refused a read (callers translate it).
    """
    root = search(
        conn,
        settings,
        "",
        "(objectClass=*)",
        ["configurationNamingContext"],
        scope=ldap.SCOPE_BASE,
    )
    config_nc = root[0].first("configurationNamingContext") if root else None
    if not config_nc:
        return Forest({}, frozenset())
    partitions = f"CN=Partitions,{config_nc}"
    top = search(
        conn, settings, partitions, "(objectClass=*)", ["uPNSuffixes"], scope=ldap.SCOPE_BASE
    )
    refs = search(
        conn,
        settings,
        partitions,
        "(&(objectClass=crossRef)(nETBIOSName=*))",
        ["nETBIOSName", "nCName", "dnsRoot"],
        scope=ldap.SCOPE_ONELEVEL,
    )
    netbios: dict[str, str] = {}
    suffixes = {s.lower() for e in top for s in e.texts("uPNSuffixes")}
    for ref in refs:
        name, nc = ref.first("nETBIOSName"), ref.first("nCName")
        if name and nc:
            netbios[name.lower()] = nc
        suffixes.update(d.lower() for d in ref.texts("dnsRoot"))
    log.info(
        "forest names: NetBIOS %s, UPN suffixes %s",
        ", ".join(sorted(netbios)) or "none",
        ", ".join(sorted(suffixes)) or "none",
    )
    return Forest(netbios, frozenset(suffixes))


class NameResolver:
    """Builds the lookup for a typed name; the forest's names are read once, on first need.

    Args:
        settings: the filters and ``LOGIN_BY_EMAIL``.
        is_ad: whether the directory is Active Directory (asked lazily).
        read: runs a read of the forest on a service connection.
    """

    def __init__(
        self,
        settings: Settings,
        is_ad: Callable[[], bool],
        read: Callable[[Callable[[Connection], Forest]], Forest],
    ) -> None:
        self.settings = settings
        self._is_ad = is_ad
        self._read = read
        self._forest: Forest | None = None
        self._lock = threading.Lock()

    @property
    def forest(self) -> Forest:
        """The forest's names (read on first use)."""
        if self._forest is None:
            forest = self._read(lambda conn: read_forest(conn, self.settings))
            with self._lock:
                self._forest = forest
        return self._forest

    def _by_name(self, value: str) -> str:
        return self.settings.ldap_user_by_name.replace("{0}", escape_filter_chars(value))

    def lookup(self, name: TypedName) -> Lookup | None:
        """The lookup for a typed name, or None when the name can find nobody."""
        if name.kind == "plain":
            return Lookup(self._by_name(name.text))
        if self._is_ad():
            return self._ad(name)
        return self._other(name)

    def _ad(self, name: TypedName) -> Lookup | None:
        forest = self.forest
        if name.kind == "downlevel":
            nc = forest.domain_nc(name.domain)
            if nc is None:
                log.info("down-level name of unknown domain %r: no such user", name.domain)
                return None
            return Lookup(self._by_name(name.user), within=nc)
        value = escape_filter_chars(name.text)
        parts = []
        if name.domain.lower() in forest.upn_suffixes:
            parts.append(f"(userPrincipalName={value})")
        if self.settings.login_by_email:
            parts += [f"(mail={value})", f"(proxyAddresses=smtp:{value})"]
        if not parts:  # not a name of this forest: the configured filter, as typed
            return Lookup(self._by_name(name.text))
        alternatives = parts[0] if len(parts) == 1 else "(|" + "".join(parts) + ")"
        return Lookup(_AD_PERSON.format(alternatives))

    def _other(self, name: TypedName) -> Lookup:
        template = self.settings.ldap_user_by_qualified_name
        if name.kind == "qualified" and template:
            flt = (
                template.replace("{0}", escape_filter_chars(name.text))
                .replace("{1}", escape_filter_chars(name.user))
                .replace("{2}", escape_filter_chars(name.domain))
            )
            return Lookup(flt)
        if name.kind == "qualified" and self.settings.login_by_email:
            return Lookup(f"(mail={escape_filter_chars(name.text)})")
        return Lookup(self._by_name(name.text))
