"""Client-certificate sign-in through the shipped nginx site, with real certificates and curl.

One module-scoped site: devhub, OpenLDAP, the connector under gunicorn with
``CLIENT_CERT_AUTH`` (CA file and CRL file of a test CA made with ``cryptography``, mapping by
the SAN e-mail), and nginx running ``deploy/nginx-connector.conf`` with
``deploy/nginx-client-cert.conf`` included where the site's commented line says. nginx reaches
gunicorn from ``127.0.0.3``, the only ``TRUSTED_PROXIES`` entry; the test's clients connect
from ``127.0.0.1``.

Each certificate is presented by ``curl --cert``: the good ones land at the devhub with
``method: certificate`` and the user's nested groups; each bad one gets the form with its
reason; a certificate header sent straight to gunicorn by an untrusted peer is ignored.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests
from certkit import Issued, TestCA
from configs import openldap_config
from connector_proc import ConnectorProcess, setup_config
from cryptography.x509.oid import ExtendedKeyUsageOID
from hubs import DevHubProcess, start_devhub
from nginx_site import SITE_FILE, Nginx, adapt_site
from servers import SLAPD_EXPECTED_GROUPS, find_binary, free_port, make_ca

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SNIPPET_FILE = ROOT / "deploy" / "nginx-client-cert.conf"
PROXY_SOURCE = "127.0.0.3"
INCLUDE_LINE = "# include /etc/nginx/snippets/connector-client-cert.conf;"


def adapt_snippet(text: str, ca_file: str) -> str:
    """The shipped snippet with the test CA's path (and nothing else changed)."""
    old = "/etc/connector/tls/client-ca.pem"
    assert text.count(old) == 1, "the snippet's ssl_client_certificate line changed"
    return text.replace(old, ca_file)


def with_client_certs(site: str, snippet_path: Path) -> str:
    """The adapted site with the commented include turned on, naming ``snippet_path``."""
    assert site.count(INCLUDE_LINE) == 1, "the site's client-certificate include line changed"
    return site.replace(INCLUDE_LINE, f"include {snippet_path};")


@dataclass
class CertSite:
    hub: DevHubProcess
    connector: ConnectorProcess
    nginx: Nginx
    tls_ca: str
    certs: dict[str, Issued]
    workdir: Path

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.nginx.https_port}"


def start_cert_site(
    tmp: Path, directory_cfg: dict[str, Any], ca: TestCA, certs: dict[str, Issued], **config: Any
) -> Iterator[CertSite]:
    """Devhub, the connector with ``CLIENT_CERT_AUTH`` (``ca``'s CA file and CRL file), and
    nginx with the client-certificate snippet in front; yields the site, then stops it."""
    hub = start_devhub(tmp / "hub", lease_seconds=4)
    connector: ConnectorProcess | None = None
    nginx: Nginx | None = None
    try:
        state = tmp / "connector"
        setup_config(
            state,
            directory_cfg,
            hub.ticket_url,
            POLL_WAIT_SECONDS=2,
            CLIENT_CERT_AUTH=True,
            CLIENT_CERT_CA_FILE=ca.ca_file,
            CLIENT_CERT_CRL=[ca.crl_file],
            **config,
        )
        env = {"TRUSTED_PROXIES": PROXY_SOURCE}
        connector = ConnectorProcess(state, env=env).start()
        tls = make_ca(tmp / "tls", ips=("127.0.0.1", "::1"), dns_names=("localhost",))
        https_port, http_port = free_port(), free_port()
        snippet = tmp / "client-cert.conf"
        snippet.write_text(adapt_snippet(SNIPPET_FILE.read_text(), ca.ca_file))
        text = adapt_site(
            SITE_FILE.read_text(),
            https_port=https_port,
            http_port=http_port,
            upstream_port=connector.port,
            cert_file=tls.cert_file,
            key_file=tls.key_file,
        )
        nginx = Nginx(
            tmp / "nginx",
            with_client_certs(text, snippet),
            https_port=https_port,
            proxy_source=PROXY_SOURCE,
        )
        nginx.start()
        yield CertSite(hub, connector, nginx, tls.ca_file, certs, tmp)
    finally:
        if nginx is not None:
            nginx.stop()
        if connector is not None:
            connector.stop()
        hub.stop()


