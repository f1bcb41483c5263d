"""Setup: from the hub's ticket, then the directory tested live before saving."""

from __future__ import annotations

import logging
from typing import Any

from flask import current_app, request
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response as BaseResponse

from connector import errors
from connector.channel.provision import SetupError, setup_from_ticket
from connector.web import services
from connector.web.console import setup
from connector.web.console.pages import bp, fresh_settings, page

log = logging.getLogger(__name__)


def _setup_page(status: int = 200, reload: bool = False, **context: Any) -> BaseResponse:
    current = fresh_settings(services(current_app))
    context.setdefault("form", setup.directory_form(current))
    return page(
        "console/setup.html",
        status=status,
        reload=reload,
        s=current,
        overridden=setup.overridden(current.env_keys),
        tls_choices=setup.TLS_CHOICES,
        **context,
    )


@bp.get("/setup", endpoint="setup")
def setup_view() -> ResponseReturnValue:
    """First run: the ticket, then the directory."""
    return _setup_page()


@bp.post("/setup/ticket")
def setup_ticket() -> ResponseReturnValue:
    """Run setup from the hub's ticket URL (as ``connector setup --ticket``)."""
    svc = services(current_app)
    ticket = request.form.get("ticket", "").strip()[:2048]
    endpoint = request.form.get("sign_in_endpoint", "").strip()[:2048] or None
    if not ticket:
        return _setup_page(400, ticket_error="Paste the ticket URL the hub gave you.")
    try:
        result = setup_from_ticket(str(svc.settings.config_path), ticket, sign_in_endpoint=endpoint)
    except SetupError as exc:
        log.warning("console: setup from a ticket failed (%s)", exc.reason)
        return _setup_page(400, ticket_error=f"Setup failed ({exc.reason}): {exc}")
    except errors.ConfigError as exc:
        return _setup_page(400, ticket_error=str(exc))
    log.info(
        "console: set up from a ticket: hub %s, connection %s, certificate %s",
        result.ad_hub,
        result.connection,
        result.kid,
    )
    return _setup_page(reload=True, ticket_ok=setup.ticket_message(result))


@bp.post("/setup/directory")
def setup_directory() -> ResponseReturnValue:
    """Test the directory settings live (reach, TLS, bind, search, a user) and save them."""
    current = fresh_settings(services(current_app))
    outcome = setup.save_directory(current, setup.DirectorySubmission.parse(request.form))
    if not outcome.saved:
        return _setup_page(400, **outcome.context)
    return _setup_page(reload=True, **outcome.context)
