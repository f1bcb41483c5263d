"""The benchmark's directory: the soak test's 10,000 users in 300 nested groups (a 4-ary tree,
5 levels deep), plus the users the benchmark singles out:

* ``nested`` -- two levels deep in a small chain (``bench-team`` in ``bench-dept`` in
  ``bench-org``): the "same nested user" that the connector's form and Apache
  mod_authnz_ldap (``Require ldap-group cn=bench-dept``) both log in;
* ``wide`` -- directly in 40 groups and, through nesting 5 levels deep, in 200 groups
  (``wide-L<level>-<n>``): the group-resolution case.

A slapd with the monitor backend (``cn=Monitor``) is used, so the benchmark can count the LDAP
operations each kind of login costs, whoever sends them.
"""

from __future__ import annotations

import dataclasses

from bigdir import SOAK_PASSWORD, BigDirectory, generate
from servers import MonitoredSlapd, Slapd, ldap_ops, ssha  # noqa: F401 - re-exported for the bench

NESTED_USER = "nested"
WIDE_USER = "wide"
#: the Apache group requirement and the chain above the nested user
NESTED_CHAIN = ("bench-team", "bench-dept", "bench-org")
#: sizes of the wide user's group levels, direct groups first (sum: 200)
WIDE_LEVELS = (40, 60, 50, 35, 15)


def wide_group(level: int, index: int) -> str:
    return f"wide-L{level}-{index:02d}"


def wide_edges() -> dict[tuple[int, int], set[int]]:
    """(level, index) -> indexes of its parents in level + 1; every group has a child."""
    edges: dict[tuple[int, int], set[int]] = {}
    for level, size in enumerate(WIDE_LEVELS[:-1], start=1):
        upper = WIDE_LEVELS[level]
        for j in range(size):
            edges.setdefault((level, j), set()).add(j * upper // size)
        for u in range(upper):
            edges.setdefault((level, u * size // upper), set()).add(u)
    return edges


@dataclasses.dataclass(frozen=True)
class BenchDirectory:
    """What was generated, and the expected flattened groups of the singled-out users."""

    big: BigDirectory
    password: str
    nested_groups: frozenset[str]
    wide_groups: frozenset[str]

    @property
    def users(self) -> list[str]:
        return self.big.users


def build(slapd: Slapd, users: int = 10_000, groups: int = 300) -> BenchDirectory:
    """Load the soak directory, then the nested and wide users and their groups."""
    big = generate(slapd, users=users, groups=groups)
    conn = slapd.admin()
    hashed = ssha(SOAK_PASSWORD).encode()
    try:
        for uid in (NESTED_USER, WIDE_USER):
            conn.add_s(
                slapd.user_dn(uid),
                [
                    ("objectClass", [b"inetOrgPerson"]),
                    ("uid", [uid.encode()]),
                    ("cn", [f"Bench {uid}".encode()]),
                    ("sn", [b"Bench"]),
                    ("mail", [f"{uid}@example.test".encode()]),
                    ("userPassword", [hashed]),
                ],
            )
        member = slapd.user_dn(NESTED_USER)
        for cn in NESTED_CHAIN:  # innermost first: memberof records each membership
            conn.add_s(
                slapd.group_dn(cn),
                [
                    ("objectClass", [b"groupOfNames"]),
                    ("cn", [cn.encode()]),
                    ("member", [member.encode()]),
                ],
            )
            member = slapd.group_dn(cn)
        edges = wide_edges()
        members: dict[tuple[int, int], list[str]] = {
            (1, i): [slapd.user_dn(WIDE_USER)] for i in range(WIDE_LEVELS[0])
        }
        for (level, index), parents in edges.items():
            for p in parents:
                members.setdefault((level + 1, p), []).append(
                    slapd.group_dn(wide_group(level, index))
                )
        for level, size in enumerate(WIDE_LEVELS, start=1):
            for index in range(size):
                cn = wide_group(level, index)
                conn.add_s(
                    slapd.group_dn(cn),
                    [
                        ("objectClass", [b"groupOfNames"]),
                        ("cn", [cn.encode()]),
                        ("member", [m.encode() for m in members[(level, index)]]),
                    ],
                )
    finally:
        conn.unbind_s()
    wide = frozenset(
        wide_group(level, i) for level, size in enumerate(WIDE_LEVELS, start=1) for i in range(size)
    )
    return BenchDirectory(big, SOAK_PASSWORD, frozenset(NESTED_CHAIN), wide)
