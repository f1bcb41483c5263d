"""The console's request hooks: the listener guard for the whole app, sessions, CSRF, headers."""

from __future__ import annotations

import logging

from flask import Response, abort, current_app, g, redirect, request, url_for
from flask.typing import ResponseReturnValue

from connector.archive import MAX_ARCHIVE_BYTES
from connector.web import services
from connector.web.console import access
from connector.web.console.auth import CSRF_COOKIE, SESSION_COOKIE, SESSION_SECONDS, Credential
from connector.web.console.pages import bp, keys, page
from connector.web.guards import csrf_cookie_name, set_csrf_cookie

log = logging.getLogger(__name__)


@bp.before_app_request
def _listener_guard() -> ResponseReturnValue | None:
    """Console paths only on the console listener, from loopback; nothing else there."""
    environ = request.environ  # this hook runs on every request of the app: one lookup
    decision = access.decide(
        request.path,
        console_address=services(current_app).settings.console_address,
        server_port=environ.get("SERVER_PORT"),
        remote_addr=environ.get("REMOTE_ADDR"),
        host=environ.get("HTTP_HOST"),
    )
    if decision is access.Decision.NOT_FOUND:
        abort(404)
    if decision is access.Decision.TO_CONSOLE:
        return redirect(url_for("console.status"))
    return None


@bp.before_request
def _console_request() -> ResponseReturnValue | None:
    """A session on every page but the sign-in (before anything else); CSRF on every change."""
    svc = services(current_app)
    k = keys(current_app)
    if request.endpoint == "console.import_archive":
        request.max_content_length = MAX_ARCHIVE_BYTES + 64 * 1024
    sent = request.cookies.get(csrf_cookie_name(CSRF_COOKIE, request.is_secure))
    cookie = k.csrf.reuse(sent)
    g.console_csrf_new = cookie is None
    g.console_csrf_cookie = cookie or k.csrf.new_cookie()
    g.console_credential = Credential.in_force(svc.settings)
    g.console_session = k.session_id(g.console_credential, request.cookies.get(SESSION_COOKIE))
    g.console_logged_in = g.console_session is not None
    if not g.console_logged_in and request.endpoint != "console.login":
        if request.method == "GET":
            return redirect(url_for("console.login", next=request.path))
        return redirect(url_for("console.login"), code=303)
    if request.method == "POST" and not k.csrf.check(sent, request.form.get("csrf_token")):
        log.warning("console: a change was refused: missing or wrong CSRF token")
        return page(
            "console/message.html",
            status=400,
            title="Change refused",
            message="This form was not sent from this console page, or it expired "
            "(CSRF check failed). Reload the page and try again.",
        )
    return None


@bp.after_request
def _console_headers(resp: Response) -> Response:
    if g.get("console_csrf_new"):
        set_csrf_cookie(
            resp,
            CSRF_COOKIE,
            g.console_csrf_cookie,
            secure=request.is_secure,
            samesite="Strict",
            max_age=SESSION_SECONDS,
        )
    resp.headers.update(access.SECURITY_HEADERS)
    return resp
