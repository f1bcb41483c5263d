"""``/health`` (alive) and ``/ready`` (can do its job) for load balancers; ``/metrics``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from flask.typing import ResponseReturnValue

from connector import errors, metrics
from connector.web import services

bp = Blueprint("health", __name__)


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
        try:
            svc.directory.ping()
            checks["directory"] = "ok"
        except errors.ConnectorError as exc:
            checks["directory"] = str(exc)
            ok = False
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
