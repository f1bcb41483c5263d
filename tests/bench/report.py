"""The benchmark's table: rows, ratios against the baselines of the same run, the targets of
issue 12 (met / missed), a text table, JSON and (with matplotlib) a PNG chart."""

from __future__ import annotations

import dataclasses
from typing import Any

from loadgen import Point, pct

#: ratio -> (what it is measured against, target rate ratio or None). The Apache peers and the
#: lean reference (not the product) are shown for comparison; issue 12's targets are CPU
#: budgets against the work itself (see :meth:`Table._targets`).
RATIOS: dict[str, list[tuple[str, float | None]]] = {
    "channel": [("ldap_raw", None)],
    "channel_drain": [("ldap_raw", 0.5)],
    "form": [("ldap_raw", None), ("http_health", None), ("lean_form", None)],
    "form_nested": [("apache_ldap", None), ("ldap_raw_nested", None)],
    "lean_form": [("ldap_raw", None), ("http_health", None)],
    "apache_ldap": [("ldap_raw_nested", None)],
    "negotiate": [("apache_gssapi", None), ("gssapi_raw", None), ("acceptor_raw", None)],
    "acceptor_raw": [("gssapi_raw", None)],
    "apache_gssapi": [("gssapi_raw", None)],
    "negotiate_ad_pac": [("negotiate_ad_ldap", None)],  # Samba AD: PAC groups vs LDAP groups
}
#: issue 12: CPU per sign-in over the work it must do (CPU ms/op, same run, same clients)
CPU_BUDGETS: dict[str, tuple[tuple[str, ...], float]] = {
    "form": (("http_health", "ldap_raw"), 2.0),
    "negotiate": (("http_health", "gssapi_raw", "ldap_raw_lookup"), 2.0),
    "lean_form": (("http_health", "ldap_raw"), 0.0),  # the stack's own limit: shown, no target
}
#: issue 12: connector CPU per drained channel command over raw validate's (4 clients)
DRAIN_CPU_OVER_RAW = 1.5
#: issue 12: the hub's CPU per browser sign-in (a real hub serves many connectors)
DEVHUB_MS_PER_SIGNIN = 1.0
#: issue 12: form sign-in p50 at 1 client over (GET /health p50 + raw validate p50)
FORM_P50_OVER_WORK = 2.0
P99_OVER_P50 = 3.0
#: baselines run inside the client process: their client CPU is the work itself
IN_PROCESS = frozenset(
    {"ldap_raw", "ldap_raw_nested", "ldap_raw_lookup", "gssapi_raw", "acceptor_raw"}
)
RSS_LIMIT_MB = 80.0


