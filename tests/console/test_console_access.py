"""Who reaches the console: its own port, a loopback peer, a loopback Host; CSRF; password.

These use the Flask test client, whose WSGI environ the test sets: ``SERVER_PORT`` (gunicorn
takes it from the listening socket, see test_console_ops for the proof) and ``REMOTE_ADDR``
(the TCP peer). A non-loopback peer cannot be produced over real sockets on a console that
listens on loopback only, so the address check is proven here.
"""

from __future__ import annotations

import json
import re

import pytest
from consolekit import sign_in

from connector import consolepw
from connector.errors import ConfigError
from connector.settings import load_settings, refine, seal_config_file
from connector.web import create_app

CONSOLE = "http://127.0.0.1:4001"
PUBLIC = "http://127.0.0.1:4000"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def make_app(tmp_path, **cfg):
    state = tmp_path / "state"
    state.mkdir(parents=True, exist_ok=True)
    path = state / "config.json"
    path.write_text(json.dumps({"BIND": "127.0.0.1:4000", **cfg}))
    settings = load_settings(path, environ={}, require_directory=False)
    return create_app(settings, {"TESTING": True}), path


@pytest.fixture
def app(tmp_path):
    app, path = make_app(tmp_path)
    app.console_password = consolepw.create(path.parent)
    return app


def signed_in(app):
    """A test client signed in to the console."""
    client = app.test_client()
    sign_in(client, app.console_password)
    return client


def test_the_console_answers_on_its_port_from_loopback(app):
    client = signed_in(app)
    resp = client.get("/console/", base_url=CONSOLE)
    assert resp.status_code == 200
    assert "Not set up" in resp.text or "not set up" in resp.text
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    # reached (its sign-in), not hidden, from the other loopback forms
    ipv6 = client.get(
        "/console/",
        base_url="http://[::1]:4001",
        environ_overrides={"REMOTE_ADDR": "::1", "SERVER_PORT": "4001"},  # werkzeug: not [::1]
    )
    assert ipv6.status_code == 302 and "/console/login" in ipv6.headers["Location"]
    mapped = client.get(
        "/console/", base_url=CONSOLE, environ_overrides={"REMOTE_ADDR": "::ffff:127.0.0.1"}
    )
    assert mapped.status_code == 200


@pytest.mark.parametrize("peer", ["10.0.0.5", "192.168.1.20", "2001:db8::1", "::ffff:10.0.0.5"])
def test_a_non_loopback_peer_gets_404(app, peer):
    client = app.test_client()
    for path in ("/console/", "/console/setup", "/console/status.json", "/console/nope"):
        resp = client.get(path, base_url=CONSOLE, environ_overrides={"REMOTE_ADDR": peer})
        assert resp.status_code == 404, path
        assert "console" not in resp.text.lower()


def test_forwarded_for_does_not_make_a_peer_local(app):
    """X-Forwarded-For is never believed for the console, not even from a trusted proxy."""
    client = app.test_client()
    resp = client.get(
        "/console/",
        base_url=CONSOLE,
        headers={"X-Forwarded-For": "127.0.0.1"},
        environ_overrides={"REMOTE_ADDR": "10.0.0.5"},
    )
    assert resp.status_code == 404


def test_the_public_port_does_not_reveal_the_console(app):
    client = app.test_client()
    for path in ("/console/", "/console/setup", "/console/status.json"):
        assert client.get(path, base_url=PUBLIC).status_code == 404
    assert client.post("/console/setup/ticket", base_url=PUBLIC).status_code == 404
    # a Host header naming the console's port changes nothing: SERVER_PORT decides
    resp = client.get("/console/", base_url=PUBLIC, headers={"Host": "127.0.0.1:4001"})
    assert resp.status_code == 404


