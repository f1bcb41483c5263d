"""The admin console: set the connector up, see that it works, and find what to fix.

Plain server-rendered HTML under ``/console/``, answered only when all of these hold (else
404, so the public listener does not even reveal that it exists):

* the request came in on the console's own listener: WSGI ``SERVER_PORT`` is the port of
  ``CONSOLE_BIND`` (gunicorn sets it from the listening socket, not from the Host header);
* the TCP peer (``REMOTE_ADDR``, never ``X-Forwarded-For``) is a loopback address;
* the ``Host`` header names loopback (``localhost``, 127/8, ``[::1]``): a web page that
  rebinds its own name to 127.0.0.1 cannot drive the console from a browser on this machine.

Every page but the sign-in asks for a signed, 8-hour session cookie first (without one: a
redirect to the sign-in, whatever the method, and nothing else). The password is
``CONSOLE_PASSWORD`` when set, else the one ``connector console-password`` generated (only its
hash is stored: :mod:`connector.consolepw`); with neither, nobody signs in. Sign-ins are
throttled for every worker together, and so is "try a login", per session and in all. Every
change is a POST carrying a CSRF token (double submit: cookie + HMAC keyed from
``secret.key``). On the console's listener only ``/health``, ``/ready`` and ``/metrics`` are
served besides the console.

Pages: status, setup (ticket, then the directory tested live before saving), troubleshoot,
users (search, lookup, try a login), profile mapper, logs, export / import. Saving settings or
importing asks gunicorn's master to restart the workers gracefully (SIGHUP), so the new
settings apply without dropping requests.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.wrappers import Response as BaseResponse

from connector import __version__, consolepw, errors, metrics
from connector.archive import (
    MAX_ARCHIVE_BYTES,
    MIN_PASSPHRASE,
    ArchiveError,
    export_archive,
    import_archive,
)
from connector.channel.provision import SetupError, setup_from_ticket
from connector.directory.check import Check, check_directory
from connector.logs import LEVELS, read_recent
from connector.netpolicy import parse_address
from connector.profiles import default_profile, entry_to_raw_profile
from connector.services import Services, shared_throttle
from connector.settings import (
    Settings,
    is_loopback_host,
    load_settings,
    refine,
    update_config_file,
)
from connector.troubleshoot import keytab_principals, run_checks
from connector.web import services
from connector.web.guards import Attempt, Csrf, csrf_cookie_name, set_csrf_cookie
from connector.web.password_change import console_note

log = logging.getLogger(__name__)
audit = logging.getLogger("connector.audit")

bp = Blueprint("console", __name__, url_prefix="/console")

CSRF_COOKIE = "connector_console_csrf"
SESSION_COOKIE = "connector_console"
SESSION_SECONDS = 8 * 3600
#: Wrong console passwords allowed per window (every worker together).
LOGIN_FAILURES = 5
#: "Try a login" attempts allowed per window: per console session, and in all.
TRIES_PER_SESSION = 10
TRIES_IN_ALL = 30
THROTTLE_SECONDS = 300.0
ALSO_ON_CONSOLE = ("/health", "/ready", "/metrics")
TLS_CHOICES = ("demand", "hard", "allow", "try", "never")
#: What the setup page writes: set in the environment, they would override it.
SETUP_KEYS = frozenset(
    {
        "LDAP_URL",
        "LDAP_URLS",
        "LDAP_BASE",
        "LDAP_BIND_USER",
        "LDAP_BIND_PASSWORD",
        "LDAP_BIND_CREDENTIALS",
        "LDAP_STARTTLS",
        "LDAP_TLS_REQUIRE_CERT",
        "LDAP_CA_FILE",
        "LDAP_USER_BY_NAME",
        "AD_HUB",
        "CONNECTION",
        "REALM",
        "TENANT_SIGNING_KEY",
        "PROVISIONING_TICKET",
    }
)
NAV = (
    ("console.status", "Status"),
    ("console.setup", "Setup"),
    ("console.check", "Troubleshoot"),
    ("console.users", "Users"),
    ("console.mapper", "Profile mapper"),
    ("console.logs", "Logs"),
    ("console.archive", "Export / import"),
)


class ConsoleKeys:
    """The console's CSRF checker, session signer and throttles (one per app)."""

    def __init__(self, svc: Services) -> None:
        s = svc.settings
        material = s.secret_box.passphrase(create=True)
        self.csrf = Csrf(material + b"/console", max_age=SESSION_SECONDS)
        self._mac_key = hashlib.sha256(b"connector-console-session-v1" + material).digest()
        self.sessions = URLSafeTimedSerializer(self._mac_key, salt="connector-console")
        self.throttle = shared_throttle(s, "console-login", LOGIN_FAILURES, THROTTLE_SECONDS)
        self.tries_per_session = shared_throttle(
            s, "console-try-session", TRIES_PER_SESSION, THROTTLE_SECONDS
        )
        self.tries_in_all = shared_throttle(s, "console-try-all", TRIES_IN_ALL, THROTTLE_SECONDS)

    def fingerprint(self, credential: Credential) -> str:
        """Binds a session to the password in force: changing it ends every session."""
        material = f"{credential.kind}:{credential.secret}".encode()
        return hmac.new(self._mac_key, material, hashlib.sha256).hexdigest()[:32]


