"""The users pages' work: search, look up, "try a login", the profile mapper (no Flask here).

"Try a login" is throttled per console session and in all (every try counts, success or
not), is counted in the login metrics as method ``console`` and writes the audit line.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path
from typing import Any

from connector import audit, errors, metrics
from connector.profiles import default_profile, entry_to_raw_profile
from connector.services import Services
from connector.web.console.auth import ConsoleKeys
from connector.web.password_change import console_note

#: Users a search lists at most.
SEARCH_LIMIT = 50


def _error(exc: errors.ConnectorError) -> dict[str, str]:
    return {"name": exc.wire_name, "message": str(exc)}


def browse(svc: Services, q: str, lookup: str) -> dict[str, Any]:
    """The users found by ``q`` and the profile of ``lookup`` (each when given), or the error."""
    context: dict[str, Any] = {"q": q, "lookup": lookup}
    try:
        directory = svc.require_directory()
        if q:
            context["found"] = directory.search_users(q, SEARCH_LIMIT)
        if lookup:
            context["profile"] = directory.get_profile(lookup)
    except errors.ConnectorError as exc:
        context["error"] = _error(exc)
    return context


def try_login(
    svc: Services, keys: ConsoleKeys, session: str, username: str, password: str, client: Any
) -> tuple[int, dict[str, Any]]:
    """Try a login as the sign-in page would: (HTTP status, the page's context)."""
    context: dict[str, Any] = {"q": "", "lookup": "", "try_user": username}
    started = time.monotonic()
    status = 200
    wait = keys.reserve_try(session)
    if wait:
        outcome = "throttled"
        status = 429
        context["try_error"] = {
            "name": "Throttled",
            "message": f"Too many logins tried from the console. Try again in {int(wait) + 1} s.",
        }
    else:
        try:
            context["try_profile"] = svc.require_directory().authenticate(username, password)
            outcome = "success"
            note = console_note(svc.settings, context["try_profile"], None)
        except errors.ConnectorError as exc:
            outcome = exc.wire_name
            context["try_error"] = _error(exc)
            note = console_note(svc.settings, None, exc)
        context["try_expiry"] = note
        metrics.login("console", outcome, time.monotonic() - started)
    audit.record("login", "console", username, outcome, secrets.token_hex(8), client=client)
    return status, context


def mapper_file(path: str | None) -> dict[str, Any]:
    """The active mapper file: its path, and its digest, size and time or why it is unreadable."""
    info: dict[str, Any] = {"path": path}
    if path:
        try:
            data = Path(path).read_bytes()
            st = Path(path).stat()
            info.update(
                sha256=hashlib.sha256(data).hexdigest()[:16],
                size=len(data),
                modified=st.st_mtime,
            )
        except OSError as exc:
            info["problem"] = f"cannot be read: {exc.strerror or exc}"
    return info


def mapper_preview(svc: Services, user: str) -> dict[str, Any]:
    """``user``'s raw entry, the default profile and the mapper's, or what went wrong."""
    context: dict[str, Any] = {}
    try:
        directory = svc.require_directory()
        entry = directory.find_user(user)
        raw = entry_to_raw_profile(entry.dn, entry.attrs, groups=directory.groups(entry))
        context["raw"] = raw
        context["default"] = default_profile(raw)
        try:
            context["mapped"] = directory.mapper(raw)
        except ValueError as exc:
            context["mapper_error"] = str(exc)
    except errors.ConnectorError as exc:
        context["error"] = _error(exc)
    except ValueError as exc:
        context["error"] = {"name": "Unexpected", "message": str(exc)}
    return context
