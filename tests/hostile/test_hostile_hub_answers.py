"""A hub reached over plain http, or whose ticket information is tampered with: setup refuses
it before it registers or stores anything, with a message that says what to confirm.

Run against a devhub of its own that serves a tampered ``/info`` (its ``ticket-info``
override): another origin for ``adHub`` or ``postTokenUrl``, plain http to a non-loopback host,
``ipRanges`` wider than a private range, malformed fields. The administrator's confirmation
(``--allow-hub-origin``, ``--allow-ip-range``) is tried through the real command line, and a
``config.json`` edited to a plain-http hub is refused when the settings load (so no worker
would ever call it). The hostile site's connectors are not involved.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hubs import start_devhub

from connector.channel.client import HubUntrusted, make_session, request_json
from connector.channel.provision import SetupError, setup_from_ticket
from connector.errors import ConfigError
from connector.settings import Settings, load_settings


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    h = start_devhub(tmp_path_factory.mktemp("hub-answers"), kerberos=True)
    yield h
    h.stop()


@pytest.fixture
def tampered(hub):
    """Set fields of the hub's ticket information for one test; restored after."""
    yield hub.set_info
    hub.set_info()


def _config(tmp_path, **cfg):
    path = tmp_path / "c" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg))
    return path


def _setup_cli(config, ticket, *flags):
    return subprocess.run(
        [sys.executable, "-m", "connector.cli", "--config", str(config), "setup", "--ticket",
         ticket, *flags],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _refused(tmp_path, hub, reason, *needles):
    """Setup is refused for ``reason`` with every needle in the message; nothing stored or
    registered."""
    before = len(hub.agents()["certificates"])
    cfg = _config(tmp_path)
    with pytest.raises(SetupError) as info:
        setup_from_ticket(cfg, hub.ticket_url, environ={})
    assert info.value.reason == reason, info.value
    for needle in needles:
        assert needle in str(info.value), str(info.value)
    assert hub.ticket not in str(info.value)
    assert json.loads(cfg.read_text()) == {}
    assert len(hub.agents()["certificates"]) == before
    return str(info.value)


@pytest.mark.parametrize(
    "ticket",
    [
        "http://hub.example/tickets/t-1",
        "http://10.0.0.5:8700/tickets/t-1",
        "http://[2001:db8::1]/tickets/t-1",
        "http://127.0.0.1.evil.example/tickets/t-1",
        "http://localhost.evil.example/tickets/t-1",
    ],
)
def test_a_ticket_not_on_https_is_refused_before_any_call(tmp_path, ticket):
    cfg = _config(tmp_path)
    with pytest.raises(SetupError) as info:
        setup_from_ticket(cfg, ticket, environ={})
    assert info.value.reason == "ticket"
    assert "https://" in str(info.value) and "t-1" not in str(info.value)


@pytest.mark.parametrize("key", ["AD_HUB", "REALM_POST_TOKEN_URL", "PROVISIONING_TICKET"])
def test_a_config_json_edited_to_plain_http_does_not_load(tmp_path, key):
    cfg = _config(tmp_path, **{key: "http://hub.example/tenants/acme/t-secret"})
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ={}, require_directory=False)
    assert any(p.startswith(f"{key}: must be https://") for p in info.value.problems)
    assert "t-secret" not in str(info.value)


def test_every_hub_call_refuses_plain_http_to_another_host():
    """Settings built around the load checks still cannot make a call in the clear."""
    settings = Settings(ad_hub="http://hub.example/tenants/acme")
    with pytest.raises(HubUntrusted, match="must be https://"):
        request_json(make_session(settings), settings, "POST", "http://hub.example/agent/poll")


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"adHub": "http://localhost:{port}/tenants/acme"}, "http://localhost:{port}"),
        ({"adHub": "https://127.0.0.1:{port}/tenants/acme"}, "https://127.0.0.1:{port}"),
        ({"adHub": "http://127.0.0.1:1/tenants/acme"}, "http://127.0.0.1:1"),
        (
            {"realm": {"name": "urn:acme", "postTokenUrl": "https://evil.example/callback"}},
            "https://evil.example",
        ),
    ],
)
def test_urls_off_the_tickets_origin_need_confirmation(tmp_path, hub, tampered, fields, needle):
    port = hub.base.rsplit(":", 1)[1]
    tampered(**json.loads(json.dumps(fields).replace("{port}", port)))
    message = _refused(tmp_path, hub, "confirm", needle.replace("{port}", port))
    assert "--allow-hub-origin" in message


