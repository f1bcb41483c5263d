"""The console's sign-in: always required, a generated password, throttles, nothing without it.

Flask test clients on the console's listener (see test_console_access) in front of the real
OpenLDAP: a page that answered without a session would show its users. The password comes from
the real ``connector console-password`` command.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import pytest
from configs import openldap_config
from consolekit import CONSOLE_URL, CSRF, sign_in
from itsdangerous import URLSafeTimedSerializer

from connector import consolepw
from connector.archive import export_archive
from connector.channel.identity import AgentIdentity
from connector.settings import load_settings
from connector.web import console, create_app

PASSPHRASE = "Export-Passphrase-2024"
PRINTED = re.compile(r"^console password: (\S+)$", re.MULTILINE)


def make_app(state, directory_cfg=None, identity=False, **cfg):
    state.mkdir(parents=True, exist_ok=True)
    path = state / "config.json"
    path.write_text(json.dumps({"BIND": "127.0.0.1:4000", **(directory_cfg or {}), **cfg}))
    settings = load_settings(path, environ={}, require_directory=False)
    if identity:
        AgentIdentity.generate().save(state, settings.secret_box)
    return create_app(settings, {"TESTING": True})


def console_password_cli(state):
    """Run ``connector console-password``; (its answer, the password printed or None)."""
    done = subprocess.run(
        [sys.executable, "-m", "connector.cli", "--config", str(state / "config.json"),
         "console-password"],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    found = PRINTED.search(done.stdout)
    return done, found.group(1) if found else None


def login_token(client):
    page = client.get("/console/login", base_url=CONSOLE_URL)
    return CSRF.search(page.text).group(1)


def try_password(client, password):
    token = login_token(client)
    return client.post(
        "/console/login", base_url=CONSOLE_URL, data={"csrf_token": token, "password": password}
    )


def console_rules(app):
    """Every (path, method) the console serves, from the app's own URL map."""
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("console.") and rule.endpoint != "console.login":
            assert not rule.arguments, f"{rule}: give this test a value for its arguments"
            found += [(rule.rule, m) for m in sorted(rule.methods & {"GET", "POST"})]
    return found


QUERY = {"q": "a", "lookup": "alice", "user": "alice", "run": "1", "level": "debug"}
FORM = {
    "username": "alice",
    "password": "alicepw",
    "passphrase": PASSPHRASE,
    "passphrase2": PASSPHRASE,
    "ticket": "http://127.0.0.1:9/tickets/x",
    "urls": "ldap://127.0.0.1:9",
    "sample_user": "alice",
}


@pytest.mark.parametrize("password_made", [False, True], ids=["no-password-yet", "password-made"])
def test_without_a_session_every_console_page_gives_nothing(tmp_path, slapd, password_made):
    state = tmp_path / "state"
    app = make_app(state, openldap_config(slapd))
    if password_made:
        consolepw.create(state)
    rules = console_rules(app)
    assert len(rules) >= 14, rules  # every page, the JSON status and every form
    before = (state / "config.json").read_text()
    client = app.test_client()
    token = login_token(client)  # a valid CSRF pair: only the session is missing
    forged = URLSafeTimedSerializer(b"not-the-key", salt="connector-console").dumps(
        {"f": "0" * 32, "s": "x"}
    )
    for cookie in (None, "garbage", forged):
        if cookie:
            client.set_cookie(console.SESSION_COOKIE, cookie, domain="127.0.0.1", path="/console")
        for path, method in rules:
            if method == "GET":
                resp = client.get(path, base_url=CONSOLE_URL, query_string=QUERY)
            else:
                data = {**FORM, "csrf_token": token}
                resp = client.post(path, base_url=CONSOLE_URL, data=data)
            where = f"{method} {path} cookie={cookie!r}"
            assert resp.status_code in (302, 303), where
            assert resp.headers["Location"].startswith("/console/login"), where
            for word in ("alice", "uid=", "CONNECTOR-EXPORT", slapd.base):
                assert word not in resp.text, where
    assert (state / "config.json").read_text() == before  # setup and import wrote nothing
    assert not (state / "backup").exists() and not list(state.glob("backup-*"))


def test_export_import_and_setup_refused_without_a_session(tmp_path, slapd):
    """The changes the finding names, each with a valid CSRF pair and a genuine body."""
    donor_cfg = openldap_config(slapd, LDAP_BASE="dc=donor,dc=test")
    donor = make_app(tmp_path / "donor", donor_cfg, identity=True)
    archive = export_archive(donor.extensions["connector"].settings, PASSPHRASE)
    state = tmp_path / "state"
    app = make_app(state, openldap_config(slapd), identity=True)
    password = consolepw.create(state)
    before = (state / "config.json").read_text()
    client = app.test_client()
    token = login_token(client)
    exported = client.post(
        "/console/export",
        base_url=CONSOLE_URL,
        data={"csrf_token": token, "passphrase": PASSPHRASE, "passphrase2": PASSPHRASE},
    )
    assert exported.status_code == 303 and b"CONNECTOR-EXPORT" not in exported.data
    imported = client.post(
        "/console/import",
        base_url=CONSOLE_URL,
        data={
            "csrf_token": token,
            "passphrase": PASSPHRASE,
            "archive": (io.BytesIO(archive), "a.export"),
        },
        content_type="multipart/form-data",
    )
    assert imported.status_code == 303
    setup = client.post(
        "/console/setup/directory",
        base_url=CONSOLE_URL,
        data={"csrf_token": token, "urls": "ldap://127.0.0.1:9", "sample_user": "alice",
              "bind_password": "x", "base": "dc=evil"},
    )  # fmt: skip
    assert setup.status_code == 303
    mapper = client.get("/console/mapper", base_url=CONSOLE_URL, query_string={"user": "alice"})
    assert mapper.status_code == 302 and "alice" not in mapper.text
    assert (state / "config.json").read_text() == before
    # signed in, the same export is served: the refusals above were the session's doing
    sign_in(client, password)
    token = CSRF.search(client.get("/console/archive", base_url=CONSOLE_URL).text).group(1)
    again = client.post(
        "/console/export",
        base_url=CONSOLE_URL,
        data={"csrf_token": token, "passphrase": PASSPHRASE, "passphrase2": PASSPHRASE},
    )
    assert again.status_code == 200 and again.data.startswith(b"CONNECTOR-EXPORT")


