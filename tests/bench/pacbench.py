"""The Negotiate sign-in with groups from the Kerberos PAC beside the same sign-in with LDAP
groups, on Samba AD (``run_bench.py --only negotiate_pac``).

Starts a Samba AD DC (``tests/servers.py``'s fixture code: its KDC issues tickets with a PAC)
and, in turn, the connector with ``GROUPS_SOURCE=ldap`` and with ``GROUPS_SOURCE=pac`` from one
state directory (set up from the run's devhub), both with ``GROUPS_CACHE_SECONDS=0`` so that
the LDAP connector asks for the groups at every sign-in, as the main bench's baseline does.
Each is warmed up first (the PAC one's SID cache holds every group SID then), checked (both
name dave's groups alike), and measured at 1 and 4 clients: CPU per sign-in of the connector
and of Samba (its LDAP server and KDC are one process tree), and the group queries the
workers sent (their status files' ``group_cache.queries``; a warm SID cache sends none).
"""

from __future__ import annotations

import base64
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests

HERE = Path(__file__).resolve().parent
if str(HERE.parent / "e2e") not in sys.path:
    sys.path.insert(0, str(HERE.parent / "e2e"))

import baselines  # noqa: E402
from configs import ad_config  # noqa: E402
from connector_proc import setup_config  # noqa: E402
from kerberos_clients import kinit  # noqa: E402
from loadgen import children, cpu_seconds, run_clients  # noqa: E402
from report import Row  # noqa: E402
from servers import SambaAD  # noqa: E402
from sites import WCTX, Site  # noqa: E402

from connector.metrics import read_statuses  # noqa: E402

#: the AD users whose tickets sign in (each in its own ccache), and the one checked
SIGNERS = ("alice", "bob", "carol", "dave")
CHECKED = "dave"
SOURCES = ("ldap", "pac")
CONCURRENCY = (1, 4)
WARMUP_SIGNINS = 60  # per source: spread over the workers, every worker's SID cache warm


def _tree(pid: int) -> list[int]:
    """``pid`` and every process below it (Samba forks its services and their workers)."""
    out, todo = [], [pid]
    while todo:
        here = todo.pop()
        out.append(here)
        todo.extend(children(here))
    return out


