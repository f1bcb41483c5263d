"""The connector's own identity at the hub: an RSA key pair and a self-signed certificate.

The private key is stored encrypted (PKCS#8 with the secret box's key as passphrase) in
``agent.key`` (mode 0600); the certificate in ``agent.crt``. Agent tokens are RS256 JWTs
signed with that key, named by the certificate's SHA-256 thumbprint (``kid``).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import secrets
import socket
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from connector.secretbox import SecretBox
from connector.settings import write_file_atomic

KEY_FILE = "agent.key"
CERT_FILE = "agent.crt"
TOKEN_LIFETIME = 120  # seconds; the protocol allows at most 300


def b64url(data: bytes) -> str:
    """Base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def thumbprint(cert_der: bytes) -> str:
    """The ``kid`` of a certificate: base64url SHA-256 of its DER."""
    return b64url(hashlib.sha256(cert_der).digest())


class AgentIdentity:
    """The key pair and certificate the connector authenticates to the hub with."""

    def __init__(self, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.kid = thumbprint(self.cert_der)

    def __repr__(self) -> str:
        return f"<AgentIdentity kid={self.kid}>"

    @property
    def cert_b64(self) -> str:
        """The certificate as the provisioning request carries it (base64 of DER)."""
        return base64.b64encode(self.cert_der).decode("ascii")

    @classmethod
    def generate(cls, common_name: str | None = None) -> AgentIdentity:
        """A fresh RSA-2048 key and a self-signed certificate valid for ten years."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, common_name or socket.gethostname())]
        )
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def load(cls, directory: Path, box: SecretBox) -> AgentIdentity | None:
        """The identity stored in ``directory``, or None if there is none yet.

        Raises:
            ValueError: the files exist but cannot be read with this box's key.
        """
        key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
        if not key_path.exists() or not cert_path.exists():
            return None
        try:
            key = serialization.load_pem_private_key(
                key_path.read_bytes(), password=box.passphrase()
            )
        except (ValueError, TypeError) as exc:
            raise ValueError(f"cannot open {key_path} with the key in {box.key_file}") from exc
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{key_path} does not hold an RSA key")
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        return cls(key, cert)

    def save(self, directory: Path, box: SecretBox) -> None:
        """Write ``agent.key`` (encrypted, 0600) and ``agent.crt``, each atomically."""
        key_pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(box.passphrase(create=True)),
        )
        write_file_atomic(directory / KEY_FILE, key_pem, 0o600)
        write_file_atomic(
            directory / CERT_FILE, self.cert.public_bytes(serialization.Encoding.PEM), 0o644
        )

    @classmethod
    def load_or_create(cls, directory: Path, box: SecretBox) -> tuple[AgentIdentity, bool]:
        """The stored identity, or a new one saved in ``directory`` (second item: created)."""
        found = cls.load(directory, box)
        if found is not None:
            return found, False
        made = cls.generate()
        made.save(directory, box)
        return made, True

    def token(self, *, issuer: str, audience: str, subject: str, now: float) -> str:
        """An agent token (RS256) for one request, timed on the hub's clock ``now``."""
        claims: dict[str, Any] = {
            "iss": issuer,
            "aud": audience,
            "sub": subject,
            "iat": int(now),
            "exp": int(now) + TOKEN_LIFETIME,
            "jti": secrets.token_urlsafe(18),
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})
