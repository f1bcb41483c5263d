"""Operations over real sockets: listeners, /ready, /metrics with two workers, `connector check`.

gunicorn runs the documented way (deploy/gunicorn.conf.py) with the console on a port of its
own; the devhub is the hub and OpenLDAP the directory.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
import requests
from configs import openldap_config
from connector_proc import setup_config
from consolekit import CSRF, FAST, ConsoleConnector, wait_agents


@pytest.fixture(scope="module")
def running(tmp_path_factory, hub, slapd):
    """One connector with two workers, set up and polling."""
    state = tmp_path_factory.mktemp("ops") / "c"
    setup_config(state, openldap_config(slapd), hub.ticket_url, **FAST)
    proc = ConsoleConnector(state, workers=2, threads=4).start()
    try:
        wait_agents(hub, proc)
        yield proc
    finally:
        proc.stop()


def test_gunicorn_sets_server_port_from_the_socket_not_the_host_header(running):
    """The console's gate is the listening socket: a Host header naming it opens nothing."""
    proc = running
    spoofed = {"Host": f"127.0.0.1:{proc.console_port}"}
    for path in ("/console/", "/console/setup", "/console/status.json"):
        assert requests.get(proc.url + path, headers=spoofed, timeout=10).status_code == 404
        assert requests.get(proc.url + path, timeout=10).status_code == 404
    assert requests.post(proc.url + "/console/export", timeout=10).status_code == 404
    # the console's own listener answers, whatever the Host header says about ports
    other = {"Host": f"127.0.0.1:{proc.port}"}
    signed_in = proc.session()
    assert signed_in.get(proc.console + "/", headers=other, timeout=10).status_code == 200
    assert signed_in.get(proc.console + "/", timeout=10).status_code == 200
    # and serves neither the sign-in endpoint nor anything else
    console_root = proc.console.rsplit("/console", 1)[0]
    assert requests.get(console_root + "/wsfed", timeout=10).status_code == 404
    assert requests.get(console_root + "/health", timeout=10).status_code == 200
    # the start-up log says where the console's password comes from, never the password
    assert "password made by `connector console-password`" in proc.log()
    assert proc.password not in proc.log() + proc.run_files_text()


