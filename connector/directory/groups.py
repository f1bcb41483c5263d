"""Nested group membership, flattened: a small family of strategies and a bounded TTL cache.

* :class:`InChainGroups` — Active Directory: one search with the in-chain matching rule
  (``LDAP_SEARCH_GROUPS``, default ``(member:1.2.840.113556.1.4.1941:={0})``).
* :class:`MemberWalkGroups` — any server: ``(member=<dn>)`` level by level, one search per
  level for all the DNs of that level.
* :class:`MemberOfWalkGroups` — servers that maintain ``memberOf`` (OpenLDAP's memberof
  overlay keeps direct membership only): read the groups' ``memberOf`` upward, one round trip
  per level (the reads of a level are sent together).

Every walk keeps the set of groups already seen, so cycles end. The AD primary group (not
returned by the in-chain rule) can be added from ``primaryGroupID``.
"""

from __future__ import annotations

import abc
import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import ldap
from ldap.filter import escape_filter_chars

from connector.directory.connections import Connection
from connector.directory.search import Entry, complete_ranges, ranged, search, search_few
from connector.profiles import primary_group_sid
from connector.settings import Settings

log = logging.getLogger(__name__)

# Per-level batch: this many DNs go into one OR filter.
_BATCH = 100


class Group:
    """One group: its DN and the attributes that name it."""

    __slots__ = ("attrs", "dn")

    def __init__(self, dn: str, attrs: dict[str, list[bytes]]) -> None:
        self.dn = dn
        self.attrs = attrs

    def first(self, name: str) -> str | None:
        """First value of an attribute as text (case-insensitive name)."""
        values = self.attrs.get(name)  # the server's spelling is usually the one asked for
        if values:
            return values[0].decode("utf-8", "replace")
        lname = name.lower()
        for key, values in self.attrs.items():
            if key.lower() == lname and values:
                return values[0].decode("utf-8", "replace")
        return None


class GroupStrategy(abc.ABC):
    """How a user's groups (all of them, through nesting) are found."""

    name = "abstract"
    #: what a strategy reads of each group beyond the names the profile carries
    walk_attrs: tuple[str, ...] = ()

    def __init__(self, settings: Settings, *, ranged_values: bool = False) -> None:
        self.settings = settings
        self.attrs = list(
            dict.fromkeys([settings.group_property, *settings.group_properties, *self.walk_attrs])
        )
        if ranged_values:  # Active Directory: memberOf read to the end, range by range
            self.attrs = ranged(self.attrs)
        self.queries = 0  # LDAP requests sent, for diagnostics and benchmarks

    @abc.abstractmethod
    def resolve(self, conn: Connection, user: Entry) -> list[Group]:
        """Every group the user belongs to, directly or through nesting."""

    def _search(self, conn: Connection, flt: str, base: str | None = None) -> list[Entry]:
        self.queries += 1
        return search(conn, self.settings, base or self.settings.groups_base, flt, self.attrs)


class NoGroups(GroupStrategy):
    """Groups are not resolved at all."""

    name = "none"

    def resolve(self, conn: Connection, user: Entry) -> list[Group]:
        """No groups."""
        return []


class InChainGroups(GroupStrategy):
    """Active Directory's transitive membership rule: one search."""

    name = "ad"

    def resolve(self, conn: Connection, user: Entry) -> list[Group]:
        """All groups through the in-chain matching rule, plus the primary group if asked."""
        flt = self.settings.ldap_search_groups.replace("{0}", escape_filter_chars(user.dn))
        groups = [Group(e.dn, e.attrs) for e in self._search(conn, flt)]
        if self.settings.groups_include_primary:
            groups.extend(self._primary(conn, user, {g.dn.lower() for g in groups}))
        return groups

    def _primary(self, conn: Connection, user: Entry, seen: set[str]) -> list[Group]:
        sid = user.first_bytes("objectSid")
        rid = user.first("primaryGroupID")
        if not sid or not rid or not rid.isdigit():
            return []
        try:
            group_sid = primary_group_sid(sid, int(rid))
        except ValueError:
            log.warning("cannot build the primary group SID of %s", user.dn)
            return []
        flt = "(objectSid={})".format("".join(f"\\{b:02x}" for b in group_sid))
        found = [Group(e.dn, e.attrs) for e in self._search(conn, flt, self.settings.ldap_base)]
        return [g for g in found if g.dn.lower() not in seen]


