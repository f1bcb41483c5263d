#!/usr/bin/env python3
"""Where a drained command's CPU goes under gunicorn, A/B: variants alternated in one site.

    PYTHONPATH=$PWD python3 tests/bench/draincost.py [--n 2000] [--repeats 3]
        [--variant NAME=VAR=VALUE,...] [--tree NAME=PATH] [--point drain|form@C]

Starts the benchmark's site (slapd with the generated directory, MIT KDC, devhub, the
connector under gunicorn as ``run_bench.py`` does), then, ``repeats`` times, for each variant:
restarts the connector with the variant's environment, drains one warm-up backlog, and drains
a backlog of ``n`` commands exactly as ``run_bench.py`` does (queued while the agents are
held, raw validate at 4 clients measured before and after it). Per drain: the CPU ratio
against raw validate around it (the bench's target), the connector's and slapd's CPU per
command, and the connector's split by thread (the pool, the poller, the poster, the rest).
``--tree NAME=PATH`` is a variant whose gunicorn runs in another checkout (its wsgi.py, its
connector first on sys.path): a product change against main in the same site, one after the other,
so the host's drift falls on both. ``--point form@C`` measures the bench's form point at C
clients instead (``GET /health`` and raw validate measured just before and just after it, for
``--seconds`` each): the form CPU budget's ratio, the p50 ratio, the connector's CPU per sign-in
by thread (the web threads, the relay, the rest) and the hub's relay requests per sign-in.
Not part of the suite: nothing asserts a figure.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for extra in (HERE, HERE.parent, HERE.parent / "soak", HERE.parent.parent):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from formcost import snapshot, thread_names  # noqa: E402
from loadgen import run_clients  # noqa: E402
from run_bench import Bench, parse_args  # noqa: E402
from sites import Site  # noqa: E402


def _group(name: str) -> str:
    if name.startswith("agent-cmd"):
        return "pool"
    if name in ("agent-poll", "agent-post", "agent-relay"):
        return name[6:]
    if name.startswith("ThreadPoolExecutor"):
        return "web"
    return "other"


def _split(
    site: Site, before: dict[Any, float], after: dict[Any, float], n: int
) -> dict[str, float]:
    """ms of connector CPU per operation by thread group, between two snapshots."""
    names = thread_names(site.worker_pids())
    master = site.connector.pid  # type: ignore[union-attr]
    out: dict[str, float] = {}
    for key, value in after.items():
        pid, tid = key
        group = "master" if pid == master else _group(names.get(tid, "gone"))
        out[group] = out.get(group, 0.0) + 1000 * (value - before.get(key, 0.0)) / n
    return out


@contextlib.contextmanager
def snapshotting(bench: Bench, site: Site) -> Iterator[list[dict[tuple[int, int], float]]]:
    """Per-thread CPU snapshots taken around each of the bench's measured windows (its
    ``accounting``) while the block runs, in order: two a window."""
    taken: list[dict[tuple[int, int], float]] = []
    accounting = bench.accounting

    @contextlib.contextmanager
    def split_accounting() -> Iterator[dict[str, Any]]:
        taken.append(snapshot(site))
        with accounting() as acct:
            yield acct
        taken.append(snapshot(site))

    bench.accounting = split_accounting  # type: ignore[method-assign]
    try:
        yield taken
    finally:
        bench.accounting = accounting  # type: ignore[method-assign]


def form_point(bench: Bench, site: Site, clients: int, seed: int) -> dict[str, float]:
    """The bench's form point at ``clients`` between its baselines: its ratios, and ms of
    connector CPU per sign-in by thread."""
    with snapshotting(bench, site) as taken:
        row = bench.form_around(clients, seed, (20 + seed, 30 + seed))
    # the point's window: after the two baselines measured before it
    before, after = taken[4], taken[5]
    out: dict[str, float] = {
        "ratio": row.beside_ratio("cost") or float("nan"),
        "p50": row.beside_p50_ratio(("http_health", "ldap_raw")) or float("nan"),
        "connector": row.cpu_ms_per_op.get("connector", 0.0),
        "slapd": row.cpu_ms_per_op.get("slapd", 0.0),
        "devhub": row.cpu_ms_per_op.get("devhub", 0.0),
        "base": row.beside.get("cost") or float("nan"),
        "relays": row.hub_events.get("signinRelays", 0) / max(1, row.ok),
    }
    out.update(_split(site, before, after, row.ok))
    return out


def drain(bench: Bench, site: Site, n: int, seed: int) -> dict[str, float]:
    """One measured drain: its ratios, and ms of connector CPU per command by thread."""
    with snapshotting(bench, site) as taken:
        row = bench._drain_once(n, seed=seed, profile=False)
    # the snapshots of the drain's window: the last pair (the raw sides use accounting too)
    before, after = taken[-4], taken[-3]
    out: dict[str, float] = {
        "ratio": row.beside_ratio("cost") or float("nan"),
        "rate": row.beside_ratio("rate", "ldap_raw") or float("nan"),
        "connector": row.cpu_ms_per_op.get("connector", 0.0),
        "slapd": row.cpu_ms_per_op.get("slapd", 0.0),
        "raw": row.beside.get("cost") or float("nan"),
    }
    out.update(_split(site, before, after, n))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME=VAR=VALUE[,VAR=VALUE]: environment for the connector (repeatable)",
    )
    p.add_argument("--tree", action="append", default=[], help="NAME=PATH: another checkout")
    p.add_argument("--point", default="drain", help="drain, or form@C (C clients)")
    p.add_argument(
        "--seconds", type=float, default=6.0, help="a form point's (its baselines: 3 s a side)"
    )
    own = p.parse_args()
    variants: dict[str, dict[str, str]] = {"shipped": {}}
    roots: dict[str, Path] = {}
    for spec in own.variant:
        name, _, env = spec.partition("=")
        variants[name] = dict(kv.split("=", 1) for kv in env.split(",") if kv)
    for spec in own.tree:
        name, _, path = spec.partition("=")
        roots[name] = Path(path).resolve()
        variants[name] = {"PYTHONPATH": str(roots[name])}
    args = parse_args(["--seconds", str(own.seconds)])
    workdir = Path(tempfile.mkdtemp(prefix="connector-draincost-"))
    site = Site(workdir, workers=2, threads=8, log_level="info")
    bench = Bench(args, site)
    results: dict[str, list[dict[str, float]]] = {}
    try:
        site.start_all()
        assert site.slapd is not None
        bench.admin = site.slapd.admin()
        for rep in range(own.repeats):
            for name, env in variants.items():
                site.stop_connector()
                site.launch_connector(env, root=roots.get(name))
                if own.point == "drain":
                    drain(bench, site, 400, seed=90 + rep)  # warm: connections, caches
                    got = drain(bench, site, own.n, seed=10 + rep)
                else:
                    clients = int(own.point.partition("@")[2] or 4)
                    run_clients(bench.form_setup(site.directory.users, 3), clients, 2.0)  # warm
                    got = form_point(bench, site, clients, seed=5 + rep)
                results.setdefault(name, []).append(got)
                print(
                    f"{name:20s} "
                    + " ".join(f"{k}={v:.3f}" for k, v in got.items() if abs(v) >= 0.0005),
                    flush=True,
                )
    finally:
        site.stop()
    what = f"drains of {own.n}" if own.point == "drain" else f"{own.point} points"
    print(f"\nmedians of {own.repeats} {what}, ms per operation (ratio: the bench's)")
    for name, rows in results.items():
        keys = sorted({k for r in rows for k in r})
        cells = " ".join(f"{k}={statistics.median(r.get(k, 0.0) for r in rows):.3f}" for k in keys)
        print(f"  {name:20s} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
