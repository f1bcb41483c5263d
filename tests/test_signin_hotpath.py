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
from configs import openldap_config
from connector_proc import setup_config
from hubs import start_devhub
from werkzeug.test import Client, EnvironBuilder

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
    for _, headers, _ in (hot, plain):  # each ref is its own, and each lands
        location = dict(headers)["Location"]
        assert location.startswith("https://app.example/after?")
        ref = parse_qs(urlsplit(location).query)["ref"][0]
        page = requests.get(
            hub.url("login/callback"), params={"wctx": "ctx-hot", "ref": ref}, timeout=15
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