class _Walk(GroupStrategy):
    """A breadth-first walk upward from the user, remembering what it has seen."""

    def resolve(self, conn: Connection, user: Entry) -> list[Group]:
        """Walk level by level until no new group appears."""
        found: dict[str, Group] = {}
        level = self._first_level(conn, user)
        depth = 0
        while level:
            depth += 1
            new: list[Group] = []
            for g in level:
                key = g.dn.lower()
                if key not in found:
                    found[key] = g
                    new.append(g)
            level = self._parents(conn, new, found) if new else []
            if depth > 100:  # a sane bound even for a pathological directory
                log.warning("group nesting of %s deeper than 100 levels; stopped", user.dn)
                break
        return list(found.values())

    @abc.abstractmethod
    def _first_level(self, conn: Connection, user: Entry) -> list[Group]: ...

    @abc.abstractmethod
    def _parents(
        self, conn: Connection, groups: Sequence[Group], seen: dict[str, Group]
    ) -> list[Group]: ...


class MemberWalkGroups(GroupStrategy):
    """Search ``(member=<dn>)`` for the user, then for each level of groups found (the DNs of
    a level OR-ed, :data:`_BATCH` to a search), until no new group appears."""

    name = "member"

    def _member_filter(self, dns: Iterable[str]) -> str:
        attr = self.settings.groups_member_attribute
        parts = [f"({attr}={escape_filter_chars(dn)})" for dn in dns]
        return parts[0] if len(parts) == 1 else "(|" + "".join(parts) + ")"

    def resolve(self, conn: Connection, user: Entry) -> list[Group]:
        """Walk level by level, remembering every group seen (so cycles end). Each level is
        one search that usually answers a few groups (:func:`search_few`); this loop runs
        several times a sign-in, so it is kept short."""
        found: dict[str, Group] = {}
        base = self.settings.groups_base
        level = [user.dn]
        depth = 0
        while level:
            depth += 1
            if depth > 102:  # a sane bound even for a pathological directory
                log.warning("group nesting of %s deeper than 100 levels; stopped", user.dn)
                break
            new: list[str] = []
            for i in range(0, len(level), _BATCH):
                self.queries += 1
                flt = self._member_filter(level[i : i + _BATCH])
                for dn, attrs in search_few(conn, self.settings, base, flt, self.attrs):
                    key = dn.lower()
                    if key not in found:
                        found[key] = Group(dn, attrs)
                        new.append(dn)
            level = new
        return list(found.values())


class MemberOfWalkGroups(_Walk):
    """Follow ``memberOf`` from the user upward, reading each level's groups together."""

    name = "memberof"
    walk_attrs = ("memberOf",)

    def _read(self, conn: Connection, dns: Sequence[str]) -> list[Group]:
        """Base-scope reads of several groups, sent together and collected together."""
        if not dns:
            return []
        self.queries += len(dns)
        timeout = self.settings.ldap_operation_timeout
        pending = [
            (dn, conn.ldap.search_ext(dn, ldap.SCOPE_BASE, "(objectClass=*)", self.attrs))
            for dn in dns
        ]
        out = []
        for dn, msgid in pending:
            try:
                _, data, _, _ = conn.ldap.result3(msgid, all=1, timeout=timeout)
            except ldap.NO_SUCH_OBJECT:
                log.info("group %s listed in memberOf does not exist", dn)
                continue
            for got_dn, attrs in data:
                if got_dn is not None and isinstance(attrs, dict):
                    # a group in more than 1,500 groups: its memberOf read to the end
                    whole = complete_ranges(conn, self.settings, Entry(got_dn, attrs))
                    out.append(Group(whole.dn, whole.attrs))
        return out

    def _first_level(self, conn: Connection, user: Entry) -> list[Group]:
        return self._read(conn, user.texts("memberOf"))

    def _parents(
        self, conn: Connection, groups: Sequence[Group], seen: dict[str, Group]
    ) -> list[Group]:
        parents: dict[str, str] = {}
        for g in groups:
            for key, values in g.attrs.items():
                if key.lower() == "memberof":
                    for v in values:
                        dn = v.decode("utf-8", "replace")
                        if dn.lower() not in seen:
                            parents.setdefault(dn.lower(), dn)
        return self._read(conn, list(parents.values()))


STRATEGIES: dict[str, type[GroupStrategy]] = {
    "ad": InChainGroups,
    "member": MemberWalkGroups,
    "memberof": MemberOfWalkGroups,
    "none": NoGroups,
}


class GroupCache:
    """A bounded, thread-safe TTL cache of each user's groups, keyed by the user's DN."""

    def __init__(self, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._data: collections.OrderedDict[str, tuple[float, Any]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, dn: str) -> Any | None:
        """The cached value for ``dn`` if it has not expired."""
        if self.ttl <= 0:
            self.misses += 1
            return None
        key = dn.lower()
        with self._lock:
            item = self._data.get(key)
            if item is None or item[0] <= self._clock():
                if item is not None:
                    del self._data[key]
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return item[1]

    def put(self, dn: str, value: Any) -> None:
        """Remember ``value`` for ``dn``, evicting the least recently used beyond the bound."""
        if self.ttl <= 0:
            return
        with self._lock:
            self._data[dn.lower()] = (self._clock() + self.ttl, value)
            self._data.move_to_end(dn.lower())
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
