"""Prometheus metrics and per-worker status files, correct across gunicorn workers.

Every gunicorn worker is its own process, so counters kept in memory would each tell a part.
The gunicorn hooks (:mod:`connector.gunicorn_config`) give the workers a shared run directory
and set ``PROMETHEUS_MULTIPROC_DIR`` to ``<run>/metrics`` *before* the workers fork:
prometheus_client then keeps each worker's values in memory-mapped files there, ``/metrics``
adds them up (:func:`exposition`), and the master forgets a dead worker's live gauges
(``child_exit`` -> ``mark_process_dead``). Without that variable (the CLI, the Flask test
client) the same metrics live in this process only.

Each worker also writes its status (agent, LDAP servers, group cache, gunicorn limits) to
``<run>/status/worker-<pid>.json`` every few seconds; the console and ``connector check`` read
them all (:func:`read_statuses`).

Metrics (names as exported)::

    connector_logins_total{method,outcome}            form, kerberos, hub, console
    connector_login_seconds{method}                   histogram
    connector_commands_total{name,outcome}            commands from the hub, by result
    connector_command_seconds{name}                   histogram
    connector_hub_poll_seconds                        histogram: a poll's round trip (incl. hold)
    connector_hub_request_seconds{endpoint}           histogram: results, sessions
    connector_hub_errors_total{endpoint}              failed hub calls
    connector_hub_connected                           workers whose agent is connected
    connector_hub_clock_offset_seconds                hub clock minus ours (latest measurement)
    connector_ldap_server_up{server}                  1 up, 0 down (latest probe or failure)
    connector_group_cache_hits_total / _misses_total  group cache (ratio: hits / (hits+misses))
    connector_workers                                 live worker processes
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from connector.channel.vocabulary import COMMAND_NAMES

_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_POLL = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0)

LOGINS = Counter("connector_logins", "Authentications by method and outcome", ["method", "outcome"])
LOGIN_SECONDS = Histogram(
    "connector_login_seconds", "Time to answer an authentication", ["method"], buckets=_FAST
)
COMMANDS = Counter(
    "connector_commands", "Hub commands handled, by name and outcome", ["name", "outcome"]
)
COMMAND_SECONDS = Histogram(
    "connector_command_seconds", "Time to run a hub command", ["name"], buckets=_FAST
)
HUB_POLL_SECONDS = Histogram(
    "connector_hub_poll_seconds",
    "Round trip of a poll to the hub (includes the time the hub holds it)",
    buckets=_POLL,
)
HUB_REQUEST_SECONDS = Histogram(
    "connector_hub_request_seconds",
    "Round trip of other calls to the hub",
    ["endpoint"],
    buckets=_FAST,
)
HUB_ERRORS = Counter("connector_hub_errors", "Failed calls to the hub", ["endpoint"])
HUB_CONNECTED = Gauge(
    "connector_hub_connected",
    "Workers whose agent is connected to the hub",
    multiprocess_mode="livesum",
)
CLOCK_OFFSET = Gauge(
    "connector_hub_clock_offset_seconds",
    "The hub's clock minus this machine's, as last measured",
    multiprocess_mode="livemostrecent",
)
LDAP_UP = Gauge(
    "connector_ldap_server_up",
    "1 if the LDAP server answered its last probe or use, else 0",
    ["server"],
    multiprocess_mode="livemostrecent",
)
CACHE_HITS = Counter("connector_group_cache_hits", "Group lookups answered from the cache")
CACHE_MISSES = Counter("connector_group_cache_misses", "Group lookups sent to the directory")
WORKERS = Gauge("connector_workers", "Live worker processes", multiprocess_mode="livesum")


def multiprocess_mode() -> bool:
    """Whether values are shared through ``PROMETHEUS_MULTIPROC_DIR`` (under gunicorn)."""
    return values.ValueClass is not values.MutexValue


def _label(value: str | None, limit: int = 60) -> str:
    """A bounded label value (outcomes come from a fixed vocabulary; be safe anyway)."""
    text = value or "unknown"
    return text if len(text) <= limit else text[:limit]


# --- recording -------------------------------------------------------------------------------


class _Children:
    """One metric's labelled children, looked up by their raw label values once each.

    prometheus_client's ``labels()`` checks and converts its arguments and takes a lock on
    every call (about 1.7 µs, four times per hub command); the child it returns is the same
    object each time, so it is kept here. At most ``limit`` are kept (the values are bounded
    already; this bounds the memory of odd ones): past that, ``labels()`` as before.
    """

    def __init__(self, metric: Any, limit: int = 1000) -> None:
        self._metric = metric
        self._limit = limit
        self._known: dict[tuple[str | None, ...], Any] = {}

    def get(self, *values: str | None) -> Any:
        """The child for ``values``, each made a bounded label value (see :func:`_label`)."""
        child = self._known.get(values)
        if child is None:
            child = self._metric.labels(*(_label(v) for v in values))
            if len(self._known) < self._limit:
                self._known[values] = child
        return child


_LOGINS = _Children(LOGINS)
_LOGIN_SECONDS = _Children(LOGIN_SECONDS)
_COMMANDS = _Children(COMMANDS)
_COMMAND_SECONDS = _Children(COMMAND_SECONDS)
_HUB_REQUEST_SECONDS = _Children(HUB_REQUEST_SECONDS)
_HUB_ERRORS = _Children(HUB_ERRORS)


def login(method: str, outcome: str, seconds: float | None = None) -> None:
    """Count one authentication (every method, every outcome)."""
    _LOGINS.get(method, outcome).inc()
    if seconds is not None:
        _LOGIN_SECONDS.get(method).observe(seconds)


def command(name: str | None, outcome: str, seconds: float | None = None) -> None:
    """Count one hub command; names outside the protocol's vocabulary count as ``other``."""
    label = name if name in COMMAND_NAMES else "other"
    _COMMANDS.get(label, outcome).inc()
    if seconds is not None:
        _COMMAND_SECONDS.get(label).observe(seconds)