@dataclasses.dataclass
class Row:
    """One measured point."""

    name: str
    kind: str
    clients: int
    ok: int
    errors: int
    seconds: float
    rate: float
    p50_ms: float | None
    p99_ms: float | None
    ldap_ops_per_op: float | None
    ldap_ops: dict[str, int]
    cpu_ms_per_op: dict[str, float]
    client_cpu_ms_per_op: float | None
    load: float
    first_error: str = ""
    ratios: dict[str, float] = dataclasses.field(default_factory=dict)
    #: the devhub's event counters over the point (relay requests, callbacks that waited for
    #: their relay, ...) where the point involves the devhub: how the relay behaved
    hub_events: dict[str, int] = dataclasses.field(default_factory=dict)
    #: baselines measured just before and just after this point rather than elsewhere in the
    #: run (a drained backlog's raw validate; a CPU budget's): ``kinds``, each one's rate and
    #: cost (the mean of the two sides'), ``cost``, their sum, and ``sides``, that sum before
    #: and after (see ``Bench.beside`` and :func:`both_sides`)
    beside: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_point(
        cls,
        name: str,
        kind: str,
        clients: int,
        point: Point,
        acct: dict[str, Any],
        parts: tuple[str, ...],
    ) -> Row:
        n = point.ok or 1
        p50, p99 = pct(point.latencies, 0.5), pct(point.latencies, 0.99)
        ops = acct.get("ldap_ops", {})
        cpu = acct.get("cpu", {})
        return cls(
            name=name,
            kind=kind,
            clients=clients,
            ok=point.ok,
            errors=point.errors,
            seconds=round(point.elapsed, 2),
            rate=round(point.rate, 1),
            p50_ms=None if p50 is None else round(p50 * 1000, 2),
            p99_ms=None if p99 is None else round(p99 * 1000, 2),
            ldap_ops_per_op=round(sum(ops.values()) / n, 2) if point.ok else None,
            ldap_ops=ops,
            cpu_ms_per_op={k: round(v * 1000 / n, 3) for k, v in cpu.items() if v > 0.005},
            client_cpu_ms_per_op=round(point.client_cpu * 1000 / n, 3) if point.ok else None,
            load=round(acct.get("load", 0.0), 2),
            first_error=point.first_error,
        )

    @staticmethod
    def header() -> str:
        return (
            f"{'what':<62} {'c':>2} {'ops/s':>8} {'err':>4} {'p50 ms':>7} {'p99 ms':>7} "
            f"{'p99/50':>6} {'LDAP/op':>7} {'srv CPU ms/op':>13} {'load':>5}"
        )

    def server_cpu(self) -> float:
        return sum(self.cpu_ms_per_op.values())

    def cost(self) -> float | None:
        """CPU ms per operation on the connector's side of the wire: every process but the hub
        (in production it runs elsewhere) and the load generator (except for the in-process
        baselines, whose client is the work)."""
        if not self.ok:
            return None
        total = sum(v for k, v in self.cpu_ms_per_op.items() if k != "devhub")
        if self.kind in IN_PROCESS:
            total += self.client_cpu_ms_per_op or 0.0
        return total

    def beside_ratio(self, what: str, kind: str = "") -> float | None:
        """This point's ``cost`` over its baselines' measured around it, or its ``rate`` over
        the one of ``kind``."""
        if what == "cost":
            mine, theirs = self.cost(), self.beside.get("cost")
        else:
            mine, theirs = self.rate, self.beside.get("kinds", {}).get(kind, {}).get("rate")
        return round(mine / theirs, 3) if mine and theirs else None

    def beside_p50_ratio(self, kinds: tuple[str, ...]) -> float | None:
        """This point's p50 over the sum of ``kinds``' p50s measured around it (None when a
        side did not record them: runs before stop 25)."""
        measured = self.beside.get("kinds", {})
        theirs = [measured.get(kind, {}).get("p50") for kind in kinds]
        if not self.p50_ms or not all(theirs):
            return None
        return round(self.p50_ms / sum(theirs), 3)

    def where(self) -> str:
        """Where this point's baselines were measured: ``around`` it (both sides), or only
        ``before`` it (runs before stop 23, or one side missing)."""
        return "around" if len(self.beside.get("sides", ())) == 2 else "before"

    def line(self) -> str:
        def f(v: float | None, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)

        tail = self.p99_ms / self.p50_ms if self.p50_ms and self.p99_ms else None
        return (
            f"{self.name[:62]:<62} {self.clients:>2} {self.rate:>8.0f} {self.errors:>4} "
            f"{f(self.p50_ms, '.2f'):>7} {f(self.p99_ms, '.2f'):>7} {f(tail, '.1f'):>6} "
            f"{f(self.ldap_ops_per_op, '.1f'):>7} {self.server_cpu():>13.2f} {self.load:>5.2f}"
        )


