"""Shared pieces of the devhub's blueprints: the app's services, JSON errors, body parsing,
command signing and the ``/tenants/<tenant>`` blueprint factory."""

from __future__ import annotations

import dataclasses
from typing import Any, NoReturn

from flask import Blueprint, abort, current_app, request

from connector.devhub.config import DevHubConfig
from connector.devhub.state import HubState
from connector.devhub.tokens import TenantKey


@dataclasses.dataclass(frozen=True)
class DevHub:
    """What the app serves: its settings, its state and the tenant signing key."""

    config: DevHubConfig
    state: HubState
    key: TenantKey


class ApiError(Exception):
    """Answered as ``{"error": code, "message": message, **extra}`` with ``status``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}


class DropConnection(Exception):
    """Injected fault: close the TCP connection without answering."""


def current_hub() -> DevHub:
    """The :class:`DevHub` of the current app."""
    hub = current_app.extensions["devhub"]
    assert isinstance(hub, DevHub)
    return hub


def base_url() -> str:
    """``{base}``: the public base URL if configured, else the URL the request came in on."""
    return (current_hub().config.public_base_url or request.host_url).rstrip("/")


def ad_hub_url() -> str:
    """``adHub``: ``{base}/tenants/{tenant}``."""
    return f"{base_url()}/tenants/{current_hub().config.tenant}"


def server_time() -> int:
    """The hub clock in epoch milliseconds."""
    return int(current_hub().state.now() * 1000)


# ---- request parsing ---------------------------------------------------------------------------


def bad_request(message: str) -> NoReturn:
    """Answer 400 ``bad_request`` with ``message``."""
    raise ApiError(400, "bad_request", message)


def json_body() -> dict[str, Any]:
    """The request's JSON object body, or 400."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        bad_request("the body must be a JSON object (Content-Type: application/json)")
    return data


def int_field(
    body: dict[str, Any], key: str, low: int, high: int, default: int | None = None
) -> int:
    """``body[key]`` (or ``default``) checked for type and range, or 400."""
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        bad_request(f"{key} must be an integer in {low}..{high}")
    return value


def number_field(
    body: dict[str, Any], key: str, low: float, high: float, default: float | None = None
) -> float:
    """``body[key]`` (or ``default``) checked for type and range, or 400."""
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        bad_request(f"{key} must be a number in {low:g}..{high:g}")
    return float(value)


def str_field(body: dict[str, Any], key: str, default: str | None = None) -> str:
    """``body[key]`` (or ``default``) checked for type and range, or 400."""
    value = body.get(key, default)
    if not isinstance(value, str) or (default is None and not value):
        bad_request(f"{key} must be a {'non-empty ' if default is None else ''}string")
    return value


def object_field(
    body: dict[str, Any], key: str, default: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``body[key]`` (or ``default``) checked for type and range, or 400."""
    value = body.get(key, default)
    if not isinstance(value, dict):
        bad_request(f"{key} must be a JSON object")
    return value


# ---- commands ----------------------------------------------------------------------------------


def sign_command(
    command_id: str,
    name: str,
    payload: dict[str, Any],
    ttl: int,
    overrides: dict[str, Any] | None = None,
) -> str:
    """The command JWT of protocol §3.1; ``overrides`` replace claims (``None`` removes one)."""
    hub = current_hub()
    now = int(hub.state.now())
    claims: dict[str, Any] = {
        "iss": ad_hub_url(),
        "aud": hub.config.connection,
        "jti": command_id,
        "cmd": name,
        "iat": now,
        "exp": now + ttl,
        "payload": payload,
    }
    for claim, value in (overrides or {}).items():
        if value is None:
            claims.pop(claim, None)
        else:
            claims[claim] = value
    return hub.key.sign(claims)


def queue_command(name: str, payload: dict[str, Any], ttl: int | None = None) -> str:
    """Sign and queue a command; its id."""
    hub = current_hub()
    command_id = hub.state.new_command_id()
    token = sign_command(command_id, name, payload, ttl or hub.config.command_ttl)
    hub.state.queue(command_id, name, token, payload)
    return command_id


def tenant_blueprint(name: str, prefix: str, json_errors: bool) -> Blueprint:
    """A blueprint under ``/tenants/<tenant>``; any other tenant is a 404."""
    bp = Blueprint(name, __name__, url_prefix="/tenants/<tenant>" + prefix)

    @bp.url_value_preprocessor
    def _check_tenant(endpoint: str | None, values: dict[str, Any] | None) -> None:
        tenant = (values or {}).pop("tenant", None)
        if tenant != current_hub().config.tenant:
            if json_errors:
                raise ApiError(404, "unknown_tenant", f"no tenant {tenant!r} here")
            abort(404, description=f"no tenant {tenant!r} here")

    @bp.url_defaults
    def _add_tenant(endpoint: str, values: dict[str, Any]) -> None:
        values.setdefault("tenant", current_hub().config.tenant)

    return bp