@pytest.mark.parametrize(
    "url", ["http://hub.example/tenants/acme", "http://192.168.1.10/tenants/acme", "ldap://h/x"]
)
def test_a_plain_http_adhub_is_refused_even_if_confirmed(tmp_path, hub, tampered, url):
    tampered(adHub=url)
    cfg = _config(tmp_path, HUB_TRUSTED_ORIGINS=["https://hub.example"])
    with pytest.raises(SetupError) as info:
        setup_from_ticket(cfg, hub.ticket_url, environ={})
    assert info.value.reason == "hub" and "https://" in str(info.value)


@pytest.mark.parametrize(
    "cidr", ["0.0.0.0/0", "::/0", "8.8.8.0/24", "10.0.0.0/7", "172.0.0.0/8", "2001:db8::/32"]
)
def test_ip_ranges_wider_than_private_need_confirmation(tmp_path, hub, tampered, cidr):
    tampered(ipRanges=["10.1.0.0/16", cidr])
    message = _refused(tmp_path, hub, "confirm", cidr, "--allow-ip-range")
    assert "10.1.0.0/16" not in message


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"kerberos": "yes"}, "kerberos"),
        ({"kerberos": 1}, "kerberos"),
        ({"ipRanges": "10.0.0.0/8"}, "ipRanges"),
        ({"ipRanges": ["10.0.0.0/8", "not-a-range"]}, "not-a-range"),
        ({"ipRanges": [10]}, "ipRanges"),
        ({"adHub": 42}, "adHub"),
        ({"adHub": ""}, "adHub"),
        ({"connectionName": ["corp"]}, "connectionName"),
        ({"connectionDomain": {}}, "connectionDomain"),
        ({"realm": "urn:acme"}, "realm"),
        ({"realm": {"postTokenUrl": "x"}}, "realm.name"),
        ({"realm": {"name": "urn:acme", "postTokenUrl": 7}}, "realm.postTokenUrl"),
        ({"protocolVersion": 1}, "protocolVersion"),
        ({"protocolVersion": None}, "protocolVersion"),
    ],
)
def test_malformed_ticket_information_is_refused(tmp_path, hub, tampered, fields, needle):
    tampered(**fields)
    _refused(tmp_path, hub, "hub", "malformed", needle)


def test_confirmed_origin_and_range_are_accepted_and_kept(tmp_path, hub, tampered):
    """The administrator's flags on the real command line: accepted, stored, logged."""
    other = hub.base.replace("127.0.0.1", "localhost")
    tampered(adHub=f"{other}/tenants/acme", ipRanges=["0.0.0.0/0"])
    cfg = _config(tmp_path)
    out = _setup_cli(cfg, hub.ticket_url)
    assert out.returncode != 0 and "--allow-hub-origin" in out.stderr + out.stdout
    out = _setup_cli(cfg, hub.ticket_url, "--allow-hub-origin", other)
    assert out.returncode != 0 and "0.0.0.0/0" in out.stderr + out.stdout
    assert "AD_HUB" not in json.loads(cfg.read_text())
    out = _setup_cli(
        cfg, hub.ticket_url, "--allow-hub-origin", other, "--allow-ip-range", "0.0.0.0/0"
    )
    assert out.returncode == 0, out.stderr
    assert "accepted on the administrator's confirmation" in out.stderr
    stored = json.loads(cfg.read_text())
    assert stored["AD_HUB"] == f"{other}/tenants/acme"
    assert stored["CLIENT_IP_RANGES"] == ["0.0.0.0/0"]
    assert stored["HUB_TRUSTED_ORIGINS"] == [other]
    assert stored["HUB_ALLOWED_IP_RANGES"] == ["0.0.0.0/0"]
    # the confirmation is kept: setting up again needs no flags
    assert _setup_cli(cfg, hub.ticket_url).returncode == 0
