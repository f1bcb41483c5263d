"""The sign-in endpoint the hub sends browsers to (``/wsfed``): Negotiate, or the form.

* A client in the configured ranges (and, optionally, with a listed browser) is offered
  Kerberos: without credentials it gets ``401 WWW-Authenticate: Negotiate`` *with the form as
  the body*, so a browser that cannot do Kerberos simply shows the form.
* A Negotiate token is accepted against the keytab; any failure shows the form with a short
  reason (200, no new challenge: no prompt loop, never a 500).
* With ``CLIENT_CERT_AUTH``, a client certificate (from a trusted proxy's header or gunicorn's
  TLS socket) is tried first, before Negotiate: verified and mapped by
  :mod:`connector.clientcert`; a failing one gets the form with the reason.
* Everyone else gets the form: CSRF-protected, throttled per username and per address.
* Success mints a one-time ``ref``, queues the profile for this worker's agent to relay to the
  hub (``agent/signins``, in batches: no hub call in the request) and redirects the browser at
  once to the realm's ``postTokenUrl`` (or an allowed ``wreply``) with ``wctx`` and ``ref``;
  the hub waits there for the relayed profile (protocol §5).
* The form's post is the hot path: :class:`SignInHotPath`, in front of Flask, signs it in by
  the function Flask's view calls (:func:`sign_in_form`) and answers the 303 itself; every
  page (the form again with the reason, an error) is still made by Flask's view.

The web layer parses requests and calls services; it imports neither ``ldap`` nor ``spnego``.
"""

from __future__ import annotations

import functools
import io
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    make_response,
    render_template,
    request,
)
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import Headers
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import parse_cookie
from werkzeug.urls import iri_to_uri
from werkzeug.wrappers import Request as WsgiRequest
from werkzeug.wrappers import Response as BaseResponse

from connector import audit, clientcert, errors, metrics
from connector.channel.client import HubError
from connector.kerberos import KerberosRejected
from connector.netpolicy import client_address, parse_address
from connector.services import Services
from connector.web import password_change, services
from connector.web.guards import (
    CSRF_COOKIE,
    Attempt,
    address_key,
    csrf_cookie_name,
    entry_key,
    no_framing,
    set_csrf_cookie,
    user_key,
)

log = logging.getLogger(__name__)

bp = Blueprint("signin", __name__)
bp.after_request(no_framing)  # the form is never shown in a frame (clickjacking)


@bp.before_request
def _start_clock() -> None:
    """Metrics: when this sign-in request began."""
    g.signin_started = time.monotonic()


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(exc: RequestEntityTooLarge) -> ResponseReturnValue:
    """A sign-in post over MAX_CONTENT_LENGTH: a page that says so, and a log line."""
    log.warning(
        "refused a sign-in request of %s bytes from %s: over the %d-byte limit",
        request.content_length,
        _client(),
        current_app.config["MAX_CONTENT_LENGTH"],
    )
    return _error_page(
        "Sign-in request too large",
        "This sign-in request is larger than the connector accepts. Go back and sign in again.",
        413,
    )


MESSAGES = {
    "WrongUsername": "The username or password is incorrect.",
    "WrongPassword": "The username or password is incorrect.",
    "AccountDisabled": "This account is disabled. Contact your administrator.",
    "AccountLocked": "This account is locked after too many failed attempts. Try again later "
    "or contact your administrator.",
    "AccountExpired": "This account has expired. Contact your administrator.",
    "PasswordExpired": "Your password has expired. Change it, then sign in again.",
    "PasswordChangeRequired": "You must change your password before signing in.",
    "Unavailable": "The directory cannot be reached right now. Try again in a moment.",
    "Unexpected": "Something went wrong while signing you in. Try again in a moment.",
}


#: A page still to be made, in Flask's request context: what a sign-in answers when it does not
#: hand the browser off (every such answer renders a template).
Page = Callable[[], Response]


def _client_of(svc: Services, environ: dict[str, Any]) -> Any:
    """The client's address: the peer's, or the one a configured proxy forwarded."""
    return client_address(
        environ.get("REMOTE_ADDR") or "0.0.0.0",  # noqa: S104 - a placeholder, never bound
        environ.get("HTTP_X_FORWARDED_FOR"),
        svc.trusted_proxies,
    )