def both_sides(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """A point's baselines measured just before it and just after it (each in the shape of
    ``Bench.beside``) as one: each kind's rate, cost and p50 the mean of its two sides' (a
    drift of the host's speed across the point cancels, as far as it is steady), ``sides`` the
    sums of costs before and after. One side alone (the other not measured) is returned as it is."""
    if not before or not after:
        return before or after
    kinds: dict[str, dict[str, Any]] = {}
    for kind, first in before["kinds"].items():
        second = after["kinds"].get(kind, {})
        kinds[kind] = {k: _mean(first.get(k), second.get(k)) for k in ("rate", "cost", "p50")}
    costs = [k["cost"] for k in kinds.values()]
    return {
        "kinds": kinds,
        "cost": sum(costs) if all(costs) else None,
        "sides": [before.get("cost"), after.get("cost")],
    }


def _mean(a: float | None, b: float | None) -> float | None:
    return (a + b) / 2 if a and b else None


class Table:
    """The rows of one run, then the ratios, targets and the outputs."""

    def __init__(self) -> None:
        self.rows: list[Row] = []

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> tuple[Table, dict[str, Any]]:
        """The table and the details of a saved run (``--json``), to render them again."""
        table = cls()
        fields = {f.name for f in dataclasses.fields(Row)}
        for raw in data.get("rows", []):
            table.add(Row(**{k: v for k, v in raw.items() if k in fields}))
        details = {k: v for k, v in data.items() if k not in ("rows", "ratios", "targets")}
        return table, details

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def find(self, kind: str, clients: int) -> Row | None:
        for row in self.rows:
            if row.kind == kind and row.clients == clients:
                return row
        return None

    def _ratios(self) -> list[dict[str, Any]]:
        out = []
        for row in self.rows:
            for base_kind, target in RATIOS.get(row.kind, []):
                clients = 4 if row.kind == "channel_drain" else row.clients
                base = self.find(base_kind, clients)
                # a target is read against the baselines measured around the point, if any
                beside = row.beside.get("kinds", {}).get(base_kind) if target else None
                base_rate = beside["rate"] if beside else base.rate if base else None
                if not base_rate:
                    continue
                ratio = row.rate / base_rate
                row.ratios[f"{base_kind}@{clients}"] = round(ratio, 3)
                mine = row.cost()
                theirs = beside["cost"] if beside else base.cost() if base else None
                cpu_ratio = theirs / mine if mine and theirs else None
                out.append(
                    {
                        "what": row.kind,
                        "clients": row.clients,
                        "vs": base_kind,
                        "vs_clients": clients,
                        "rate": row.rate,
                        "vs_rate": base_rate,
                        "vs_beside": beside is not None,
                        "vs_where": row.where(),
                        "ratio": round(ratio, 3),
                        "cpu_ms": None if mine is None else round(mine, 3),
                        "vs_cpu_ms": None if theirs is None else round(theirs, 3),
                        "cpu_ratio": None if cpu_ratio is None else round(cpu_ratio, 3),
                        "target": target,
                        "met": None if target is None else ratio >= target,
                    }
                )
        return out

    def _targets(
        self, ratios: list[dict[str, Any]], details: dict[str, Any]
    ) -> list[dict[str, Any]]:
        targets = [
            {
                "target": f"{r['what']}@{r['clients']} rate >= {r['target']} x "
                f"{r['vs']}@{r['vs_clients']}"
                + (f" ({r['vs_where']} the drain)" if r.get("vs_beside") else ""),
                "value": r["ratio"],
                "met": r["met"],
            }
            for r in ratios
            if r["target"] is not None
        ]
        targets += self._cpu_targets()
        for row in self.rows:
            if row.clients == 4 and row.kind in ("channel", "form", "negotiate", "form_nested"):
                if row.p50_ms and row.p99_ms:
                    tail = row.p99_ms / row.p50_ms
                    targets.append(
                        {
                            "target": f"{row.kind}@4 p99 <= {P99_OVER_P50:g} x p50",
                            "value": round(tail, 2),
                            "met": tail <= P99_OVER_P50,
                        }
                    )
        for when in ("rss_after_warmup_mb", "rss_after_run_mb"):
            for pid, mb in (details.get(when) or {}).items():
                if mb is not None:
                    targets.append(
                        {
                            "target": f"worker {pid} RSS ({when}) <= {RSS_LIMIT_MB:g} MB",
                            "value": mb,
                            "met": mb <= RSS_LIMIT_MB,
                        }
                    )
        for strategy, r in (details.get("groups") or {}).items():
            if "warm" not in r:
                continue
            targets.append(
                {
                    "target": f"warm cache ({strategy} walk): no group queries",
                    "value": r["warm"]["group_queries"],
                    "met": r["warm"]["group_queries"] == 0,
                }
            )
        for row in self.rows:
            if row.errors:
                targets.append(
                    {
                        "target": f"{row.kind}@{row.clients}: no errors",
                        "value": row.errors,
                        "met": False,
                    }
                )
        return targets

    def _cpu_targets(self) -> list[dict[str, Any]]:
        """Issue 12's budgets: CPU per sign-in against the work itself, the drained channel's
        CPU per command, the hub's CPU per browser sign-in, the form's p50 at 1 client."""

        def target(text: str, value: float | None, limit: float | None) -> dict[str, Any]:
            met = None if value is None or limit is None else value <= limit
            return {"target": text, "value": None if value is None else round(value, 3), "met": met}

        out = []
        for kind, (bases, limit) in CPU_BUDGETS.items():
            for clients in (1, 4):
                row = self.find(kind, clients)
                if row is None:
                    continue
                costs = [self.find(b, clients) for b in bases]
                mine = row.cost()
                work = [b.cost() for b in costs if b is not None]
                ok = mine is not None and len(work) == len(bases) and all(work)
                value = mine / sum(w for w in work if w) if ok and mine is not None else None
                names = " + ".join(bases)
                if limit and row.beside.get("cost"):
                    # the budget against its baselines measured around the point; the run's
                    # own baselines (minutes earlier) shown beside it, without a target
                    out.append(
                        target(
                            f"{kind}@{clients} CPU <= {limit:g} x ({names}) "
                            f"({row.where()} the point)",
                            row.beside_ratio("cost"),
                            limit,
                        )
                    )
                    out.append(
                        target(
                            f"{kind}@{clients} CPU / ({names}) (the run's baselines)", value, None
                        )
                    )
                elif limit:
                    out.append(
                        target(f"{kind}@{clients} CPU <= {limit:g} x ({names})", value, limit)
                    )
                else:
                    out.append(target(f"{kind}@{clients} CPU / ({names}) (reference)", value, None))
        drain, raw = self.find("channel_drain", self.drain_clients()), self.find("ldap_raw", 4)
        if drain is not None:
            if drain.beside.get("cost"):
                value, where = drain.beside_ratio("cost"), f" ({drain.where()} the drain)"
            else:
                mine, theirs = drain.cost(), raw.cost() if raw is not None else None
                value, where = (mine / theirs if mine and theirs else None), ""
            out.append(
                target(
                    f"channel_drain CPU/command <= {DRAIN_CPU_OVER_RAW:g} x ldap_raw@4{where}",
                    value,
                    DRAIN_CPU_OVER_RAW,
                )
            )
        for kind in ("form", "form_nested", "negotiate"):
            for clients in (1, 4):
                row = self.find(kind, clients)
                if row is not None and row.ok:
                    hub = row.cpu_ms_per_op.get("devhub", 0.0)
                    out.append(
                        target(
                            f"{kind}@{clients} devhub CPU ms per sign-in <= "
                            f"{DEVHUB_MS_PER_SIGNIN:g}",
                            hub,
                            DEVHUB_MS_PER_SIGNIN,
                        )
                    )
        form, health, raw1 = (
            self.find("form", 1),
            self.find("http_health", 1),
            self.find("ldap_raw", 1),
        )
        if form is not None:
            h50 = health.p50_ms if health else None
            r50 = raw1.p50_ms if raw1 else None
            value = form.p50_ms / (h50 + r50) if form.p50_ms and h50 and r50 else None
            names = "http_health@1 p50 + ldap_raw@1 p50"
            label = f"form@1 p50 <= {FORM_P50_OVER_WORK:g} x ({names})"
            around = form.beside_p50_ratio(("http_health", "ldap_raw"))
            if around is None:
                out.append(target(label, value, FORM_P50_OVER_WORK))
            else:
                # as the CPU budgets: against the baselines' p50 measured around the point,
                # the run's own (minutes earlier) shown beside it, without a target
                text = f"{label} ({form.where()} the point)"
                out.append(target(text, around, FORM_P50_OVER_WORK))
                out.append(target(f"form@1 p50 / ({names}) (the run's baselines)", value, None))
        return out

    def drain_clients(self) -> int:
        """The drained backlog's row is filed under the agents' window, not a client count."""
        for row in self.rows:
            if row.kind == "channel_drain":
                return row.clients
        return 0

    def finish(self, details: dict[str, Any]) -> dict[str, Any]:
        ratios = self._ratios()
        targets = self._targets(ratios, details)
        lines = ["", "=" * 120, Row.header(), "-" * 120]
        lines += [r.line() for r in self.rows]
        lines += [
            "",
            "ratios (same run): rate ratio; CPU ratio = baseline CPU ms/op over ours (hub and "
            "load generator excluded)",
        ]
        for r in ratios:
            mark = "" if r["target"] is None else ("  ok" if r["met"] else "  MISSED")
            tgt = "" if r["target"] is None else f" (target >= {r['target']})"
            cpu = (
                f"; CPU {r['vs_cpu_ms']:.2f} / {r['cpu_ms']:.2f} ms = {r['cpu_ratio']:.2f}"
                if r["cpu_ratio"] is not None
                else ""
            )
            where = f" {r['vs_where']}" if r.get("vs_beside") else ""
            lines.append(
                f"  {r['what']}@{r['clients']} / {r['vs']}@{r['vs_clients']}{where}: "
                f"{r['ratio']:.2f}{tgt}{mark}{cpu}"
            )
        lines += ["", "CPU ms per operation, by process (same run):"]
        for row in self.rows:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in row.cpu_ms_per_op.items())
            hub = f"; hub events {row.hub_events}" if row.hub_events else ""
            lines.append(
                f"  {row.kind}@{row.clients}: {parts or '-'}; client {row.client_cpu_ms_per_op}"
                f"; LDAP ops {row.ldap_ops}{hub}"
            )
        lines += [
            "",
            "targets (issue 12; met / MISSED; '-': a baseline is missing or a reference):",
        ]
        for t in targets:
            mark = {True: "met   ", False: "MISSED", None: "-     "}[t["met"]]
            lines.append(f"  {mark} {t['target']}: {t['value']}")
        env0, env1 = details.get("environment_before", {}), details.get("environment_after", {})
        lines += [
            "",
            f"start-up: {details.get('startup')}",
            f"RSS per worker MB: after warm-up {details.get('rss_after_warmup_mb')}, "
            f"after the run {details.get('rss_after_run_mb')} (PSS: "
            f"{details.get('pss_after_warmup_mb')}, {details.get('pss_after_run_mb')})",
            f"groups of the 200-group user: {details.get('groups')}",
            f"channel batching: {details.get('channel_batches')}",
            f"machine: {env0.get('cpus')} CPUs; load average before {env0.get('loadavg')}, "
            f"after {env1.get('loadavg')} (shared machine: compare ratios, not absolutes)",
        ]
        data = {
            "rows": [dataclasses.asdict(r) for r in self.rows],
            "ratios": ratios,
            "targets": targets,
            **details,
        }
        self.data = data
        return {"text": "\n".join(lines), "json": data}

    def png(self, path: str) -> str:
        """Draw the ratios (with their targets) and the rates; a message either way."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return "bench: matplotlib is not installed; no PNG (pip install matplotlib)"
        ratios = self.data["ratios"]
        fig, (ax1, ax2) = plt.subplots(
            1,
            2,
            figsize=(15, max(4.0, 0.38 * max(len(ratios), len(self.rows)))),
            gridspec_kw={"width_ratios": [1, 1]},
        )
        labels = [f"{r['what']}@{r['clients']} / {r['vs']}" for r in ratios]
        values = [r["ratio"] for r in ratios]
        colors = [
            "tab:gray" if r["met"] is None else ("tab:green" if r["met"] else "tab:red")
            for r in ratios
        ]
        ax1.barh(labels, values, color=colors)
        for i, r in enumerate(ratios):
            if r["target"] is not None:
                ax1.plot([r["target"]] * 2, [i - 0.4, i + 0.4], color="black", linewidth=2)
        ax1.invert_yaxis()
        ax1.set_xlabel("ratio (same run); black tick = target")
        ax1.set_title("Ratios against baselines")
        rows = self.rows
        ax2.barh([f"{r.kind}@{r.clients}" for r in rows], [r.rate for r in rows], color="tab:blue")
        ax2.invert_yaxis()
        ax2.set_xscale("log")
        ax2.set_xlabel("operations per second (log)")
        ax2.set_title("Rates")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return f"bench: chart written to {path}"
