"""Provisioning (protocol §1): the ticket's info and certificate registration."""

from __future__ import annotations

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from hub_agent import HubAgent, b64, ec_cert, ed25519_cert, kid_of, rsa_key, self_signed


def test_info_describes_the_connection(hub):
    response = requests.get(hub.ticket_url + "/info", timeout=10)
    assert response.status_code == 200
    assert response.json() == {
        "protocolVersion": 2,
        "adHub": hub.ad_hub,
        "connectionName": "corp",
        "connectionDomain": "corp.example.com",
        "realm": {"name": "urn:acme", "postTokenUrl": hub.ad_hub + "/login/callback"},
        "kerberos": False,
        "ipRanges": [],
    }


def test_info_announces_the_configured_names_kerberos_and_ranges(hub_factory):
    hub = hub_factory(
        tenant="globex",
        connection="corp-ad",
        realm="urn:globex",
        kerberos=True,
        ip_ranges=["10.0.0.0/8", "192.168.1.0/24"],
    )
    info = hub.info()
    assert info["adHub"].endswith("/tenants/globex")
    assert info["connectionName"] == "corp-ad"
    assert info["realm"]["name"] == "urn:globex"
    assert info["kerberos"] is True
    assert info["ipRanges"] == ["10.0.0.0/8", "192.168.1.0/24"]


def test_a_public_url_replaces_the_request_host(hub_factory):
    hub = hub_factory(public_url="https://hub.example")
    info = hub.info()
    assert info["adHub"] == "https://hub.example/tenants/acme"
    assert info["realm"]["postTokenUrl"] == "https://hub.example/tenants/acme/login/callback"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_an_unknown_ticket_is_404(hub, method):
    url = f"{hub.base}/tickets/not-the-ticket" + ("/info" if method == "GET" else "")
    response = requests.request(method, url, json={"certs": []}, timeout=10)
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_ticket"


def test_registration_answers_the_rs256_public_key_and_records_the_cert(hub):
    agent = HubAgent(hub)
    key = agent.register()
    assert key.startswith("-----BEGIN PUBLIC KEY-----")
    assert isinstance(load_pem_public_key(key.encode()), rsa.RSAPublicKey)
    certs = hub.agents()["certificates"]
    assert [c["kid"] for c in certs] == [agent.kid]
    assert certs[0]["agentVersion"] == "test/1"
    assert certs[0]["signInEndpoint"] == "https://connector.test/signin"
    assert "test-host-w1" in certs[0]["subject"]


def _bad_bodies() -> list[tuple[str, object, str]]:
    return [
        ("no certs", {"signInEndpoint": "x"}, "certs must be"),
        ("empty list", {"certs": []}, "certs must be"),
        ("not a list", {"certs": "abc"}, "certs must be"),
        ("not base64", {"certs": ["***"]}, "not base64"),
        ("not DER", {"certs": [b64(b"hello world")]}, "not an X.509"),
        ("EC P-384 key", {"certs": [b64(ec_cert(ec.SECP384R1()))]}, "not P-256"),
        ("Ed25519 key", {"certs": [b64(ed25519_cert())]}, "not RSA or EC P-256"),
        ("RSA 1024", {"certs": [b64(self_signed(rsa_key(1024)))]}, "1024 bits"),
        (
            "bad version",
            {"certs": [b64(self_signed(rsa_key()))], "agentVersion": 3},
            "agentVersion",
        ),
    ]


@pytest.mark.parametrize(
    ("body", "fragment"), [b[1:] for b in _bad_bodies()], ids=[b[0] for b in _bad_bodies()]
)
def test_registration_refuses_bad_certificates(hub, body, fragment):
    response = requests.post(hub.ticket_url, json=body, timeout=10)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "bad_request"
    assert fragment in response.json()["message"]
    assert hub.agents()["certificates"] == []


def test_registration_needs_a_json_body(hub):
    response = requests.post(hub.ticket_url, data="certs=x", timeout=10)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"


def test_registration_adds_and_keeps_the_newest_twenty(hub):
    key = rsa_key()
    ders = [self_signed(key, f"agent-{i}", serial=i + 1) for i in range(22)]
    for der in ders[:21]:
        requests.post(hub.ticket_url, json={"certs": [b64(der)]}, timeout=10).raise_for_status()
    kids = [c["kid"] for c in hub.agents()["certificates"]]
    assert kids == [kid_of(d) for d in ders[1:21]]
    # registering an old certificate again makes it the newest; two at once both count
    requests.post(hub.ticket_url, json={"certs": [b64(ders[1]), b64(ders[21])]}, timeout=10)
    kids = [c["kid"] for c in hub.agents()["certificates"]]
    assert len(kids) == 20
    assert kids[-2:] == [kid_of(ders[1]), kid_of(ders[21])]
    assert kid_of(ders[2]) not in kids


def test_two_connectors_with_their_own_keys_both_authenticate(hub):
    first, second = HubAgent(hub, "host-a/w1"), HubAgent(hub, "host-b/w1")
    first.register()
    second.register()
    assert first.poll()["commands"] == []
    assert second.poll()["commands"] == []
    assert {a["sub"] for a in hub.agents()["agents"]} == {"host-a/w1", "host-b/w1"}