def _client() -> Any:
    return _client_of(services(current_app), request.environ)


def _return_url(svc: Services, params: dict[str, str]) -> str | None:
    """Where the browser goes after signing in: the realm's postTokenUrl or an allowed wreply."""
    allowed = svc.allowed_return_urls
    wreply = params.get("wreply")
    if wreply:
        return wreply if wreply in allowed else None
    return svc.settings.realm_post_token_url


URLENCODED = "application/x-www-form-urlencoded"


def read_urlencoded(environ: dict[str, Any], limit: int | None) -> dict[str, str] | None:
    """A browser's form post (``application/x-www-form-urlencoded``, ``Content-Length`` at
    most ``limit`` if there is one, all of it sent, UTF-8), read from the WSGI input as
    ``request.form`` reads it (the first value of each name); the body is put back for whoever
    reads it later. None for anything else (read nothing, or put back): ``request.form`` then
    answers, as ever (an empty form for a body that is not UTF-8; 413 over the limit; 400 for
    a short body). Werkzeug's general parser (any content type, files, streams) costs a
    sign-in about as much again as the parsing itself."""
    if environ.get("CONTENT_TYPE") != URLENCODED:
        return None
    try:
        length = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None
    if length < 0 or (limit is not None and length > limit):
        return None
    data = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(data)
    if len(data) != length:
        return None
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    form: dict[str, str] = {}
    for name, value in parse_qsl(text, keep_blank_values=True, errors="werkzeug.url_quote"):
        form.setdefault(name, value)
    return form


def _form() -> Any:
    """The posted sign-in form (see :func:`read_urlencoded`), read once per request."""
    form = g.get("signin_form")
    if form is None:
        form = read_urlencoded(request.environ, request.max_content_length)
        if form is None:
            form = request.form
        g.signin_form = form
    return form


def _params(source: Any) -> dict[str, str]:
    """The sign-in request's own values (``wtrealm``, ``wctx``, ``wreply``) from ``source``."""
    return {k: source.get(k, "")[:4096] for k in ("wtrealm", "wctx", "wreply")}


def _render_form(
    params: dict[str, str],
    message: str | None = None,
    username: str = "",
    status: int = 200,
    negotiate: bool = False,
) -> Response:
    svc = services(current_app)
    sent = request.cookies.get(csrf_cookie_name(CSRF_COOKIE, request.is_secure))
    cookie = svc.csrf.reuse(sent) or svc.csrf.new_cookie()
    html = render_template(
        "signin.html",
        params=params,
        message=message,
        username=username,
        csrf_token=svc.csrf.token(cookie),
    )
    resp = make_response(html, status)
    if cookie != sent:
        set_csrf_cookie(
            resp,
            CSRF_COOKIE,
            cookie,
            secure=request.is_secure,
            samesite="Lax",
            max_age=svc.csrf.max_age,
        )
    resp.headers["Cache-Control"] = "no-store"
    if negotiate:
        resp.headers["WWW-Authenticate"] = "Negotiate"
    return resp


def _error_page(title: str, message: str, status: int) -> Response:
    resp = make_response(render_template("message.html", title=title, message=message), status)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _audit(
    method: str,
    user: str | None,
    outcome: str,
    addr: Any,
    correlation: str,
    principal: str | None = None,
    started: float | None = None,
) -> None:
    """One line per sign-in attempt; Kerberos ones also name the ticket's principal.
    ``started``: when the request began (by default the one Flask's request noted)."""
    if started is None:
        started = g.get("signin_started")
    metrics.login(method, outcome, time.monotonic() - started if started else None)
    audit.record("login", method, user, outcome, correlation, client=addr, principal=principal)


