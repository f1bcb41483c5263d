"""The sign-in form's password change step: an expired or must-change password (required), or
one about to expire (offered, skippable), changed as the user before the sign-in completes.

The step is carried by a **ticket** kept on the server, never by the browser: a random id (in a
hidden field) names a row of a small SQLite store in ``RUN_DIR`` (mode 0600, shared by the
workers) holding the user's DN, the client address, a digest of the CSRF cookie, the sign-in's
parameters, and the old password sealed (Fernet) under a key derived from ``secret.key`` —
Active Directory's change (delete old, add new) needs it. Only a digest of the id is stored.
A ticket lives ``PASSWORD_CHANGE_STEP_SECONDS`` (5 minutes) and is used once: taking it deletes
it; a refusal the person can fix (the policy's, two passwords that differ) issues a fresh one.
A ticket presented from another address or with another CSRF cookie is spent and refused.

A ticket is only ever issued after the directory confirmed the old password: a clean bind
(the warning), or a refusal that only the right password gets (AD 532 / 773, OpenLDAP
``passwordExpired`` / ``changeAfterReset``).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from flask import Blueprint, Response, current_app, make_response, render_template, request
from flask.typing import ResponseReturnValue

from connector import audit, errors
from connector.directory import passwords
from connector.web import services
from connector.web.guards import (
    CSRF_COOKIE,
    Attempt,
    address_key,
    csrf_cookie_name,
    entry_key,
    no_framing,
)

log = logging.getLogger(__name__)

bp = Blueprint("password_change", __name__)
bp.after_request(no_framing)

MAX_TRIES = 5  # refusals one sign-in may fix before it starts over
REFUSAL_WORDS = {
    "too_short": "The new password is too short.",
    "too_simple": "The new password is too simple. Choose a longer one that mixes letters, "
    "digits and symbols.",
    "in_history": "You have used this password before. Choose one you have not used recently.",
    "too_young": "Your password was changed too recently to be changed again now. Try later, "
    "or contact your administrator.",
    "policy": "The directory refused the new password: it is too short, too simple, one you "
    "have used before, or your password was changed too recently.",
}
_EXT = "connector.password_steps"


@dataclasses.dataclass(frozen=True)
class Step:
    """One change step, as the store keeps it (the old password sealed)."""

    dn: str
    username: str
    client: str
    csrf: str
    params: dict[str, str]
    required: bool
    tries: int
    old_password: str = dataclasses.field(repr=False)


class StepStore:
    """Single-use change-step tickets in SQLite, shared by the workers of one instance.

    Args:
        path: the database file (created 0600).
        key: key material (``secret.key``'s); the sealing key is derived from it.
        ttl: seconds a ticket stays usable.
        clock: the time source (tests move it).
    """

    def __init__(self, path: Path, key: bytes, ttl: float, clock: Any = time.time) -> None:
        self.path = path
        self.ttl = ttl
        self._clock = clock
        derived = hashlib.sha256(b"connector-password-step-v1\0" + key).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
        with self._db() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS steps (id TEXT PRIMARY KEY, expires REAL NOT NULL, "
                "body BLOB NOT NULL)"
            )

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=DELETE")
            db.execute("PRAGMA secure_delete=ON")  # a used ticket's bytes are overwritten
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    @staticmethod
    def _digest(ticket: str) -> str:
        return hashlib.sha256(ticket.encode("utf-8", "replace")).hexdigest()

    def put(self, step: Step) -> str:
        """Keep ``step``; its ticket (the only copy of the id)."""
        ticket = secrets.token_urlsafe(32)
        body = self._fernet.encrypt(json.dumps(dataclasses.asdict(step)).encode("utf-8"))
        now = self._clock()
        with self._lock, self._db() as db:
            db.execute("DELETE FROM steps WHERE expires <= ?", (now,))
            db.execute(
                "INSERT INTO steps (id, expires, body) VALUES (?, ?, ?)",
                (self._digest(ticket), now + self.ttl, body),
            )
        return ticket

    def take(self, ticket: str) -> Step | None:
        """The step of ``ticket``, removed from the store; None: unknown, used or expired."""
        if not ticket or len(ticket) > 100:
            return None
        with self._lock, self._db() as db:
            row = db.execute(
                "DELETE FROM steps WHERE id = ? RETURNING expires, body", (self._digest(ticket),)
            ).fetchone()
        if row is None or row[0] <= self._clock():
            return None
        try:
            return Step(**json.loads(self._fernet.decrypt(row[1])))
        except (InvalidToken, ValueError, TypeError):
            log.warning("a password change ticket could not be opened (another key?)")
            return None

    def wipe(self) -> None:
        """Forget every ticket."""
        with self._lock, self._db() as db:
            db.execute("DELETE FROM steps")


def store() -> StepStore:
    """This app's ticket store (made on first use, after the fork)."""
    found = current_app.extensions.get(_EXT)
    if found is None:
        settings = services(current_app).settings
        found = StepStore(
            settings.run_dir / "password-steps.sqlite3",
            settings.secret_box.passphrase(create=True),
            settings.password_change_step_seconds,
        )
        current_app.extensions[_EXT] = found
    return found


def _cookie() -> str:
    return request.cookies.get(csrf_cookie_name(CSRF_COOKIE, request.is_secure)) or ""


def _cookie_digest(cookie: str) -> str:
    return hashlib.sha256(b"connector-step-csrf\0" + cookie.encode("utf-8", "replace")).hexdigest()


def offered_for(settings: Any, outcome: errors.AuthError) -> bool:
    """Whether the form answers ``outcome`` with the change step instead of a dead end."""
    return bool(settings.enable_write_back) and passwords.can_change_at_sign_in(outcome)


def warn_days(settings: Any, profile: dict[str, Any]) -> int | None:
    """Whole days left before the password in ``profile`` expires, when that is soon enough
    to offer a change (``PASSWORD_EXPIRY_WARNING_DAYS``); else None."""
    if not settings.enable_write_back or not settings.password_expiry_warning_days:
        return None
    left = passwords.days_left(profile.get("password_expires_at"))
    if left is None or left < 0 or left > settings.password_expiry_warning_days:
        return None
    return math.ceil(left)


def console_note(
    settings: Any, profile: dict[str, Any] | None, outcome: errors.ConnectorError | None
) -> str | None:
    """What the console's "try a login" says of the password's expiry and the change step."""
    if isinstance(outcome, errors.PasswordExpired | errors.PasswordChangeRequired):
        if outcome.context.get("code") == passwords.NO_GRACE:
            return (
                "The password has expired and the directory's policy grants no grace sign-in "
                "(pwdGraceAuthNLimit): only an administrator can change it."
            )
        if not passwords.can_change_at_sign_in(outcome):
            return None
        if not settings.enable_write_back:
            return "With ENABLE_WRITE_BACK on, the sign-in page would offer the change step."
        return "The sign-in page would ask this person for a new password (the change step)."
    expires_at = (profile or {}).get("password_expires_at")
    if not expires_at:
        return None if profile is None else "The password's expiry is not known (or never)."
    left = passwords.days_left(expires_at) or 0.0
    note = f"The password expires at {expires_at} (in {math.ceil(left)} days)."
    warning = settings.password_expiry_warning_days
    if settings.enable_write_back and warning and 0 <= left <= warning:
        note += " The sign-in page would offer to change it now (skippable)."
    return note


def start(
    params: dict[str, str],
    username: str,
    dn: str,
    old_password: str,
    addr: Any,
    *,
    required: bool,
    days: int | None = None,
    message: str | None = None,
) -> Response:
    """Issue a ticket and show the change step (``days``: left before expiry, if optional)."""
    step = Step(
        dn, username, str(addr), _cookie_digest(_cookie()), params, required, 0, old_password
    )
    return _page(step, message, days=days)


def _page(step: Step, message: str | None, status: int = 200, days: int | None = None) -> Response:
    ticket = store().put(step)
    svc = services(current_app)
    html = render_template(
        "password_change.html",
        ticket=ticket,
        csrf_token=svc.csrf.token(_cookie()),
        username=step.username,
        required=step.required,
        days=days,
        message=message,
    )
    resp = make_response(html, status)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _audit(user: str | None, outcome: str, addr: Any, correlation: str) -> None:
    audit.record("password_change", "signin", user, outcome, correlation, client=addr)


def _start_over(message: str, status: int = 400, step: Step | None = None) -> Response:
    """The sign-in form again (with the sign-in's parameters when the ticket was read)."""
    from connector.web.signin import _render_form

    params = step.params if step else {"wtrealm": "", "wctx": "", "wreply": ""}
    return _render_form(params, message, step.username if step else "", status=status)


@bp.route("/wsfed/password", methods=["POST"])
def change() -> ResponseReturnValue:
    """The change step's form: change (or skip, when offered), then finish the sign-in."""
    from connector.web.signin import _client, _hand_off, _made, _precheck

    svc = services(current_app)
    addr = _client()
    correlation = secrets.token_hex(8)
    cookie = _cookie()
    if not svc.csrf.check(cookie, request.form.get("csrf_token")):
        log.warning("password change step refused: missing or wrong CSRF token (client %s)", addr)
        return _start_over("Your session expired. Please sign in again.")
    step = store().take(request.form.get("step", ""))
    if step is None:
        log.warning(
            "password change step refused: unknown, used or expired ticket (client %s)", addr
        )
        _audit(None, "refused:ticket", addr, correlation)
        return _start_over("This password change has expired or was already used. Sign in again.")
    if step.client != str(addr) or step.csrf != _cookie_digest(cookie):
        log.warning(
            "password change step refused: ticket of %r (client %s) presented by client %s "
            "with %s CSRF cookie",
            step.username,
            step.client,
            addr,
            "its" if step.csrf == _cookie_digest(cookie) else "another",
        )
        _audit(step.username, "refused:binding", addr, correlation)
        return _start_over("This password change belongs to another sign-in. Sign in again.")
    target = _precheck(step.params)
    if isinstance(target, Response):
        return target
    directory = svc.require_directory()
    try:
        user = passwords.user_by_dn(directory, step.dn)
    except errors.ConnectorError as exc:
        _audit(step.username, exc.wire_name, addr, correlation)
        return _start_over("This account cannot sign in now. Sign in again.", 503, step)
    if request.form.get("action") == "skip" and not step.required:
        _audit(step.username, "skipped", addr, correlation)
        profile = directory.profile(user)
        audit_ctx = (step.username, addr, correlation)
        return _made(_hand_off(svc, step.params, profile, "form", target, audit_ctx))
    new, again = request.form.get("new_password", ""), request.form.get("new_password2", "")
    retry = dataclasses.replace(step, tries=step.tries + 1)
    if retry.tries > MAX_TRIES:
        _audit(step.username, "refused:tries", addr, correlation)
        return _start_over("Too many attempts to change the password. Sign in again.", 429, step)
    if not new:
        return _page(retry, "Enter a new password, twice.", 400)
    if new != again:
        return _page(retry, "The two new passwords are not the same.", 400)
    attempt = Attempt()
    try:
        attempt.reserve(svc.address_throttle, address_key(addr), forget=False)
        attempt.reserve(svc.user_throttle, entry_key(step.dn), forget=True)
        passwords.change_as_user(directory, user, step.old_password, new, step.username)
    except errors.LoginThrottled as exc:
        attempt.cancel()
        _audit(step.username, "throttled", addr, correlation)
        return _page(retry, f"Too many attempts. Try again in {int(exc.wait) + 1} seconds.", 429)
    except errors.PasswordComplexity as exc:
        attempt.cancel()  # the old password was right: nothing was guessed
        reason = str(exc.context.get("reason") or "policy")
        _audit(step.username, f"PasswordComplexity:{reason}", addr, correlation)
        return _page(retry, REFUSAL_WORDS.get(reason, REFUSAL_WORDS["policy"]), 400)
    except errors.WrongPassword:
        _audit(step.username, "WrongPassword", addr, correlation)  # the attempt stays counted
        return _start_over("Your password was changed meanwhile. Sign in again.", 401, step)
    except (errors.PasswordExpired, errors.PasswordChangeRequired) as exc:
        attempt.cancel()  # e.g. the grace sign-ins ran out between the form and this step
        log.warning("password change at sign-in refused for %r: %s", step.username, exc)
        _audit(step.username, exc.wire_name, addr, correlation)
        return _start_over(
            "Your password has expired and the directory no longer lets you change it "
            "yourself. Contact your administrator.",
            403,
            step,
        )
    except errors.InsufficientAccessRights as exc:
        attempt.cancel()
        log.error("password change at sign-in refused for %r: %s", step.username, exc)
        _audit(step.username, exc.wire_name, addr, correlation)
        return _start_over(
            "The directory does not let the connector change passwords. Contact your "
            "administrator.",
            403,
            step,
        )
    except errors.ConnectorError as exc:
        attempt.cancel()
        _audit(step.username, exc.wire_name, addr, correlation)
        return _page(retry, "The directory cannot be reached right now. Try again.", 503)
    attempt.succeeded()
    _audit(step.username, "success", addr, correlation)
    with contextlib.suppress(errors.ConnectorError):
        user = passwords.user_by_dn(directory, step.dn)  # its new pwdChangedTime
    try:
        profile = directory.profile(user)
    except errors.ConnectorError as exc:
        log.error("password changed, but the profile of %r not read: %s", step.username, exc)
        return _start_over("Your password was changed. Sign in with it now.", 503, step)
    audit_ctx = (step.username, addr, correlation)
    return _made(_hand_off(svc, step.params, profile, "form", target, audit_ctx))
