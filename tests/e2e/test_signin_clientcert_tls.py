"""Client-certificate sign-in when gunicorn itself serves https (``SSL_PFX``): the certificate
comes from the TLS socket, asked optionally in the handshake against ``CLIENT_CERT_CA_FILE``.

A good certificate lands at the devhub with ``method: certificate``; no certificate gets the
form; a revoked one (which OpenSSL does not check: no CRL is loaded there) gets the form with
its reason from the connector; one from another CA is refused by the TLS handshake itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from certkit import Issued, TestCA, server_pfx
from configs import openldap_config
from connector_proc import ConnectorProcess, setup_config
from hubs import DevHubProcess, start_devhub

pytestmark = pytest.mark.slow

PFX_PASSWORD = "pfx-Secret-15"


@dataclass
class TlsSite:
    hub: DevHubProcess
    connector: ConnectorProcess
    server_ca: str
    certs: dict[str, Issued]


@pytest.fixture(scope="module")
def tls_site(tmp_path_factory: pytest.TempPathFactory, slapd: object) -> Iterator[TlsSite]:
    tmp = tmp_path_factory.mktemp("clientcert-tls")
    ca = TestCA.create(tmp / "client-ca")
    stranger = TestCA.create(tmp / "other-ca", name="Stranger CA")
    certs = {
        "carol": ca.issue("carol", emails=("carol@example.test",)),
        "revoked": ca.issue("bob-lost", emails=("bob@example.test",)),
        "untrusted": stranger.issue("carol-forged", emails=("carol@example.test",)),
    }
    ca.revoke(certs["revoked"])
    ca.write_crl()
    pfx, server_ca = server_pfx(tmp / "tls", PFX_PASSWORD)
    hub = start_devhub(tmp / "hub", lease_seconds=4)
    connector: ConnectorProcess | None = None
    try:
        state = tmp / "connector"
        setup_config(
            state,
            openldap_config(slapd),
            hub.ticket_url,
            POLL_WAIT_SECONDS=2,
            SSL_PFX=pfx,
            SSL_KEY_PASSWORD=PFX_PASSWORD,
            CLIENT_CERT_AUTH=True,
            CLIENT_CERT_CA_FILE=ca.ca_file,
            CLIENT_CERT_CRL=[ca.crl_file],
            CLIENT_CERT_MAPPING=["email"],
        )
        connector = ConnectorProcess(state)
        connector.url = f"https://127.0.0.1:{connector.port}"
        connector.verify = server_ca
        connector.start()
        yield TlsSite(hub, connector, server_ca, certs)
    finally:
        if connector is not None:
            connector.stop()
        hub.stop()


def _get(site: TlsSite, wctx: str, cert: Issued | None) -> requests.Response:
    return requests.get(
        site.connector.url + "/wsfed",
        params={"wtrealm": "urn:acme", "wctx": wctx},
        cert=(cert.cert_file, cert.key_file) if cert else None,
        verify=site.server_ca,
        allow_redirects=False,
        timeout=30,
    )


def test_certificate_from_the_tls_socket_signs_in(tls_site: TlsSite) -> None:
    resp = _get(tls_site, "ctx-tls", tls_site.certs["carol"])
    assert resp.status_code == 303, resp.text[:500]
    location = resp.headers["Location"]
    assert location.startswith(tls_site.hub.url("login/callback") + "?"), location
    page = requests.get(location, timeout=30)
    assert re.search(r'id="method">certificate<', page.text), page.text[:1000]
    for group in ("team-dev", "staff", "everyone"):
        assert f"<li>{group}</li>" in page.text, page.text[:2000]
    assert "carol@example.test" in page.text
    log = tls_site.connector.log()
    audit = re.search(r"login method=certificate user='([^']*)' outcome=success", log)
    assert audit and audit.group(1).startswith("uid=carol,"), log[-2000:]


def test_no_certificate_gets_the_form(tls_site: TlsSite) -> None:
    resp = _get(tls_site, "ctx-none", None)
    assert resp.status_code == 200 and 'name="password"' in resp.text


def test_revoked_certificate_gets_the_form_with_the_reason(tls_site: TlsSite) -> None:
    resp = _get(tls_site, "ctx-revoked", tls_site.certs["revoked"])
    assert resp.status_code == 200, resp.status_code
    assert "Your certificate has been revoked." in resp.text


def test_certificate_of_another_ca_fails_the_handshake(tls_site: TlsSite) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        _get(tls_site, "ctx-untrusted", tls_site.certs["untrusted"])
    assert json.dumps("ctx-untrusted") not in tls_site.connector.log()