def hub_poll(seconds: float) -> None:
    """One successful poll's round trip."""
    HUB_POLL_SECONDS.observe(seconds)


def hub_request(endpoint: str, seconds: float) -> None:
    """One successful call to ``agent/<endpoint>``."""
    _HUB_REQUEST_SECONDS.get(endpoint).observe(seconds)


def hub_error(endpoint: str) -> None:
    """One failed call to ``agent/<endpoint>``."""
    _HUB_ERRORS.get(endpoint).inc()


def hub_state(connected: bool, clock_offset: float | None = None) -> None:
    """This worker's agent is (not) connected; the hub clock offset it measured."""
    HUB_CONNECTED.set(1 if connected else 0)
    if clock_offset is not None:
        CLOCK_OFFSET.set(clock_offset)


def ldap_server(url: str, up: bool) -> None:
    """The latest health seen for one LDAP server."""
    LDAP_UP.labels(_label(url, 200)).set(1 if up else 0)


def worker_alive() -> None:
    """Count this process among the live workers."""
    WORKERS.set(1)


class CacheCounter:
    """Turns the group cache's running totals into counter increments (called periodically)."""

    def __init__(self) -> None:
        self._hits = 0
        self._misses = 0

    def sync(self, hits: int, misses: int) -> None:
        """Add what the cache counted since the last call."""
        if hits > self._hits:
            CACHE_HITS.inc(hits - self._hits)
        if misses > self._misses:
            CACHE_MISSES.inc(misses - self._misses)
        self._hits, self._misses = max(hits, self._hits), max(misses, self._misses)


# --- reading ---------------------------------------------------------------------------------


def _registry() -> Any:
    if not multiprocess_mode():
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def exposition() -> tuple[bytes, str]:
    """The ``/metrics`` body (every worker's values added up) and its content type."""
    return generate_latest(_registry()), CONTENT_TYPE_LATEST


def samples(prefix: str = "connector_") -> dict[str, list[tuple[dict[str, str], float]]]:
    """Current samples by name (every worker's values added up), for the console."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in _registry().collect():
        for sample in family.samples:
            if sample.name.startswith(prefix):
                out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def totals(
    found: dict[str, list[tuple[dict[str, str], float]]], name: str, *by: str
) -> dict[tuple[str, ...], float]:
    """Sum the samples of ``name`` by the given labels."""
    out: dict[tuple[str, ...], float] = {}
    for labels, value in found.get(name, []):
        key = tuple(labels.get(b, "") for b in by)
        out[key] = out.get(key, 0.0) + value
    return out


# --- worker status files ---------------------------------------------------------------------


def status_dir(run_dir: Path) -> Path:
    """Where each worker writes its status."""
    return run_dir / "status"


def write_status(run_dir: Path, data: dict[str, Any]) -> None:
    """Write this worker's status atomically (temp file + rename).

    Raises:
        OSError: the run directory is not writable.
    """
    folder = status_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"worker-{os.getpid()}.json"
    tmp = folder / f".worker-{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, default=str), encoding="utf-8")
    os.replace(tmp, path)


def remove_status(run_dir: Path, pid: int) -> None:
    """Forget a worker's status (it exited)."""
    with contextlib.suppress(OSError):
        (status_dir(run_dir) / f"worker-{pid}.json").unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_statuses(run_dir: Path, max_age: float = 60.0) -> list[dict[str, Any]]:
    """The status of every live worker that reported in the last ``max_age`` seconds."""
    folder = status_dir(run_dir)
    out: list[dict[str, Any]] = []
    try:
        paths: Iterable[Path] = sorted(folder.glob("worker-*.json"))
    except OSError:
        return out
    now = time.time()
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        pid = data.get("pid") if isinstance(data, dict) else None
        if not isinstance(pid, int) or not _alive(pid):
            continue
        if now - float(data.get("updated") or 0) > max_age:
            continue
        out.append(data)
    return out


def mark_process_dead(pid: int) -> None:
    """Forget a dead worker's live gauges (gunicorn's ``child_exit`` hook)."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
