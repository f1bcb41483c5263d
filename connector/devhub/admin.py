"""The devhub's admin API (``/tenants/<tenant>/api``): queue commands, read their outcome,
inject faults, move the clock, start over (routes and shapes: :mod:`connector.devhub.app`).

It has **no authentication**: the devhub is a loopback development and test tool.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any

from flask import request
from flask.typing import ResponseReturnValue

from connector.devhub.channel import AGENT_ENDPOINTS
from connector.devhub.state import DuplicateCommand, Fault, UnknownCommand
from connector.devhub.web import (
    ApiError,
    ad_hub_url,
    bad_request,
    current_hub,
    int_field,
    json_body,
    number_field,
    object_field,
    server_time,
    sign_command,
    str_field,
    tenant_blueprint,
)

log = logging.getLogger(__name__)

OVERRIDABLE = ("ticket-info", "registration")

admin = tenant_blueprint("admin", "/api", json_errors=True)


def _unverified_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified; empty if it does not parse."""
    try:
        segment = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return {}
    return data if isinstance(data, dict) else {}


@admin.post("/commands")
def api_queue_command() -> ResponseReturnValue:
    """Sign and queue a command: ``{name, payload?, ttl?, claims?}`` -> ``{id}``.

    ``claims`` overrides the signed claims (a ``null`` value removes one), to make commands
    the agent must refuse: expired, wrong audience, ``jti``/``cmd`` mismatches, ...
    """
    body = json_body()
    hub = current_hub()
    name = str_field(body, "name")
    payload = object_field(body, "payload", {})
    ttl = int_field(body, "ttl", 1, 600, hub.config.command_ttl)
    overrides = object_field(body, "claims", {})
    command_id = hub.state.new_command_id()
    hub.state.queue(
        command_id, name, sign_command(command_id, name, payload, ttl, overrides), payload
    )
    log.info("admin API queued command %s %s", command_id, name)
    return {"id": command_id}


@admin.post("/raw-commands")
def api_queue_raw_command() -> ResponseReturnValue:
    """Queue a caller-made JWT verbatim: ``{jwt, name?, id?}`` -> ``{id}``.

    ``name`` and ``id`` default to the token's (unverified) ``cmd`` and ``jti`` claims.
    """
    body = json_body()
    hub = current_hub()
    token = str_field(body, "jwt")
    claims = _unverified_claims(token)
    name = body.get("name", claims.get("cmd"))
    if not isinstance(name, str) or not name:
        bad_request("name must be a non-empty string (the token has no string cmd claim)")
    command_id = body.get("id", claims.get("jti"))
    if command_id is None:
        command_id = hub.state.new_command_id()
    if not isinstance(command_id, str) or not command_id:
        bad_request("id must be a non-empty string")
    try:
        hub.state.queue(command_id, name, token, {}, raw=True)
    except DuplicateCommand:
        raise ApiError(409, "conflict", f"a command {command_id!r} exists already") from None
    log.info("admin API queued raw command %s %s", command_id, name)
    return {"id": command_id}


@admin.post("/commands/<command_id>/replay")
def api_replay_command(command_id: str) -> ResponseReturnValue:
    """Hand a done command out again: ``{jwt}`` (its token again, or another under its id)."""
    token = str_field(json_body(), "jwt")
    try:
        current_hub().state.replay(command_id, token)
    except UnknownCommand:
        raise ApiError(404, "not_found", f"no command {command_id!r}") from None
    except DuplicateCommand:
        raise ApiError(409, "conflict", f"command {command_id!r} is not done yet") from None
    log.warning("admin API hands command %s out again (a replay)", command_id)
    return {"id": command_id}


@admin.get("/commands")
def api_commands() -> ResponseReturnValue:
    """Every command, oldest first."""
    return {"commands": current_hub().state.commands()}


@admin.get("/commands/<command_id>")
def api_command(command_id: str) -> ResponseReturnValue:
    """One command; ``?wait=S`` (0..120) holds the answer until it is done."""
    wait = request.args.get("wait", "0")
    try:
        seconds = float(wait)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 120:
        bad_request("wait must be a number of seconds in 0..120")
    try:
        return current_hub().state.wait_done(command_id, seconds)
    except UnknownCommand:
        raise ApiError(404, "unknown_command", f"no command {command_id!r}") from None


