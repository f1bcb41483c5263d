"""The devhub's browser pages: index, hub-side login, Try page, sign-in callback, status.

Plain server-rendered HTML (``templates/``). The password typed on the login page goes only
into the signed ``authenticate_user`` command.
"""

from __future__ import annotations

import datetime
import functools
import hmac
import json
import logging
import secrets
import urllib.parse
from typing import Any, overload

from flask import redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from markupsafe import escape
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from connector.devhub.state import SessionError, UnknownCommand
from connector.devhub.web import (
    DevHub,
    ad_hub_url,
    base_url,
    current_hub,
    queue_command,
    tenant_blueprint,
)

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
    )


#: WSGI environ key under which :mod:`connector.devhub.hotpaths` hands a callback it already
#: redeemed to :func:`login_callback`, for the pages it does not build itself.
CALLBACK_OUTCOME = "connector.devhub.callback_outcome"

CallbackOutcome = dict[str, Any] | SessionError


@overload
def redeem(hub: DevHub, ref: str, wctx: str, client: str) -> CallbackOutcome: ...


@overload
def redeem(
    hub: DevHub, ref: str, wctx: str, client: str, *, blocking: bool
) -> CallbackOutcome | None: ...


def redeem(
    hub: DevHub, ref: str, wctx: str, client: str, *, blocking: bool = True
) -> CallbackOutcome | None:
    """Redeem a callback's ``ref`` with its ``wctx`` (protocol §5.3), waiting a while for a
    ``ref`` no connector relayed yet: the sign-in's view, or why it was refused (logged).
    ``blocking=False``: None where it would wait, with nothing changed."""
    try:
        return hub.state.redeem_session(
            ref, wctx, client=client, wait=hub.config.signin_wait_seconds, blocking=blocking
        )
    except SessionError as e:
        log.warning("sign-in callback refused: %s", e.message)
        return e


@functools.lru_cache(maxsize=256)
def wants_json(accept: str) -> bool:
    """Whether a request with this ``Accept`` prefers JSON to HTML (a browser sends the same
    header every time, hence the cache)."""
    offered = parse_accept_header(accept, MIMEAccept)
    return offered.best_match(["text/html", "application/json"]) == "application/json"


@pages.get("/login/callback")
def login_callback() -> ResponseReturnValue:
    """The realm's ``postTokenUrl``: redeem ``ref`` once and show the profile, waiting a
    while for a ``ref`` no connector relayed yet (protocol §5.3). Usually served by
    :mod:`connector.devhub.hotpaths`, which hands the outcome here for the other pages."""
    outcome: CallbackOutcome | None = request.environ.get(CALLBACK_OUTCOME)
    if outcome is None:
        outcome = redeem(
            current_hub(),
            request.args.get("ref", ""),
            request.args.get("wctx", ""),
            request.remote_addr or "",
        )
    as_json = wants_json(request.headers.get("Accept", ""))
    if isinstance(outcome, SessionError):
        busy = outcome.problem == "busy"
        status, headers = (429, {"Retry-After": "1"}) if busy else (400, {})
        if as_json:
            error = "too_many_waiting" if busy else "invalid_ref"
            body = {"error": error, "problem": outcome.problem, "message": outcome.message}
            return body, status, headers
        title = "Sign-in busy" if busy else "Sign-in failed"
        return render_template("error.html", title=title, message=outcome.message), status, headers
    if as_json:
        return {k: v for k, v in outcome.items() if k != "ref"}
    page = signed_in_page(_frame(), outcome)
    return page, 200, {"Content-Type": "text/html; charset=utf-8"}


_FRAMES: dict[tuple[str, str], tuple[str, str]] = {}


def cached_frame(script_name: str, tenant: str) -> tuple[str, str] | None:
    """The frame of the signed-in page for this mount point and tenant, once
    :func:`_frame` made it."""
    return _FRAMES.get((script_name, tenant))


def _frame() -> tuple[str, str]:
    """``base.html`` around an empty main part, split there, and the tail with the "Log in
    again" link: rendered once per mount point (``SCRIPT_NAME``) and tenant (its links are
    fixed)."""
    key = (request.environ.get("SCRIPT_NAME", ""), current_hub().config.tenant)
    frame = _FRAMES.get(key)
    if frame is None:
        head, _, tail = render_template("base.html").partition("<main>\n")
        head = head.replace("<title>devhub · devhub</title>", "<title>signed in · devhub</title>")
        login = escape(url_for("pages.login_form"))
        tail = f'<p><a href="{login}">Log in again</a></p>\n{tail}'
        frame = _FRAMES[key] = (head + "<main>\n", tail)
    return frame


def _escaped_items(items: list[Any]) -> str:
    """The items escaped and joined with ``</li><li>``: strings (the usual groups) in one
    ``escape`` call over their NUL-joined text, anything else one by one."""
    try:
        joined = "\x00".join(items)
    except TypeError:  # an item that is not a string
        joined = None
    if joined is None or joined.count("\x00") != len(items) - 1:  # or one holds a NUL
        return "</li><li>".join(map(escape, items))
    return str(escape(joined)).replace("\x00", "</li><li>")


def signed_in_page(frame: tuple[str, str], redeemed: dict[str, Any]) -> str:
    """The page a browser gets for a redeemed sign-in, built without the template engine: it
    is served once per browser sign-in, the devhub's hottest page. ``frame`` is the cached
    rest of the page (see :func:`_frame`); the variable parts are escaped with markupsafe, as
    Jinja would."""
    head, tail = frame
    profile = redeemed["profile"]
    parts = [
        head,
        "<h1>Signed in through the connector</h1>\n<table>\n",
        f'  <tr><th>method</th><td id="method">{escape(redeemed["method"])}</td></tr>\n',
        f"  <tr><th>wctx</th><td><code>{escape(redeemed['wctx'])}</code></td></tr>\n",
        f"  <tr><th>agent</th><td>{escape(redeemed['agent'])}</td></tr>\n</table>\n",
        '<h2 class="ok" id="outcome">Profile</h2>\n',
    ]
    groups = profile.get("groups") if isinstance(profile, dict) else None
    if isinstance(groups, list):
        parts.append(f'<h3>Groups ({len(groups)})</h3>\n<ul id="groups">\n  ')
        if groups:
            parts += ("<li>", _escaped_items(groups), "</li>")
        parts.append("\n</ul>\n")
    # one line: json's C encoder (indent= would take its pure-Python one, 5 % of the request)
    compact = json.dumps(profile, ensure_ascii=False, sort_keys=True)
    parts.append(f'<pre id="result">{escape(compact)}</pre>\n')
    parts.append(tail)
    return "".join(parts)


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
