"""Searching: entries as returned by the server, paged where servers cap result sizes, and
multi-valued attributes read to the end where servers cap them.

Active Directory returns at most ``MaxValRange`` (1,500) values of an attribute per read and
then names the attribute ``member;range=0-1499``; the rest is read with ``member;range=1500-*``
and so on until a range ends in ``*`` (:func:`complete_ranges`). Every search here does that,
so the groups of a user in 1,600 groups or the members of a group of 3,000 are complete, and
callers see the attribute under its plain name.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import time
from typing import Any

import ldap
from ldap.controls import RequestControl, SimplePagedResultsControl

from connector.directory.connections import Connection
from connector.settings import Settings

log = logging.getLogger(__name__)

_RANGE = re.compile(
    r"^(?P<name>[^;]+(?:;(?!range=)[^;]+)*);range=(?P<low>\d+)-(?P<high>\d+|\*)$", re.I
)
#: A bound on the ranged reads of one attribute (1,500 values each: 15 million values).
MAX_RANGE_READS = 10_000
#: Values asked for per read: Active Directory's own ``MaxValRange`` default.
RANGE_STEP = 1500
#: The most entries asked of a search without paging: below every server's cap on one answer
#: (OpenLDAP's default ``sizelimit`` 500, Active Directory's ``MaxPageSize`` 1,000).
UNPAGED_LIMIT = 500
_PAGED = SimplePagedResultsControl.controlType
#: A limit up to which a search is a lookup (one entry expected, two tell it is ambiguous).
FEW = 2
#: The attributes that can hold more values than a server hands back at once.
LARGE_ATTRIBUTES = frozenset({"member", "memberof"})


def ranged(attrs: list[str], step: int = RANGE_STEP) -> list[str]:
    """``attrs`` with the large ones asked for by range (``memberOf;range=0-1499``), as on
    Active Directory: every server that knows ranges then marks where it stopped, whether it
    caps by itself (Windows) or only when asked (Samba). Not for other servers, which read
    ``;range=`` as an unknown option and return nothing."""
    return [f"{a};range=0-{step - 1}" if a.lower() in LARGE_ATTRIBUTES else a for a in attrs]


_SCHEMA_NAMES = re.compile(rb"\bNAME\s+(?:'([^']+)'|\(([^)]*)\))")


def schema_attribute_names(definitions: list[bytes]) -> frozenset[str]:
    """The names (lower-case) that a subschema entry's ``attributeTypes`` values define
    (RFC 4512: ``( 2.5.4.3 NAME ( 'cn' 'commonName' ) SUP name )``), and their OIDs."""
    out: set[str] = set()
    for text in definitions:
        oid = text.strip().lstrip(b"(").split(None, 1)
        if oid:
            out.add(oid[0].decode("ascii", "replace").lower())
        found = _SCHEMA_NAMES.search(text)
        if found is None:
            continue
        one, several = found.groups()
        names = [one] if one is not None else re.findall(rb"'([^']+)'", several)
        out.update(n.decode("utf-8", "replace").lower() for n in names)
    return frozenset(out)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One directory entry: its DN and attributes (raw bytes, names as the server spells them)."""

    dn: str
    attrs: dict[str, list[bytes]]

    def values(self, name: str) -> list[bytes]:
        """All values of an attribute, looked up case-insensitively."""
        vals = self.attrs.get(name)  # the server's spelling is usually the one asked for
        if vals is not None:
            return vals
        return self._lowered.get(name.lower(), [])

    @functools.cached_property
    def _lowered(self) -> dict[str, list[bytes]]:
        """The attributes by lower-case name (the first spelling wins), made at the first
        lookup the server's spelling misses: a sign-in asks for several attributes an entry
        does not hold (``pwdChangedTime``, ``userAccountControl`` on OpenLDAP…)."""
        out: dict[str, list[bytes]] = {}
        for key, vals in self.attrs.items():
            out.setdefault(key.lower(), vals)
        return out

    def first_bytes(self, name: str) -> bytes | None:
        """The first raw value of an attribute."""
        vals = self.values(name)
        return vals[0] if vals else None

    def first(self, name: str) -> str | None:
        """The first value of an attribute as text."""
        raw = self.first_bytes(name)
        return raw.decode("utf-8", "replace") if raw is not None else None

    def texts(self, name: str) -> list[str]:
        """All values of an attribute as text."""
        return [v.decode("utf-8", "replace") for v in self.values(name)]


def _entries(data: Any) -> list[Entry]:
    """Real entries only: referrals (DN ``None``) and continuation references are dropped."""
    return [
        Entry(dn, attrs) for dn, attrs in data or () if dn is not None and isinstance(attrs, dict)
    ]


