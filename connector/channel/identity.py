"""The connector's own identity at the hub: a key pair and a self-signed certificate.

New setups make an ECDSA P-256 key (agent tokens are ES256, protocol §2); an RSA key (≥ 2048
bits, tokens RS256) made by an earlier version keeps working as it is, with no new
registration. The algorithm follows from the key, never from configuration. The private key
is stored encrypted (PKCS#8 with the secret box's key as passphrase) in ``agent.key`` (mode
0600); the certificate in ``agent.crt``. Tokens are named by the certificate's SHA-256
thumbprint (``kid``).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
import socket
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from connector.secretbox import SecretBox
from connector.settings.files import write_file_atomic

KEY_FILE = "agent.key"
CERT_FILE = "agent.crt"
TOKEN_LIFETIME = 120  # seconds; the protocol allows at most 300

#: The private keys an agent identity can hold.
AgentKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def key_algorithm(key: AgentKey) -> str:
    """The JWS algorithm of an agent key: ``ES256`` (P-256) or ``RS256`` (RSA ≥ 2048).

    Raises:
        ValueError: any other key (another curve, a short RSA modulus).
    """
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, ec.SECP256R1):
            return "ES256"
        raise ValueError(f"the EC key is on {key.curve.name}, not P-256")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
        return "RS256"
    raise ValueError("the key is neither ECDSA P-256 nor RSA of at least 2048 bits")


def b64url(data: bytes) -> str:
    """Base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def thumbprint(cert_der: bytes) -> str:
    """The ``kid`` of a certificate: base64url SHA-256 of its DER."""
    return b64url(hashlib.sha256(cert_der).digest())


class AgentIdentity:
    """The key pair and certificate the connector authenticates to the hub with."""

    def __init__(self, key: AgentKey, cert: x509.Certificate) -> None:
        self.key = key
        self.alg = key_algorithm(key)
        self.cert = cert
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.kid = thumbprint(self.cert_der)
        # a token's header never changes: encoded once, as PyJWT's encode writes it
        header = {"alg": self.alg, "kid": self.kid, "typ": "JWT"}
        self._header = b64url(json.dumps(header, separators=(",", ":"), sort_keys=True).encode())
        self._signer = jwt.get_algorithm_by_name(self.alg)

    def __repr__(self) -> str:
        return f"<AgentIdentity {self.alg} kid={self.kid}>"

    @property
    def cert_b64(self) -> str:
        """The certificate as the provisioning request carries it (base64 of DER)."""
        return base64.b64encode(self.cert_der).decode("ascii")

    @classmethod
    def generate(cls, common_name: str | None = None, alg: str = "ES256") -> AgentIdentity:
        """A fresh key and a self-signed certificate valid for ten years: ECDSA P-256
        (``ES256``, the default) or RSA-2048 (``RS256``, as earlier versions made)."""
        key: AgentKey
        if alg == "ES256":
            key = ec.generate_private_key(ec.SECP256R1())
        elif alg == "RS256":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            raise ValueError(f"alg must be ES256 or RS256, not {alg!r}")
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
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} does not hold an RSA or EC key")
        try:
            key_algorithm(key)
        except ValueError as exc:
            raise ValueError(f"{key_path}: {exc}") from None
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
        """An agent token (ES256 or RS256, by the key) for one request, on the hub's clock.

        The same compact JWS as ``jwt.encode(claims, key, alg, headers={"kid": kid})`` (the
        tests compare them), signed by PyJWT's algorithm object; the header is encoded once
        and the claims by json's C encoder (one is made for every hub request).
        """
        claims: dict[str, Any] = {
            "iss": issuer,
            "aud": audience,
            "sub": subject,
            "iat": int(now),
            "exp": int(now) + TOKEN_LIFETIME,
            "jti": secrets.token_urlsafe(18),
        }
        payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{self._header}.{payload}"
        signature = self._signer.sign(signing_input.encode("ascii"), self.key)
        return f"{signing_input}.{b64url(signature)}"