def form_login(proc, username, password):
    s = requests.Session()
    query = {"wtrealm": "urn:acme", "wctx": "ctx"}
    page = s.get(proc.url + "/wsfed", params=query, timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    data = {**query, "username": username, "password": password, "csrf_token": token}
    return s.post(proc.url + "/wsfed", data=data, allow_redirects=False, timeout=30)


def metric(text, name, **labels):
    """The value of one sample in a Prometheus text exposition (0 if absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name + (f"{{{wanted}}}" if labels else "")) + r" ([0-9.e+-]+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_metrics_count_every_login_whichever_worker_answers(running, hub):
    proc = running
    kinds = {
        "form_ok": ("form", "success"),
        "form_bad": ("form", "WrongPassword"),
        "hub_ok": ("hub", "success"),
        "hub_bad": ("hub", "WrongPassword"),
    }

    def logins(text):
        return {
            key: metric(text, "connector_logins_total", method=m, outcome=o)
            for key, (m, o) in kinds.items()
        }

    base = logins(requests.get(proc.url + "/metrics", timeout=10).text)
    for _ in range(4):
        assert form_login(proc, "alice", "alicepw").status_code == 303
    for _ in range(2):
        assert form_login(proc, "carol", "Wrong-Guess-1").status_code == 401
    ids = [
        hub.queue("authenticate_user", {"pid": f"m-{i}", "username": "bob", "password": "bobpw"})
        for i in range(5)
    ]
    ids += [
        hub.queue("authenticate_user", {"pid": f"w-{i}", "username": "bob", "password": "nope"})
        for i in range(2)
    ]
    for cid in ids:
        hub.wait_done(cid)
    # every scrape (each goes to whichever worker takes it) sees the sum of both workers
    for _ in range(6):
        text = requests.get(proc.url + "/metrics", timeout=10).text
        got = logins(text)
        assert {k: got[k] - base[k] for k in got} == {
            "form_ok": 4,
            "form_bad": 2,
            "hub_ok": 5,
            "hub_bad": 2,
        }
        assert metric(text, "connector_workers") == 2
        assert metric(text, "connector_hub_connected") == 2
        assert metric(text, "connector_login_seconds_count", method="form") >= 6
        assert metric(text, "connector_hub_poll_seconds_count") > 0
    # both workers took part (the hub spreads commands, the kernel spreads connections)
    status = proc.wait_status(lambda s: s["hub"]["connected_workers"] == 2)  # files: every 2 s
    assert len(status["workers"]) == 2
    assert status["hub"]["connected_workers"] == 2
    logins = {(r["method"], r["outcome"]): r["count"] for r in status["logins"]}
    assert logins[("form", "success")] - base["form_ok"] == 4
    assert status["commands"]["success"] >= 5


def test_connector_check_with_a_hub_and_running_workers(running):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "connector.cli",
            "--config",
            str(running.state_dir / "config.json"),
            "check",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    for step in (
        "dns",
        "tcp",
        "tls",
        "bind",
        "search",
        "user-filter",
        "hub-dns",
        "hub-reach",
        "hub-tls",
        "hub-auth",
        "clock",
        "header-limits",
    ):
        assert f"PASS {step}" in out.stdout, out.stdout
    assert "limit_request_field_size 131072 bytes" in out.stdout
    assert "0 failed" in out.stdout


def test_connector_check_names_what_to_fix(tmp_path, hub, slapd):
    """Wrong user filter, a hub that refuses the agent, a keytab that is not there."""
    state = tmp_path / "c"
    setup_config(
        state,
        openldap_config(slapd, LDAP_USER_BY_NAME="(sAMAccountName={0})"),
        hub.ticket_url,
        KERBEROS_AUTH=True,
        KERBEROS_KEYTAB=str(tmp_path / "missing.keytab"),
        KERBEROS_REALMS=["EXAMPLE.TEST"],
    )
    from connector.channel.identity import AgentIdentity
    from connector.settings import load_settings

    settings = load_settings(state / "config.json", environ={})
    AgentIdentity.generate().save(state, settings.secret_box)  # not registered at the hub
    out = subprocess.run(
        [sys.executable, "-m", "connector.cli", "--config", str(state / "config.json"), "check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "FAIL user-filter" in out.stdout and "(uid={0})" in out.stdout
    assert "FAIL hub-auth" in out.stdout and "run setup" in out.stdout
    assert "agent's ES256 token" in out.stdout
    assert "FAIL keytab" in out.stdout and "file does not exist" in out.stdout
    assert "NOTE gunicorn: not running" in out.stdout


def test_ready_follows_the_directory(tmp_path, hub, slapd_factory, console_connector):
    server = slapd_factory()
    state = tmp_path / "c"
    setup_config(state, openldap_config(server, LDAP_CONNECT_TIMEOUT=1), hub.ticket_url, **FAST)
    proc = console_connector(state)

    def ready_is(expected, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            resp = requests.get(proc.url + "/ready", timeout=10)
            if (resp.status_code == 200) == expected:
                return resp.json()
            assert time.monotonic() < deadline, resp.text
            time.sleep(0.3)

    assert ready_is(True)["checks"]["directory"] == "ok"
    server.stop()
    down = ready_is(False)
    assert down["checks"]["directory"] != "ok"
    # the console shows the server down, with the reason, and /metrics says 0
    status = proc.wait_status(lambda s: not s["ldap"][server.uri]["up"])
    assert status["ldap"][server.uri]["error"]
    text = requests.get(proc.url + "/metrics", timeout=10).text
    assert metric(text, "connector_ldap_server_up", server=server.uri) == 0
    server.start()
    assert ready_is(True)["ready"] is True
    proc.wait_status(lambda s: s["ldap"][server.uri]["up"])


def test_try_a_login_and_logs_on_the_console(running):
    proc = running
    s = proc.session()
    page = s.get(proc.console + "/users", timeout=10)
    token = CSRF.search(page.text).group(1)
    bad = s.post(
        proc.console + "/users/try",
        data={"csrf_token": token, "username": "erin", "password": "Erin-Bad-Guess-7"},
        timeout=30,
    )
    assert "WrongPassword" in bad.text
    good = s.post(
        proc.console + "/users/try",
        data={"csrf_token": token, "username": "erin", "password": "erinpw"},
        timeout=30,
    )
    assert 'id="try-profile"' in good.text and "cycle-a" in good.text
    found = s.get(proc.console + "/users", params={"q": "car"}, timeout=30)
    assert "carol" in found.text
    logs = s.get(proc.console + "/logs", params={"user": "erin", "level": "info"}, timeout=10)
    assert "login method=console user=&#39;erin&#39; outcome=WrongPassword" in logs.text
    assert "outcome=success" in logs.text
    assert "alice" not in logs.text  # filtered to erin
    warnings = s.get(proc.console + "/logs", params={"level": "warning"}, timeout=10)
    assert "outcome=success" not in warnings.text
    for text in (proc.log(), proc.run_files_text(), logs.text):
        assert "Erin-Bad-Guess-7" not in text and "erinpw" not in text