def test_a_rebound_host_name_gets_404(app):
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1."""
    client = app.test_client()
    resp = client.get("/console/", base_url="http://evil.example:4001")
    assert resp.status_code == 404
    assert client.get("/console/", base_url="http://localhost:4001").status_code == 302


def test_the_console_port_serves_nothing_else(app):
    client = app.test_client()
    assert client.get("/wsfed", base_url=CONSOLE).status_code == 404
    assert client.get("/health", base_url=CONSOLE).status_code == 200
    assert client.get("/metrics", base_url=CONSOLE).status_code == 200
    root = client.get("/", base_url=CONSOLE)
    assert root.status_code == 302 and root.headers["Location"].endswith("/console/")


def test_a_change_without_the_csrf_token_is_refused(app):
    client = signed_in(app)
    page = client.get("/console/setup", base_url=CONSOLE)
    token = CSRF.search(page.text).group(1)
    for data in ({}, {"csrf_token": "forged"}, {"csrf_token": token + "x"}):
        resp = client.post("/console/setup/ticket", base_url=CONSOLE, data=data)
        assert resp.status_code == 400
        assert "CSRF check failed" in resp.text
    # the same form with the token reaches the view (which asks for a ticket)
    resp = client.post("/console/setup/ticket", base_url=CONSOLE, data={"csrf_token": token})
    assert resp.status_code == 400 and "Paste the ticket URL" in resp.text
    # a token for another browser's cookie does not pass either
    other = signed_in(app)
    other.get("/console/setup", base_url=CONSOLE)
    resp = other.post("/console/setup/ticket", base_url=CONSOLE, data={"csrf_token": token})
    assert "CSRF check failed" in resp.text


def test_the_password_is_sealed_and_asked_for(tmp_path):
    app, path = make_app(tmp_path, CONSOLE_PASSWORD="Console-Pass-1234")
    assert json.loads(path.read_text())["CONSOLE_PASSWORD"]  # loading never writes
    seal_config_file(path, environ={})  # setup and the service's start do this
    stored = json.loads(path.read_text())
    assert "CONSOLE_PASSWORD" not in stored
    assert stored["CONSOLE_CREDENTIALS"].startswith("enc:v1:")
    assert "Console-Pass-1234" not in path.read_text()
    client = app.test_client()
    resp = client.get("/console/setup", base_url=CONSOLE)
    assert resp.status_code == 302 and "/console/login" in resp.headers["Location"]
    page = client.get("/console/login", base_url=CONSOLE)
    token = CSRF.search(page.text).group(1)
    wrong = client.post(
        "/console/login", base_url=CONSOLE, data={"csrf_token": token, "password": "nope"}
    )
    assert wrong.status_code == 401 and "Wrong password" in wrong.text
    good = client.post(
        "/console/login",
        base_url=CONSOLE,
        data={"csrf_token": token, "password": "Console-Pass-1234", "next": "/console/setup"},
    )
    assert good.status_code == 303 and good.headers["Location"].endswith("/console/setup")
    assert client.get("/console/setup", base_url=CONSOLE).status_code == 200
    # once the password changes (same secret key), the session made under the old one ends
    app2, _ = make_app(tmp_path, CONSOLE_PASSWORD="Another-Pass-5678")
    cookie = client.get_cookie("connector_console", domain="127.0.0.1", path="/console")
    other = app2.test_client()
    other.set_cookie("connector_console", cookie.value, domain="127.0.0.1", path="/console")
    assert other.get("/console/", base_url=CONSOLE).status_code == 302


def test_console_bind_must_be_loopback_and_its_own_port(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"CONSOLE_BIND": "0.0.0.0:4001"}))
    with pytest.raises(ConfigError, match="loopback only"):
        load_settings(path, environ={}, require_directory=False)
    path.write_text(json.dumps({"CONSOLE_BIND": "127.0.0.1:4000", "BIND": "0.0.0.0:4000"}))
    with pytest.raises(ConfigError, match="sign-in endpoint's"):
        load_settings(path, environ={}, require_directory=False)
    path.write_text(json.dumps({"BIND": "0.0.0.0:8080"}))
    assert load_settings(path, environ={}, require_directory=False).console_address == (
        "127.0.0.1",
        8081,
    )
    path.write_text(json.dumps({"CONSOLE_BIND": "off"}))
    assert load_settings(path, environ={}, require_directory=False).console_address is None


def test_refine_checks_the_values_entered(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{}")
    base = load_settings(path, environ={}, require_directory=False)
    good = refine(base, {"LDAP_URLS": ["ldap://a", "ldap://b"], "LDAP_STARTTLS": "on"})
    assert good.ldap_urls == ("ldap://a", "ldap://b") and good.ldap_starttls
    with pytest.raises(ConfigError) as info:
        refine(base, {"LDAP_URLS": ["http://x"], "LDAP_USER_BY_NAME": "uid=x"})
    assert len(info.value.problems) == 2
