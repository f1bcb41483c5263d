"""The devhub's browser pages: index, hub-side login, Try page, sign-in callback, status.

Plain server-rendered HTML (``templates/``). The password typed on the login page goes only
into the signed ``authenticate_user`` command.
"""

from __future__ import annotations

import datetime
import hmac
import json
import logging
import secrets
import urllib.parse

from flask import redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue

from connector.devhub.state import SessionError, UnknownCommand
from connector.devhub.web import ad_hub_url, base_url, current_hub, queue_command, tenant_blueprint

log = logging.getLogger(__name__)

pages = tenant_blueprint("pages", "", json_errors=False)


def _csrf_token() -> str:
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(24)
    return token


def _csrf_ok(sent: str) -> bool:
    expected = session.get("csrf")
    return isinstance(expected, str) and hmac.compare_digest(sent.encode(), expected.encode())


def _error_page(title: str, message: str, status: int) -> ResponseReturnValue:
    return render_template("error.html", title=title, message=message), status


@pages.get("/")
def index() -> ResponseReturnValue:
    """Links, the ticket URL and the connectors' sign-in endpoints."""
    hub = current_hub()
    endpoints = dict.fromkeys(
        r.sign_in_endpoint for r in hub.state.registrations() if r.sign_in_endpoint
    )
    wctx = secrets.token_urlsafe(12)
    sign_in = [
        f"{e}{'&' if '?' in e else '?'}{urllib.parse.urlencode({'wctx': wctx})}" for e in endpoints
    ]
    return render_template(
        "index.html",
        config=hub.config,
        ticket_url=f"{base_url()}/tickets/{hub.config.ticket}",
        ad_hub=ad_hub_url(),
        sign_in=sign_in,
    )


@pages.get("/login")
def login_form() -> ResponseReturnValue:
    """The hub-side login form."""
    return render_template("login.html", csrf=_csrf_token(), error=None, username="")


@pages.post("/login")
def login_submit() -> ResponseReturnValue:
    """Queue ``authenticate_user``, wait for the result a while, go to its Try page."""
    if not _csrf_ok(request.form.get("csrf", "")):
        return _error_page(
            "Form refused",
            "The form was not sent by this page or has expired (CSRF token mismatch). "
            "Reload the login page and try again.",
            400,
        )
    username = request.form.get("username", "").strip()
    if not username:
        return render_template(
            "login.html", csrf=_csrf_token(), error="Enter a username.", username=""
        ), 400
    hub = current_hub()
    pid = "p-" + secrets.token_hex(8)
    password = request.form.get("password", "")
    command_id = queue_command(
        "authenticate_user", {"pid": pid, "username": username, "password": password}
    )
    log.info("login page queued authenticate_user %s for %r (pid %s)", command_id, username, pid)
    hub.state.wait_done(command_id, hub.config.login_wait_seconds)
    return redirect(url_for(".try_page", command_id=command_id), code=303)


@pages.get("/try/<command_id>")
def try_page(command_id: str) -> ResponseReturnValue:
    """A command's outcome: the profile, the precise error, or "waiting"."""
    try:
        command = current_hub().state.command(command_id)
    except UnknownCommand:
        return _error_page("Unknown command", f"There is no command {command_id!r}.", 404)
    result = command["result"] or {}
    return render_template(
        "try.html",
        command=command,
        result=result,
        err=result.get("err"),
        profile=result.get("profile"),
        pretty=json.dumps(result, indent=2, ensure_ascii=False, sort_keys=True),
        session=None,
    )


@pages.get("/login/callback")
def login_callback() -> ResponseReturnValue:
    """The realm's ``postTokenUrl``: redeem ``ref`` once and show the profile, waiting a
    while for a ``ref`` no connector relayed yet (protocol §5.3)."""
    wants_json = (
        request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json"
    )
    hub = current_hub()
    try:
        redeemed = hub.state.redeem_session(
            request.args.get("ref", ""),
            request.args.get("wctx", ""),
            client=request.remote_addr or "",
            wait=hub.config.signin_wait_seconds,
        )
    except SessionError as e:
        log.warning("sign-in callback refused: %s", e.message)
        status, headers = (429, {"Retry-After": "1"}) if e.problem == "busy" else (400, {})
        if wants_json:
            error = "too_many_waiting" if e.problem == "busy" else "invalid_ref"
            body = {"error": error, "problem": e.problem, "message": e.message}
            return body, status, headers
        title = "Sign-in busy" if e.problem == "busy" else "Sign-in failed"
        return render_template("error.html", title=title, message=e.message), status, headers
    if wants_json:
        return {k: v for k, v in redeemed.items() if k != "ref"}
    profile = redeemed["profile"]
    return render_template(
        "try.html",
        command=None,
        result={"profile": profile},
        err=None,
        profile=profile,
        pretty=json.dumps(profile, indent=2, ensure_ascii=False, sort_keys=True),
        session=redeemed,
    )


@pages.get("/status")
def status_page() -> ResponseReturnValue:
    """Connected agents, registered certificates, queue counters, recent commands."""
    state = current_hub().state
    return render_template(
        "status.html",
        agents=state.agents(),
        registrations=state.registrations(),
        counters=state.counters(),
        commands=list(reversed(state.commands()))[:20],
    )


def hub_time(ms: int | None) -> str:
    """Jinja filter: epoch milliseconds as a UTC time (or "never")."""
    if ms is None:
        return "never"
    moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
