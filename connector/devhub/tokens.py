"""Keys and JWTs of the hub side: the tenant signing key, agent certificates, agent tokens.

Pure functions and small immutable objects; no HTTP and no shared state (the ``jti`` replay
store lives in :mod:`connector.devhub.state`).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import hashlib
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from connector.devhub.config import Alg

#: ``exp`` of an agent token is at most this many seconds after its ``iat``.
AGENT_TOKEN_MAX_LIFETIME = 300
#: ``iat`` of an agent token may be at most this many seconds ahead of the hub's clock.
AGENT_TOKEN_FUTURE_LEEWAY = 60
#: Smallest RSA modulus accepted in an agent certificate.
MIN_RSA_BITS = 2048
#: The algorithms of agent tokens; each certificate's key admits exactly one of them.
AGENT_ALGORITHMS = ("ES256", "RS256")


class CertificateError(ValueError):
    """A certificate offered at registration does not parse, or its key is neither RSA >= 2048
    nor ECDSA P-256."""


class AgentTokenError(ValueError):
    """An agent token failed a check; the message says which (it goes back in the 401)."""


def thumbprint(der: bytes) -> str:
    """The ``kid`` of a certificate: base64url (no padding) of the SHA-256 of its DER."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


@dataclasses.dataclass(frozen=True)
class AgentCert:
    """A registered agent certificate."""

    kid: str
    subject: str
    not_after: datetime.datetime
    alg: str  # the one algorithm of its tokens: "RS256" (RSA) or "ES256" (P-256)
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey = dataclasses.field(repr=False)
    der: bytes = dataclasses.field(repr=False)


def parse_agent_cert(text: str) -> AgentCert:
    """Parse one ``certs`` entry of a registration: base64 of an X.509 DER whose key is
    ECDSA P-256 (tokens ES256) or RSA >= 2048 (tokens RS256).

    Raises:
        CertificateError: with the reason, when it is not such a certificate.
    """
    try:
        der = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise CertificateError(f"not base64: {e}") from e
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as e:
        raise CertificateError(f"not an X.509 DER certificate: {e}") from e
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise CertificateError(f"the EC key is on {key.curve.name}, not P-256 (secp256r1)")
        alg = "ES256"
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CertificateError(
                f"the RSA key has {key.key_size} bits, fewer than {MIN_RSA_BITS}"
            )
        alg = "RS256"
    else:
        raise CertificateError(f"the key is {type(key).__name__}, not RSA or EC P-256")
    return AgentCert(
        kid=thumbprint(der),
        subject=cert.subject.rfc4514_string(),
        not_after=cert.not_valid_after_utc,
        alg=alg,
        public_key=key,
        der=der,
    )


@dataclasses.dataclass(frozen=True)
class TenantKey:
    """The tenant signing key: signs commands; ``published`` is the ``signingKey`` handed out.

    For RS256 ``published`` is the PEM public key; for HS256 it is the shared secret itself,
    used as an HMAC key in its UTF-8 encoding.
    """

    alg: Alg
    published: str = dataclasses.field(repr=False)
    signer: Any = dataclasses.field(repr=False)

    @classmethod
    def generate(cls, alg: Alg) -> TenantKey:
        """A fresh key of the given kind (an RSA-2048 key pair, or a 64-character secret)."""
        if alg == "HS256":
            secret = secrets.token_urlsafe(48)
            return cls(alg=alg, published=secret, signer=secret)
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(alg=alg, published=pem.decode("ascii"), signer=private)

    def sign(self, claims: Mapping[str, Any]) -> str:
        """A compact JWS of ``claims`` with this key."""
        return jwt.encode(dict(claims), self.signer, algorithm=self.alg)


@dataclasses.dataclass(frozen=True)
class AgentClaims:
    """What the hub keeps of a verified agent token."""

    sub: str
    jti: str
    exp: float


def _hub_time(now: float) -> str:
    return datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _number(claims: Mapping[str, Any], name: str) -> float:
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AgentTokenError(f"claim {name} must be a NumericDate (a number)")
    return float(value)


_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_PKCS1_V15 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")


def _segment(text: str, name: str) -> bytes:
    """A base64url segment of a compact JWS (no padding, RFC 7515 §2)."""
    if len(text) % 4 == 1 or not _SEGMENT.fullmatch(text):
        raise AgentTokenError(f"malformed token: the {name} is not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json_object(data: bytes, name: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise AgentTokenError(f"malformed token: the {name} is not JSON ({e})") from e
    if not isinstance(value, dict):
        raise AgentTokenError(f"malformed token: the {name} is not a JSON object")
    return value


def _signature_ok(cert: AgentCert, signing_input: bytes, signature: bytes) -> bool:
    """Whether ``signature`` (JWS form: ES256 is ``R || S``, 64 bytes) verifies."""
    try:
        if isinstance(cert.public_key, ec.EllipticCurvePublicKey):
            if len(signature) != 64:
                return False
            der = encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            )
            cert.public_key.verify(der, signing_input, _ECDSA_SHA256)
        else:
            cert.public_key.verify(signature, signing_input, _PKCS1_V15, _SHA256)
    except InvalidSignature:
        return False
    return True


