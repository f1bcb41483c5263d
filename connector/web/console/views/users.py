"""Users: search and look up, "try a login", the profile mapper."""

from __future__ import annotations

from typing import Any

from flask import current_app, g, request
from flask.typing import ResponseReturnValue

from connector.web import services
from connector.web.console import users
from connector.web.console.pages import bp, keys, page


@bp.get("/users", endpoint="users")
def users_view() -> ResponseReturnValue:
    """Search users, or look one up (the exact profile the hub would receive)."""
    q = request.args.get("q", "").strip()[:256]
    lookup = request.args.get("lookup", "").strip()[:256]
    return page("console/users.html", **users.browse(services(current_app), q, lookup))


@bp.post("/users/try")
def try_login() -> ResponseReturnValue:
    """Try a login: the profile that would be sent, or the precise error."""
    status, context = users.try_login(
        services(current_app),
        keys(current_app),
        g.console_session,
        request.form.get("username", "").strip()[:1024],
        request.form.get("password", ""),
        request.remote_addr,
    )
    return page("console/users.html", status=status, **context)


@bp.get("/mapper")
def mapper() -> ResponseReturnValue:
    """Which mapper is active, and its output for a chosen user next to the default's."""
    svc = services(current_app)
    user = request.args.get("user", "").strip()[:256]
    context: dict[str, Any] = {"info": users.mapper_file(svc.settings.profile_mapper), "user": user}
    if user:
        context.update(users.mapper_preview(svc, user))
    return page("console/mapper.html", **context)