class Credential:
    """The console password in force: ``CONSOLE_PASSWORD``, or the generated one's hash."""

    def __init__(self, kind: str, secret: str) -> None:
        self.kind = kind  # "setting" (secret: the password) or "generated" (secret: its record)
        self.secret = secret

    def __repr__(self) -> str:
        return f"Credential({self.kind!r})"

    @classmethod
    def in_force(cls, settings: Settings) -> Credential | None:
        """The one that applies now (the generated one is read afresh: a reset applies at once)."""
        if settings.console_password:
            return cls("setting", settings.console_password)
        record = consolepw.read_record(settings.state_dir)
        return cls("generated", record) if record else None

    def matches(self, given: str) -> bool:
        """Whether ``given`` is the password."""
        if self.kind == "generated":
            return consolepw.verify(self.secret, given)
        return hmac.compare_digest(
            hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest(),
            hashlib.sha256(self.secret.encode("utf-8", "surrogatepass")).digest(),
        )


def _keys(app: Flask) -> ConsoleKeys:
    found = app.extensions.get("connector_console")
    if found is None:
        found = app.extensions["connector_console"] = ConsoleKeys(services(app))
    return found


# --- who may reach the console ----------------------------------------------------------------


def _on_console_listener(settings: Settings) -> bool:
    address = settings.console_address
    return address is not None and request.environ.get("SERVER_PORT") == str(address[1])


def _loopback_peer() -> bool:
    addr = parse_address(request.environ.get("REMOTE_ADDR") or "")
    return addr is not None and addr.is_loopback


def _loopback_host_header() -> bool:
    host = request.environ.get("HTTP_HOST")
    if not host:
        return True  # HTTP/1.0 without Host: not a browser on a rebound name
    name = urlsplit(f"//{host}").hostname or ""
    return is_loopback_host(name)


@bp.before_app_request
def _listener_guard() -> ResponseReturnValue | None:
    """Console paths only on the console listener, from loopback; nothing else there."""
    svc = services(current_app)
    path = request.path
    on_console = _on_console_listener(svc.settings)
    if path == "/console" or path.startswith("/console/"):
        if not (on_console and _loopback_peer() and _loopback_host_header()):
            abort(404)
        return None
    if on_console:
        if path == "/":
            return redirect(url_for("console.status"))
        if path not in ALSO_ON_CONSOLE:
            abort(404)
    return None


