"""The form post signed in in front of Flask (``SignInHotPath``) against Flask's own view:
the same answer for every outcome, nothing done twice, the rest left to Flask untouched.

The app is the product's (``create_app``), its agent connected to a real devhub and its
directory a real OpenLDAP; each request goes once through the app as gunicorn calls it (the
hot path first) and once straight to Flask's ``wsgi_app`` (the layer the hot path wraps).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import flask
import pytest
import requests
from configs import mit_kerberos, openldap_config
from connector_proc import setup_config
from hubs import start_devhub
from waits import until
from werkzeug.test import Client, EnvironBuilder, run_wsgi_app

from connector import errors
from connector.channel import relay as relay_module
from connector.settings import load_settings
from connector.web import create_app, services
from connector.web.signin import SIGNIN_PAGE, HandOff, SignInHotPath

QUERY = {"wtrealm": "urn:acme", "wctx": "ctx-hot", "wreply": "https://app.example/after"}
REF = re.compile(r"ref=[A-Za-z0-9_-]+")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, slapd: Any) -> Iterator[tuple[Any, Any]]:
    tmp = tmp_path_factory.mktemp("signin-hotpath")
    hub = start_devhub(tmp / "hub", lease_seconds=4)
    path = setup_config(
        tmp / "connector",
        openldap_config(slapd),
        hub.ticket_url,
        POLL_WAIT_SECONDS=2,
        LOGIN_FAILURES_PER_USER=3,
        LOGIN_FAILURES_PER_ADDRESS=1000,
        WREPLY_ALLOWED=["https://app.example/after"],
    )
    app = create_app(load_settings(path, environ={}), {"TESTING": True})
    svc = services(app)
    assert svc.start_agent() is not None
    try:
        yield hub, app
    finally:
        svc.drain(timeout=10)
        hub.stop()


def flask_requests(app: Any) -> list[str]:
    """The paths Flask itself handles from now on (its ``request_started`` signal)."""
    seen: list[str] = []

    def started(sender: Any, **extra: Any) -> None:
        seen.append(flask.request.path)

    flask.request_started.connect(started, app, weak=False)
    return seen


def cookie_and_token(app: Any) -> tuple[str, str]:
    """A CSRF cookie and the form's token for it, from the sign-in page."""
    resp = Client(app.wsgi_app).get("/wsfed", query_string=QUERY)
    cookie = resp.headers["Set-Cookie"].split(";", 1)[0]
    token = re.search(r'name="csrf_token" value="([^"]+)"', resp.get_data(as_text=True))
    assert token is not None
    return cookie, token.group(1)


def post(wsgi: Any, fields: dict[str, str], cookie: str, **options: Any) -> tuple[Any, ...]:
    """(status, headers, body) of ``fields`` posted to ``wsgi`` (urlencoded unless told)."""
    data = options.pop("data", urlencode(fields))
    content_type = options.pop("content_type", "application/x-www-form-urlencoded")
    resp = Client(wsgi, use_cookies=False).open(
        EnvironBuilder(
            method="POST",
            path="/wsfed",
            data=data,
            content_type=content_type,
            headers={"Cookie": cookie},
            **options,
        )
    )
    return resp.status_code, list(resp.headers.items()), resp.get_data(as_text=True)


