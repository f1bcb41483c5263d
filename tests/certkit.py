"""A test certificate authority for client-certificate sign-in, made with ``cryptography``.

Plain Python (no pytest), like ``tests/servers.py``::

    ca = TestCA.create(tmp / "ca")
    alice = ca.issue("alice", emails=["alice@example.test"])
    alice.cert_file, alice.key_file, alice.p12_file     # PEM, PEM, PKCS#12 (password "test")
    ca.revoke(bob); ca.write_crl()                     # ca.crl_file

EC P-256 keys (fast). Every file is written under the CA's directory; keys are mode 0600.
"""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

SMART_CARD_LOGON = ObjectIdentifier("1.3.6.1.4.1.311.20.2.2")
MS_UPN = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
P12_PASSWORD = "test"


def _utf8_der(text: str) -> bytes:
    data = text.encode("utf-8")
    assert len(data) < 128
    return bytes([0x0C, len(data)]) + data


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


@dataclass
class Issued:
    """A certificate and its key, written as PEM and PKCS#12."""

    name: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_file: str
    key_file: str
    p12_file: str

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class TestCA:
    """A self-signed CA that issues client certificates and publishes a CRL."""

    dir: Path
    name: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    ca_file: str
    crl_file: str
    revoked: list[int] = field(default_factory=list)

    __test__ = False  # not a pytest class

    @classmethod
    def create(cls, directory: str | Path, name: str = "Test Smart Card CA") -> TestCA:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "test"),
                x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "example"),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        ca_file = d / "ca.crt"
        ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(d / "ca.key", key)
        ca = cls(d, name, cert, key, str(ca_file), str(d / "ca.crl"))
        ca.write_crl()
        return ca

    def issue(
        self,
        name: str,
        *,
        upn: str | None = None,
        emails: tuple[str, ...] = (),
        eku: tuple[ObjectIdentifier, ...] = (ExtendedKeyUsageOID.CLIENT_AUTH,),
        digital_signature: bool = True,
        days: tuple[int, int] = (-1, 10),
        crl_url: str | None = None,
    ) -> Issued:
        """A client certificate for ``CN=name`` (``days``: validity from/to, relative to now)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + datetime.timedelta(days=days[0]))
            .not_valid_after(now + datetime.timedelta(days=days[1]))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature,
                    False,
                    not digital_signature,
                    False,
                    False,
                    False,
                    False,
                    False,
                    False,
                ),
                critical=True,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )
        if eku:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
        sans: list[x509.GeneralName] = [x509.RFC822Name(e) for e in emails]
        if upn:
            sans.append(x509.OtherName(MS_UPN, _utf8_der(upn)))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        if crl_url:
            point = x509.DistributionPoint(
                [x509.UniformResourceIdentifier(crl_url)], None, None, None
            )
            builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        stem = self.dir / name.replace(" ", "_")
        cert_file, key_file, p12_file = (
            stem.with_suffix(".crt"),
            stem.with_suffix(".key"),
            stem.with_suffix(".p12"),
        )
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_file, key)
        p12_file.write_bytes(
            pkcs12.serialize_key_and_certificates(
                name.encode(),
                key,
                cert,
                None,
                serialization.BestAvailableEncryption(P12_PASSWORD.encode()),
            )
        )
        return Issued(name, cert, key, str(cert_file), str(key_file), str(p12_file))

    def revoke(self, issued: Issued) -> None:
        """Put ``issued`` on the CRL (call :meth:`write_crl` after)."""
        self.revoked.append(issued.cert.serial_number)

    def crl(self) -> x509.CertificateRevocationList:
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - datetime.timedelta(minutes=5))
            .next_update(now + datetime.timedelta(days=1))
        )
        for serial in self.revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(now - datetime.timedelta(minutes=1))
                .build()
            )
        return builder.sign(self.key, hashes.SHA256())

    def write_crl(self) -> str:
        """Write the CRL (PEM) to :attr:`crl_file`; its path."""
        Path(self.crl_file).write_bytes(self.crl().public_bytes(serialization.Encoding.PEM))
        return self.crl_file


def server_pfx(tls_dir: Path, password: str) -> tuple[str, str]:
    """A PKCS#12 of a server key and certificate for 127.0.0.1/localhost as base64 (the Node
    connector's ``SSL_PFX`` form), and the file of the CA that issued it."""
    from servers import make_ca

    files = make_ca(tls_dir, ["127.0.0.1"], ["localhost"], ca_cn="Connector TLS Test CA")
    key = serialization.load_pem_private_key(Path(files.key_file).read_bytes(), None)
    cert = x509.load_pem_x509_certificate(Path(files.cert_file).read_bytes())
    blob = pkcs12.serialize_key_and_certificates(
        b"signin",
        key,  # type: ignore[arg-type]
        cert,
        None,
        serialization.BestAvailableEncryption(password.encode()),
    )
    return base64.b64encode(blob).decode(), files.ca_file
