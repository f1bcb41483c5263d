"""The console's blueprint and what every view shares: its keys, page rendering, fresh settings."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, current_app, g, make_response, render_template
from werkzeug.wrappers import Response as BaseResponse

from connector import __version__
from connector.services import Services
from connector.settings import Settings, load_settings
from connector.web import services
from connector.web.console.auth import ConsoleKeys
from connector.web.console.status import when

bp = Blueprint("console", __name__, url_prefix="/console")

NAV = (
    ("console.status", "Status"),
    ("console.setup", "Setup"),
    ("console.check", "Troubleshoot"),
    ("console.users", "Users"),
    ("console.mapper", "Profile mapper"),
    ("console.logs", "Logs"),
    ("console.archive", "Export / import"),
)

bp.add_app_template_filter(when, "when")


def keys(app: Flask) -> ConsoleKeys:
    """The app's console keys (made at the first console request)."""
    found = app.extensions.get("connector_console")
    if found is None:
        found = app.extensions["connector_console"] = ConsoleKeys(services(app).settings)
    return found


def page(template: str, *, status: int = 200, reload: bool = False, **context: Any) -> BaseResponse:
    """Render a console page; with ``reload``, restart the workers once it is sent."""
    svc = services(current_app)
    if reload:
        context["reload_note"] = (
            "The workers are restarting with the new settings; this takes a few seconds."
            if svc.reload_workers is not None
            else "Restart the connector to apply them (systemctl reload connector)."
        )
    html = render_template(
        template,
        csrf_token=keys(current_app).csrf.token(g.console_csrf_cookie),
        nav=NAV,
        version=__version__,
        logged_in=g.get("console_logged_in", False),
        **context,
    )
    resp = make_response(html, status)
    if reload and svc.reload_workers is not None:
        resp.call_on_close(svc.reload_workers)
    return resp


def fresh_settings(svc: Services) -> Settings:
    """The settings as saved now (the worker's own may predate a save or an import)."""
    return load_settings(svc.settings.config_path, require_directory=False, encrypt_in_place=False)