def same_but_ref(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Whether two answers are the same, the one-time ``ref`` aside."""
    return [REF.sub("ref=R", str(part)) for part in a] == [REF.sub("ref=R", str(p)) for p in b]


def form(cookie_token: tuple[str, str], **fields: str) -> dict[str, str]:
    return {**QUERY, "csrf_token": cookie_token[1], **fields}


def test_the_app_is_wrapped_by_the_hot_path(site):
    _, app = site
    assert isinstance(app.wsgi_app, SignInHotPath)


def test_a_sign_in_is_answered_without_flask_and_lands_at_the_hub(site, caplog):
    hub, app = site
    ct = cookie_and_token(app)
    seen = flask_requests(app)
    caplog.set_level(logging.INFO, logger="connector.audit")
    hot = post(app.wsgi_app, form(ct, username="dave", password="davepw"), ct[0])
    assert seen == []  # Flask never saw the request
    lines = [r.getMessage() for r in caplog.records if r.name == "connector.audit"]
    assert len(lines) == 1 and "user='dave' outcome=success" in lines[0]
    plain = post(app.wsgi_app.app, form(ct, username="dave", password="davepw"), ct[0])
    assert seen == ["/wsfed"]
    assert hot[0] == plain[0] == 303
    assert same_but_ref(hot, plain)
    assert dict(hot[1])["X-Frame-Options"] == "DENY"
    for _, headers, _ in (hot, plain):
        assert dict(headers)["Location"].startswith("https://app.example/after?")
    lands(hub, "ctx-hot", hot, plain)


def lands(hub: Any, wctx: str, *answers: tuple[Any, ...]) -> None:
    """Each answer's ref is its own, and each lands at the hub with dave's groups."""
    for _, headers, _ in answers:
        ref = parse_qs(urlsplit(dict(headers)["Location"]).query)["ref"][0]
        page = requests.get(
            hub.url("login/callback"), params={"wctx": wctx, "ref": ref}, timeout=15
        )
        assert page.status_code == 200, page.text
        assert "team-core" in page.text and "everyone" in page.text


@pytest.mark.parametrize(
    ("case", "fields", "status"),
    [
        ("wrong password", {"username": "carol", "password": "nope"}, 401),
        ("unknown user", {"username": "nobody-hot", "password": "nope"}, 401),
        ("no password", {"username": "carol", "password": ""}, 400),
        ("no username", {"username": "  ", "password": "x"}, 400),
        ("wrong CSRF token", {"username": "dave", "password": "davepw", "csrf_token": "x"}, 400),
        ("another realm", {"username": "dave", "password": "davepw", "wtrealm": "urn:x"}, 400),
        ("a return URL not allowed", {"username": "dave", "wreply": "https://evil.example/"}, 400),
    ],
)
def test_every_other_answer_is_flasks_page_made_once(site, caplog, case, fields, status):
    _, app = site
    ct = cookie_and_token(app)
    seen = flask_requests(app)
    caplog.set_level(logging.INFO, logger="connector.audit")
    hot = post(app.wsgi_app, form(ct, **fields), ct[0])
    hot_audit = [r.getMessage() for r in caplog.records if r.name == "connector.audit"]
    caplog.clear()
    plain = post(app.wsgi_app.app, form(ct, **fields), ct[0])
    plain_audit = [r.getMessage() for r in caplog.records if r.name == "connector.audit"]
    assert hot[0] == plain[0] == status, case
    assert hot == plain, case
    assert seen == ["/wsfed", "/wsfed"]  # the page made by Flask, once per post
    assert len(hot_audit) == len(plain_audit) <= 1  # one line per attempt, or none
    assert [re.sub(r"correlation=\w+", "", m) for m in hot_audit] == [
        re.sub(r"correlation=\w+", "", m) for m in plain_audit
    ]


def test_a_throttled_name_gets_the_same_page(site):
    _, app = site
    ct = cookie_and_token(app)
    answers = {}
    for name, wsgi in (("hot", app.wsgi_app), ("plain", app.wsgi_app.app)):
        user = f"throttled-{name[0]}"
        for _ in range(3):  # LOGIN_FAILURES_PER_USER
            assert post(wsgi, form(ct, username=user, password="bad"), ct[0])[0] == 401
        status, headers, body = post(wsgi, form(ct, username=user, password="bad"), ct[0])
        assert status == 429 and "Too many failed attempts" in body
        wait = re.search(r"Try again in (\d+) seconds", body)
        assert wait is not None and 1 <= int(wait.group(1)) <= 901
        answers[name] = (
            [h for h in headers if h[0] != "Content-Length"],
            body.replace(user, "U").replace(wait.group(0), "Try again in N seconds"),
        )
    assert answers["hot"] == answers["plain"]


@pytest.mark.parametrize(
    ("case", "options"),
    [
        ("multipart", {"content_type": "multipart/form-data"}),
        (
            "a charset parameter",
            {"content_type": "application/x-www-form-urlencoded; charset=utf-8"},
        ),
    ],
)
def test_a_post_it_does_not_read_is_signed_in_by_flask(site, case, options):
    _, app = site
    ct = cookie_and_token(app)
    seen = flask_requests(app)
    fields = form(ct, username="dave", password="davepw")
    if options["content_type"].startswith("multipart"):
        parts = [
            f'--B\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
            for k, v in fields.items()
        ]
        options = {"data": "".join(parts) + "--B--\r\n", "content_type": options["content_type"]}
        options["content_type"] += "; boundary=B"
    status, headers, _ = post(app.wsgi_app, fields, ct[0], **options)
    assert status == 303, case
    assert seen == ["/wsfed"]  # signed in by Flask's view
    assert dict(headers)["Location"].startswith("https://app.example/after?")


def test_a_post_over_the_limit_gets_flasks_413_page(site):
    _, app = site
    ct = cookie_and_token(app)
    fields = form(ct, username="dave", password="x" * (70 * 1024))
    assert post(app.wsgi_app, fields, ct[0])[:2] == post(app.wsgi_app.app, fields, ct[0])[:2]
    assert post(app.wsgi_app, fields, ct[0])[0] == 413


def test_an_exception_is_flasks_500_and_logged(site, monkeypatch, caplog):
    _, app = site
    ct = cookie_and_token(app)

    def broken() -> Any:
        raise RuntimeError("a bug in the directory layer")

    monkeypatch.setattr(services(app), "require_directory", broken)
    monkeypatch.setitem(app.config, "PROPAGATE_EXCEPTIONS", False)  # as in production
    caplog.set_level(logging.ERROR)
    status, _, body = post(app.wsgi_app, form(ct, username="dave", password="davepw"), ct[0])
    assert status == 500 and "a bug" not in body
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "Exception on /wsfed [POST]" in errors[0].getMessage()
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is RuntimeError


def test_a_sign_in_while_another_is_checked_is_held_for_it_then_lands(site, monkeypatch):
    """The hot path tells the relay when a sign-in is being checked: one that succeeds while
    another is checked in the worker is held for it (one request for both), not written."""
    hub, app = site
    relay = services(app).agent.relay
    monkeypatch.setattr(relay_module, "FRESH_SECONDS", 30.0)  # a prepared request stays fresh
    ct = cookie_and_token(app)
    first = post(app.wsgi_app, form(ct, username="dave", password="davepw"), ct[0])
    until(lambda: relay.pending == 0 and relay.ready, 15, "relayed, the next request ready")
    written = relay.written
    relay.checking()  # another web thread checks a sign-in meanwhile
    try:
        held = post(app.wsgi_app, form(ct, username="dave", password="davepw"), ct[0])
        assert held[0] == 303
        assert relay.pending == 1 and relay.written == written  # held, not written
        assert relay._checking == 1  # its own check ended
    finally:
        relay.checked()  # the other one refused: the held one goes
    until(lambda: relay.pending == 0, 15, "the held sign-in relayed")
    lands(hub, "ctx-hot", first, held)


def test_a_refused_or_broken_sign_in_ends_its_check(site, monkeypatch):
    _, app = site
    relay = services(app).agent.relay
    ct = cookie_and_token(app)
    calls: list[str] = []
    monkeypatch.setattr(relay, "checking", lambda: calls.append("checking"))
    monkeypatch.setattr(relay, "checked", lambda: calls.append("checked"))
    assert post(app.wsgi_app, form(ct, username="carol", password="nope"), ct[0])[0] == 401

    def broken() -> Any:
        raise RuntimeError("a bug in the directory layer")

    monkeypatch.setattr(services(app), "require_directory", broken)
    monkeypatch.setitem(app.config, "PROPAGATE_EXCEPTIONS", False)
    assert post(app.wsgi_app, form(ct, username="dave", password="davepw"), ct[0])[0] == 500
    assert calls == ["checking", "checked"] * 2


def test_a_client_cannot_hand_flask_a_page():
    """The hand-over key is no header's: a request naming it reaches the view as a header."""
    env = EnvironBuilder(
        method="POST", path="/wsfed", headers={SIGNIN_PAGE.replace(".", "-"): "x"}
    ).get_environ()
    assert SIGNIN_PAGE not in env and all(k.startswith("HTTP_") for k in env if "SIGNIN" in k)


def test_the_hand_off_calls_back_once_its_answer_is_closed():
    """The relay thread's wake-up (``on_close``) comes when the server closes the answer, as
    a response object's ``call_on_close``, never before, once."""
    calls: list[int] = []
    headers = [
        ("Location", "https://app.example/after?wctx=a&ref=b"),
        ("Content-Type", "text/plain; charset=utf-8"),  # as a response object has it
        ("Cache-Control", "no-store"),
    ]
    answer = HandOff(headers[0][1], headers[1:], lambda: calls.append(1))
    started = []
    body = answer({}, lambda status, sent: started.append((status, sent)))
    assert started == [("303 SEE OTHER", [*headers, ("Content-Length", "0")])]
    assert list(body) == [] and calls == []
    body.close()
    assert calls == [1]
    resp = answer.response()  # what Flask's views answer: the same status and headers
    assert (resp.status, list(resp.get_wsgi_headers({}).items())) == started[0]
    assert calls == [1]
    resp.close()
    assert calls == [1, 1]
    nothing = HandOff(headers[0][1], headers[1:], None)  # nothing to call: nothing called
    nothing({}, lambda *a: None).close()


# --- Negotiate: GET /wsfed with a Kerberos token -------------------------------------------

KRB_QUERY = {"wtrealm": "urn:acme", "wctx": "ctx-krb"}
MASKS = (
    (re.compile(r"ref=[A-Za-z0-9_-]+"), "ref=R"),
    (re.compile(r"Negotiate [A-Za-z0-9+/=]+"), "Negotiate T"),  # each context's own token
    (re.compile(r'name="csrf_token" value="[^"]+"'), 'name="csrf_token" value="C"'),
    (re.compile(r"((?:__Host-)?connector_csrf)=[^;]+"), r"\1=C"),
)


@pytest.fixture(scope="module")
def krb_site(
    tmp_path_factory: pytest.TempPathFactory, slapd: Any, mit_kdc: Any
) -> Iterator[tuple[Any, Any, Any]]:
    """The product's app with Kerberos on (MIT KDC, ``HTTP/localhost``), its agent on a devhub
    that offers Negotiate to 127.0.0.0/8, and a maker of fresh tokens for dave."""
    import base64

    import spnego

    tmp = tmp_path_factory.mktemp("signin-hotpath-krb")
    hub = start_devhub(tmp / "hub", lease_seconds=4, kerberos=True, ip_ranges=["127.0.0.0/8"])
    path = setup_config(
        tmp / "connector",
        openldap_config(slapd),
        hub.ticket_url,
        POLL_WAIT_SECONDS=2,
        **mit_kerberos(mit_kdc),
    )
    env = pytest.MonkeyPatch()
    (tmp / "rcache").mkdir()
    env.setenv("KRB5_CONFIG", mit_kdc.krb5_conf)
    env.setenv("KRB5RCACHEDIR", str(tmp / "rcache"))
    env.setenv("KRB5CCNAME", "MEMORY:signin-hotpath")
    app = create_app(load_settings(path, environ={}), {"TESTING": True})
    svc = services(app)
    assert svc.settings.kerberos_auth and svc.start_agent() is not None
    principal, password = f"dave@{mit_kdc.realm}", mit_kdc.users["dave"]

    def token() -> str:
        ctx = spnego.client(
            principal, password, hostname="localhost", service="HTTP", protocol="negotiate"
        )
        return "Negotiate " + base64.b64encode(ctx.step()).decode()

    try:
        yield hub, app, token
    finally:
        svc.drain(timeout=10)
        hub.stop()
        env.undo()


def get(wsgi: Any, headers: dict[str, str], **options: Any) -> tuple[Any, ...]:
    """(status, headers, body) of ``GET /wsfed`` (the sign-in's query) sent to ``wsgi``."""
    query = options.pop("query", KRB_QUERY)
    options.setdefault("environ_base", {"REMOTE_ADDR": "127.0.0.1"})  # in the hub's range
    resp = Client(wsgi, use_cookies=False).get(
        "/wsfed", query_string=query, headers=headers, **options
    )
    return resp.status_code, list(resp.headers.items()), resp.get_data(as_text=True)


def masked(answer: tuple[Any, ...]) -> list[str]:
    """An answer with what differs from one request to the next masked: the ``ref``, the
    server's mutual-authentication token, a new CSRF cookie and its token."""
    out = []
    for part in answer:
        text = str(part)
        for pattern, mask in MASKS:
            text = pattern.sub(mask, text)
        out.append(text)
    return out


def audit_lines(caplog: Any) -> list[str]:
    lines = [r.getMessage() for r in caplog.records if r.name == "connector.audit"]
    return [re.sub(r"correlation=\w+", "", m) for m in lines]


def test_a_kerberos_sign_in_is_answered_without_flask_and_lands_at_the_hub(krb_site, caplog):
    hub, app, token = krb_site
    seen = flask_requests(app)
    caplog.set_level(logging.INFO, logger="connector.audit")
    hot = get(app.wsgi_app, {"Authorization": token()})
    assert seen == []  # Flask never saw the request
    hot_audit = audit_lines(caplog)
    caplog.clear()
    assert (
        len(hot_audit) == 1
        and "login method=kerberos user='dave' outcome=success" in (hot_audit[0])
    )
    assert "principal='dave@EXAMPLE.TEST'" in hot_audit[0]
    plain = get(app.wsgi_app.app, {"Authorization": token()})
    assert seen == ["/wsfed"] and audit_lines(caplog) == hot_audit
    assert hot[0] == plain[0] == 303
    assert masked(hot) == masked(plain)
    assert dict(hot[1])["WWW-Authenticate"].startswith("Negotiate ")  # mutual authentication
    assert dict(hot[1])["X-Frame-Options"] == "DENY"
    lands(hub, "ctx-krb", hot, plain)


@pytest.mark.parametrize(
    ("case", "status", "hot_path"),
    [
        ("a replayed token", 200, True),
        ("a token that is not Kerberos", 200, True),
        ("the directory down", 200, True),
        ("another realm", 400, False),
        ("a client outside the range", 200, False),
        ("no token", 401, False),
    ],
)
def test_every_other_kerberos_answer_is_flasks_page_made_once(
    krb_site, caplog, monkeypatch, case, status, hot_path
):
    _, app, token = krb_site
    options: dict[str, Any] = {}

    def header() -> dict[str, str]:
        if case == "a replayed token":
            used = token()
            assert get(app.wsgi_app.app, {"Authorization": used})[0] == 303
            return {"Authorization": used}
        if case == "a token that is not Kerberos":
            return {"Authorization": "Negotiate " + "QUFBQQ==" * 4}
        if case == "no token":
            return {}
        return {"Authorization": token()}

    if case == "another realm":
        options["query"] = {**KRB_QUERY, "wtrealm": "urn:other"}
    if case == "a client outside the range":
        options["environ_base"] = {"REMOTE_ADDR": "10.9.9.9"}
    if case == "the directory down":

        def down() -> Any:
            raise errors.DirectoryUnavailable("directory unavailable: test")

        monkeypatch.setattr(services(app), "require_directory", down)
    answers, audits = [], []
    for wsgi in (app.wsgi_app, app.wsgi_app.app):
        sent = header()
        caplog.clear()
        caplog.set_level(logging.INFO, logger="connector.audit")
        seen = flask_requests(app)
        answers.append(get(wsgi, sent, **dict(options)))
        audits.append(audit_lines(caplog))
        assert seen == ["/wsfed"], case  # the page made by Flask, once
    hot, plain = answers
    assert hot[0] == plain[0] == status, case
    assert masked(hot) == masked(plain), case
    assert audits[0] == audits[1] and len(audits[0]) == (1 if hot_path else 0), case


def test_a_kerberos_exception_is_flasks_500_and_logged(krb_site, monkeypatch, caplog):
    _, app, token = krb_site

    def broken() -> Any:
        raise RuntimeError("a bug in the directory layer")

    monkeypatch.setattr(services(app), "require_directory", broken)
    monkeypatch.setitem(app.config, "PROPAGATE_EXCEPTIONS", False)  # as in production
    caplog.set_level(logging.ERROR)
    status, _, body = get(app.wsgi_app, {"Authorization": token()})
    assert status == 500 and "a bug" not in body
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(logged) == 1 and "Exception on /wsfed [GET]" in logged[0].getMessage()
    assert logged[0].exc_info is not None and logged[0].exc_info[0] is RuntimeError


def test_a_query_that_is_not_utf8_is_left_to_flask(krb_site, caplog):
    """A query whose raw bytes are not UTF-8: the hot path leaves it to Flask's view, which
    refuses it with a page that says so (400) and a log line."""
    _, app, token = krb_site
    seen = flask_requests(app)
    answers = []
    for wsgi in (app.wsgi_app, app.wsgi_app.app):
        env = EnvironBuilder(
            path="/wsfed",
            headers={"Authorization": token()},
            environ_base={"REMOTE_ADDR": "127.0.0.1"},
        ).get_environ()
        env["QUERY_STRING"] = "wtrealm=urn:acme&wctx=\xff\xfe"  # WSGI: the raw bytes as latin-1
        body, status, _ = run_wsgi_app(wsgi, env, buffered=True)  # the environ as it is
        answers.append(masked((status, b"".join(body).decode())))
    assert seen == ["/wsfed", "/wsfed"]  # both reached Flask's view
    assert answers[0] == answers[1]
    assert answers[0][0] == "400 BAD REQUEST" and "Malformed sign-in request" in answers[0][1]
    assert sum("query is not UTF-8" in r.getMessage() for r in caplog.records) == 2
