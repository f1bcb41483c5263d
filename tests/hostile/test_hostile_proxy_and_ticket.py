"""Credentials in settings that are URLs (issue 13 #11): the provisioning ticket (a bearer
secret) and a proxy URL with ``user:password@`` never show in ``repr(settings)``, in an error
message, in the troubleshooter's output or in a running connector's log — the proxy may be
named, as ``http://***@host:port``.

The proxy is a loopback port where nothing listens (every call through it fails, and urllib3's
error names the proxy URL in full), against a devhub of its own and OpenLDAP.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from configs import openldap_config
from connector_proc import ConnectorProcess, setup_config
from faultkit import wait_log
from hubs import start_devhub
from servers import free_port

from connector.channel.client import HubUnavailable, make_session, request_json
from connector.channel.provision import SetupError, setup_from_ticket
from connector.errors import ConfigError
from connector.settings import load_settings

PROXY_USER = "proxyuser-7f3a"
PROXY_PASSWORD = "Pr0xy-S3cret-91c2"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    h = start_devhub(tmp_path_factory.mktemp("proxy-creds"), lease_seconds=30)
    yield h
    h.stop()


@pytest.fixture
def dead_proxy():
    """A proxy URL with credentials, on a loopback port where nothing listens."""
    return f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{free_port()}"


def _clean(text: str, *secrets: str) -> None:
    for secret in (PROXY_PASSWORD, PROXY_USER, *secrets):
        assert secret not in text, f"{secret[:10]}… in: {text[:2000]}"


def test_settings_repr_shows_neither_ticket_nor_proxy(tmp_path, hub, dead_proxy):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"PROVISIONING_TICKET": hub.ticket_url, "HTTPS_PROXY": dead_proxy}))
    settings = load_settings(cfg, environ={}, require_directory=False)
    assert settings.provisioning_ticket == hub.ticket_url and settings.https_proxy == dead_proxy
    _clean(repr(settings) + str(settings), hub.ticket)


def test_a_failing_proxy_is_named_without_its_credentials(tmp_path, hub, dead_proxy, caplog):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"HTTPS_PROXY": dead_proxy}))
    with pytest.raises(SetupError) as info:
        setup_from_ticket(cfg, hub.ticket_url, environ={})
    assert info.value.reason == "unreachable"
    assert f"http://***@127.0.0.1:{dead_proxy.rsplit(':', 1)[1]}" in str(info.value)
    _clean(str(info.value) + repr(info.value) + caplog.text, hub.ticket)
    settings = load_settings(cfg, environ={}, require_directory=False)
    with pytest.raises(HubUnavailable) as call:
        request_json(make_session(settings), settings, "POST", hub.url("agent/poll"), json={})
    assert call.value.__cause__ is None and "Unable to connect to proxy" in str(call.value)
    _clean(str(call.value))


def test_the_troubleshooter_names_the_proxy_without_credentials(tmp_path, hub, dead_proxy, slapd):
    state = tmp_path / "c"
    setup_config(state, openldap_config(slapd), hub.ticket_url)
    cfg = state / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "HTTPS_PROXY": dead_proxy}))
    out = subprocess.run(
        [sys.executable, "-m", "connector.cli", "--config", str(cfg), "check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "proxy http://***@127.0.0.1" in out.stdout, out.stdout
    _clean(out.stdout + out.stderr, hub.ticket)


def test_a_running_connector_never_logs_the_proxy_credentials(tmp_path, hub, dead_proxy, slapd):
    state = tmp_path / "c"
    setup_config(state, openldap_config(slapd), hub.ticket_url, POLL_WAIT_SECONDS=1)
    proc = ConnectorProcess(state, env={"HTTPS_PROXY": dead_proxy}).start()
    try:
        wait_log(proc, r"the proxy http://\*\*\*@127\.0\.0\.1:\d+ failed", 30)
    finally:
        proc.stop()
    _clean(proc.log(), hub.ticket)


def test_a_config_error_never_repeats_credentials_in_a_url(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(
        json.dumps({"HUB_TRUSTED_ORIGINS": [f"https://{PROXY_USER}:{PROXY_PASSWORD}@h.example"]})
    )
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ={}, require_directory=False)
    assert "HUB_TRUSTED_ORIGINS" in str(info.value)
    _clean(str(info.value))
