"""The status page's data: every worker's status file and metrics added up (no Flask here).

:func:`overview` gathers (this worker's status, the others' files, the metric samples, the
keytab); the functions it calls only summarise what they are given, so each can be tested
with plain dictionaries.
"""

from __future__ import annotations

import datetime
import socket
import time
from collections.abc import Iterable
from typing import Any

from connector import __version__, metrics
from connector.services import Services
from connector.settings import Settings
from connector.troubleshoot import keytab_principals
from connector.web.console.auth import password_kind

Samples = dict[str, list[tuple[dict[str, str], float]]]


def merge_workers(own: dict[str, Any], others: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every worker's status once, by pid (this worker's own, fresher, wins), in pid order."""
    workers = {w["pid"]: w for w in others}
    workers[own["pid"]] = own
    return sorted(workers.values(), key=lambda w: int(w["pid"]))


def _agent(worker: dict[str, Any]) -> dict[str, Any]:
    return worker.get("agent") or {}


def agents(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The agents' statuses (workers without one are left out)."""
    return [w["agent"] for w in rows if isinstance(w.get("agent"), dict)]


def latest_poll(found: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The agent that polled the hub last (None: none has polled)."""
    polled = [a for a in found if a.get("last_poll")]
    return max(polled, key=lambda a: a["last_poll"]) if polled else None


def hub_summary(s: Settings, found: list[dict[str, Any]]) -> dict[str, Any]:
    """The hub's configuration and how the agents see it."""
    connected = [a for a in found if a.get("connected")]
    latest = latest_poll(found)
    return {
        "configured": s.hub_configured,
        "ad_hub": s.ad_hub,
        "connection": s.connection,
        "realm": s.realm,
        "connected": bool(connected),
        "connected_workers": len(connected),
        "agents": len(found),
        "connected_since": min((a["connected_since"] for a in connected), default=None),
        "last_poll": latest.get("last_poll") if latest else None,
        "last_error": next((a["last_error"] for a in found if a.get("last_error")), None),
    }


def clock_summary(latest: dict[str, Any] | None, limit: float) -> dict[str, Any]:
    """The hub's clock offset at the latest poll, and whether it is within ``limit``."""
    offset = latest.get("clock_offset_seconds") if latest else None
    return {
        "offset_seconds": offset,
        "ok": offset is None or abs(float(offset)) <= limit,
        "limit": limit,
    }


def ldap_summary(urls: Iterable[str], rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each LDAP server: up unless a worker saw it down, the first error, the latest check."""
    ldap: dict[str, dict[str, Any]] = {}
    for url in urls:
        views = [
            w["ldap"][url] for w in rows if isinstance(w.get("ldap"), dict) and url in w["ldap"]
        ]
        down = [v for v in views if not v.get("up")]
        checked = [v["checked"] for v in views if v.get("checked")]
        ldap[url] = {
            "up": not down,
            "error": down[0].get("error") if down else None,
            "checked": max(checked) if checked else None,
        }
    return ldap


def cache_summary(found: Samples) -> dict[str, Any]:
    """The group cache's hits, misses and hit ratio (None before any lookup)."""
    hits = sum(v for _, v in found.get("connector_group_cache_hits_total", []))
    misses = sum(v for _, v in found.get("connector_group_cache_misses_total", []))
    return {
        "hits": int(hits),
        "misses": int(misses),
        "ratio": round(hits / (hits + misses), 3) if hits + misses else None,
    }


def counts(found: Samples) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Commands by outcome, and logins by method and outcome."""
    commands = metrics.totals(found, "connector_commands_total", "outcome")
    logins = metrics.totals(found, "connector_logins_total", "method", "outcome")
    return (
        {k[0]: int(v) for k, v in sorted(commands.items())},
        [{"method": k[0], "outcome": k[1], "count": int(v)} for k, v in sorted(logins.items())],
    )


def worker_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per worker for the table."""
    return [
        {
            "pid": w["pid"],
            "started": w.get("started"),
            "connected": bool(_agent(w).get("connected")),
            "last_poll": _agent(w).get("last_poll"),
            "outcomes": _agent(w).get("outcomes", {}),
            "inflight": _agent(w).get("inflight", 0),
        }
        for w in rows
    ]


def kerberos_summary(s: Settings) -> dict[str, Any] | None:
    """The keytab and its principals (None: Kerberos is not set up)."""
    if not (s.kerberos_auth or s.kerberos_keytab):
        return None
    principals, problem = keytab_principals(s)
    return {"keytab": s.kerberos_keytab, "principals": principals, "problem": problem}


def overview(svc: Services) -> dict[str, Any]:
    """Everything the status page shows, from every worker (status files and metrics)."""
    s = svc.settings
    svc.sync_metrics()
    rows = merge_workers(svc.status(), metrics.read_statuses(s.run_dir))
    found = agents(rows)
    sampled = metrics.samples()
    commands, logins = counts(sampled)
    return {
        "version": __version__,
        "host": socket.gethostname(),
        "config_path": s.config_path,
        "run_dir": str(s.run_dir),
        "hub": hub_summary(s, found),
        "clock": clock_summary(latest_poll(found), s.clock_skew_warning_seconds),
        "commands": commands,
        "logins": logins,
        "group_cache": cache_summary(sampled),
        "ldap": ldap_summary(s.ldap_urls, rows),
        "directory_problems": s.directory_problems(),
        "kerberos": kerberos_summary(s),
        "workers": worker_rows(rows),
        "env_keys": [k for k in s.env_keys if k != "RUN_DIR"],  # RUN_DIR: set by the master
        "ignored_keys": list(s.ignored_keys),
        "console_password": password_kind(s),
    }


def when(ts: Any, now: float | None = None) -> str:
    """A timestamp as local time and how long ago (``never`` for none)."""
    if not isinstance(ts, int | float) or not ts:
        return "never"
    stamp = datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
    ago = max(0, int((time.time() if now is None else now) - ts))
    if ago < 120:
        return f"{stamp} ({ago} s ago)"
    if ago < 7200:
        return f"{stamp} ({ago // 60} min ago)"
    return f"{stamp} ({ago // 3600} h ago)"
