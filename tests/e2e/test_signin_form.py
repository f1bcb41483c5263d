"""The sign-in endpoint's form path, end to end: gunicorn connector + devhub + OpenLDAP."""

import re
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from configs import openldap_config
from connector_proc import ConnectorProcess, setup_config
from hubs import start_devhub

FAST = {"POLL_WAIT_SECONDS": 2}


@pytest.fixture(scope="module")
def env(tmp_path_factory, slapd):
    tmp = tmp_path_factory.mktemp("signin-form")
    hub = start_devhub(tmp / "hub", lease_seconds=4)
    state = tmp / "connector"
    setup_config(
        state,
        openldap_config(slapd),
        hub.ticket_url,
        **FAST,
        LOGIN_FAILURES_PER_USER=3,
        WREPLY_ALLOWED=["https://app.example/after"],
    )
    proc = ConnectorProcess(state).start()
    yield hub, proc
    proc.stop()
    hub.stop()


def signin_url(proc, **params):
    query = {"wtrealm": "urn:acme", "wctx": "ctx-123", **params}
    return proc.url + "/wsfed", query


def form(session, proc, **params):
    url, query = signin_url(proc, **params)
    resp = session.get(url, params=query, timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', resp.text)
    return resp, token.group(1) if token else None


def submit(session, proc, username, password, token, **params):
    url, query = signin_url(proc, **params)
    data = {**query, "username": username, "password": password, "csrf_token": token}
    return session.post(url, data=data, allow_redirects=False, timeout=30)


def test_outside_the_range_gets_the_form_without_a_challenge(env):
    _, proc = env
    resp, token = form(requests.Session(), proc)
    assert resp.status_code == 200
    assert "WWW-Authenticate" not in resp.headers
    assert token and 'name="password"' in resp.text


def test_form_sign_in_lands_on_the_hub_with_the_profile(env):
    hub, proc = env
    s = requests.Session()
    _, token = form(s, proc)
    resp = submit(s, proc, "dave", "davepw", token)
    assert resp.status_code == 303, resp.text
    location = resp.headers["Location"]
    assert location.startswith(hub.url("login/callback"))
    query = parse_qs(urlsplit(location).query)
    assert query["wctx"] == ["ctx-123"] and query["ref"]
    page = s.get(location, timeout=10)
    assert page.status_code == 200
    for group in ("team-core", "team-dev", "staff", "everyone"):
        assert group in page.text
    # the reference works once
    assert s.get(location, timeout=10).status_code == 400


def test_wrong_password_is_said_plainly(env):
    _, proc = env
    s = requests.Session()
    _, token = form(s, proc)
    resp = submit(s, proc, "carol", "nope", token)
    assert resp.status_code == 401
    assert "username or password is incorrect" in resp.text


@pytest.mark.parametrize(
    ("user", "password", "words"),
    [
        ("expiry", "expirypw", "password has expired"),
        ("mustchange", "mustchangepw", "must change your password"),
    ],
)
def test_account_states_are_said_plainly(env, user, password, words):
    _, proc = env
    s = requests.Session()
    _, token = form(s, proc)
    assert words in submit(s, proc, user, password, token).text


def test_missing_or_wrong_csrf_token_is_refused(env):
    _, proc = env
    s = requests.Session()
    form(s, proc)
    resp = submit(s, proc, "alice", "alicepw", "forged")
    assert resp.status_code == 400 and "session expired" in resp.text
    fresh = requests.Session()  # no cookie at all
    resp = submit(fresh, proc, "alice", "alicepw", "x")
    assert resp.status_code == 400


def test_failures_are_throttled_per_username(env):
    _, proc = env
    s = requests.Session()
    _, token = form(s, proc)
    for _ in range(3):
        assert submit(s, proc, "bob", "wrong-pw", token).status_code == 401
    resp = submit(s, proc, "bob", "bobpw", token)
    assert resp.status_code == 429 and "Too many failed attempts" in resp.text


def test_open_redirect_wreply_is_refused(env):
    _, proc = env
    s = requests.Session()
    resp, _ = form(s, proc, wreply="https://evil.example/steal")
    assert resp.status_code == 400
    assert "return address" in resp.text
    _, token = form(s, proc)
    resp = submit(s, proc, "alice", "alicepw", token, wreply="https://evil.example/steal")
    assert resp.status_code == 400 and "Location" not in resp.headers


def test_allowed_wreply_is_honoured(env):
    _, proc = env
    s = requests.Session()
    _, token = form(s, proc, wreply="https://app.example/after")
    resp = submit(s, proc, "alice", "alicepw", token, wreply="https://app.example/after")
    assert resp.status_code == 303
    assert resp.headers["Location"].startswith("https://app.example/after?wctx=ctx-123&ref=")


def test_unknown_realm_is_refused(env):
    _, proc = env
    resp, _ = form(requests.Session(), proc, wtrealm="urn:someone-else")
    assert resp.status_code == 400


def test_audit_lines_without_secrets(env):
    _, proc = env
    s = requests.Session()
    _, token = form(s, proc)
    submit(s, proc, "erin", "Erin-Wrong-Secret", token)
    _, token = form(s, proc)
    submit(s, proc, "erin", "erinpw", token)
    log = proc.log()
    assert "login method=form user='erin' outcome=WrongPassword client=127.0.0.1" in log
    assert "login method=form user='erin' outcome=success client=127.0.0.1" in log
    assert "Erin-Wrong-Secret" not in log and "erinpw" not in log


@pytest.mark.slow
def test_the_username_throttle_holds_across_workers(tmp_path, slapd):
    """Failures that land on different gunicorn workers add up (the counts are shared)."""
    hub = start_devhub(tmp_path / "hub")
    state = tmp_path / "c"
    setup_config(
        state,
        openldap_config(slapd),
        hub.ticket_url,
        **FAST,
        LOGIN_FAILURES_PER_USER=4,
        LOGIN_FAILURES_PER_ADDRESS=1000,
    )
    proc = ConnectorProcess(state, workers=2).start()
    rings = state / "run" / "logs"

    def worker_that_logged(user):
        found = [r.stem for r in rings.glob("*.jsonl") if f"user='{user}'" in r.read_text()]
        assert len(found) == 1, found
        return found[0]

    try:
        # one kept-alive connection (a session) bound to each worker, found by a probe login
        bound = {}
        for i in range(60):
            s = requests.Session()
            _, token = form(s, proc)
            assert submit(s, proc, f"probe{i}", "x", token).status_code == 401
            bound.setdefault(worker_that_logged(f"probe{i}"), (s, token))
            if len(bound) == 2:
                break
        assert len(bound) == 2, "never reached the second worker"
        # two failures on each worker: fewer than 4 each, 4 together
        for s, token in bound.values():
            for _ in range(2):
                assert submit(s, proc, "bob", "wrong-pw", token).status_code == 401
        for s, token in bound.values():
            resp = submit(s, proc, "bob", "bobpw", token)
            assert resp.status_code == 429 and "Too many failed attempts" in resp.text
        # and the failures did land two on each worker (the directory's own lockout may
        # name the last one AccountLocked: still a failure)
        failures = []
        for ring in rings.glob("*.jsonl"):
            text = ring.read_text()
            attempts = text.count("user='bob' outcome=")
            failures.append(attempts - text.count("user='bob' outcome=throttled"))
        assert sorted(failures) == [2, 2], failures
    finally:
        proc.stop()
        hub.stop()