def range_of(key: str) -> tuple[str, int, int | None] | None:
    """``member;range=0-1499`` → (``member``, 0, 1499); ``…;range=1500-*`` → (…, 1500, None);
    None for an attribute that is not a range."""
    m = _RANGE.match(key)
    if m is None:
        return None
    high = m.group("high")
    return m.group("name"), int(m.group("low")), None if high == "*" else int(high)


def complete_ranges(
    conn: Connection, settings: Settings, entry: Entry, step: int = RANGE_STEP
) -> Entry:
    """The entry with every ranged attribute read to its end and named plainly.

    Raises:
        ldap.LDAPError: a read of the next range failed (callers translate it).
    """
    if not _has_options(entry.attrs):
        return entry
    attrs: dict[str, list[bytes]] = {}
    for key, values in entry.attrs.items():
        ranged = range_of(key)
        if ranged is None:
            attrs.setdefault(key, []).extend(values)
            continue
        name, _, high = ranged
        attrs.setdefault(name, []).extend(values)
        if high is not None:
            attrs[name].extend(_rest(conn, settings, entry.dn, name, high + 1, step))
    return Entry(entry.dn, attrs)


def _rest(
    conn: Connection, settings: Settings, dn: str, name: str, low: int, step: int
) -> list[bytes]:
    """The values of ``name`` from ``low`` to the end, one ranged base read at a time (the
    server may answer less than asked; it marks the last range with ``*``)."""
    out: list[bytes] = []
    for _ in range(MAX_RANGE_READS):
        wanted = f"{name};range={low}-{low + step - 1}"
        msgid = conn.ldap.search_ext(dn, ldap.SCOPE_BASE, "(objectClass=*)", [wanted])
        _, data, _, _ = conn.ldap.result3(msgid, all=1, timeout=settings.ldap_operation_timeout)
        found = _entries(data)
        got: tuple[str, int, int | None] | None = None
        for key, values in found[0].attrs.items() if found else ():
            this = range_of(key)
            if this is not None and this[0].lower() == name.lower():
                out.extend(values)
                got = this
        if got is None or got[2] is None:  # the last range (or the values are gone)
            return out
        if got[2] < low:  # no progress: a server that answers ranges wrongly
            break
        low = got[2] + 1
    log.warning("%s of %s: ranged reads did not reach the end; the rest left out", name, dn)
    return out


def search(
    conn: Connection,
    settings: Settings,
    base: str,
    flt: str,
    attrs: list[str] | None,
    *,
    scope: int = ldap.SCOPE_SUBTREE,
    limit: int = 0,
) -> list[Entry]:
    """Search, up to ``limit`` entries: paged (``LDAP_PAGE_SIZE``) when the answer may be
    larger than a server hands out at once; one plain search when it cannot be (a base read,
    or a ``limit`` within both the page size and :data:`UNPAGED_LIMIT`, as a user lookup's 2).

    Raises:
        ldap.LDAPError: the server refused the search (callers translate it).
    """
    page = settings.ldap_page_size
    if not page or scope == ldap.SCOPE_BASE or 0 < limit <= min(page, UNPAGED_LIMIT):
        timeout = settings.ldap_operation_timeout
        found = _plain(conn, base, scope, flt, attrs, limit, timeout)
    else:
        found = _paged(conn, settings, base, scope, flt, attrs, min(limit or page, page), limit)
    if any(_has_options(e.attrs) for e in found):
        return [complete_ranges(conn, settings, e) for e in found]
    return found


def search_few(
    conn: Connection, settings: Settings, base: str, flt: str, attrs: list[str]
) -> list[tuple[str, dict[str, list[bytes]]]]:
    """A subtree search that usually answers a few entries (a level of a group walk: a few
    groups, seldom hundreds), as ``(dn, attributes)`` pairs: the entries :func:`search` finds.

    Asked first as one plain search capped at the page size and :data:`UNPAGED_LIMIT`, and
    asked again paged only when the server says the answer is larger (``sizeLimitExceeded``,
    also for its own lower cap), so the usual answer costs neither side the paging control;
    ranged attributes read to the end. A sign-in sends several of these: the usual answer is
    taken as python-ldap gives it, without an :class:`Entry` for each.

    Raises:
        ldap.LDAPError: the server refused the search (callers translate it).
    """
    page = settings.ldap_page_size
    if page:
        cap = min(page, UNPAGED_LIMIT)
        msgid = conn.ldap.search_ext(base, ldap.SCOPE_SUBTREE, flt, attrs, sizelimit=cap)
        try:
            _, data, _, _ = conn.ldap.result3(msgid, all=1, timeout=settings.ldap_operation_timeout)
        except ldap.SIZELIMIT_EXCEEDED:
            pass  # more than one plain answer holds: paged below
        else:
            found = [(dn, a) for dn, a in data or () if dn is not None and isinstance(a, dict)]
            if not any(_has_options(a) for _, a in found):
                return found
            whole = [complete_ranges(conn, settings, Entry(dn, a)) for dn, a in found]
            return [(e.dn, e.attrs) for e in whole]
    return [(e.dn, e.attrs) for e in search(conn, settings, base, flt, attrs)]


