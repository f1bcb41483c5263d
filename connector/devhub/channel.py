"""The protocol surface of the devhub: provisioning through the ticket and the agent channel.

Every agent request goes through :func:`_agent_request`: an injected fault first, then the
``X-Connector-Protocol`` header (400 ``unsupported_protocol``), then the bearer token (401
``invalid_token``, whose body also carries ``serverTime``), then the JSON body (400
``bad_request``).
"""

from __future__ import annotations

import functools
import hmac
import logging
import select
import socket
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from connector.devhub.state import REF_PATTERN, Fault
from connector.devhub.tokens import (
    AgentClaims,
    AgentTokenError,
    CertificateError,
    parse_agent_cert,
    verify_agent_token,
)
from connector.devhub.web import (
    ApiError,
    DevHub,
    DropConnection,
    ad_hub_url,
    bad_request,
    current_hub,
    int_field,
    json_body,
    number_field,
    server_time,
    str_field,
    tenant_blueprint,
)
from connector.errors import WIRE_NAMES

log = logging.getLogger(__name__)
T = TypeVar("T")

PROTOCOL_VERSION = "2"
AGENT_ENDPOINTS = ("poll", "results", "signins")
ERROR_NAMES = frozenset(WIRE_NAMES)
SESSION_METHODS = ("kerberos", "form", "certificate")
MAX_RESULTS = 100
MAX_SIGNINS = 100
MAX_WCTX = 4096


# ---- agent requests ----------------------------------------------------------------------------


def _apply_fault(fault: Fault) -> None:
    log.info("injecting fault %s into %s %s", fault.kind, request.method, request.path)
    if fault.kind == "delay":
        time.sleep(fault.delay)
    elif fault.kind == "close":
        raise DropConnection()
    else:
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        raise ApiError(
            fault.status,
            "injected_fault",
            f"fault injected by the devhub ({fault.status})",
            headers,
        )


def _token_refused(message: str) -> NoReturn:
    current_hub().state.count("authFailures")
    log.warning("agent token refused on %s: %s", request.path, message)
    raise ApiError(
        401,
        "invalid_token",
        message,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        extra={"serverTime": server_time()},
    )


def agent_claims(hub: DevHub, authorization: str) -> AgentClaims:
    """The claims of the bearer token in an ``Authorization`` header, every check of
    protocol §2 but the ``jti``'s freshness (no side effect).

    Raises:
        AgentTokenError: no bearer token, or the first check it failed.
    """
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AgentTokenError("missing Authorization: Bearer token")
    return verify_agent_token(
        token,
        hub.state.certificates(),
        issuer=hub.config.connection,
        audience=hub.config.realm,
        now=hub.state.now(),
    )


def _authenticate_agent() -> str:
    """Check the agent's bearer token (protocol §2); returns its ``sub``."""
    hub = current_hub()
    try:
        claims = agent_claims(hub, request.headers.get("Authorization", ""))
    except AgentTokenError as e:
        _token_refused(str(e))
    if not hub.state.use_jti(claims.jti, claims.exp):
        _token_refused("jti was already used: a replayed token")
    return claims.sub


def _agent_request(endpoint: str) -> tuple[str, dict[str, Any]]:
    """Faults, protocol version, agent token, JSON body: the agent's ``sub`` and the body."""
    fault = current_hub().state.next_fault(endpoint)
    if fault is not None:
        _apply_fault(fault)
    version = request.headers.get("X-Connector-Protocol")
    if version != PROTOCOL_VERSION:
        raise ApiError(
            400,
            "unsupported_protocol",
            f"X-Connector-Protocol must be {PROTOCOL_VERSION}, not {version!r}",
        )
    sub = _authenticate_agent()
    return sub, json_body()


tickets = Blueprint("tickets", __name__, url_prefix="/tickets")
agent = tenant_blueprint("agent", "/agent", json_errors=True)


# ---- provisioning ------------------------------------------------------------------------------


def _check_ticket(ticket: str) -> None:
    if not hmac.compare_digest(ticket.encode(), current_hub().config.ticket.encode()):
        raise ApiError(404, "unknown_ticket", "no such ticket (or it was revoked)")


@tickets.get("/<ticket>/info")
def ticket_info(ticket: str) -> ResponseReturnValue:
    """Protocol §1.1."""
    _check_ticket(ticket)
    config = current_hub().config
    info = {
        "protocolVersion": int(PROTOCOL_VERSION),
        "adHub": ad_hub_url(),
        "connectionName": config.connection,
        "connectionDomain": config.connection_domain,
        "realm": {"name": config.realm, "postTokenUrl": f"{ad_hub_url()}/login/callback"},
        "kerberos": config.kerberos,
        "ipRanges": list(config.ip_ranges),
    }
    return {**info, **current_hub().state.override("ticket-info")}


@tickets.post("/<ticket>")
def ticket_register(ticket: str) -> ResponseReturnValue:
    """Protocol §1.2: add the agent's certificates; answer with the tenant signing key."""
    _check_ticket(ticket)
    body = json_body()
    certs = body.get("certs")
    if not isinstance(certs, list) or not certs or not all(isinstance(c, str) for c in certs):
        bad_request("certs must be a non-empty list of base64 DER certificates")
    parsed = []
    for i, text in enumerate(certs):
        try:
            parsed.append(parse_agent_cert(text))
        except CertificateError as e:
            bad_request(f"certs[{i}]: {e}")
    sign_in = str_field(body, "signInEndpoint", default="")
    version = str_field(body, "agentVersion", default="")
    hub = current_hub()
    hub.state.register(parsed, sign_in, version)
    log.info(
        "registered agent certificate(s) %s (agent version %r, sign-in endpoint %r)",
        ", ".join(c.kid for c in parsed),
        version,
        sign_in,
    )
    return {"signingKey": hub.key.published, **hub.state.override("registration")}


