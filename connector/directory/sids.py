"""Group SIDs (from a Kerberos PAC) named through LDAP, with a bounded TTL cache.

A batch of SIDs not in the cache costs one search per hundred (``(|(objectSid=…)…)``, every
SID escaped byte by byte as binary); a SID that names no group under ``LDAP_BASE_GROUPS``
(well-known ones like ``S-1-18-1``, groups of other domains) is remembered as such, so a
warm cache answers a sign-in with no LDAP query at all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from connector.directory.connections import Connection
from connector.directory.groups import Group, GroupCache
from connector.directory.search import search
from connector.kerberos.pac import PacFormatError, sid_bytes
from connector.profiles import decode_sid
from connector.settings import Settings

log = logging.getLogger(__name__)

_BATCH = 100


def sid_filter(sids: Iterable[str]) -> str:
    """``(objectSid=…)`` for each SID (binary, every byte escaped), OR-ed together."""
    parts = ["(objectSid={})".format("".join(f"\\{b:02x}" for b in sid_bytes(s))) for s in sids]
    return parts[0] if len(parts) == 1 else "(|" + "".join(parts) + ")"


class SidNames:
    """Groups by SID, cached (``SID_CACHE_SECONDS``, at most ``SID_CACHE_MAX_ENTRIES``)."""

    def __init__(self, settings: Settings, attrs: list[str]) -> None:
        self.settings = settings
        self.attrs = list(dict.fromkeys([*attrs, "objectSid"]))
        self.cache = GroupCache(settings.sid_cache_seconds, settings.sid_cache_max_entries)
        self.queries = 0  # LDAP searches sent (a warm cache sends none)

    def cached(self, sids: Iterable[str]) -> tuple[list[Group], list[str]]:
        """The groups the cache knows, and the SIDs it does not."""
        found: list[Group] = []
        unknown: list[str] = []
        for sid in sids:
            hit = self.cache.get(sid)
            if hit is None:
                unknown.append(sid)
            elif hit is not False:
                found.append(hit)
        return found, unknown

    def lookup(self, conn: Connection, sids: list[str]) -> list[Group]:
        """Search for ``sids`` (none cached), remember every answer, and return the groups.

        Raises:
            ldap.LDAPError: the search failed (callers translate it).
        """
        usable = []
        for sid in sids:
            try:
                sid_bytes(sid)
                usable.append(sid)
            except PacFormatError:
                log.warning("PAC SID %r is not a SID; ignored", sid)
        out: list[Group] = []
        for i in range(0, len(usable), _BATCH):
            batch = usable[i : i + _BATCH]
            self.queries += 1
            entries = search(
                conn, self.settings, self.settings.groups_base, sid_filter(batch), self.attrs
            )
            named = {}
            for e in entries:
                raw = e.first_bytes("objectSid")
                if raw:
                    named[decode_sid(raw)] = Group(e.dn, e.attrs)
            for sid in batch:
                group = named.get(sid)
                self.cache.put(sid, group if group is not None else False)
                if group is not None:
                    out.append(group)
        return out
