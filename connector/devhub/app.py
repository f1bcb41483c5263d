"""The devhub's Flask app: the hub side of the channel protocol v2 (``docs/protocol.md``).

``{base}`` is the URL a request came in on (``request.host_url``) unless
``DevHubConfig.public_base_url`` is set; ``{t}`` is the one tenant; ``adHub`` is
``{base}/tenants/{t}``.

Provisioning (the ticket is the credential)::

    GET  /tickets/{ticket}/info          connection, realm, postTokenUrl, kerberos, ipRanges
    POST /tickets/{ticket}               {certs, signInEndpoint, agentVersion} -> {signingKey}

Agent channel (``Authorization: Bearer`` agent JWT, ``X-Connector-Protocol: 2``)::

    POST /tenants/{t}/agent/poll         {max, wait} -> {commands, serverTime, leaseSeconds}
    POST /tenants/{t}/agent/results      {results: [{id, result}]} -> {acked}
    POST /tenants/{t}/agent/signins      {signins: [{ref, wctx, profile, method}]} -> {acked}

Browser pages (server-rendered HTML)::

    GET      /tenants/{t}/               index: ticket URL, links
    GET/POST /tenants/{t}/login          username/password form -> queues authenticate_user
    GET      /tenants/{t}/try/{id}       a command's outcome (profile, or error name + message)
    GET      /tenants/{t}/status         agents, certificates, queue counters
    GET      /tenants/{t}/login/callback realm postTokenUrl: redeems ?ref= once (with ?wctx=),
                                         waiting up to 10 s for a ref not relayed yet

The relay and the callback, two requests per browser sign-in, are served in front of Flask
by :mod:`connector.devhub.hotpaths` (same checks, same answers).

Admin API, **without any authentication**: the devhub is a loopback development and test
tool, and whoever can reach it can queue commands, read profiles and session refs, inject
faults and move its clock. Never expose it beyond localhost. ::

    POST   /tenants/{t}/api/commands          {name, payload?, ttl?, claims?} -> {id}
    POST   /tenants/{t}/api/raw-commands      {jwt, name?, id?} -> {id}   (queued verbatim)
    POST   /tenants/{t}/api/commands/{id}/replay  {jwt} -> {id}  (a done command again)
    GET    /tenants/{t}/api/commands          {commands: [view, ...]}
    GET    /tenants/{t}/api/commands/{id}     view; ?wait=S long-polls until done
    GET    /tenants/{t}/api/agents            {agents, certificates, serverTime}
    GET    /tenants/{t}/api/state             counters
    GET    /tenants/{t}/api/sessions          {sessions}   (relayed sign-ins, with their ref)
    POST   /tenants/{t}/api/faults            {status, count?, retryAfter?, endpoint?} |
                                              {close: N, endpoint?} |
                                              {delay: S, count?, endpoint?} -> {faults}
    GET    /tenants/{t}/api/faults            {faults}
    DELETE /tenants/{t}/api/faults            {faults: []}
    GET    /tenants/{t}/api/clock             {offsetSeconds, serverTime}
    POST   /tenants/{t}/api/clock             {offsetSeconds} -> {offsetSeconds, serverTime}
    GET    /tenants/{t}/api/overrides/{a}     {override}   (a: ticket-info, registration)
    PUT    /tenants/{t}/api/overrides/{a}     {FIELD: VALUE, ...} served over that answer's
                                              fields: a tampered hub ({} restores it)
    POST   /tenants/{t}/api/reset             {certificates?: bool} -> {reset: true, ...}

A password typed on the login page goes only into the signed command: it is never logged,
rendered, or kept once the command is done. Responses are dated (``Date``) on the hub clock
when served by :func:`connector.devhub.server.serve`.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
from typing import Any

from flask import Flask, Response, jsonify, redirect, request, url_for
from flask.sessions import SecureCookieSessionInterface
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from connector.devhub.admin import admin
from connector.devhub.channel import agent, tickets
from connector.devhub.config import DevHubConfig
from connector.devhub.hotpaths import HotPaths
from connector.devhub.pages import hub_time, pages
from connector.devhub.state import HubState
from connector.devhub.tokens import TenantKey
from connector.devhub.web import ApiError, DevHub, DropConnection

log = logging.getLogger(__name__)


def _json_path(path: str) -> bool:
    return path.startswith("/tickets/") or "/agent/" in path or "/api/" in path


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions with the signing serializer made once per app, not once
    per request (the app's ``SECRET_KEY`` never changes; every request opens a session)."""

    def get_signing_serializer(self, app: Flask) -> Any:
        made = app.extensions.get("devhub.session_serializer")
        if made is None:
            made = app.extensions["devhub.session_serializer"] = super().get_signing_serializer(app)
        return made


def create_app(config: DevHubConfig) -> Flask:
    """The devhub for one tenant and one connection, with fresh state and a fresh key."""
    app = Flask(__name__)
    app.config["SECRET_KEY"] = secrets.token_bytes(32)
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024 * 1024
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.session_interface = _SessionInterface()
    hub = DevHub(
        config=config,
        state=HubState(
            config.lease_seconds,
            config.session_seconds,
            max_waiters_per_client=config.max_waiters_per_client,
            max_waiters=config.max_waiters,
        ),
        key=TenantKey.generate(config.alg),
    )
    app.extensions["devhub"] = hub
    app.jinja_env.filters["hubtime"] = hub_time
    for bp in (tickets, agent, admin, pages):
        app.register_blueprint(bp)
    # the relay and the callback of every browser sign-in, served before Flask's plumbing
    app.wsgi_app = HotPaths(app.wsgi_app, hub, app.config["MAX_CONTENT_LENGTH"])  # type: ignore[method-assign]

    @app.get("/")
    def root() -> ResponseReturnValue:
        return redirect(url_for("pages.index"))

    @app.errorhandler(ApiError)
    def api_error(e: ApiError) -> ResponseReturnValue:
        return {"error": e.code, "message": e.message, **e.extra}, e.status, e.headers

    @app.errorhandler(DropConnection)
    def drop_connection(e: DropConnection) -> ResponseReturnValue:
        sock = request.environ.get("werkzeug.socket")
        if sock is None:
            log.warning("cannot drop the connection: no werkzeug.socket in the environ")
        else:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return Response(status=444)  # nginx's "no response"; written to a shut socket

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> ResponseReturnValue:
        if _json_path(request.path):
            code = (e.name or "error").lower().replace(" ", "_")
            return jsonify(error=code, message=e.description), e.code or 500
        return e.get_response()

    @app.after_request
    def no_store(response: Response) -> Response:
        response.headers["Cache-Control"] = "no-store"
        return response

    return app
