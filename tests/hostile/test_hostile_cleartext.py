"""Cleartext by default (issue 13, finding 8), on real gunicorn and a real OpenLDAP.

* ``SSL_PFX`` / ``SSL_KEY_PASSWORD`` (the Node connector's keys) make gunicorn serve https,
  verified against the issuing CA; a wrong password stops the start with a clear reason;
* without a certificate and without ``BIND`` the sign-in endpoint listens on 127.0.0.1 only
  (the listening socket, as the kernel shows it) and the master says so;
* a simple bind over ``ldap://`` without StartTLS is refused, before any connection, with a
  reason naming the fix, in logins and in ``connector check``; ``LDAP_ALLOW_CLEARTEXT`` lets
  it through, and says so at start.
"""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest
import requests
from certkit import server_pfx
from configs import openldap_config
from connector_proc import ConnectorProcess

from connector import errors
from connector.directory.check import check_server
from connector.directory.service import Directory
from connector.listener import start_notes
from connector.settings import load_settings

PFX_PASSWORD = "pfx-Secret-9"


def _pfx(tls_dir: Path, password: str) -> str:
    """A PKCS#12 of a server key and certificate for 127.0.0.1, as base64 (Node's form)."""
    return server_pfx(tls_dir, password)[0]


def _state(tmp_path: Path, slapd, **extra) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    (state / "config.json").write_text(json.dumps({**openldap_config(slapd), **extra}))
    return state


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp) of the sockets listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hexport = fields[1].rsplit(":", 1)
            if int(hexport, 16) == port and fields[3] == "0A":  # TCP_LISTEN
                found.add(address)
    return found


def test_ssl_pfx_is_served_over_https(tmp_path, slapd):
    state = _state(
        tmp_path, slapd, SSL_PFX=_pfx(tmp_path / "tls", PFX_PASSWORD), SSL_KEY_PASSWORD=PFX_PASSWORD
    )
    proc = ConnectorProcess(state)
    proc.url = f"https://127.0.0.1:{proc.port}"
    proc.verify = str(tmp_path / "tls" / "ca.crt")
    try:
        proc.start()
        answer = requests.get(proc.url + "/wsfed", timeout=10, verify=proc.verify)
        assert answer.status_code in (200, 400)
        with pytest.raises(requests.exceptions.SSLError):  # not a certificate anyone trusts
            requests.get(proc.url + "/health", timeout=10)
        with pytest.raises(requests.ConnectionError):  # no plain http on that port
            requests.get(f"http://127.0.0.1:{proc.port}/health", timeout=10)
        pem = state / "run" / "tls-server.pem"
        assert stat.S_IMODE(pem.stat().st_mode) == 0o600
        assert "serving https on 127.0.0.1" in proc.log()
    finally:
        proc.stop()
    assert not pem.exists()  # the unencrypted key is gone with gunicorn
    assert PFX_PASSWORD not in proc.log()


def test_a_wrong_pfx_password_stops_the_start_with_a_reason(tmp_path, slapd):
    wrong = "not-the-pfx-password"
    state = _state(
        tmp_path, slapd, SSL_PFX=_pfx(tmp_path / "tls", PFX_PASSWORD), SSL_KEY_PASSWORD=wrong
    )
    proc = ConnectorProcess(state)
    try:
        with pytest.raises(RuntimeError, match="SSL_KEY_PASSWORD is wrong"):
            proc.start()
    finally:
        proc.stop()
    assert wrong not in proc.log()


def test_without_tls_or_bind_only_loopback_listens(tmp_path, slapd):
    state = _state(tmp_path, slapd)
    proc = ConnectorProcess(state)
    proc.extra_env.update(BIND="", PORT=str(proc.port))
    try:
        proc.start()
        assert _listening(proc.port) == {"0100007F"}  # 127.0.0.1, not 0.0.0.0 nor ::
        assert f"listens on 127.0.0.1:{proc.port} only, over plain http" in proc.log()
    finally:
        proc.stop()


def test_an_explicit_bind_wins_and_plain_http_elsewhere_is_called_out(tmp_path):
    settings = load_settings(
        tmp_path / "config.json", {"BIND": "10.0.0.5:4000"}, require_directory=False
    )
    assert settings.main_bind == "10.0.0.5:4000"
    [(level, text)] = start_notes(settings, None)
    assert level == logging.WARNING and "in clear text unless a TLS proxy" in text
    behind_nginx = load_settings(
        tmp_path / "config.json", {"BIND": "127.0.0.1:4000"}, require_directory=False
    )
    assert start_notes(behind_nginx, None)[0][0] == logging.INFO
    with_pfx = load_settings(
        tmp_path / "config.json", {"SSL_PFX": "x", "PORT": "4443"}, require_directory=False
    )
    assert with_pfx.main_bind == "0.0.0.0:4443"


def _directory(tmp_path: Path, slapd, **overrides) -> Directory:
    path = tmp_path / "config.json"
    cfg = openldap_config(slapd, **{"LDAP_STARTTLS": False, **overrides})
    path.write_text(json.dumps(cfg))
    return Directory(load_settings(path, {}))


def test_a_cleartext_simple_bind_is_refused(tmp_path, slapd, caplog):
    with caplog.at_level(logging.ERROR, "connector"):
        directory = _directory(tmp_path, slapd)
    assert "refusing to bind over ldap:// without TLS" in caplog.text
    with pytest.raises(errors.DirectoryUnavailable) as refused:
        directory.authenticate("alice", slapd.users["alice"])
    assert "LDAP_ALLOW_CLEARTEXT" in str(refused.value)
    assert "LDAP_STARTTLS" in str(refused.value)
    steps = check_server(directory.settings, slapd.uri, "alice")
    assert [(s.name, s.ok) for s in steps][-1] == ("tls", False)
    assert "clear text" in steps[-1].detail and "LDAP_STARTTLS" in steps[-1].hint


def test_the_cleartext_opt_in_is_logged_and_works(tmp_path, slapd, caplog):
    with caplog.at_level(logging.WARNING, "connector"):
        directory = _directory(tmp_path, slapd, LDAP_ALLOW_CLEARTEXT=True)
    assert "LDAP_ALLOW_CLEARTEXT is set" in caplog.text
    assert directory.authenticate("alice", slapd.users["alice"])["nickname"] == "alice"
    steps = {s.name: s for s in check_server(directory.settings, slapd.uri, "alice")}
    assert steps["tls"].ok and steps["tls"].detail.startswith("WARNING")
    assert all(s.ok for s in steps.values())
    # StartTLS needs no opt-in
    assert _directory(tmp_path, slapd, LDAP_STARTTLS=True).authenticate(
        "alice", slapd.users["alice"]
    )
