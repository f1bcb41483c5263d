#!/usr/bin/env python3
"""What the directory layer costs per sign-in, in this process and in slapd: the connector's
``Directory.authenticate`` (or ``get_profile``) against the raw python-ldap sequence of
``baselines.ldap_validate``, on the benchmark's directory.

    PYTHONPATH=$PWD python3 tests/bench/dircost.py [--workdir DIR] [--n 400] [--repeats 5]
        [--only NAME,...] [--rates 0,135] [--busy-us 5000]

Per variant: slapd's CPU per sign-in (``/proc/<pid>/stat`` before and after ``n`` sign-ins,
the best of ``repeats``), the client's CPU per sign-in (``time.process_time``, best of
``repeats``) and the LDAP operations per sign-in by kind (``cn=Monitor``). The directory is
loaded once into ``--workdir`` and reused by later runs. Not part of the suite.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for extra in (HERE, HERE.parent, HERE.parent / "soak", ROOT):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import baselines  # noqa: E402
import ldap  # noqa: E402
from benchdir import MonitoredSlapd, build, ldap_ops  # noqa: E402
from bigdir import SOAK_PASSWORD  # noqa: E402
from configs import openldap_config  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def slapd_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def start(workdir: Path) -> MonitoredSlapd:
    """The bench's slapd and directory, loaded once into ``workdir``."""
    slapd = MonitoredSlapd(workdir)
    slapd.start()
    marker = workdir / ".bench-loaded"
    if not marker.exists():
        build(slapd)
        marker.write_text("1\n")
    return slapd


def directory(slapd: MonitoredSlapd, workdir: Path, **overrides: Any) -> Any:
    """A connector ``Directory`` configured as the bench's connector is."""
    from connector.directory import Directory
    from connector.settings import load_settings

    cfg = openldap_config(slapd, GROUPS_CACHE_SECONDS=0, LDAP_SEARCH_LIMIT=100, **overrides)
    path = workdir / "dircost-config.json"
    path.write_text(json.dumps(cfg))
    return Directory(load_settings(path, environ={}))


