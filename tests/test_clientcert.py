"""connector.clientcert: verification against a real test CA, CRLs (file and fetched over a real
HTTP server), where a certificate is believed from, and the mapping filters."""

from __future__ import annotations

import datetime
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from certkit import SMART_CARD_LOGON, TestCA
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from connector import clientcert
from connector.errors import CertificateRejected, ConfigError
from connector.netpolicy import parse_address, parse_networks


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA.create(tmp_path_factory.mktemp("clientca"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA.create(tmp_path_factory.mktemp("otherca"), name="Untrusted CA")


def _presented(issued: Any) -> clientcert.Presented:
    return clientcert.Presented(issued.cert, (), "test")


def _code(verifier: clientcert.CertificateVerifier, issued: Any) -> str:
    with pytest.raises(CertificateRejected) as caught:
        verifier.verify(_presented(issued))
    return caught.value.code


def test_good_certificates_verify(ca: TestCA) -> None:
    verifier = clientcert.CertificateVerifier(ca.ca_file, ("off",))
    good = ca.issue("good", emails=("good@example.test",))
    chain = verifier.verify(_presented(good))
    assert chain[0] == good.cert and chain[-1] == ca.cert
    card = ca.issue("card", upn="card@ad.example.test", eku=(SMART_CARD_LOGON,))
    assert verifier.verify(_presented(card))[0] == card.cert
    bare = ca.issue("bare")  # no SAN at all: the webpki client profile would want one
    assert verifier.verify(_presented(bare))[0] == bare.cert


def test_each_bad_certificate_has_its_reason(ca: TestCA, other_ca: TestCA) -> None:
    verifier = clientcert.CertificateVerifier(ca.ca_file, ("off",))
    cases = {
        "expired": ca.issue("expired", days=(-10, -1)),
        "not_yet_valid": ca.issue("future", days=(2, 10)),
        "usage": ca.issue("server", eku=(ExtendedKeyUsageOID.SERVER_AUTH,)),
        "untrusted": other_ca.issue("stranger", emails=("alice@example.test",)),
    }
    assert {code: _code(verifier, issued) for code, issued in cases.items()} == {
        code: code for code in cases
    }
    assert _code(verifier, ca.issue("noeku", eku=())) == "usage"
    assert _code(verifier, ca.issue("nosig", digital_signature=False)) == "usage"
    with pytest.raises(CertificateRejected) as caught:
        verifier.verify(_presented(cases["expired"]))
    assert "expired" in caught.value.reason and "UTC" in caught.value.reason


def test_crl_file_revokes_and_is_reread_when_it_changes(ca: TestCA, tmp_path: Path) -> None:
    victim = ca.issue("victim")
    ok = ca.issue("kept")
    crl = tmp_path / "ca.crl"
    crl.write_bytes(ca.crl().public_bytes(serialization.Encoding.DER))
    verifier = clientcert.CertificateVerifier(ca.ca_file, (str(crl),))
    assert verifier.verify(_presented(victim))
    ca.revoke(victim)
    crl.write_bytes(ca.crl().public_bytes(serialization.Encoding.PEM))
    import os

    os.utime(crl, (1, 1))  # a different mtime whatever the clock's resolution
    assert _code(verifier, victim) == "revoked"
    assert verifier.verify(_presented(ok))


def test_crl_of_another_issuer_proves_nothing(ca: TestCA, other_ca: TestCA) -> None:
    verifier = clientcert.CertificateVerifier(ca.ca_file, (other_ca.write_crl(),))
    assert _code(verifier, ca.issue("unproven")) == "revocation_unknown"


class _CRLServer:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ca.crl"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def crl_server(ca: TestCA) -> Iterator[_CRLServer]:
    server = _CRLServer(ca.crl().public_bytes(serialization.Encoding.DER))
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def test_distribution_point_fetched_once_and_cached(ca: TestCA, crl_server: _CRLServer) -> None:
    revoked = ca.issue("cdp-revoked", crl_url=crl_server.url)
    ca.revoke(revoked)
    crl_server.body = ca.crl().public_bytes(serialization.Encoding.DER)
    fine = ca.issue("cdp-fine", crl_url=crl_server.url)
    verifier = clientcert.CertificateVerifier(ca.ca_file, ("cdp",))
    assert verifier.verify(_presented(fine))
    assert _code(verifier, revoked) == "revoked"
    assert verifier.verify(_presented(fine))
    assert crl_server.hits == 1


def test_unreachable_distribution_point_refuses(ca: TestCA, crl_server: _CRLServer) -> None:
    crl_server.body = b"not a CRL"
    issued = ca.issue("cdp-broken", crl_url=crl_server.url)
    verifier = clientcert.CertificateVerifier(ca.ca_file, ("cdp",))
    assert _code(verifier, issued) == "revocation_unknown"


def test_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not pem")
    with pytest.raises(ConfigError, match="CLIENT_CERT_CA_FILE"):
        clientcert.CertificateVerifier(str(tmp_path / "ca.pem"))


def test_header_forms(ca: TestCA) -> None:
    issued = ca.issue("header", emails=("h@example.test",))
    nginx = quote(issued.pem, safe="")
    assert clientcert.parse_header("X-SSL-Client-Cert", nginx).leaf == issued.cert
    import base64

    der = issued.cert.public_bytes(serialization.Encoding.DER)
    arr = base64.b64encode(der).decode()
    assert clientcert.parse_header("X-ARR-ClientCert", arr).leaf == issued.cert
    for bad in ("garbage!", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----", "MII"):
        with pytest.raises(CertificateRejected) as caught:
            clientcert.parse_header("X", bad)
        assert caught.value.code == "malformed"
    with pytest.raises(CertificateRejected) as caught:
        clientcert.parse_header("X", "A" * (clientcert.MAX_CERT_BYTES + 1))
    assert caught.value.code == "too_large"


def test_header_believed_only_from_trusted_proxies(
    ca: TestCA, caplog: pytest.LogCaptureFixture
) -> None:
    issued = ca.issue("proxied")
    headers = {"X-SSL-Client-Cert": quote(issued.pem, safe="")}
    trusted = parse_networks(["127.0.0.3"])
    names = ("X-SSL-Client-Cert",)
    got = clientcert.presented(headers, {}, parse_address("127.0.0.3"), trusted, names)
    assert got is not None and got.leaf == issued.cert and got.source == "X-SSL-Client-Cert"
    caplog.set_level("WARNING", "connector.clientcert")
    assert clientcert.presented(headers, {}, parse_address("127.0.0.1"), trusted, names) is None
    assert "ignored a client-certificate header X-SSL-Client-Cert from 127.0.0.1" in caplog.text
    assert clientcert.presented({}, {}, parse_address("127.0.0.3"), trusted, names) is None


def test_mapping_filters_in_order_and_escaped(ca: TestCA) -> None:
    issued = ca.issue("Eve (ops)*", upn="eve@ad.example.test", emails=("e*ve@example.test",))
    filters = clientcert.mapping_filters(
        issued.cert,
        ("email", "upn", "cn", "altsecid"),
        upn_filter="(userPrincipalName={0})",
        email_filter="(mail={0})",
        cn_filter="(cn={0})",
    )
    assert [m for m, _ in filters] == ["email", "upn", "cn", "altsecid"]
    assert filters[0][1] == r"(mail=e\2ave@example.test)"
    assert filters[1][1] == "(userPrincipalName=eve@ad.example.test)"
    assert filters[2][1] == r"(cn=Eve \28ops\29\2a)"
    assert "(altSecurityIdentities=X509:<SKI>" in filters[3][1]


def test_alt_security_identities_strong_and_weak(ca: TestCA) -> None:
    issued = ca.issue("alt")
    serial = issued.cert.serial_number.to_bytes(20, "big").lstrip(b"\0")
    strong = clientcert.alt_security_identities(issued.cert)
    der = issued.cert.public_bytes(serialization.Encoding.DER)
    assert strong[0] == (
        f"X509:<I>DC=test,DC=example,CN=Test Smart Card CA<SR>{serial[::-1].hex()}"
    )
    assert f"X509:<SHA1-PUKEY>{hashlib.sha1(der).hexdigest()}" in strong  # noqa: S324
    assert not any("<S>" in v or "<RFC822>" in v for v in strong)
    weak = clientcert.alt_security_identities(issued.cert, allow_weak=True)
    assert "X509:<S>CN=alt" in weak


def test_find_person_first_single_match_wins() -> None:
    table = {"(a)": [], "(b)": ["entry-b"], "(c)": ["x", "y"]}
    assert clientcert.find_person([("upn", "(a)"), ("email", "(b)")], table.__getitem__) == (
        "email",
        "entry-b",
    )
    with pytest.raises(CertificateRejected) as caught:
        clientcert.find_person([("cn", "(c)"), ("email", "(b)")], table.__getitem__)
    assert caught.value.code == "ambiguous"
    with pytest.raises(CertificateRejected) as caught:
        clientcert.find_person([("upn", "(a)")], table.__getitem__)
    assert caught.value.code == "unmapped"


def test_time_is_the_verifiers_not_the_proxys(ca: TestCA) -> None:
    verifier = clientcert.CertificateVerifier(ca.ca_file, ("off",))
    issued = ca.issue("later")
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=20)
    with pytest.raises(CertificateRejected) as caught:
        verifier.verify(_presented(issued), now=later)
    assert caught.value.code == "expired"


def test_settings_want_a_ca_file_with_client_certificates(tmp_path: Path) -> None:
    from connector.settings import load_settings

    config = tmp_path / "config.json"
    config.write_text("{}")
    with pytest.raises(ConfigError, match="CLIENT_CERT_CA_FILE: required with CLIENT_CERT_AUTH"):
        load_settings(config, {"CLIENT_CERT_AUTH": "true"}, require_directory=False)
    on = load_settings(
        config,
        {"CLIENT_CERT_AUTH": "true", "CLIENT_CERT_CA_FILE": "/ca.pem"},
        require_directory=False,
    )
    assert on.client_cert_auth and on.client_cert_crl == ("cdp",)
    assert "CLIENT_CERT_AUTH" not in on.ignored_keys
    with pytest.raises(ConfigError, match="CLIENT_CERT_MAPPING"):
        load_settings(config, {"CLIENT_CERT_MAPPING": '["subject"]'}, require_directory=False)
    off = load_settings(config, {}, require_directory=False)
    assert off.client_cert_auth is False  # off unless configured
