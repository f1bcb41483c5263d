"""The ``connector`` command, run as a real process against the test OpenLDAP."""

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from configs import openldap_config


def write_config(tmp_path, slapd, **overrides):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(openldap_config(slapd, **overrides)))
    return path


def connector(config, *args, stdin=""):
    return subprocess.run(
        [sys.executable, "-m", "connector.cli", "--config", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def config(tmp_path, slapd):
    return write_config(tmp_path, slapd)


def test_user_prints_the_profile(config):
    out = connector(config, "user", "dave")
    assert out.returncode == 0, out.stderr
    profile = json.loads(out.stdout)
    assert profile["id"] == "dave"
    assert sorted(profile["groups"]) == ["everyone", "staff", "team-core", "team-dev"]


def test_console_script_is_installed(config):
    # the script pip installed beside this interpreter (a venv's bin/ need not be on PATH)
    script = Path(sysconfig.get_path("scripts")) / "connector"
    out = subprocess.run(
        [str(script), "--config", str(config), "user", "alice"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["id"] == "alice"


def test_login_success(config):
    out = connector(config, "login", "alice", "--password-stdin", stdin="alicepw\n")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["nickname"] == "alice"


def test_login_wrong_password_is_precise_and_secret_free(config):
    out = connector(config, "login", "frank", "--password-stdin", stdin="Sekrit-Guess\n")
    assert out.returncode == 1
    assert json.loads(out.stdout)["err"]["name"] == "WrongPassword"
    assert "Sekrit-Guess" not in out.stdout + out.stderr


def test_login_prompts_on_a_terminal(config):
    """Without --password-stdin the password is asked for (getpass reads the tty)."""
    import os
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # child
        os.execv(
            sys.executable,
            [sys.executable, "-m", "connector.cli", "--config", str(config), "login", "bob"],
        )
    prompt = b""
    while b"Password" not in prompt:
        prompt += os.read(fd, 1024)
    os.write(fd, b"bobpw\n")
    output = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output
    assert b'"nickname": "bob"' in output
    assert b"bobpw" not in output.split(b"\n", 1)[-1]  # not echoed


def test_unreachable_directory_exit_code(tmp_path, slapd):
    from servers import free_port

    config = write_config(tmp_path, slapd, LDAP_URL=f"ldap://127.0.0.1:{free_port()}")
    out = connector(config, "login", "alice", "--password-stdin", stdin="alicepw\n")
    assert out.returncode == 3
    assert json.loads(out.stdout)["err"]["name"] == "Unavailable"


def test_bad_config_lists_every_problem(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"LDAP_URL": "http://x", "LDAP_POOL_SIZE": "lots"}))
    out = connector(path, "user", "alice")
    assert out.returncode == 2
    for key in ("LDAP_URL", "LDAP_POOL_SIZE", "LDAP_BASE", "LDAP_BIND_USER"):
        assert key in out.stderr


def test_check_passes_on_a_good_setup(config):
    out = connector(config, "check", "--user", "alice")
    assert out.returncode == 0, out.stdout
    for step in ("dns", "tcp", "tls", "bind", "search", "user"):
        assert f"PASS {step}" in out.stdout
    assert "6 passed, 0 failed" in out.stdout


def test_check_names_the_failing_step(tmp_path, slapd):
    from servers import free_port

    dead = f"ldap://127.0.0.1:{free_port()}"
    config = write_config(tmp_path, slapd, LDAP_URLS=[slapd.uri, dead], LDAP_BIND_PASSWORD="bad")
    out = connector(config, "check")
    assert out.returncode == 1
    assert f"FAIL bind [{slapd.uri}]" in out.stdout
    assert "check LDAP_BIND_USER" in out.stdout
    assert f"FAIL tcp [{dead}]" in out.stdout


def test_check_reports_an_untrusted_certificate(tmp_path, slapd):
    config = write_config(tmp_path, slapd, LDAP_CA_FILE="/etc/ssl/certs/ca-certificates.crt")
    out = connector(config, "check")
    assert out.returncode == 1
    assert "FAIL tls" in out.stdout and "LDAP_CA_FILE" in out.stdout


def test_seal_encrypts_a_plain_password_and_loading_does_not(tmp_path, slapd):
    config = write_config(tmp_path, slapd)
    before = config.read_bytes()
    assert json.loads(before)["LDAP_BIND_PASSWORD"]
    assert connector(config, "user", "alice").returncode == 0
    assert config.read_bytes() == before  # a command that loads the settings writes nothing
    checked = connector(config, "check")
    assert "NOTE config: LDAP_BIND_PASSWORD is in plain text" in checked.stdout
    assert "connector seal" in checked.stdout
    out = connector(config, "seal")
    assert out.returncode == 0, out.stderr
    assert "LDAP_BIND_PASSWORD" in out.stdout and "replaced by encrypted" in out.stdout
    stored = json.loads(config.read_text())
    assert "LDAP_BIND_PASSWORD" not in stored and stored["LDAP_BIND_CREDENTIALS"]
    assert connector(config, "user", "alice").returncode == 0
    again = connector(config, "seal")
    assert again.returncode == 0 and "nothing to seal" in again.stdout
    assert "in plain text" not in connector(config, "check").stdout