@pytest.fixture(scope="module")
def cert_site(tmp_path_factory: pytest.TempPathFactory, slapd: Any) -> Iterator[CertSite]:
    tmp = tmp_path_factory.mktemp("deploy-nginx-cert")
    ca = TestCA.create(tmp / "client-ca")
    stranger = TestCA.create(tmp / "other-ca", name="Stranger CA")
    certs = {
        "alice": ca.issue("alice", emails=("alice@example.test",)),
        "dave": ca.issue("dave", emails=("dave@example.test",)),
        "expired": ca.issue("bob-old", emails=("bob@example.test",), days=(-30, -2)),
        "revoked": ca.issue("carol-lost", emails=("carol@example.test",)),
        "untrusted": stranger.issue("alice-forged", emails=("alice@example.test",)),
        "no_eku": ca.issue(
            "alice-server", emails=("alice@example.test",), eku=(ExtendedKeyUsageOID.SERVER_AUTH,)
        ),
        "unmapped": ca.issue("nobody", emails=("nobody@example.test",)),
    }
    ca.revoke(certs["revoked"])
    ca.write_crl()
    yield from start_cert_site(
        tmp, openldap_config(slapd), ca, certs, CLIENT_CERT_MAPPING=["upn", "email"]
    )


def curl(site: CertSite, wctx: str, cert: Issued | None, *extra: str) -> tuple[int, str, str]:
    """GET /wsfed through nginx with ``curl --cert``: (status, Location, body)."""
    body = site.workdir / "curl.body"
    argv = [
        find_binary("curl", "curl"), "-sS", "--max-time", "30", "--cacert", site.tls_ca,
        "-o", str(body), "-w", "%{http_code} %{redirect_url}", *extra,
    ]  # fmt: skip
    if cert is not None:
        argv += ["--cert", cert.cert_file, "--key", cert.key_file]
    argv.append(f"{site.https}/wsfed?wtrealm=urn:acme&wctx={wctx}")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    status, _, location = result.stdout.partition(" ")
    return int(status), location, body.read_text()


def message(page: str) -> str:
    found = re.search(r'id="message" role="alert">([^<]*)<', page)
    assert found, page[:1000]
    return html.unescape(found.group(1))


def landed(site: CertSite, location: str, wctx: str) -> dict[str, Any]:
    """Follow the hand-off to the hub: method certificate; the profile the hub received."""
    assert location.startswith(site.hub.url("login/callback") + "?"), location
    assert parse_qs(urlsplit(location).query)["wctx"] == [wctx]
    page = requests.get(location, timeout=30)
    assert page.status_code == 200, page.text[:500]
    method = re.search(r'id="method">([^<]*)<', page.text)
    assert method and method.group(1) == "certificate", page.text[:1000]
    shown = re.search(r'id="result">(.*?)</pre>', page.text, re.S)
    assert shown, page.text[:1000]
    profile: dict[str, Any] = json.loads(html.unescape(shown.group(1)))
    return profile


@pytest.mark.parametrize("user", ["alice", "dave"])
def test_good_certificate_lands_at_the_hub(cert_site: CertSite, user: str) -> None:
    status, location, body = curl(cert_site, f"ctx-{user}", cert_site.certs[user])
    assert status == 303, body[:500]
    profile = landed(cert_site, location, f"ctx-{user}")
    assert f"{user}@example.test" in json.dumps(profile), profile
    assert set(profile["groups"]) == SLAPD_EXPECTED_GROUPS[user], profile


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("expired", "Your certificate has expired"),
        ("revoked", "Your certificate has been revoked."),
        ("untrusted", "not issued by an authority this sign-in trusts"),
        ("no_eku", "not meant for signing in"),
        ("unmapped", "No account matches your certificate."),
    ],
)
def test_bad_certificate_gets_the_form_with_its_reason(
    cert_site: CertSite, kind: str, words: str
) -> None:
    status, location, body = curl(cert_site, f"ctx-{kind}", cert_site.certs[kind])
    assert status == 200 and not location, (status, location)
    assert 'name="password"' in body, body[:500]
    said = message(body)
    assert said.startswith("Certificate sign-in did not work.") and words in said, said


def test_no_certificate_gets_the_form(cert_site: CertSite) -> None:
    status, _, body = curl(cert_site, "ctx-none", None)
    assert status == 200 and 'name="password"' in body
    assert 'id="message"' not in body, body[:1000]