def measure(
    slapd: MonitoredSlapd,
    admin: Any,
    op: Callable[[int], Any],
    n: int,
    repeats: int,
    rate: float = 0.0,
    busy_us: float = 0.0,
) -> dict[str, Any]:
    """Best-of-``repeats`` CPU per call of ``op`` here and in slapd, and operations per call;
    with ``rate``, calls are paced to that many per second (as a slow client sends them);
    with ``busy_us``, this process computes that long after each call (as the rest of a
    sign-in does: HTTP, the hub), not counted in its CPU per call."""
    assert slapd.pid is not None
    for i in range(20):  # connections opened, caches warm
        op(i)
    client, server = [], []
    ops0 = ldap_ops(admin)
    for r in range(repeats):
        s0, used = slapd_cpu(slapd.pid), 0.0
        t0 = time.perf_counter()
        for i in range(n):
            if rate:
                wait = t0 + i / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)  # pacing a load, not synchronisation
            c0 = time.process_time()
            op(r * n + i)
            used += time.process_time() - c0
            if busy_us:
                end = time.perf_counter() + busy_us / 1e6
                while time.perf_counter() < end:
                    pass
        client.append(used / n)
        server.append((slapd_cpu(slapd.pid) - s0) / n)
    ops1 = ldap_ops(admin)
    kinds = {
        k: round((ops1[k] - ops0.get(k, 0) - (1 if k == "Search" else 0)) / (n * repeats), 2)
        for k in ops1
        if ops1[k] != ops0.get(k, 0)
    }
    return {
        "client_us": round(min(client) * 1e6),
        "slapd_us": round(min(server) * 1e6),
        "slapd_us_median": round(sorted(server)[len(server) // 2] * 1e6),
        "ops": kinds,
    }


def shaped(
    slapd: MonitoredSlapd,
    users: list[str],
    user_attrs: list[str],
    group_attrs: list[str],
    *,
    base: str | None = None,
    paged: bool = False,
    ppolicy: bool = False,
) -> Callable[[int], Any]:
    """The raw validate sequence asking as the connector may: user attributes, group
    attributes, search base (``base``: the whole tree), a paged-results control on the
    searches, the ppolicy control on the bind."""
    from ldap.controls import SimplePagedResultsControl
    from ldap.controls.ppolicy import PasswordPolicyControl
    from ldap.filter import escape_filter_chars

    search = baselines.connect(slapd.uri, slapd.ca_file)
    search.simple_bind_s(slapd.bind_dn, slapd.bind_pw)
    binder = baselines.connect(slapd.uri, slapd.ca_file)
    bind_ctrls = [PasswordPolicyControl()] if ppolicy else None

    def find(where: str, flt: str, attrs: list[str], size: int) -> list[str]:
        ctrls = [SimplePagedResultsControl(True, size=size or 500, cookie=b"")] if paged else None
        msgid = search.search_ext(
            where, ldap.SCOPE_SUBTREE, flt, attrs, serverctrls=ctrls, sizelimit=0 if paged else size
        )
        _, data, _, _ = search.result3(msgid, all=1)
        return [dn for dn, _ in data if dn is not None]

    def op(n: int) -> None:
        uid = users[n % len(users)]
        found = find(base or slapd.people_dn, f"(uid={escape_filter_chars(uid)})", user_attrs, 2)
        if len(found) != 1:
            raise RuntimeError(f"{uid}: {len(found)} entries")
        msgid = binder.simple_bind(found[0], SOAK_PASSWORD, serverctrls=bind_ctrls)
        binder.result3(msgid, all=1)
        seen: set[str] = set()
        level = found
        while level:
            parts = [f"(member={escape_filter_chars(d)})" for d in level]
            flt = parts[0] if len(parts) == 1 else "(|" + "".join(parts) + ")"
            got = [g for g in find(base or slapd.groups_dn, flt, group_attrs, 0) if g not in seen]
            seen.update(got)
            level = got
        if not seen:
            raise RuntimeError(f"{uid}: no groups")

    return op


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dircost-slapd"))
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated variant names")
    parser.add_argument(
        "--busy-us", type=float, default=0.0, help="CPU spent here after each sign-in (us)"
    )
    parser.add_argument(
        "--rates", default="0", help="comma-separated sign-ins per second (0: as fast as can be)"
    )
    args = parser.parse_args(argv)
    slapd = start(args.workdir)
    admin = slapd.admin()
    users = [f"u{i:05d}" for i in range(10_000)]
    order = list(users)
    random.Random(1).shuffle(order)
    try:

        def raw(password: str | None) -> Callable[[], Callable[[int], Any]]:
            s = slapd
            return lambda: baselines.ldap_validate(
                s.uri, s.ca_file, s.bind_dn, s.bind_pw, s.people_dn, s.groups_dn, order,
                password, 1,
            )(0)  # fmt: skip

        variants: dict[str, Callable[[], Callable[[int], Any]]] = {
            "raw validate": raw(SOAK_PASSWORD),
            "raw lookup": raw(None),
        }

        def connector(method: str, **overrides: Any) -> Callable[[], Callable[[int], Any]]:
            def make() -> Callable[[int], Any]:
                d = directory(slapd, args.workdir, **overrides)
                made.append(d)
                if method == "authenticate":
                    return lambda i: d.authenticate(order[i % len(order)], SOAK_PASSWORD)
                return lambda i: d.get_profile(order[i % len(order)])

            return make

        made: list[Any] = []
        probe = directory(slapd, args.workdir)
        wide = list(probe.user_attributes)
        probe.close()
        star = ["*", "memberOf"]
        for label, kw in {
            "raw shaped: as raw": {},
            "raw shaped: connector's user attributes": {"user_attrs": wide},
            "raw shaped: whole-tree base": {"base": slapd.base},
            "raw shaped: paged": {"paged": True},
            "raw shaped: ppolicy control": {"ppolicy": True},
            "raw shaped: groups' memberOf": {"group_attrs": ["cn", "memberOf"]},
            "raw shaped: all of these": {
                "user_attrs": wide,
                "base": slapd.base,
                "paged": True,
                "ppolicy": True,
                "group_attrs": ["cn", "memberOf"],
            },
        }.items():
            kw = {"user_attrs": star, "group_attrs": ["cn"], **kw}
            variants[label] = lambda kw=kw: shaped(slapd, order, **kw)
        variants["Directory.authenticate"] = connector("authenticate")
        variants["Directory.get_profile"] = connector("get_profile")
        variants["Directory.authenticate, LDAP_PAGE_SIZE=0"] = connector(
            "authenticate", LDAP_PAGE_SIZE=0
        )
        only = {v.strip() for v in args.only.split(",") if v.strip()}
        for name, make in variants.items():
            if only and name not in only:
                continue
            op = make()
            for rate in (float(r) for r in args.rates.split(",")):
                result = measure(slapd, admin, op, args.n, args.repeats, rate, args.busy_us)
                print(f"{name:45s} {rate:5g}/s {json.dumps(result)}", flush=True)
        for d in made:
            d.close()
    finally:
        admin.unbind_s()
        slapd.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
