"""The admin console over real sockets, to a caller without its password.

The ``inside`` connector's console (its own loopback listener) is asked for every route its
app declares (read from the URL map, so a new page cannot be forgotten) with no session, with
forged session cookies, and as a GET-only SSRF in another service on the host would ask (the
URLs that show users, raw profiles and logs): every answer is a redirect to the sign-in and
carries no directory data. A console password exists (made as ``connector console-password``
makes it), and with it the same session sees the data: the refusals are the sign-in's doing.
"""

from __future__ import annotations

import re

import pytest
import requests
from itsdangerous import URLSafeTimedSerializer

from connector import consolepw
from connector.settings import load_settings
from connector.web import create_app

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
SESSION_COOKIE = "connector_console"
#: What a GET-only SSRF would fetch: users, a raw profile, logs, the status, the check.
SSRF_PATHS = [
    "/console/users?q=a",
    "/console/users?lookup=alice",
    "/console/mapper?user=alice",
    "/console/logs?level=debug",
    "/console/status.json",
    "/console/check?run=1&user=alice",
    "/console/archive",
    "/console/setup",
]
LEAKS = ("alice", "uid=", "dc=", "CONNECTOR-EXPORT")


@pytest.fixture(scope="module")
def console(hostile):
    """(console URL, its password); the password is made once for the module."""
    bind = hostile.inside.extra_env["CONSOLE_BIND"]
    password = consolepw.create(hostile.inside.state_dir)
    hostile.secrets.append(password)
    return f"http://{bind}/console", password


def _session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    return s


def _nothing(resp: requests.Response, where: str) -> None:
    assert resp.status_code in (302, 303), (where, resp.status_code)
    assert resp.headers["Location"].startswith("/console/login"), where
    for word in LEAKS:
        assert word not in resp.text, (where, word)


def test_every_console_route_without_a_session(hostile, console):
    url, _ = console
    settings = load_settings(hostile.inside.state_dir / "config.json", environ={})
    app = create_app(settings, {"TESTING": True})
    rules = [
        (r.rule, m)
        for r in app.url_map.iter_rules()
        if r.endpoint.startswith("console.") and r.endpoint != "console.login"
        for m in sorted(r.methods & {"GET", "POST"})
    ]
    assert len(rules) >= 14
    # started before any password existed: its log said how to make one
    assert "no password yet; make one" in hostile.inside.log()
    s = _session()
    token = CSRF.search(s.get(url + "/login", timeout=10).text).group(1)
    root = url.rsplit("/console", 1)[0]
    for path, method in rules:
        data = {"csrf_token": token, "passphrase": "x" * 20, "passphrase2": "x" * 20}
        resp = s.request(method, root + path, data=data, allow_redirects=False, timeout=30)
        _nothing(resp, f"{method} {path}")


FORGED = {
    "garbage": "garbage",
    "empty": "",
    "other-key": URLSafeTimedSerializer(b"k", salt="connector-console").dumps({"f": "0", "s": "x"}),
    "no-signature": "eyJmIjoiMCIsInMiOiJ4In0",
    "huge": "A" * 4000,
}


@pytest.mark.parametrize("kind", list(FORGED))
def test_forged_session_cookies_get_nothing(console, kind):
    url, _ = console
    s = _session()
    s.cookies.set(SESSION_COOKIE, FORGED[kind], path="/console")
    root = url.rsplit("/console", 1)[0]
    for path in SSRF_PATHS:
        _nothing(s.get(root + path, allow_redirects=False, timeout=30), f"{kind} {path}")


@pytest.mark.parametrize("path", SSRF_PATHS)
def test_a_get_only_ssrf_gets_nothing(console, path):
    url, _ = console
    root = url.rsplit("/console", 1)[0]
    _nothing(_session().get(root + path, allow_redirects=False, timeout=30), path)


def test_signed_in_the_same_pages_answer(console):
    url, password = console
    s = _session()
    token = CSRF.search(s.get(url + "/login", timeout=10).text).group(1)
    wrong = s.post(url + "/login", data={"csrf_token": token, "password": password + "!"})
    assert wrong.status_code == 401
    good = s.post(
        url + "/login", data={"csrf_token": token, "password": password}, allow_redirects=False
    )
    assert good.status_code == 303
    found = s.get(url + "/users", params={"lookup": "alice"}, timeout=30)
    assert found.status_code == 200 and "alice" in found.text
