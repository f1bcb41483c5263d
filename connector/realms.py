"""Which directory entries a Kerberos realm may sign in as (``KERBEROS_REALM_DIRECTORIES``).

A ticket proves a principal *of a realm*; the directory lookup uses only its name. Without a
tie between the two, ``administrator@CHILD`` (a realm the connector also accepts) would sign in
as this directory's administrator, and an enterprise principal ``victim\\@corp.example@OTHER``
as ``victim@corp.example``. Each accepted realm therefore names the part of the directory its
principals live in, and the entry found must lie there:

* ``REALM=base:<DN>``: the entry is that DN or below it;
* ``REALM=sid:<S-1-5-21-…>``: the entry's ``objectSid`` is in that domain;
* ``REALM=upn:<suffix>``: the entry's ``userPrincipalName`` ends in ``@<suffix>``.

A realm may be listed several times (any of its scopes will do). The first realm of
``KERBEROS_REALMS`` maps to ``LDAP_BASE`` unless it is listed; any other realm that is not
listed signs nobody in. Pure functions, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import ldap
import ldap.dn

from connector.profiles import decode_sid

__all__ = ["SCOPE_KINDS", "RealmScope", "dn_key", "parse_realm_directories", "realm_scopes"]

SCOPE_KINDS = ("base", "sid", "upn")

_Rdn = tuple[tuple[str, str], ...]


def dn_key(dn: str) -> tuple[_Rdn, ...]:
    """A DN as comparable RDNs (case-insensitive names and values, multi-valued RDNs sorted).

    Raises:
        ValueError: not a DN.
    """
    try:
        parsed = ldap.dn.str2dn(dn)
    except ldap.DECODING_ERROR:
        raise ValueError(f"not a DN: {dn!r}") from None
    return tuple(tuple(sorted((a.lower(), v.lower()) for a, v, _ in rdn)) for rdn in parsed)


@dataclasses.dataclass(frozen=True)
class RealmScope:
    """One part of the directory whose entries a realm's principals may be."""

    kind: str
    value: str

    def __post_init__(self) -> None:
        if self.kind not in SCOPE_KINDS:
            raise ValueError(f"unknown kind {self.kind!r} (one of {', '.join(SCOPE_KINDS)})")
        if not self.value:
            raise ValueError(f"{self.kind}: needs a value")
        if self.kind == "base":
            self._base_key()
        if self.kind == "sid" and not self.value.upper().startswith("S-1-"):
            raise ValueError(f"not a domain SID: {self.value!r}")

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"

    def _base_key(self) -> tuple[_Rdn, ...]:
        """``dn_key`` of a ``base`` scope's DN, parsed once (the scope is immutable).

        Raises:
            ValueError: not a DN.
        """
        key: tuple[_Rdn, ...] | None = self.__dict__.get("_key")
        if key is None:
            key = dn_key(self.value)
            object.__setattr__(self, "_key", key)
        return key

    def holds(self, dn: str, object_sid: bytes | None, upn: str | None) -> bool:
        """Whether an entry (its DN, ``objectSid`` and ``userPrincipalName``) lies here."""
        if self.kind == "base":
            base = self._base_key()
            try:
                entry = dn_key(dn)
            except ValueError:
                return False
            return len(entry) >= len(base) and entry[len(entry) - len(base) :] == base
        if self.kind == "sid":
            try:
                sid = decode_sid(object_sid) if object_sid else ""
            except ValueError:
                return False
            return sid.rpartition("-")[0].upper() == self.value.upper()
        suffix = "@" + self.value.lstrip("@").lower()
        return bool(upn) and str(upn).lower().endswith(suffix)


def parse_realm_directories(entries: Sequence[str]) -> dict[str, tuple[RealmScope, ...]]:
    """``REALM=kind:value`` entries as realm -> its scopes.

    Raises:
        ValueError: naming every entry that is not of that shape.
    """
    out: dict[str, list[RealmScope]] = {}
    problems = []
    for entry in entries:
        realm, sep, scope = entry.partition("=")
        kind, colon, value = scope.partition(":")
        try:
            if not sep or not realm.strip() or not colon:
                raise ValueError("expected REALM=base:<DN>, REALM=sid:<SID> or REALM=upn:<suffix>")
            parsed = RealmScope(kind.strip().lower(), value.strip())
        except ValueError as exc:
            problems.append(f"{entry!r}: {exc}")
            continue
        out.setdefault(realm.strip(), []).append(parsed)
    if problems:
        raise ValueError("; ".join(problems))
    return {realm: tuple(scopes) for realm, scopes in out.items()}


def realm_scopes(
    entries: Sequence[str], realms: Sequence[str], ldap_base: str
) -> dict[str, tuple[RealmScope, ...]]:
    """The scopes of every realm: the entries given, and ``LDAP_BASE`` for the first realm
    of ``realms`` when the entries do not list it.

    Raises:
        ValueError: an entry is malformed.
    """
    scopes = parse_realm_directories(entries)
    first = next((r.strip() for r in realms if r.strip()), None)
    if first and first not in scopes and ldap_base:
        scopes[first] = (RealmScope("base", ldap_base),)
    return scopes