def test_certificate_header_from_the_client_is_not_passed_by_nginx(cert_site: CertSite) -> None:
    """A client sending nginx its own certificate header, without a TLS certificate."""
    pem = quote(cert_site.certs["alice"].pem, safe="")
    status, location, body = curl(
        cert_site,
        "ctx-spoof-nginx",
        None,
        "-H",
        f"X-SSL-Client-Cert: {pem}",
        "-H",
        f"X-ARR-ClientCert: {pem}",
    )
    assert status == 200 and not location and 'name="password"' in body


def test_certificate_header_from_an_untrusted_peer_is_ignored(cert_site: CertSite) -> None:
    """Straight to gunicorn from 127.0.0.1 (not TRUSTED_PROXIES): the header is logged and
    ignored, and the form is the answer."""
    pem = quote(cert_site.certs["alice"].pem, safe="")
    resp = requests.get(
        cert_site.connector.url + "/wsfed",
        params={"wtrealm": "urn:acme", "wctx": "ctx-spoof"},
        headers={"X-SSL-Client-Cert": pem},
        allow_redirects=False,
        timeout=10,
    )
    assert resp.status_code == 200 and "Location" not in resp.headers
    assert 'name="password"' in resp.text
    assert "ignored a client-certificate header X-SSL-Client-Cert from 127.0.0.1" in (
        cert_site.connector.log()
    )


def test_a_refused_certificate_opens_no_other_path(cert_site: CertSite) -> None:
    """nginx's 495 (expired certificate) goes to the connector for /wsfed only."""
    curl = find_binary("curl", "curl")
    expired = cert_site.certs["expired"]
    for path in ("/admin", "/ready", "/wsfed/x"):
        argv = [
            curl, "-sS", "-o", os.devnull, "-w", "%{http_code}", "--cacert", cert_site.tls_ca,
            "--cert", expired.cert_file, "--key", expired.key_file, cert_site.https + path,
        ]  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert result.stdout == "404", (path, result.stdout, result.stderr)


POLICY_DIR = Path("/etc/chromium/policies/managed")


@pytest.fixture
def chromium_home(cert_site: CertSite) -> Iterator[Path]:
    """A HOME whose NSS database holds alice's key and certificate and trusts nginx's CA, and
    a managed policy (a file of our own, removed after) that selects a certificate for this
    nginx without a prompt."""
    home = cert_site.workdir / "chrome-home"
    nssdb = f"sql:{home / '.pki' / 'nssdb'}"
    (home / ".pki" / "nssdb").mkdir(parents=True)
    certutil = find_binary("certutil", "libnss3-tools")
    pk12util = find_binary("pk12util", "libnss3-tools")
    for argv in (
        [certutil, "-N", "-d", nssdb, "--empty-password"],
        [pk12util, "-i", cert_site.certs["alice"].p12_file, "-d", nssdb, "-W", "test"],
        [certutil, "-A", "-n", "nginx-ca", "-t", "C,,", "-i", cert_site.tls_ca, "-d", nssdb],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (argv, done.stdout, done.stderr)
    POLICY_DIR.mkdir(parents=True, exist_ok=True)
    policy = POLICY_DIR / f"connector-test-client-cert-{os.getpid()}.json"
    rule = json.dumps({"pattern": cert_site.https, "filter": {}})
    policy.write_text(json.dumps({"AutoSelectCertificateForUrls": [rule]}))
    try:
        yield home
    finally:
        policy.unlink(missing_ok=True)


def test_chromium_signs_in_with_a_client_certificate(
    cert_site: CertSite, chromium_home: Path
) -> None:
    import sys

    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    from kerberos_clients import Chromium

    url = f"{cert_site.https}/wsfed?wtrealm=urn:acme&wctx=ctx-chromium"
    with Chromium(cert_site.workdir / "chromium", env={"HOME": str(chromium_home)}) as browser:
        browser.get(url)
        method = browser.wait_for("#method")
        assert method.text == "certificate", browser.text()[:2000]
        assert browser.url.startswith(cert_site.hub.url("login/callback")), browser.url
        assert set(browser.texts("#groups li")) == SLAPD_EXPECTED_GROUPS["alice"]
    assert re.search(
        r"login method=certificate user='uid=alice,[^']*' outcome=success",
        cert_site.connector.log(),
    )