def _has_options(attrs: dict[str, list[bytes]]) -> bool:
    """Whether an attribute name carries options (``member;range=0-1499``): one scan of the
    names joined, rather than a test per name."""
    return ";" in "".join(attrs)


def _plain(
    conn: Connection,
    base: str,
    scope: int,
    flt: str,
    attrs: list[str] | None,
    limit: int,
    timeout: float,
) -> list[Entry]:
    """One search without controls. At the size limit (ours or the server's) python-ldap
    raises and drops what it had gathered, so a listing (no limit, or one above :data:`FEW`,
    often reached) reads its entries as they come; a lookup (the one entry a name finds) and
    a base read take all at once, a lookup asked again that way when the name matches several."""
    if scope != ldap.SCOPE_BASE and (not limit or limit > FEW):
        return _entries_before_limit(conn, base, scope, flt, attrs, limit, timeout)
    msgid = conn.ldap.search_ext(base, scope, flt, attrs, sizelimit=limit)
    try:
        _, data, _, _ = conn.ldap.result3(msgid, all=1, timeout=timeout)
    except ldap.SIZELIMIT_EXCEEDED:
        return _entries_before_limit(conn, base, scope, flt, attrs, limit, timeout)
    return _entries(data)


def _entries_before_limit(
    conn: Connection,
    base: str,
    scope: int,
    flt: str,
    attrs: list[str] | None,
    limit: int,
    timeout: float,
) -> list[Entry]:
    """The entries a search returns before any size-limit error, read one by one."""
    out: list[Entry] = []
    deadline = time.monotonic() + timeout
    msgid = conn.ldap.search_ext(base, scope, flt, attrs, sizelimit=limit)
    try:
        while True:
            rtype, data, _, _ = conn.ldap.result3(
                msgid, all=0, timeout=max(deadline - time.monotonic(), 0.001)
            )
            out.extend(_entries(data))
            if rtype == ldap.RES_SEARCH_RESULT:
                return out
    except ldap.SIZELIMIT_EXCEEDED:
        return out


def _paged(
    conn: Connection,
    settings: Settings,
    base: str,
    scope: int,
    flt: str,
    attrs: list[str] | None,
    page: int,
    limit: int,
) -> list[Entry]:
    """A search with the paged-results control, page after page, up to ``limit`` entries."""
    timeout = settings.ldap_operation_timeout
    out: list[Entry] = []
    ctrls = _first_page(page)
    while True:
        msgid = conn.ldap.search_ext(base, scope, flt, attrs, serverctrls=ctrls)
        try:
            _, data, _, rctrls = conn.ldap.result3(msgid, all=1, timeout=timeout)
        except ldap.SIZELIMIT_EXCEEDED as exc:
            # the server's own cap was reached before our page filled; keep what came
            data = (
                exc.args[0].get("partial", []) if exc.args and isinstance(exc.args[0], dict) else []
            )
            out.extend(_entries(data))
            break
        out.extend(_entries(data))
        cookie = b""
        for c in rctrls or ():
            if c.controlType == _PAGED:
                cookie = c.cookie
        if limit and len(out) >= limit:
            del out[limit:]
            if cookie:
                _abandon_paging(conn, base, scope, flt, cookie)
            break
        if not cookie:
            break
        ctrls = (SimplePagedResultsControl(True, size=page, cookie=cookie),)
    return out


@functools.lru_cache(maxsize=16)
def _first_page(page: int) -> tuple[RequestControl, ...]:
    """The request control of a first page of ``page`` entries, encoded once (it is the same
    for every search with that page size)."""
    value = SimplePagedResultsControl(True, size=page, cookie=b"").encodeControlValue()
    return (RequestControl(_PAGED, True, value),)


def _abandon_paging(conn: Connection, base: str, scope: int, flt: str, cookie: bytes) -> None:
    """Tell the server we are done with a paged search (size 0 releases its state)."""
    try:
        done = SimplePagedResultsControl(True, size=0, cookie=cookie)
        msgid = conn.ldap.search_ext(base, scope, flt, ["1.1"], serverctrls=[done])
        conn.ldap.result3(msgid, all=1, timeout=5)
    except ldap.LDAPError:
        pass
