"""Where the secrets live, checked on a real set-up connector (what ``docs/security.md`` says):
``config.json`` 0600 with the service password sealed, ``secret.key`` 0600, ``agent.key``
encrypted PKCS#8 and 0600, an RS256 tenant key stored as the public key it is and an HS256 one
sealed; and the provisioning ticket (a bearer secret) kept out of the log even when
registering again fails at start.
"""

from __future__ import annotations

import base64
import json
import stat
import time

import pytest
import requests
from configs import openldap_config
from connector_proc import ConnectorProcess, setup_config
from faultkit import launch, wait_log
from hubs import start_devhub

from connector.channel.identity import AgentIdentity
from connector.settings import load_settings

pytestmark = pytest.mark.slow  # hostile suite: its own hub, KDC and two connectors


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_directory_of_a_running_connector(hostile):
    state = hostile.inside.state_dir
    config_text = (state / "config.json").read_text()
    config = json.loads(config_text)
    assert _mode(state / "config.json") == 0o600
    assert "LDAP_BIND_PASSWORD" not in config
    assert config["LDAP_BIND_CREDENTIALS"].startswith("enc:v1:")
    assert hostile.slapd.bind_pw not in config_text
    assert _mode(state / "secret.key") == 0o600
    key_pem = (state / "agent.key").read_text()
    assert _mode(state / "agent.key") == 0o600
    assert key_pem.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert config["TENANT_SIGNING_KEY"].startswith("-----BEGIN PUBLIC KEY-----")
    # and it all opens with the key file, and only with it
    settings = load_settings(state / "config.json", {})
    assert settings.ldap_bind_password == hostile.slapd.bind_pw
    assert "svcpw" not in repr(settings)
    assert AgentIdentity.load(state, settings.secret_box) is not None


def test_a_shared_secret_tenant_key_is_sealed(tmp_path, slapd):
    hub = start_devhub(tmp_path / "hub", alg="HS256")
    try:
        state = tmp_path / "c"
        setup_config(state, openldap_config(slapd), hub.ticket_url)
        identity = AgentIdentity.generate("probe")
        shared = requests.post(
            hub.ticket_url, json={"certs": [identity.cert_b64]}, timeout=30
        ).json()["signingKey"]
    finally:
        hub.stop()
    text = (state / "config.json").read_text()
    assert shared not in text and base64.b64encode(shared.encode()).decode() not in text
    assert json.loads(text)["TENANT_SIGNING_KEY"].startswith("enc:v1:")
    assert load_settings(state / "config.json", {}).tenant_signing_key == shared


def test_the_ticket_stays_out_of_the_log_when_registering_again_fails(tmp_path, slapd):
    """The agent's certificate changed (AGENT_CERT_THUMBPRINT differs), so each worker
    registers it again before polling; the hub is down. The log says so (and the poller keeps
    retrying), without the ticket."""
    hub = start_devhub(tmp_path / "hub")
    state = tmp_path / "c"
    try:
        setup_config(state, openldap_config(slapd), hub.ticket_url)
    finally:
        hub.stop()
    config = json.loads((state / "config.json").read_text())
    config["AGENT_CERT_THUMBPRINT"] = "another-certificate"
    (state / "config.json").write_text(json.dumps(config))
    proc = launch(lambda: ConnectorProcess(state, workers=1, threads=2))
    try:
        wait_log(proc, "cannot start polling")
        # a few retries, whose log lines are checked below; a repeated error is logged
        # once and the hub is down, so a bounded time is the only thing to wait for
        time.sleep(1.5)
        log = proc.log()
        assert requests.get(proc.url + "/health", timeout=10).status_code == 200
    finally:
        proc.stop()
    assert "<ticket>" in log
    assert hub.ticket not in log, [line for line in log.splitlines() if hub.ticket in line]