class SeeOther(BaseResponse):
    """The hand-off's answer: ``303 See Other`` to a URI this module made, with no body (the
    browser follows the ``Location`` at once). The ``Location`` goes out as it is: Werkzeug
    would turn it into a URI again on every response, which :func:`_return_uri` did once per
    return URL (the values added to it are URL-encoded, so already a URI's)."""

    def __init__(self, location: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        """``headers``: those after ``Location``, in their order."""
        super().__init__(status=303, headers=[("Location", location), *headers])

    def get_wsgi_headers(self, environ: Any) -> Headers:
        """The headers as set (no body: ``Content-Length: 0``)."""
        headers = Headers(self.headers)
        headers["Content-Length"] = "0"
        return headers


def _hand_off_tail() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The hand-off's headers around its extra ones: after ``Location`` the ``Content-Type``
    Werkzeug gives a response; last ``Cache-Control`` and ``no_framing``'s."""
    resp = BaseResponse()
    head = list(resp.headers.items())
    resp.headers.clear()
    resp.headers["Cache-Control"] = "no-store"
    no_framing(resp)
    return head, list(resp.headers.items())


_HAND_OFF_HEAD, _HAND_OFF_TAIL = _hand_off_tail()


class _Sent:
    """An empty body that calls ``on_close`` (if any) when the server closes it."""

    __slots__ = ("_on_close",)

    def __init__(self, on_close: Callable[[], None] | None) -> None:
        self._on_close = on_close

    def __iter__(self) -> Any:
        return iter(())

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()


class HandOff:
    """The hand-off's answer, a plain WSGI app: :class:`SeeOther`'s status and headers
    without a response object (:class:`SignInHotPath` answers with it as it is; a Flask view
    answers its :meth:`response`). ``on_close`` is called once the answer is out."""

    __slots__ = ("headers", "location", "on_close")

    def __init__(
        self, location: str, headers: list[tuple[str, str]], on_close: Callable[[], None] | None
    ) -> None:
        self.location = location
        self.headers = headers  #: those after ``Location`` (and before ``Content-Length: 0``)
        self.on_close = on_close

    def __call__(self, environ: Any, start_response: Any) -> _Sent:
        headers = [("Location", self.location), *self.headers, ("Content-Length", "0")]
        start_response("303 SEE OTHER", headers)
        return _Sent(self.on_close)

    def response(self) -> SeeOther:
        """The same answer as a response object."""
        resp = SeeOther(self.location, self.headers)
        if self.on_close is not None:
            resp.call_on_close(self.on_close)
        return resp


@functools.lru_cache(maxsize=64)
def _return_uri(target: str) -> tuple[str, str]:
    """A return URL as a URI cut where a sign-in's values go (its own query kept, then ``?``
    or ``&``), and its fragment (``#…`` or nothing): made once per URL, not per sign-in."""
    parts = urlsplit(target)
    query = urlencode(parse_qsl(parts.query, keep_blank_values=True))
    uri = iri_to_uri(urlunsplit(parts._replace(query=query, fragment="")))
    fragment = iri_to_uri(urlunsplit(("", "", "", "", parts.fragment))) if parts.fragment else ""
    return uri + ("&" if query else "?"), fragment


def _made(answer: HandOff | Page) -> ResponseReturnValue:
    """An answer in Flask's request context: the hand-off's response, or the page made now."""
    return answer.response() if isinstance(answer, HandOff) else answer()


def _hand_off(
    svc: Services,
    params: dict[str, str],
    profile: dict[str, Any],
    method: str,
    target: str,
    audit_ctx: tuple[str, Any, str],
    extra_headers: dict[str, str] | None = None,
    principal: str | None = None,
    started: float | None = None,
) -> HandOff | Page:
    """Queue the profile for the hub under a fresh one-time reference and send the browser
    back with it (protocol §5.1: no call to the hub here; the agent relays it in a batch);
    the page saying the hub cannot be reached if the profile cannot be queued.

    ``audit_ctx`` is (user, client address, correlation id) for the audit line.
    """
    agent = svc.agent
    user, addr, correlation = audit_ctx
    ref = secrets.token_urlsafe(24)
    try:
        if agent is None:
            raise HubError("the connector is not connected to a hub yet")
        wake = agent.relay.submit(ref, params["wctx"], profile, method)
    except HubError as exc:
        metrics.hub_error("signins")
        log.error("sign-in not relayed to the hub: %s", exc)
        _audit(method, user, "Unavailable", addr, correlation, principal, started)
        return functools.partial(
            _error_page,
            "Sign-in unavailable",
            "The identity service cannot be reached right now. Try again in a moment.",
            503,
        )
    head, fragment = _return_uri(target)
    location = head + urlencode((("wctx", params["wctx"]), ("ref", ref))) + fragment
    headers = [*_HAND_OFF_HEAD, *(extra_headers or {}).items()]
    headers += _HAND_OFF_TAIL  # Cache-Control, and no_framing's (the hot path has no Flask)
    _audit(method, user, "success", addr, correlation, principal, started)
    # the relay thread reads the hub's answer (if this thread wrote it) once this one is out
    return HandOff(location, headers, wake)


def _precheck(params: dict[str, str]) -> str | Response:
    """The return URL, or the page refusing the request."""
    target = _target(services(current_app), params)
    return target if isinstance(target, str) else target()


def _target(svc: Services, params: dict[str, str]) -> str | Page:
    """The return URL, or the page refusing the request (still to be made)."""
    if svc.settings.realm and params["wtrealm"] and params["wtrealm"] != svc.settings.realm:
        return functools.partial(
            _error_page,
            "Unknown application",
            "This sign-in request is for an application this connector does not serve.",
            400,
        )
    target = _return_url(svc, params)
    if target is None:
        log.warning("refused sign-in: wreply %r is not an allowed return URL", params["wreply"])
        return functools.partial(
            _error_page,
            "Sign-in refused",
            "The return address of this sign-in request is not allowed.",
            400,
        )
    return target


class _Begun(NamedTuple):
    """What every sign-in request starts from, once its realm and return URL are accepted."""

    svc: Services
    params: dict[str, str]
    target: str
    addr: Any
    correlation: str


def _begin(svc: Services, environ: dict[str, Any], source: Any) -> _Begun | Page:
    """A sign-in started from the values in ``source`` (the query, or the posted form): its
    realm and return URL accepted, with the client and a fresh correlation id; else the page
    refusing the request (still to be made)."""
    params = _params(source)
    target = _target(svc, params)
    if not isinstance(target, str):
        return target
    return _Begun(svc, params, target, _client_of(svc, environ), secrets.token_hex(8))


def _begun(view: Callable[[_Begun], ResponseReturnValue]) -> Callable[[], ResponseReturnValue]:
    """A sign-in view of the query's values, called once the realm and return URL are
    accepted (else the page refusing the request is the answer) with the client and a fresh
    correlation id. (The form's post starts in :func:`sign_in_form`.)"""

    @functools.wraps(view)
    def wrapper() -> ResponseReturnValue:
        try:
            args = request.args
        except UnicodeDecodeError:  # raw bytes in the query that are not UTF-8
            log.warning("refused a sign-in request whose query is not UTF-8 (client %s)", _client())
            return _error_page(
                "Malformed sign-in request",
                "This sign-in request cannot be read. Go back to the application and sign in "
                "again.",
                400,
            )
        begun = _begin(services(current_app), request.environ, args)
        return view(begun) if isinstance(begun, _Begun) else begun()

    return wrapper


def _kerberos_refused(
    begun: _Begun,
    exc: KerberosRejected,
    started: float | None,
    user: str | None = None,
    principal: str | None = None,
) -> Page:
    """The audit line of a ticket that did not sign anybody in, and the form with the reason
    (still to be made)."""
    audit_ctx = (begun.addr, begun.correlation, principal, started)
    _audit("kerberos", user, f"rejected:{exc.code}", *audit_ctx)
    return functools.partial(
        _render_form,
        begun.params,
        f"Automatic sign-in did not work ({exc.reason}). Sign in with your password.",
    )


def _certificate(begun: _Begun) -> ResponseReturnValue | None:
    """A client-certificate sign-in (``CLIENT_CERT_AUTH``; see :mod:`connector.clientcert`):
    the hand-off, the form with the reason, or None when no certificate came."""
    svc, params, target, addr, correlation = begun
    s = svc.settings
    subject = None
    try:
        cert = clientcert.presented(
            request.headers,
            request.environ,
            parse_address(request.remote_addr or ""),
            svc.trusted_proxies,
            s.client_cert_headers,
        )
        if cert is None:
            return None
        subject = cert.leaf.subject.rfc4514_string()
        svc.cert_verifier.verify(cert)
        directory = svc.require_directory()
        filters = clientcert.mapping_filters(
            cert.leaf,
            s.client_cert_mapping,
            upn_filter=s.ldap_user_by_upn,
            email_filter=s.client_cert_email_filter,
            cn_filter=s.client_cert_cn_filter,
            allow_weak=s.client_cert_allow_weak_mapping,
        )
        _mapping, entry = clientcert.find_person(filters, directory.find_entries)
        profile = directory.usable_profile(entry, "certificate")
    except errors.CertificateRejected as exc:
        _audit("certificate", None, f"rejected:{exc.code}", addr, correlation, subject)
        return _render_form(params, f"Certificate sign-in did not work. {exc.reason}")
    except errors.ConnectorError as exc:
        _audit("certificate", None, exc.wire_name, addr, correlation, subject)
        return _render_form(params, MESSAGES.get(exc.wire_name, MESSAGES["Unexpected"]))
    audit_ctx = (entry.dn, addr, correlation)
    return _made(_hand_off(svc, params, profile, "certificate", target, audit_ctx, None, subject))


@bp.route("/wsfed", methods=["GET"])
def signin_get_view() -> ResponseReturnValue:
    """Start a sign-in, or make the page :class:`SignInHotPath` left for Flask to make."""
    page = request.environ.pop(SIGNIN_PAGE, None)
    if page is not None:
        return _made(page)
    return signin_get()


@_begun
def signin_get(begun: _Begun) -> ResponseReturnValue:
    """Start a sign-in: Negotiate for clients in range, the form for everyone else."""
    svc, params, addr = begun.svc, begun.params, begun.addr
    if svc.settings.client_cert_auth:
        answered = _certificate(begun)
        if answered is not None:
            return answered
    offered = svc.offers_negotiate(addr, request.headers.get("User-Agent"))
    header = request.headers.get("Authorization", "")
    if not offered:
        return _render_form(params)
    if not header.lower().startswith(("negotiate ", "ntlm ")) and header.lower() != "negotiate":
        return _render_form(params, status=401, negotiate=True)
    return _made(sign_in_negotiate(begun, header, g.get("signin_started")))


def sign_in_negotiate(begun: _Begun, header: str, started: float | None) -> HandOff | Page:
    """A Negotiate sign-in of a client offered Kerberos, its ``Authorization`` header in
    hand: the hand-off with the server's mutual-authentication token, or the form with the
    reason (a ticket refused, the account unusable, the directory down).

    Needs no request context (:class:`SignInHotPath` calls it in front of Flask): the 303 is
    made here, every other answer is a :data:`Page` for Flask to make.
    """
    svc, params, target, addr, correlation = begun
    acceptor = svc.kerberos
    if acceptor is None:
        return functools.partial(
            _render_form, params, "Kerberos sign-in is not available; use your password."
        )
    try:
        accepted = acceptor.accept(header)
    except KerberosRejected as exc:
        return _kerberos_refused(begun, exc, started)
    user = accepted.username
    try:
        by_upn = svc.settings.kerberos_principal_mapping == "upn"
        profile = svc.require_directory().kerberos_profile(
            user, accepted.realm, by_upn=by_upn, logon_info=accepted.logon_info
        )
    except KerberosRejected as exc:
        return _kerberos_refused(begun, exc, started, user, accepted.principal)
    except errors.ConnectorError as exc:
        _audit("kerberos", user, exc.wire_name, addr, correlation, accepted.principal, started)
        return functools.partial(
            _render_form, params, MESSAGES.get(exc.wire_name, MESSAGES["Unexpected"])
        )
    return _hand_off(
        svc,
        params,
        profile,
        "kerberos",
        target,
        (user, addr, correlation),
        {"WWW-Authenticate": accepted.www_authenticate},
        accepted.principal,
        started,
    )


#: Where :class:`SignInHotPath` leaves the sign-in's page for Flask to make (not a header:
#: nothing a client sends becomes this ``environ`` key).
SIGNIN_PAGE = "connector.signin.page"


@bp.route("/wsfed", methods=["POST"])
def signin_post() -> ResponseReturnValue:
    """The form, when :class:`SignInHotPath` did not answer it: its page still to be made, or a
    post it left alone (not a plain urlencoded body), signed in here."""
    page = request.environ.pop(SIGNIN_PAGE, None)
    if page is None:
        page = sign_in_form(services(current_app), request.environ, _form(), g.signin_started)
    return _made(page)


def sign_in_form(
    svc: Services, environ: dict[str, Any], form: Any, started: float
) -> HandOff | Page:
    """The form: check the password, hand the profile over, or say precisely what is wrong.

    Needs no request context (:class:`SignInHotPath` calls it in front of Flask): the 303 is
    made here, every other answer is a :data:`Page` for Flask to make.
    """
    begun = _begin(svc, environ, form)
    if not isinstance(begun, _Begun):
        return begun
    _, params, target, addr, correlation = begun
    secure = environ.get("wsgi.url_scheme") == "https"
    sent = parse_cookie(environ).get(csrf_cookie_name(CSRF_COOKIE, secure))
    page = functools.partial(_render_form, params)
    if not svc.csrf.check(sent, form.get("csrf_token")):
        log.warning("sign-in form refused: missing or wrong CSRF token (client %s)", addr)
        return functools.partial(page, "Your session expired. Please sign in again.", status=400)
    username = form.get("username", "").strip()[:1024]
    password = form.get("password", "")
    if not username or not password:
        return functools.partial(page, "Enter your username and password.", username, status=400)
    # One attempt is reserved (checked and counted in one step) per typed name, per address
    # and, once the search found it, per directory entry: a name spelled another way that the
    # directory matches, or requests sent in parallel, cannot get past the limits.
    attempt = Attempt()
    found: list[str] = []  # the entry's DN, for the password change step

    def before_bind(entry: Any) -> None:
        found.append(entry.dn)
        attempt.reserve(svc.user_throttle, entry_key(entry.dn), forget=True)

    try:
        attempt.reserve(svc.address_throttle, address_key(addr), forget=False)
        attempt.reserve(svc.user_throttle, user_key(username), forget=True)
        profile = svc.require_directory().authenticate(username, password, before_bind=before_bind)
    except errors.LoginThrottled as exc:
        attempt.cancel()  # a throttled attempt tried nothing: it counts against nobody
        _audit("form", username, "throttled", addr, correlation, started=started)
        return functools.partial(
            page,
            f"Too many failed attempts. Try again in {int(exc.wait) + 1} seconds.",
            username,
            status=429,
        )
    except errors.AuthError as exc:  # the reserved attempts stay counted: failures
        _audit("form", username, exc.wire_name, addr, correlation, started=started)
        if password_change.offered_for(svc.settings, exc):  # the right password, to change
            attempt.succeeded()
            return functools.partial(
                password_change.start,
                params,
                username,
                str(exc.context["dn"]),
                password,
                addr,
                required=True,
            )
        message = MESSAGES.get(exc.wire_name, MESSAGES["Unexpected"])
        return functools.partial(page, message, username, status=401)
    except errors.ConnectorError as exc:
        attempt.cancel()  # the directory broke: not the user's failure
        _audit("form", username, exc.wire_name, addr, correlation, started=started)
        message = MESSAGES.get(exc.wire_name, MESSAGES["Unexpected"])
        return functools.partial(page, message, username, status=503)
    days = password_change.warn_days(svc.settings, profile)
    if days is not None and found:
        attempt.succeeded()
        return functools.partial(
            password_change.start,
            params,
            username,
            found[-1],
            password,
            addr,
            required=False,
            days=days,
        )
    try:  # the relay's request leaves first: the hub works on it while the throttle settles
        return _hand_off(
            svc, params, profile, "form", target, (username, addr, correlation), started=started
        )
    finally:
        attempt.succeeded()


def _raise(exc: BaseException) -> Response:
    """A page that is the exception ``exc`` (Flask logs it and answers 500, as ever)."""
    raise exc


class SignInHotPath:
    """WSGI middleware in front of Flask: a browser's form post to ``/wsfed``, and its
    ``GET /wsfed`` with a Negotiate token, signed in without Flask's own part of a request
    (its contexts, routing and response processing: about 0.2 ms of CPU a sign-in here, a
    fifth of the whole).

    A ``GET /wsfed`` that Flask's view would hand to :func:`sign_in_negotiate` (see
    :meth:`_negotiating`) is signed in here by that function, in the same way.

    A ``POST /wsfed`` whose body :func:`read_urlencoded` reads is signed in here by
    :func:`sign_in_form`, the function Flask's view calls. Its 303 (a :class:`HandOff`)
    goes out from here with the headers Flask's view sends (``_hand_off`` adds the
    blueprint's ``no_framing``; a sign-in opens no session). Any other answer is a page
    (:data:`Page`) that Flask's view makes, handed over under :data:`SIGNIN_PAGE`: nothing
    is checked, counted or logged twice. An exception is raised again inside Flask, which
    logs it and answers 500 as it would have. Every other request, and a post this layer
    does not read (another content type, over the size limit, not UTF-8), goes to Flask
    untouched, and Flask's view signs it in. ``tests/test_signin_hotpath.py`` compares the
    two answers.
    """

    def __init__(self, app: Any, flask_app: Any) -> None:
        self.app = app  #: the wrapped WSGI app (Flask's ``wsgi_app``)
        self._flask = flask_app
        self._svc = services(flask_app)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") != "/wsfed":
            return self.app(environ, start_response)
        method = environ.get("REQUEST_METHOD")
        started = time.monotonic()
        if method == "POST":
            form = read_urlencoded(environ, self._flask.config.get("MAX_CONTENT_LENGTH"))
            if form is None:
                return self.app(environ, start_response)
            sign_in = functools.partial(sign_in_form, self._svc, environ, form, started)
        elif method == "GET":
            begun = self._negotiating(environ)
            if begun is None:
                return self.app(environ, start_response)
            header = environ["HTTP_AUTHORIZATION"]
            sign_in = functools.partial(sign_in_negotiate, begun, header, started)
        else:
            return self.app(environ, start_response)
        agent = self._svc.agent
        relay = agent.relay if agent is not None else None
        if relay is not None:  # a sign-in submitted meanwhile waits for this one (a batch)
            relay.checking()
        try:
            answer = sign_in()
        except Exception as exc:  # noqa: BLE001 - raised again in Flask: logged, 500
            answer = functools.partial(_raise, exc)
        finally:
            if relay is not None:
                relay.checked()
        if isinstance(answer, HandOff):
            return answer(environ, start_response)
        environ[SIGNIN_PAGE] = answer
        return self.app(environ, start_response)

    def _negotiating(self, environ: dict[str, Any]) -> _Begun | None:
        """A ``GET /wsfed`` that Flask's view would pass to :func:`sign_in_negotiate`: a
        ``Negotiate`` token from a client offered Kerberos, the realm and return URL accepted,
        client certificates off (they are tried first). None for every other: Flask's view
        answers it (the form, the 401 offering Negotiate, a refusal, a certificate)."""
        svc = self._svc
        header = environ.get("HTTP_AUTHORIZATION", "")
        if svc.settings.client_cert_auth or header[:10].lower() != "negotiate ":
            return None
        try:  # the query parsed as Flask's view parses it (the body is not read)
            args = WsgiRequest(environ, populate_request=False, shallow=True).args
        except UnicodeDecodeError:  # not UTF-8: Flask's view refuses it (400)
            return None
        begun = _begin(svc, environ, args)
        if not isinstance(begun, _Begun):
            return None
        if not svc.offers_negotiate(begun.addr, environ.get("HTTP_USER_AGENT")):
            return None
        return begun
