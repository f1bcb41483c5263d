"""Console sign-in and sign-out."""

from __future__ import annotations

import logging

from flask import current_app, g, redirect, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response as BaseResponse

from connector.web import services
from connector.web.console.auth import (
    SESSION_COOKIE,
    SESSION_SECONDS,
    Credential,
    after_sign_in,
)
from connector.web.console.pages import bp, keys, page

log = logging.getLogger(__name__)


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """Ask for the console password (``CONSOLE_PASSWORD``, or the generated one)."""
    svc = services(current_app)
    k = keys(current_app)
    credential: Credential | None = g.console_credential
    target = after_sign_in(request.values.get("next", ""), url_for("console.status"))
    if g.console_logged_in:
        return redirect(target)

    def form(status: int = 200, error: str | None = None) -> BaseResponse:
        return page(
            "console/login.html",
            status=status,
            next=target,
            error=error,
            credential=credential.kind if credential else None,
            config_path=svc.settings.config_path,
        )

    if request.method == "GET":
        return form()
    if credential is None:
        return form(403, "No console password yet: make one with connector console-password.")
    wait = k.throttle.acquire("console")  # checked and counted at once: parallel guesses too
    if wait:
        log.warning("console: sign-in throttled (client %s)", request.remote_addr)
        return form(429, f"Too many wrong passwords. Try again in {int(wait) + 1} seconds.")
    if not credential.matches(request.form.get("password", "")[:1024]):
        log.warning("console: wrong password (client %s)", request.remote_addr)
        return form(401, "Wrong password.")
    k.throttle.reset("console")
    log.info("console: signed in (client %s)", request.remote_addr)
    resp = redirect(target, code=303)
    resp.set_cookie(
        SESSION_COOKIE,
        k.new_session(credential),
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="Strict",
        path="/console",
    )
    return resp


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """End the console session."""
    resp = redirect(url_for("console.login"), code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/console")
    return resp
