"""Status (page and JSON), the troubleshooter and the recent logs."""

from __future__ import annotations

from flask import current_app, jsonify, request
from flask.typing import ResponseReturnValue

from connector.logs import LEVELS, read_recent
from connector.troubleshoot import run_checks
from connector.web import services
from connector.web.console.pages import bp, fresh_settings, page
from connector.web.console.status import overview


@bp.get("/")
def status() -> ResponseReturnValue:
    """Is it working? Hub, LDAP servers, clock, commands, keytab, version."""
    return page("console/status.html", o=overview(services(current_app)))


@bp.get("/status.json")
def status_json() -> ResponseReturnValue:
    """The status page's data as JSON (for scripts on this machine)."""
    return jsonify(overview(services(current_app)))


@bp.get("/check")
def check() -> ResponseReturnValue:
    """Run every check of ``connector check`` and show what to fix."""
    svc = services(current_app)
    user = request.args.get("user", "").strip()[:256] or None
    report = None
    if request.args.get("run"):
        report = run_checks(fresh_settings(svc), user)
    return page("console/check.html", report=report, user=user or "")


def _limit(value: str) -> int:
    try:
        return max(10, min(2000, int(value)))
    except ValueError:
        return 300


@bp.get("/logs")
def logs() -> ResponseReturnValue:
    """The recent log lines of every worker, filterable by level and user."""
    svc = services(current_app)
    level = request.args.get("level", "info")
    level = level if level in LEVELS else "info"
    user = request.args.get("user", "").strip()[:256]
    limit = _limit(request.args.get("limit", "300"))
    lines = read_recent(svc.settings.run_dir / "logs", limit, level, user or None)
    return page(
        "console/logs.html",
        lines=list(reversed(lines)),
        level=level,
        user=user,
        limit=limit,
        levels=LEVELS,
    )