#: Checked headers by their encoded segment: an agent's tokens all have the same header
#: (``alg``, ``typ``, ``kid``), so it is decoded once, not once per request.
_HEADERS: dict[str, tuple[str, Any]] = {}
_MAX_HEADERS = 256


def _header(segment: str) -> tuple[str, Any]:
    """``(alg, kid)`` of a token's header segment (``kid`` None when absent), once checked.

    Raises:
        AgentTokenError: not base64url JSON, an ``alg`` other than ES256 or RS256, or ``crit``.
    """
    checked = _HEADERS.get(segment)
    if checked is not None:
        return checked
    header = _json_object(_segment(segment, "header"), "header")
    alg = header.get("alg")
    if alg not in AGENT_ALGORITHMS:
        raise AgentTokenError(f"alg must be RS256 or ES256, not {alg!r}")
    if "crit" in header:
        raise AgentTokenError("malformed token: no crit header extension is supported")
    if len(_HEADERS) >= _MAX_HEADERS:  # many distinct headers: somebody tries; start again
        _HEADERS.clear()
    checked = _HEADERS[segment] = (alg, header.get("kid"))
    return checked


def _signed_claims(token: str, certs: Sequence[AgentCert]) -> dict[str, Any]:
    """The claims of ``token`` once its ``alg`` and signature are checked (RFC 7515 compact
    form, verified directly with ``cryptography``: this runs on every agent request)."""
    pieces = token.split(".")
    if len(pieces) != 3:
        raise AgentTokenError("malformed token: not three dot-separated segments")
    alg, kid = _header(pieces[0])
    if not certs:
        raise AgentTokenError(
            "no agent certificate is registered for this connection (register through the ticket)"
        )
    if kid is None:
        candidates = [c for c in certs if c.alg == alg]
        if not candidates:
            raise AgentTokenError(f"no registered certificate takes {alg} tokens")
    else:
        candidates = [c for c in certs if c.kid == kid]
        if not candidates:
            raise AgentTokenError(
                f"kid {kid!r} names no registered certificate (register this connector's "
                "certificate through the ticket)"
            )
        if candidates[0].alg != alg:
            raise AgentTokenError(
                f"alg {alg} does not match the certificate kid {kid!r}, whose key takes "
                f"{candidates[0].alg}"
            )
    payload = _segment(pieces[1], "payload")  # first: then the signing input is ASCII
    signature = _segment(pieces[2], "signature")
    signing_input = f"{pieces[0]}.{pieces[1]}".encode("ascii")
    for cert in candidates:
        if _signature_ok(cert, signing_input, signature):
            return _json_object(payload, "payload")
    if kid is None:
        raise AgentTokenError(
            f"signature does not verify against any of the {len(candidates)} registered "
            "certificate(s)"
        )
    raise AgentTokenError(f"signature does not verify against the certificate kid {kid!r}")


def verify_agent_token(
    token: str, certs: Sequence[AgentCert], *, issuer: str, audience: str, now: float
) -> AgentClaims:
    """Check an agent's bearer token (protocol §2), all but ``jti`` freshness.

    Args:
        token: the compact JWT from ``Authorization: Bearer``.
        certs: the registered agent certificates.
        issuer: the connection name (``iss``).
        audience: the realm name (``aud``).
        now: the hub's clock, in seconds.

    Raises:
        AgentTokenError: the first check that failed, named in the message.
    """
    claims = _signed_claims(token, certs)
    for name in ("iss", "aud", "sub", "iat", "exp", "jti"):
        if claims.get(name) is None:
            raise AgentTokenError(f"claim {name} is missing")
    if claims["iss"] != issuer:
        raise AgentTokenError(f"iss must be the connection name {issuer!r}, not {claims['iss']!r}")
    aud = claims["aud"]
    if not (aud == audience or (isinstance(aud, list) and audience in aud)):
        raise AgentTokenError(f"aud must be the realm {audience!r}, not {aud!r}")
    iat, exp = _number(claims, "iat"), _number(claims, "exp")
    if exp - iat > AGENT_TOKEN_MAX_LIFETIME:
        raise AgentTokenError(
            f"exp is {exp - iat:.0f} s after iat; at most {AGENT_TOKEN_MAX_LIFETIME} s allowed"
        )
    if exp <= now:
        raise AgentTokenError(
            f"token expired {now - exp:.0f} s ago (hub time {_hub_time(now)}; check the clock)"
        )
    if iat > now + AGENT_TOKEN_FUTURE_LEEWAY:
        raise AgentTokenError(
            f"iat is {iat - now:.0f} s in the future (hub time {_hub_time(now)}; more than "
            f"{AGENT_TOKEN_FUTURE_LEEWAY} s: check the clock)"
        )
    sub, jti = claims["sub"], claims["jti"]
    if not isinstance(sub, str) or not sub:
        raise AgentTokenError("claim sub must be a non-empty string (the agent id)")
    if not isinstance(jti, str) or not jti:
        raise AgentTokenError("claim jti must be a non-empty string")
    return AgentClaims(sub=sub, jti=jti, exp=exp)
