"""A generated directory: thousands of users in a few hundred nested groups, loaded into a
running test slapd through its overlays (so memberOf is maintained)."""

from __future__ import annotations

import dataclasses
from typing import Any

from servers import Slapd, ssha


@dataclasses.dataclass(frozen=True)
class BigDirectory:
    """What was generated: user names, their password, and each user's nested groups."""

    users: list[str]
    password: dict[str, str]
    groups: int

    def expected_groups(self, uid: str) -> set[str]:
        """The flattened groups of one generated user."""
        index = int(uid[1:])
        out: set[str] = set()
        for g in direct_groups(index, self.groups):
            while True:
                out.add(group_name(g))
                if g == 0:
                    break
                g = parent(g)
        return out


SOAK_PASSWORD = "Soak-Passw0rd-shared"


def group_name(i: int) -> str:
    return f"grp{i:03d}"


def parent(i: int) -> int:
    """Groups form a 4-ary tree: group 0 is the root; 300 groups are 5 levels deep."""
    return (i - 1) // 4


def direct_groups(user_index: int, groups: int) -> set[int]:
    return {user_index % groups, (user_index * 7 + 3) % groups}


def _pipelined(conn: Any, requests: list[tuple[str, list[tuple[str, list[bytes]]]]]) -> None:
    """Send adds in windows of 64 outstanding requests, checking every result."""
    pending: list[int] = []
    for dn, attrs in requests:
        pending.append(conn.add_ext(dn, attrs))
        if len(pending) >= 64:
            conn.result3(pending.pop(0), all=1, timeout=60)
    for msgid in pending:
        conn.result3(msgid, all=1, timeout=60)


def generate(slapd: Slapd, users: int = 10_000, groups: int = 300) -> BigDirectory:
    """Add ``users`` users and ``groups`` nested groups to ``slapd``."""
    conn = slapd.admin()
    try:
        names = [f"u{i:05d}" for i in range(users)]
        # one password (and one salted hash) for all: hashing is not what is being tested
        passwords = dict.fromkeys(names, SOAK_PASSWORD)
        hashed = ssha(SOAK_PASSWORD)
        entries = []
        for n in names:
            entries.append(
                (
                    slapd.user_dn(n),
                    [
                        ("objectClass", [b"inetOrgPerson"]),
                        ("uid", [n.encode()]),
                        ("cn", [f"Soak User {n}".encode()]),
                        ("sn", [b"User"]),
                        ("mail", [f"{n}@example.test".encode()]),
                        ("userPassword", [hashed.encode()]),
                    ],
                )
            )
        _pipelined(conn, entries)
        members: dict[int, list[str]] = {g: [] for g in range(groups)}
        for i, n in enumerate(names):
            for g in direct_groups(i, groups):
                members[g].append(slapd.user_dn(n))
        for g in range(1, groups):
            members[parent(g)].append(slapd.group_dn(group_name(g)))
        # leaves first: a member DN must exist for memberof to record the membership
        group_entries = []
        for g in sorted(range(groups), reverse=True):
            group_entries.append(
                (
                    slapd.group_dn(group_name(g)),
                    [
                        ("objectClass", [b"groupOfNames"]),
                        ("cn", [group_name(g).encode()]),
                        ("member", [m.encode() for m in members[g]]),
                    ],
                )
            )
        for dn, attrs in group_entries:  # in order: children before parents
            conn.add_ext_s(dn, attrs)
    finally:
        conn.unbind_s()
    return BigDirectory(names, passwords, groups)
