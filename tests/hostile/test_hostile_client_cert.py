"""Client certificates (``CLIENT_CERT_AUTH``) against hostile input in the certificate header.

A connector of the hostile site with client certificates on, ``TRUSTED_PROXIES`` = 127.0.0.1
(the test plays the proxy), a test CA in ``CLIENT_CERT_CA_FILE`` and mapping by UPN, e-mail
and CN. Every case gets the sign-in form with a plain reason (never a 500, never a sign-in):

* malformed PEM, base64 that is no certificate, random DER, a private key where a certificate
  should be (and the key never reaches a log);
* a huge header (over the connector's 32 KB cap, and over gunicorn's line limit), too many
  certificates in one header;
* a chain loop: two intermediates that issue each other, sent with a leaf;
* a well-signed certificate whose UPN, e-mail and CN carry LDAP filter syntax.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests
from certkit import TestCA
from connector_proc import ConnectorProcess
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from faultkit import launch, wait_agents
from hostilekit import REALM_URL, is_form, message

HEADER = "X-SSL-Client-Cert"
PREFIX = "Certificate sign-in did not work. "
UNREADABLE = PREFIX + "The certificate your browser sent could not be read."


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA.create(tmp_path_factory.mktemp("hostile-client-ca"))


@pytest.fixture(scope="module")
def certs_on(hostile, ca: TestCA) -> Iterator[ConnectorProcess]:
    env = {
        "CLIENT_CERT_AUTH": "true",
        "CLIENT_CERT_CA_FILE": ca.ca_file,
        "CLIENT_CERT_CRL": "[]",
        "CLIENT_CERT_MAPPING": '["upn", "email", "cn"]',
        "TRUSTED_PROXIES": "127.0.0.1",
    }
    proc = launch(lambda: ConnectorProcess(hostile.inside.state_dir, workers=1, env=env))
    hostile.extra.append(proc)  # stopped with the site; its log is checked at the end
    wait_agents(hostile.hub, proc)
    yield proc


def _get(proc: ConnectorProcess, value: str) -> requests.Response:
    return requests.get(
        proc.url + "/wsfed",
        params={"wtrealm": REALM_URL, "wctx": "hostile-cert"},
        headers={HEADER: value},
        allow_redirects=False,
        timeout=30,
    )


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _refused(resp: requests.Response, reason: str) -> None:
    assert resp.status_code == 200 and "Location" not in resp.headers, resp.status_code
    assert is_form(resp), resp.text[:500]
    assert message(resp.text) == reason, message(resp.text)


KEY_PEM = (
    ec.generate_private_key(ec.SECP256R1())
    .private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    .decode()
)

MALFORMED = {
    "pem-garbage": quote(
        "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----"
    ),
    "pem-truncated": quote(
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----"
    ),
    "pem-empty": quote("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----"),
    "base64-not-der": "aGVsbG8gd29ybGQ=",
    "random-der": quote(bytes([0x30, 0x82, 0x01, 0x00]) + os.urandom(64)),
    "not-base64": "<script>alert(1)</script>",
    "nul-bytes": "%00%00%00",
    "private-key": quote(KEY_PEM, safe=""),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_certificates_get_the_form(
    hostile, certs_on: ConnectorProcess, kind: str
) -> None:
    _refused(_get(certs_on, MALFORMED[kind]), UNREADABLE)


def test_a_private_key_in_the_header_never_reaches_a_log(
    hostile, certs_on: ConnectorProcess
) -> None:
    _refused(_get(certs_on, quote(KEY_PEM, safe="")), UNREADABLE)
    body = "".join(KEY_PEM.splitlines()[1:-1])
    hostile.secrets.append(body)  # check_logs at the end looks for it (and a middle slice)
    assert body[20:52] not in certs_on.log()


def test_a_huge_header_is_refused(hostile, certs_on: ConnectorProcess, ca: TestCA) -> None:
    pem = quote(ca.issue("huge", emails=("alice@example.test",)).pem, safe="")
    _refused(
        _get(certs_on, pem + "A" * 40_000),
        PREFIX + "The certificate your browser sent is too large.",
    )
    beyond = requests.get(
        certs_on.url + "/wsfed",
        params={"wtrealm": REALM_URL},
        headers={HEADER: "A" * 200_000},
        timeout=30,
    )
    assert beyond.status_code in (400, 431), beyond.status_code  # gunicorn's line limit
    assert requests.get(certs_on.url + "/health", timeout=10).status_code == 200


def test_too_many_certificates_in_one_header(
    hostile, certs_on: ConnectorProcess, ca: TestCA
) -> None:
    one = ca.issue("many", emails=("alice@example.test",)).pem
    _refused(
        _get(certs_on, quote(one * 6, safe="")),
        PREFIX + "The certificate chain your browser sent is too long.",
    )


def _ca_cert(
    subject: str, issuer: str, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=5))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
        )
        .sign(signer, hashes.SHA256())
    )


def test_a_chain_loop_ends_as_untrusted(hostile, certs_on: ConnectorProcess) -> None:
    key_a, key_b = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    a = _ca_cert("Loop A", "Loop B", key_a, key_b)
    b = _ca_cert("Loop B", "Loop A", key_b, key_a)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alice")]))
        .issuer_name(a.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key_a.public_key()), False
        )
        .sign(key_a, hashes.SHA256())
    )
    chain = _pem(leaf) + _pem(a) + _pem(b) + _pem(a)
    _refused(
        _get(certs_on, quote(chain, safe="")),
        PREFIX + "Your certificate was not issued by an authority this sign-in trusts.",
    )


def test_filter_syntax_in_a_good_certificate_finds_nobody(
    hostile, certs_on: ConnectorProcess, ca: TestCA
) -> None:
    issued = ca.issue("*)(uid=*", upn="*)(uid=*", emails=("*)(mail=*",))
    _refused(
        _get(certs_on, quote(issued.pem, safe="")),
        PREFIX + "No account matches your certificate. Sign in with your password.",
    )
    good = ca.issue("alice-ok", emails=("alice@example.test",))
    signed_in = _get(certs_on, quote(good.pem, safe=""))
    assert signed_in.status_code == 303, message(signed_in.text)  # the same path does work
    # ... and before Negotiate: this client is offered Kerberos when it brings no certificate
    plain = requests.get(
        certs_on.url + "/wsfed", params={"wtrealm": REALM_URL}, allow_redirects=False, timeout=30
    )
    assert plain.status_code == 401 and plain.headers["WWW-Authenticate"] == "Negotiate"