def _session_id(keys: ConsoleKeys, credential: Credential | None) -> str | None:
    """The id of the signed-in session this request carries (None: not signed in)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if credential is None or not cookie or len(cookie) > 500:
        return None
    try:
        data = keys.sessions.loads(cookie, max_age=SESSION_SECONDS)
    except BadSignature:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("s"), str):
        return None
    if not hmac.compare_digest(str(data.get("f", "")), keys.fingerprint(credential)):
        return None
    return str(data["s"])


@bp.before_request
def _console_request() -> ResponseReturnValue | None:
    """A session on every page but the sign-in (before anything else); CSRF on every change."""
    svc = services(current_app)
    keys = _keys(current_app)
    if request.endpoint == "console.import_archive":
        request.max_content_length = MAX_ARCHIVE_BYTES + 64 * 1024
    sent = request.cookies.get(csrf_cookie_name(CSRF_COOKIE, request.is_secure))
    cookie = keys.csrf.reuse(sent)
    g.console_csrf_new = cookie is None
    g.console_csrf_cookie = cookie or keys.csrf.new_cookie()
    g.console_credential = Credential.in_force(svc.settings)
    g.console_session = _session_id(keys, g.console_credential)
    g.console_logged_in = g.console_session is not None
    if not g.console_logged_in and request.endpoint != "console.login":
        if request.method == "GET":
            return redirect(url_for("console.login", next=request.path))
        return redirect(url_for("console.login"), code=303)
    if request.method == "POST" and not keys.csrf.check(sent, request.form.get("csrf_token")):
        log.warning("console: a change was refused: missing or wrong CSRF token")
        return _page(
            "console/message.html",
            status=400,
            title="Change refused",
            message="This form was not sent from this console page, or it expired "
            "(CSRF check failed). Reload the page and try again.",
        )
    return None


@bp.after_request
def _console_headers(resp: Response) -> Response:
    if g.get("console_csrf_new"):
        set_csrf_cookie(
            resp,
            CSRF_COOKIE,
            g.console_csrf_cookie,
            secure=request.is_secure,
            samesite="Strict",
            max_age=SESSION_SECONDS,
        )
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    return resp


# --- rendering --------------------------------------------------------------------------------


@bp.app_template_filter("when")
def _when(ts: Any) -> str:
    if not isinstance(ts, int | float) or not ts:
        return "never"
    stamp = datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
    ago = max(0, int(time.time() - ts))
    if ago < 120:
        return f"{stamp} ({ago} s ago)"
    if ago < 7200:
        return f"{stamp} ({ago // 60} min ago)"
    return f"{stamp} ({ago // 3600} h ago)"


def _page(
    template: str, *, status: int = 200, reload: bool = False, **context: Any
) -> BaseResponse:
    """Render a console page; with ``reload``, restart the workers once it is sent."""
    svc = services(current_app)
    if reload:
        context["reload_note"] = (
            "The workers are restarting with the new settings; this takes a few seconds."
            if svc.reload_workers is not None
            else "Restart the connector to apply them (systemctl reload connector)."
        )
    html = render_template(
        template,
        csrf_token=_keys(current_app).csrf.token(g.console_csrf_cookie),
        nav=NAV,
        version=__version__,
        logged_in=g.get("console_logged_in", False),
        **context,
    )
    resp = make_response(html, status)
    if reload and svc.reload_workers is not None:
        resp.call_on_close(svc.reload_workers)
    return resp


def _fresh_settings(svc: Services) -> Settings:
    """The settings as saved now (the worker's own may predate a save or an import)."""
    return load_settings(svc.settings.config_path, require_directory=False, encrypt_in_place=False)


# --- login ------------------------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """Ask for the console password (``CONSOLE_PASSWORD``, or the generated one)."""
    svc = services(current_app)
    keys = _keys(current_app)
    credential: Credential | None = g.console_credential
    target = request.values.get("next", "")
    if not target.startswith("/console/") or target.startswith("//"):
        target = url_for("console.status")
    if g.console_logged_in:
        return redirect(target)

    def form(status: int = 200, error: str | None = None) -> BaseResponse:
        return _page(
            "console/login.html",
            status=status,
            next=target,
            error=error,
            credential=credential.kind if credential else None,
            config_path=svc.settings.config_path,
        )

    if request.method == "GET":
        return form()
    if credential is None:
        return form(403, "No console password yet: make one with connector console-password.")
    wait = keys.throttle.acquire("console")  # checked and counted at once: parallel guesses too
    if wait:
        log.warning("console: sign-in throttled (client %s)", request.remote_addr)
        return form(429, f"Too many wrong passwords. Try again in {int(wait) + 1} seconds.")
    if not credential.matches(request.form.get("password", "")[:1024]):
        log.warning("console: wrong password (client %s)", request.remote_addr)
        return form(401, "Wrong password.")
    keys.throttle.reset("console")
    log.info("console: signed in (client %s)", request.remote_addr)
    resp = redirect(target, code=303)
    resp.set_cookie(
        SESSION_COOKIE,
        keys.sessions.dumps({"f": keys.fingerprint(credential), "s": secrets.token_urlsafe(16)}),
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="Strict",
        path="/console",
    )
    return resp


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """End the console session."""
    resp = redirect(url_for("console.login"), code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/console")
    return resp


# --- status -----------------------------------------------------------------------------------


def overview(svc: Services) -> dict[str, Any]:
    """Everything the status page shows, from every worker (status files and metrics)."""
    s = svc.settings
    svc.sync_metrics()
    own = svc.status()
    workers = {w["pid"]: w for w in metrics.read_statuses(s.run_dir)}
    workers[own["pid"]] = own
    rows = sorted(workers.values(), key=lambda w: int(w["pid"]))
    agents = [w["agent"] for w in rows if isinstance(w.get("agent"), dict)]
    connected = [a for a in agents if a.get("connected")]
    polled = [a for a in agents if a.get("last_poll")]
    latest = max(polled, key=lambda a: a["last_poll"]) if polled else None
    found = metrics.samples()
    commands = metrics.totals(found, "connector_commands_total", "outcome")
    logins = metrics.totals(found, "connector_logins_total", "method", "outcome")
    hits = sum(v for _, v in found.get("connector_group_cache_hits_total", []))
    misses = sum(v for _, v in found.get("connector_group_cache_misses_total", []))
    ldap: dict[str, dict[str, Any]] = {}
    for url in s.ldap_urls:
        views = [
            w["ldap"][url] for w in rows if isinstance(w.get("ldap"), dict) and url in w["ldap"]
        ]
        down = [v for v in views if not v.get("up")]
        checked = [v["checked"] for v in views if v.get("checked")]
        ldap[url] = {
            "up": not down,
            "error": down[0].get("error") if down else None,
            "checked": max(checked) if checked else None,
        }
    kerberos: dict[str, Any] | None = None
    if s.kerberos_auth or s.kerberos_keytab:
        principals, problem = keytab_principals(s)
        kerberos = {"keytab": s.kerberos_keytab, "principals": principals, "problem": problem}
    limit = s.clock_skew_warning_seconds
    offset = latest.get("clock_offset_seconds") if latest else None
    return {
        "version": __version__,
        "host": socket.gethostname(),
        "config_path": s.config_path,
        "run_dir": str(s.run_dir),
        "hub": {
            "configured": s.hub_configured,
            "ad_hub": s.ad_hub,
            "connection": s.connection,
            "realm": s.realm,
            "connected": bool(connected),
            "connected_workers": len(connected),
            "agents": len(agents),
            "connected_since": min((a["connected_since"] for a in connected), default=None),
            "last_poll": latest.get("last_poll") if latest else None,
            "last_error": next((a["last_error"] for a in agents if a.get("last_error")), None),
        },
        "clock": {
            "offset_seconds": offset,
            "ok": offset is None or abs(float(offset)) <= limit,
            "limit": limit,
        },
        "commands": {k[0]: int(v) for k, v in sorted(commands.items())},
        "logins": [
            {"method": k[0], "outcome": k[1], "count": int(v)} for k, v in sorted(logins.items())
        ],
        "group_cache": {
            "hits": int(hits),
            "misses": int(misses),
            "ratio": round(hits / (hits + misses), 3) if hits + misses else None,
        },
        "ldap": ldap,
        "directory_problems": s.directory_problems(),
        "kerberos": kerberos,
        "workers": [
            {
                "pid": w["pid"],
                "started": w.get("started"),
                "connected": bool((w.get("agent") or {}).get("connected")),
                "last_poll": (w.get("agent") or {}).get("last_poll"),
                "outcomes": (w.get("agent") or {}).get("outcomes", {}),
                "inflight": (w.get("agent") or {}).get("inflight", 0),
            }
            for w in rows
        ],
        "env_keys": [k for k in s.env_keys if k != "RUN_DIR"],  # RUN_DIR: set by the master
        "ignored_keys": list(s.ignored_keys),
        "console_password": _password_kind(s),
    }


def _password_kind(settings: Settings) -> str:
    credential = Credential.in_force(settings)
    return credential.kind if credential else "none"


@bp.get("/")
def status() -> ResponseReturnValue:
    """Is it working? Hub, LDAP servers, clock, commands, keytab, version."""
    svc = services(current_app)
    return _page("console/status.html", o=overview(svc))


@bp.get("/status.json")
def status_json() -> ResponseReturnValue:
    """The status page's data as JSON (for scripts on this machine)."""
    return jsonify(overview(services(current_app)))


# --- setup ------------------------------------------------------------------------------------


def _directory_form(s: Settings) -> dict[str, Any]:
    return {
        "urls": "\n".join(s.ldap_urls),
        "base": s.ldap_base,
        "bind_user": s.ldap_bind_user,
        "password_stored": bool(s.ldap_bind_password),
        "starttls": s.ldap_starttls,
        "require_cert": s.ldap_tls_require_cert,
        "ca_file": s.ldap_ca_file or "",
        "user_filter": s.ldap_user_by_name,
        "sample_user": "",
    }


def _setup_page(status: int = 200, reload: bool = False, **context: Any) -> BaseResponse:
    svc = services(current_app)
    current = _fresh_settings(svc)
    context.setdefault("form", _directory_form(current))
    overridden = [k for k in current.env_keys if k in SETUP_KEYS]
    return _page(
        "console/setup.html",
        status=status,
        reload=reload,
        s=current,
        overridden=overridden,
        tls_choices=TLS_CHOICES,
        **context,
    )


@bp.get("/setup")
def setup() -> ResponseReturnValue:
    """First run: the ticket, then the directory."""
    return _setup_page()


@bp.post("/setup/ticket")
def setup_ticket() -> ResponseReturnValue:
    """Run setup from the hub's ticket URL (as ``connector setup --ticket``)."""
    svc = services(current_app)
    ticket = request.form.get("ticket", "").strip()[:2048]
    endpoint = request.form.get("sign_in_endpoint", "").strip()[:2048] or None
    if not ticket:
        return _setup_page(400, ticket_error="Paste the ticket URL the hub gave you.")
    try:
        result = setup_from_ticket(str(svc.settings.config_path), ticket, sign_in_endpoint=endpoint)
    except SetupError as exc:
        log.warning("console: setup from a ticket failed (%s)", exc.reason)
        return _setup_page(400, ticket_error=f"Setup failed ({exc.reason}): {exc}")
    except errors.ConfigError as exc:
        return _setup_page(400, ticket_error=str(exc))
    log.info(
        "console: set up from a ticket: hub %s, connection %s, certificate %s",
        result.ad_hub,
        result.connection,
        result.kid,
    )
    return _setup_page(
        reload=True,
        ticket_ok=f"Connected to the hub {result.ad_hub} as connection {result.connection} "
        f"(realm {result.realm}); certificate {result.kid} "
        f"{'created and ' if result.created_identity else ''}registered.",
    )


def _failed_step(steps: list[Check]) -> Check | None:
    return next((c for c in steps if not c.ok), None)


@bp.post("/setup/directory")
def setup_directory() -> ResponseReturnValue:
    """Test the directory settings live (reach, TLS, bind, search, a user) and save them."""
    svc = services(current_app)
    f = request.form
    sample_user = f.get("sample_user", "").strip()[:256]
    form: dict[str, Any] = {
        "urls": f.get("urls", "")[:4096],
        "base": f.get("base", "").strip()[:1024],
        "bind_user": f.get("bind_user", "").strip()[:1024],
        "starttls": f.get("starttls") == "on",
        "require_cert": f.get("require_cert", "demand"),
        "ca_file": f.get("ca_file", "").strip()[:1024],
        "user_filter": f.get("user_filter", "").strip()[:1024],
        "sample_user": f.get("sample_user", "").strip()[:256],
    }
    password = f.get("bind_password", "")
    ca_pem = f.get("ca_pem", "").strip()
    current = _fresh_settings(svc)
    form["password_stored"] = bool(current.ldap_bind_password)
    urls = [u.strip() for u in str(form["urls"]).replace(",", " ").split() if u.strip()]
    problems = []
    if not urls:
        problems.append("Enter the URL of at least one LDAP server (ldaps://dc1.example.com).")
    if not sample_user:
        problems.append("Enter a user to look up: the test finds them before saving.")
    if not password and not current.ldap_bind_password:
        problems.append("Enter the service account's password.")
    if problems:
        return _setup_page(400, form=form, directory_problems=problems)
    changes: dict[str, Any] = {
        "LDAP_URLS": urls,
        "LDAP_BASE": form["base"],
        "LDAP_BIND_USER": form["bind_user"],
        "LDAP_STARTTLS": form["starttls"],
        "LDAP_TLS_REQUIRE_CERT": form["require_cert"],
        "LDAP_USER_BY_NAME": form["user_filter"],
        "LDAP_CA_FILE": form["ca_file"] or None,
    }
    if password:
        changes["LDAP_BIND_PASSWORD"] = password
    state = Path(str(current.config_path)).parent
    pending_ca: Path | None = None
    try:
        if ca_pem:
            try:
                x509.load_pem_x509_certificates(ca_pem.encode("ascii", "replace"))
            except ValueError:
                return _setup_page(
                    400,
                    form=form,
                    directory_problems=["The pasted CA certificate is not PEM."],
                )
            pending_ca = state / f".ldap-ca-{secrets.token_hex(4)}.pem"
            pending_ca.write_text(ca_pem + "\n", encoding="ascii", errors="replace")
            changes["LDAP_CA_FILE"] = str(pending_ca)
        try:
            candidate = refine(current, changes)
        except errors.ConfigError as exc:
            return _setup_page(400, form=form, directory_problems=exc.problems)
        missing = candidate.directory_problems()
        if missing:
            return _setup_page(400, form=form, directory_problems=missing)
        steps = check_directory(candidate, sample_user)
        failed = _failed_step(steps)
        if failed is not None:
            log.warning(
                "console: directory settings not saved: step %s failed on %s",
                failed.name,
                failed.target,
            )
            return _setup_page(400, form=form, steps=steps, failed=failed)
        preview, preview_error = _preview_profile(candidate, sample_user)
        saved: dict[str, Any] = {k: v for k, v in changes.items() if k != "LDAP_BIND_PASSWORD"}
        if len(urls) == 1:
            saved.update(LDAP_URL=urls[0], LDAP_URLS=None)
        else:
            saved.update(LDAP_URLS=urls, LDAP_URL=None)
        if password:
            saved["LDAP_BIND_CREDENTIALS"] = current.secret_box.encrypt(password)
            saved["LDAP_BIND_PASSWORD"] = None
        if pending_ca is not None:
            final_ca = state / "ldap-ca.pem"
            os.replace(pending_ca, final_ca)
            pending_ca = None
            saved["LDAP_CA_FILE"] = str(final_ca)
        update_config_file(Path(str(current.config_path)), saved)
    finally:
        if pending_ca is not None:
            pending_ca.unlink(missing_ok=True)
    log.info("console: directory settings tested and saved (%s)", ", ".join(urls))
    return _setup_page(
        reload=True, steps=steps, saved=True, preview=preview, preview_error=preview_error
    )


def _preview_profile(settings: Settings, username: str) -> tuple[dict[str, Any] | None, str | None]:
    from connector.directory import Directory

    try:
        directory = Directory(settings)
    except errors.ConfigError as exc:
        return None, str(exc)
    try:
        return directory.get_profile(username), None
    except errors.ConnectorError as exc:
        return None, f"{exc.wire_name}: {exc}"
    finally:
        directory.close()


# --- troubleshooter ---------------------------------------------------------------------------


@bp.get("/check")
def check() -> ResponseReturnValue:
    """Run every check of ``connector check`` and show what to fix."""
    svc = services(current_app)
    user = request.args.get("user", "").strip()[:256] or None
    report = None
    if request.args.get("run"):
        report = run_checks(_fresh_settings(svc), user)
    return _page("console/check.html", report=report, user=user or "")


# --- users ------------------------------------------------------------------------------------


@bp.get("/users")
def users() -> ResponseReturnValue:
    """Search users, or look one up (the exact profile the hub would receive)."""
    svc = services(current_app)
    q = request.args.get("q", "").strip()[:256]
    lookup = request.args.get("lookup", "").strip()[:256]
    context: dict[str, Any] = {"q": q, "lookup": lookup}
    try:
        directory = svc.require_directory()
        if q:
            context["found"] = directory.search_users(q, 50)
        if lookup:
            context["profile"] = directory.get_profile(lookup)
    except errors.ConnectorError as exc:
        context["error"] = {"name": exc.wire_name, "message": str(exc)}
    return _page("console/users.html", **context)


@bp.post("/users/try")
def try_login() -> ResponseReturnValue:
    """Try a login: the profile that would be sent, or the precise error."""
    svc = services(current_app)
    username = request.form.get("username", "").strip()[:1024]
    password = request.form.get("password", "")
    context: dict[str, Any] = {"q": "", "lookup": "", "try_user": username}
    started = time.monotonic()
    correlation = secrets.token_hex(8)
    status = 200
    wait = _reserve_try(_keys(current_app), g.console_session)
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
            context["try_error"] = {"name": exc.wire_name, "message": str(exc)}
            note = console_note(svc.settings, None, exc)
        context["try_expiry"] = note
        metrics.login("console", outcome, time.monotonic() - started)
    audit.info(
        "login method=console user=%r outcome=%s client=%s correlation=%s",
        username,
        outcome,
        request.remote_addr,
        correlation,
        extra={
            "method": "console",
            "user": username,
            "outcome": outcome,
            "client": request.remote_addr,
            "correlation_id": correlation,
        },
    )
    return _page("console/users.html", status=status, **context)


def _reserve_try(keys: ConsoleKeys, session: str) -> float:
    """Count one "try a login" (before the bind); seconds to wait instead, if over a limit."""
    attempt = Attempt()  # every try counts, success or not: the reservations are kept
    try:
        attempt.reserve(keys.tries_per_session, f"session:{session}", forget=False)
        attempt.reserve(keys.tries_in_all, "all", forget=False)
    except errors.LoginThrottled as exc:
        attempt.cancel()
        return exc.wait
    return 0.0


# --- profile mapper ---------------------------------------------------------------------------


@bp.get("/mapper")
def mapper() -> ResponseReturnValue:
    """Which mapper is active, and its output for a chosen user next to the default's."""
    svc = services(current_app)
    path = svc.settings.profile_mapper
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
    user = request.args.get("user", "").strip()[:256]
    context: dict[str, Any] = {"info": info, "user": user}
    if user:
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
            context["error"] = {"name": exc.wire_name, "message": str(exc)}
        except ValueError as exc:
            context["error"] = {"name": "Unexpected", "message": str(exc)}
    return _page("console/mapper.html", **context)


# --- logs -------------------------------------------------------------------------------------


@bp.get("/logs")
def logs() -> ResponseReturnValue:
    """The recent log lines of every worker, filterable by level and user."""
    svc = services(current_app)
    level = request.args.get("level", "info")
    level = level if level in LEVELS else "info"
    user = request.args.get("user", "").strip()[:256]
    try:
        limit = max(10, min(2000, int(request.args.get("limit", "300"))))
    except ValueError:
        limit = 300
    lines = read_recent(svc.settings.run_dir / "logs", limit, level, user or None)
    return _page(
        "console/logs.html",
        lines=list(reversed(lines)),
        level=level,
        user=user,
        limit=limit,
        levels=LEVELS,
    )


# --- export / import --------------------------------------------------------------------------


@bp.get("/archive")
def archive() -> ResponseReturnValue:
    """Export this connector, or import another's archive."""
    return _page("console/archive.html", min_passphrase=MIN_PASSPHRASE)


@bp.post("/export")
def export() -> ResponseReturnValue:
    """Download the encrypted archive (config, certificate and key, secret key, mapper)."""
    svc = services(current_app)
    passphrase = request.form.get("passphrase", "")
    if passphrase != request.form.get("passphrase2", ""):
        return _page(
            "console/archive.html",
            status=400,
            min_passphrase=MIN_PASSPHRASE,
            export_error="The two passphrases differ.",
        )
    try:
        data = export_archive(_fresh_settings(svc), passphrase)
    except ArchiveError as exc:
        return _page(
            "console/archive.html", status=400, min_passphrase=MIN_PASSPHRASE, export_error=str(exc)
        )
    log.info("console: configuration exported (%d bytes)", len(data))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"connector-{socket.gethostname()}-{stamp}.export"
    resp = make_response(data)
    resp.headers["Content-Type"] = "application/octet-stream"
    resp.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return resp


@bp.post("/import", endpoint="import_archive")
def import_archive_view() -> ResponseReturnValue:
    """Check an archive, report what changes, and (unless only checking) install it."""
    svc = services(current_app)
    upload = request.files.get("archive")
    passphrase = request.form.get("passphrase", "")
    dry_run = request.form.get("dry_run") == "on"
    if upload is None or not upload.filename:
        return _page(
            "console/archive.html",
            status=400,
            min_passphrase=MIN_PASSPHRASE,
            import_error="Choose the archive file to import.",
        )
    data = upload.read(MAX_ARCHIVE_BYTES + 1)
    try:
        report = import_archive(
            data,
            passphrase,
            str(svc.settings.config_path),
            secret_key_file=svc.settings.secret_key_file,
            dry_run=dry_run,
        )
    except ArchiveError as exc:
        log.warning("console: import refused: %s", exc)
        return _page(
            "console/archive.html", status=400, min_passphrase=MIN_PASSPHRASE, import_error=str(exc)
        )
    log.info(
        "console: archive %s (%d changes)",
        "imported" if report.applied else "checked",
        len(report.added) + len(report.changed) + len(report.removed),
    )
    return _page(
        "console/archive.html",
        reload=report.applied,
        min_passphrase=MIN_PASSPHRASE,
        report=report,
    )