def test_the_generated_password_signs_in_and_a_wrong_one_does_not(tmp_path, slapd):
    state = tmp_path / "state"
    app = make_app(state, openldap_config(slapd))
    client = app.test_client()
    # before any password is made, nobody signs in, and the page says how to make one
    page = client.get("/console/login", base_url=CONSOLE_URL)
    assert "No console password has been made yet" in page.text
    assert "console-password" in page.text
    assert try_password(client, "").status_code == 403
    done, password = console_password_cli(state)
    assert done.returncode == 0, done.stderr
    assert password and len(password) >= 20
    record = consolepw.record_path(state)
    assert record.stat().st_mode & 0o777 == 0o600
    assert record.read_text().startswith("scrypt$") and password not in record.read_text()
    assert try_password(client, password + "x").status_code == 401
    assert try_password(client, password.upper()).status_code == 401
    assert client.get("/console/users", base_url=CONSOLE_URL).status_code == 302
    good = try_password(client, password)
    assert good.status_code == 303
    users = client.get("/console/users", base_url=CONSOLE_URL, query_string={"q": "ali"})
    assert users.status_code == 200 and "alice" in users.text
    status = client.get("/console/status.json", base_url=CONSOLE_URL).json
    assert status["console_password"] == "generated"
    # a new password ends every session and the old password with it
    done, newer = console_password_cli(state)
    assert done.returncode == 0 and newer != password
    assert client.get("/console/users", base_url=CONSOLE_URL).status_code == 302
    assert try_password(client, password).status_code == 401
    assert try_password(client, newer).status_code == 303
    assert password not in done.stderr


def test_console_password_setting_keeps_working_and_the_command_says_so(tmp_path):
    state = tmp_path / "state"
    app = make_app(state, CONSOLE_PASSWORD="Console-Pass-1234")
    done, printed = console_password_cli(state)
    assert done.returncode == 2 and printed is None
    assert "CONSOLE_PASSWORD is set" in done.stderr
    assert not consolepw.record_path(state).exists()
    client = app.test_client()
    assert try_password(client, "Console-Pass-1234").status_code == 303
    assert client.get("/console/", base_url=CONSOLE_URL).status_code == 200


def test_the_console_sign_in_is_throttled_for_every_worker_together(tmp_path):
    state = tmp_path / "state"
    first = make_app(state)
    second = make_app(state)  # another worker: same state and run directory
    password = consolepw.create(state)
    a, b = first.test_client(), second.test_client()
    for i in range(console.LOGIN_FAILURES):
        assert try_password(a if i % 2 else b, f"guess-{i}").status_code == 401
    for client in (a, b):
        resp = try_password(client, password)  # the right one, too late
        assert resp.status_code == 429 and "Too many wrong passwords" in resp.text
        assert client.get("/console/", base_url=CONSOLE_URL).status_code == 302


def tries(client, n, username, password="Wrong-Guess-1"):  # noqa: S107
    token = CSRF.search(client.get("/console/users", base_url=CONSOLE_URL).text).group(1)
    return [
        client.post(
            "/console/users/try",
            base_url=CONSOLE_URL,
            data={"csrf_token": token, "username": username, "password": password},
        )
        for _ in range(n)
    ]


def test_try_a_login_is_throttled_per_session_and_in_all(tmp_path, slapd):
    state = tmp_path / "state"
    app = make_app(state, openldap_config(slapd))
    password = consolepw.create(state)
    sessions = []
    for _ in range(console.TRIES_IN_ALL // console.TRIES_PER_SESSION + 1):
        client = app.test_client()
        sign_in(client, password)
        sessions.append(client)
    first = sessions[0]
    answers = tries(first, console.TRIES_PER_SESSION, "nobody-here")
    assert all(r.status_code == 200 and "WrongUsername" in r.text for r in answers)
    # the next try in this session is refused before the directory is asked: no profile,
    # even with the right password
    (over,) = tries(first, 1, "alice", "alicepw")
    assert over.status_code == 429 and "Throttled" in over.text
    assert 'id="try-profile"' not in over.text
    # another session still may, until every session together reaches the limit
    (ok,) = tries(sessions[1], 1, "alice", "alicepw")
    assert ok.status_code == 200 and 'id="try-profile"' in ok.text
    left = console.TRIES_IN_ALL - console.TRIES_PER_SESSION - 1
    for client in sessions[1:]:
        n = min(left, console.TRIES_PER_SESSION - (1 if client is sessions[1] else 0))
        assert all(r.status_code == 200 for r in tries(client, n, "nobody-here"))
        left -= n
    assert left == 0
    (last,) = tries(sessions[-1], 1, "alice", "alicepw")
    assert last.status_code == 429 and 'id="try-profile"' not in last.text
