"""``/health`` (alive) and ``/ready`` (can do its job) for load balancers; ``/metrics``."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, jsonify
from flask.typing import ResponseReturnValue

from connector import errors, metrics
from connector.web import services

if TYPE_CHECKING:
    from connector.directory.service import Directory

bp = Blueprint("health", __name__)

#: How long one answer of the directory serves ``/ready`` (per worker): anybody may call it,
#: and a burst of calls must cost the directory one search, not one each.
READY_CACHE_SECONDS = 5.0


class Remembered:
    """The last result of a probe, reused for ``seconds``; one probe runs at a time."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._at = -math.inf
        self._value = ""

    def get(self, probe: Callable[[], str]) -> str:
        """The remembered result, or a fresh one if it is older than ``seconds``."""
        with self._lock:
            if time.monotonic() - self._at >= self.seconds:
                self._value = probe()
                self._at = time.monotonic()
            return self._value


def _directory_state(directory: Directory) -> str:
    """``ok``, or why the directory cannot be used (remembered, see READY_CACHE_SECONDS)."""

    def probe() -> str:
        try:
            directory.ping()
        except errors.ConnectorError as exc:
            return str(exc)
        return "ok"

    memo = current_app.extensions.setdefault("connector.ready", Remembered(READY_CACHE_SECONDS))
    return str(memo.get(probe))


@bp.get("/health")
def health() -> ResponseReturnValue:
    """Alive: the process answers."""
    return jsonify(status="ok")


@bp.get("/ready")
def ready() -> ResponseReturnValue:
    """Ready: the directory answers, and the agent (if set up) is connected to the hub."""
    svc = services(current_app)
    checks: dict[str, Any] = {}
    ok = True
    if svc.directory is None:
        checks["directory"] = "not configured"
        ok = False
    else:
        checks["directory"] = _directory_state(svc.directory)
        ok = checks["directory"] == "ok"
    if svc.agent is not None:
        status = svc.agent.status()
        checks["hub"] = "connected" if status["connected"] else (status["last_error"] or "down")
        ok = ok and bool(status["connected"])
        skew = abs(status["clock_offset_seconds"])
        checks["clock_offset_seconds"] = status["clock_offset_seconds"]
        if skew > svc.settings.clock_skew_warning_seconds:
            ok = False
    return jsonify(ready=ok, checks=checks), 200 if ok else 503


@bp.get("/metrics")
def prometheus() -> ResponseReturnValue:
    """Prometheus metrics of every worker, added up (see :mod:`connector.metrics`)."""
    services(current_app).sync_metrics()
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)