@admin.get("/agents")
def api_agents() -> ResponseReturnValue:
    """The status page as JSON."""
    state = current_hub().state
    return {
        "agents": state.agents(),
        "certificates": [r.view() for r in state.registrations()],
        "serverTime": server_time(),
    }


@admin.get("/state")
def api_state() -> ResponseReturnValue:
    """Settings and counters."""
    hub = current_hub()
    return {
        "tenant": hub.config.tenant,
        "connection": hub.config.connection,
        "realm": hub.config.realm,
        "alg": hub.key.alg,
        "leaseSeconds": hub.config.lease_seconds,
        "adHub": ad_hub_url(),
        **hub.state.counters(),
    }


@admin.get("/sessions")
def api_sessions() -> ResponseReturnValue:
    """Every relayed sign-in remembered (with its ref), oldest first."""
    return {"sessions": current_hub().state.sessions()}


@admin.post("/faults")
def api_add_fault() -> ResponseReturnValue:
    """Make the next agent requests fail (the shapes: :mod:`connector.devhub.app`)."""
    body = json_body()
    endpoint = body.get("endpoint")
    if endpoint is not None and endpoint not in AGENT_ENDPOINTS:
        bad_request(f"endpoint must be one of {', '.join(AGENT_ENDPOINTS)}")
    if "close" in body:
        fault = Fault("close", int_field(body, "close", 1, 1000), endpoint=endpoint)
    elif "delay" in body:
        fault = Fault(
            "delay",
            int_field(body, "count", 1, 1000, 1),
            delay=number_field(body, "delay", 0, 300),
            endpoint=endpoint,
        )
    elif "status" in body:
        retry_after = body.get("retryAfter")
        fault = Fault(
            "status",
            int_field(body, "count", 1, 1000, 1),
            status=int_field(body, "status", 400, 599),
            retry_after=None if retry_after is None else int_field(body, "retryAfter", 0, 3600),
            endpoint=endpoint,
        )
    else:
        bad_request("give one of status, close or delay")
    state = current_hub().state
    state.add_fault(fault)
    return {"faults": state.faults()}


@admin.get("/faults")
def api_faults() -> ResponseReturnValue:
    """The pending faults."""
    return {"faults": current_hub().state.faults()}


@admin.delete("/faults")
def api_clear_faults() -> ResponseReturnValue:
    """Forget the pending faults."""
    state = current_hub().state
    state.clear_faults()
    return {"faults": state.faults()}


@admin.route("/clock", methods=["GET", "POST"])
def api_clock() -> ResponseReturnValue:
    """Read or set how far the hub clock runs off the wall clock."""
    state = current_hub().state
    if request.method == "POST":
        state.set_clock_offset(number_field(json_body(), "offsetSeconds", -86400, 86400))
        log.info("hub clock offset set to %+.1f s", state.clock_offset)
    return {"offsetSeconds": state.clock_offset, "serverTime": server_time()}


@admin.route("/overrides/<answer>", methods=["GET", "PUT"])
def api_override(answer: str) -> ResponseReturnValue:
    """Read or set the fields an answer serves over the real ones: a tampered ``ticket-info``
    (another adHub, a public ipRange, a wrong type) or ``registration`` (another signingKey),
    for the agent's checks."""
    if answer not in OVERRIDABLE:
        raise ApiError(404, "not_found", f"answers that can be tampered with: {OVERRIDABLE}")
    state = current_hub().state
    if request.method == "PUT":
        state.set_override(answer, json_body())
        log.warning("%s answer tampered with: %s", answer, sorted(state.override(answer)))
    return {"override": state.override(answer)}


@admin.post("/reset")
def api_reset() -> ResponseReturnValue:
    """Start over (keys and ticket stay): ``{"certificates": bool}`` also drops the certs."""
    drop_certs = json_body().get("certificates", False)
    if not isinstance(drop_certs, bool):
        bad_request("certificates must be true or false")
    current_hub().state.reset(certificates=drop_certs)
    log.info("admin API reset the hub state%s", " and certificates" if drop_certs else "")
    return {"reset": True, "certificates": drop_certs}