# ---- agent channel -----------------------------------------------------------------------------


def _peer_gone(sock: Any) -> bool:
    """Whether the agent closed the poll's connection (protocol §3: such a poll gets nothing).

    Peeks at the TCP stream under any TLS layer: end of stream means the agent went away
    (a stopping agent cuts its waiting poll); bytes waiting (a pipelined request) do not.
    """
    try:
        fd = sock.fileno()
        if fd < 0:
            return True
        poller = select.poll()  # not select(): no limit on the descriptor's number
        poller.register(fd, select.POLLIN | select.POLLRDHUP)
        events = poller.poll(0)
        if not events:
            return False
        if events[0][1] & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
            return True
        with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as raw:
            return raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except (OSError, ValueError):
        return True


@agent.post("/poll")
def agent_poll() -> ResponseReturnValue:
    """Protocol §3: long-poll for commands; each one handed out is leased to the agent."""
    sub, body = _agent_request("poll")
    max_commands = int_field(body, "max", 1, 100)
    wait = number_field(body, "wait", 0, 60)
    hub = current_hub()
    environ = request.environ  # werkzeug's server, gunicorn's workers, gunicorn's gevent_pywsgi
    sock = (
        environ.get("werkzeug.socket")
        or environ.get("gunicorn.socket")
        or environ.get("gunicorn.sock")
        or environ.get("devhub.socket")  # another server's: anything with fileno(), -1 if closed
    )
    gone = functools.partial(_peer_gone, sock) if sock is not None else None
    commands = hub.state.take(sub, max_commands, wait, gone=gone)
    for command in commands:
        log.info("command %s %s leased to %s", command["id"], command["name"], sub)
    return {
        "commands": commands,
        "serverTime": server_time(),
        "leaseSeconds": hub.config.lease_seconds,
    }


def parse_batch(
    body: dict[str, Any], endpoint: str, limit: int, parse: Callable[[int, Any], T]
) -> list[T]:
    """The items of a body ``{endpoint: [item, ...]}`` (1..``limit`` items), each parsed by
    ``parse``; one malformed item refuses the batch whole.

    Raises:
        ApiError: 400 ``bad_request``, naming the first problem.
    """
    items = body.get(endpoint)
    if not isinstance(items, list) or not 1 <= len(items) <= limit:
        bad_request(f"{endpoint} must be a list of 1..{limit} items")
    return [parse(i, item) for i, item in enumerate(items)]


def _batch(endpoint: str, limit: int, parse: Callable[[int, Any], T]) -> tuple[str, list[T]]:
    """An agent request whose body is a batch (:func:`parse_batch`): the agent's ``sub`` and
    the parsed items."""
    sub, body = _agent_request(endpoint)
    return sub, parse_batch(body, endpoint, limit, parse)


def _parse_result(i: int, item: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
        bad_request(f"results[{i}].id must be a non-empty string")
    result = item.get("result")
    if not isinstance(result, dict):
        bad_request(f"results[{i}].result must be an object")
    err = result.get("err")
    if err is not None:
        if not isinstance(err, dict) or err.get("name") not in ERROR_NAMES:
            bad_request(
                f"results[{i}].result.err.name must be one of {', '.join(sorted(ERROR_NAMES))}"
            )
        if not isinstance(err.get("message"), str):
            bad_request(f"results[{i}].result.err.message must be a string")
    return item["id"], result


@agent.post("/results")
def agent_results() -> ResponseReturnValue:
    """Protocol §4: record results, idempotent by command id; acknowledge every id."""
    sub, parsed = _batch("results", MAX_RESULTS, _parse_result)
    acked = current_hub().state.post_results(sub, parsed)
    for command_id, result in parsed:
        err = result.get("err")
        outcome = f"error {err['name']}" if isinstance(err, dict) else "ok"
        log.info("result for command %s from %s: %s", command_id, sub, outcome)
    return {"acked": acked}


def parse_signin(i: int, item: Any) -> tuple[str, str, dict[str, Any], str]:
    """``signins[i]`` as ``(ref, wctx, profile, method)``, or 400 (protocol §5.2)."""
    if not isinstance(item, dict):
        bad_request(f"signins[{i}] must be an object")
    ref, wctx, profile, method = (item.get(k) for k in ("ref", "wctx", "profile", "method"))
    if not isinstance(ref, str) or not REF_PATTERN.fullmatch(ref):
        bad_request(f"signins[{i}].ref must be 22..128 characters of A-Z a-z 0-9 - _")
    if not isinstance(wctx, str) or len(wctx) > MAX_WCTX:
        bad_request(f"signins[{i}].wctx must be a string of at most {MAX_WCTX} characters")
    if not isinstance(profile, dict):
        bad_request(f"signins[{i}].profile must be a JSON object")
    if method not in SESSION_METHODS:
        bad_request(f"signins[{i}].method must be one of {', '.join(SESSION_METHODS)}")
    return ref, wctx, profile, method


@agent.post("/signins")
def agent_signins() -> ResponseReturnValue:
    """Protocol §5.2: keep relayed sign-ins, idempotent by ``ref``; acknowledge every ref."""
    sub, parsed = _batch("signins", MAX_SIGNINS, parse_signin)
    return {"acked": relay_signins(current_hub(), sub, parsed)}


def relay_signins(
    hub: DevHub, sub: str, parsed: list[tuple[str, str, dict[str, Any], str]]
) -> list[str]:
    """Keep the parsed sign-ins relayed by agent ``sub``; the acknowledged refs."""
    acked = hub.state.relay_signins(sub, parsed)
    log.info("%d sign-in(s) relayed by %s", len(parsed), sub)
    return acked
