"""Searching: entries as returned by the server, paged where servers cap result sizes."""

from __future__ import annotations

import dataclasses
from typing import Any

import ldap
from ldap.controls import SimplePagedResultsControl

from connector.directory.connections import Connection
from connector.settings import Settings


@dataclasses.dataclass(frozen=True)
class Entry:
    """One directory entry: its DN and attributes (raw bytes, names as the server spells them)."""

    dn: str
    attrs: dict[str, list[bytes]]

    def values(self, name: str) -> list[bytes]:
        """All values of an attribute, looked up case-insensitively."""
        lname = name.lower()
        for key, vals in self.attrs.items():
            if key.lower() == lname:
                return vals
        return []

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
    """Search, with the paged-results control when a page size is set, up to ``limit`` entries.

    Raises:
        ldap.LDAPError: the server refused the search (callers translate it).
    """
    timeout = settings.ldap_operation_timeout
    page = settings.ldap_page_size
    if limit and (not page or limit < page):
        page = limit
    if not page or scope == ldap.SCOPE_BASE:  # one entry at most: nothing to page
        try:
            msgid = conn.ldap.search_ext(base, scope, flt, attrs, sizelimit=limit)
            _, data, _, _ = conn.ldap.result3(msgid, all=1, timeout=timeout)
            return _entries(data)
        except ldap.SIZELIMIT_EXCEEDED:
            return []

    out: list[Entry] = []
    ctrl = SimplePagedResultsControl(True, size=page, cookie=b"")
    while True:
        msgid = conn.ldap.search_ext(base, scope, flt, attrs, serverctrls=[ctrl])
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
        cookie = next(
            (
                c.cookie
                for c in rctrls or ()
                if c.controlType == SimplePagedResultsControl.controlType
            ),
            b"",
        )
        if limit and len(out) >= limit:
            del out[limit:]
            if cookie:
                _abandon_paging(conn, base, scope, flt, cookie)
            break
        if not cookie:
            break
        ctrl.cookie = cookie
    return out


def _abandon_paging(conn: Connection, base: str, scope: int, flt: str, cookie: bytes) -> None:
    """Tell the server we are done with a paged search (size 0 releases its state)."""
    try:
        done = SimplePagedResultsControl(True, size=0, cookie=cookie)
        msgid = conn.ldap.search_ext(base, scope, flt, ["1.1"], serverctrls=[done])
        conn.ldap.result3(msgid, all=1, timeout=5)
    except ldap.LDAPError:
        pass