class NegotiatePac:
    """One ``negotiate_pac`` run on the bench's site (its hub; its own Samba and connector)."""

    def __init__(self, bench: Any, site: Site) -> None:
        self.bench = bench
        self.site = site
        self.seconds: float = bench.args.seconds
        self.workdir = site.workdir / "negotiate-pac"
        self.state_dir = self.workdir / "connector"
        self.samba: SambaAD | None = None
        self.ccaches: list[str] = []

    # ---- the world ---------------------------------------------------------------------

    def start(self) -> None:
        """Samba AD (tracked by the site: stopped with everything else), TGTs, the config."""
        t = time.monotonic()
        self.samba = SambaAD(self.workdir / "samba")
        self.site._track(self.samba)
        self.samba.start()
        self.site.timings["samba_start_s"] = time.monotonic() - t
        for user in SIGNERS:
            principal = f"{user}@{self.samba.realm}"
            cc = kinit(self.samba.krb5_conf, principal, self.samba.users[user], self.workdir / user)
            self.ccaches.append(cc)
        if self.site.hub is None:
            self.site.start_hub()
        assert self.site.hub is not None
        setup_config(
            self.state_dir,
            ad_config(self.samba, GROUPS_CACHE_SECONDS=0, LDAP_SEARCH_LIMIT=100),
            self.site.hub.ticket_url,
            POLL_WAIT_SECONDS=5,
            KERBEROS_KEYTAB=self.samba.keytab,
            KERBEROS_REALMS=[self.samba.realm],
            KERBEROS_SERVICE_PRINCIPAL="HTTP/localhost",
        )

    def launch(self, source: str) -> None:
        assert self.samba is not None
        self.site.stop_connector()
        self.site.launch_connector(
            {"GROUPS_SOURCE": source}, state_dir=self.state_dir, krb5_conf=self.samba.krb5_conf
        )

    def tokens(self, n: int, users: tuple[str, ...] = SIGNERS) -> list[bytes]:
        """``n`` fresh SPNEGO tokens for ``HTTP/localhost`` from Samba's KDC (not timed)."""
        assert self.samba is not None
        ccaches = [cc for user, cc in zip(SIGNERS, self.ccaches, strict=True) if user in users]
        made, _ = baselines.make_tokens(n, ccaches, self.samba.krb5_conf)
        return made

    # ---- what is measured --------------------------------------------------------------

    def group_queries(self, after: float) -> int:
        """The group queries every worker has sent, from statuses written after ``after``."""
        assert self.site.connector is not None
        workers = set(self.site.worker_pids())
        deadline = time.monotonic() + 15
        while True:
            found = {
                s["pid"]: s for s in read_statuses(self.state_dir / "run") if s["updated"] > after
            }
            if workers <= set(found) or time.monotonic() > deadline:
                return sum(
                    int((s.get("group_cache") or {}).get("queries", 0)) for s in found.values()
                )
            time.sleep(0.2)

    @contextlib.contextmanager
    def accounting(self) -> Iterator[dict[str, Any]]:
        """CPU seconds of the connector, Samba and the hub while the block runs."""
        assert self.samba is not None and self.samba.pid is not None
        pids = self.site.server_pids()
        pids["samba"] = _tree(self.samba.pid)
        pids = {k: v for k, v in pids.items() if k in ("connector", "devhub", "samba")}
        before = {part: sum(cpu_seconds(p) for p in ps) for part, ps in pids.items()}
        out: dict[str, Any] = {"load": os.getloadavg()[0]}
        yield out
        out["cpu"] = {
            part: sum(cpu_seconds(p) for p in ps) - before[part] for part, ps in pids.items()
        }

    def check(self, source: str) -> list[str]:
        """One sign-in of ``CHECKED`` followed to the hub: the groups of its profile."""
        assert self.site.connector is not None
        (token,) = self.tokens(1, (CHECKED,))
        url = f"http://localhost:{self.site.connector.port}/wsfed?" + urlencode(
            {"wtrealm": "urn:acme", "wctx": WCTX}
        )
        answer = requests.get(
            url,
            headers={"Authorization": f"Negotiate {base64.b64encode(token).decode()}"},
            allow_redirects=False,
            timeout=30,
        )
        if answer.status_code != 303:
            raise RuntimeError(f"{source}: Negotiate sign-in answered {answer.status_code}")
        location = answer.headers["Location"]
        if urlsplit(location).netloc != urlsplit(self.site.hub.ad_hub).netloc:  # type: ignore[union-attr]
            raise RuntimeError(f"{source}: 303 to {location!r}, not to the hub")
        page = requests.get(location, headers={"Accept": "application/json"}, timeout=30)
        page.raise_for_status()
        return sorted(page.json()["profile"]["groups"])

    def run(self) -> dict[str, Any]:
        """Both sources, warmed and checked, at 1 and 4 clients; the comparison printed."""
        self.start()
        print(Row.header(), flush=True)
        bench = self.bench
        cap = bench.args.max_tokens
        query = urlencode({"wtrealm": "urn:acme", "wctx": WCTX})
        out: dict[str, Any] = {"groups": {}, "points": {}}
        for source in SOURCES:
            self.launch(source)
            assert self.site.connector is not None
            port = self.site.connector.port
            warm = self.tokens(WARMUP_SIGNINS)
            run_clients(bench.negotiate_setup(port, f"/wsfed?{query}", warm, 2), 2, 30)
            out["groups"][source] = self.check(source)
            for c in CONCURRENCY:
                tokens = self.tokens(min(cap, max(400, int(300 * self.seconds * c))))
                q0 = self.group_queries(time.time())
                with self.accounting() as acct:
                    point = run_clients(
                        bench.negotiate_setup(port, f"/wsfed?{query}", tokens, c),
                        c,
                        self.seconds,
                        limit=len(tokens),
                    )
                queries = self.group_queries(time.time()) - q0
                row = Row.from_point(
                    f"Negotiate sign-in, Samba AD, groups from {source.upper()}",
                    f"negotiate_ad_{source}",
                    c,
                    point,
                    acct,
                    ("connector", "devhub", "samba"),
                )
                bench.table.add(row)
                print(row.line(), flush=True)
                if point.first_error:
                    print(f"    first error: {point.first_error}", flush=True)
                out["points"][f"{source}@{c}"] = {
                    "signins": point.ok,
                    "rate": row.rate,
                    "connector_cpu_ms": row.cpu_ms_per_op.get("connector"),
                    "samba_cpu_ms": row.cpu_ms_per_op.get("samba"),
                    "group_queries_per_signin": round(queries / point.ok, 3) if point.ok else None,
                }
        self.site.stop_connector()
        if out["groups"]["ldap"] != out["groups"]["pac"]:
            raise RuntimeError(f"PAC and LDAP name {CHECKED}'s groups differently: {out['groups']}")
        print(self.comparison(out), flush=True)
        return out

    @staticmethod
    def comparison(out: dict[str, Any]) -> str:
        """The two sources side by side, per client count."""

        def f(v: float | None, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)

        lines = [
            f"  Negotiate on Samba AD, {CHECKED}'s groups {out['groups']['pac']} (both sources)",
            f"  {'':<4} {'':>2} {'sign-ins/s':>10} {'connector CPU ms':>16} "
            f"{'Samba CPU ms':>12} {'group queries':>13}  (per sign-in)",
        ]
        for c in CONCURRENCY:
            for source in SOURCES:
                p = out["points"][f"{source}@{c}"]
                cpu, samba = f(p["connector_cpu_ms"], ".2f"), f(p["samba_cpu_ms"], ".2f")
                queries = f(p["group_queries_per_signin"], ".2f")
                lines.append(
                    f"  {source:<4} {c:>2} {p['rate']:>10.0f} {cpu:>16} {samba:>12} {queries:>13}"
                )
        return "\n".join(lines)
