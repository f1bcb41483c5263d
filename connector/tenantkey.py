"""The tenant signing key: which one algorithm commands signed with it may use, said explicitly.

The hub hands out either an RSA public key in PEM (commands are RS256) or a shared secret of at
least 32 bytes (HS256). Guessing the kind from the text alone is dangerous: a public key in any
other encoding (bare base64 of its DER, hex, a JWK) would pass for a shared secret, and since a
public key is public, anyone could then sign commands with it. So a "secret" that parses as a
public key is refused, and the algorithm is stored beside the key at setup
(``TENANT_SIGNING_ALG``) and must match the key's kind ever after.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from connector.errors import ConnectorError

ALGORITHMS = ("RS256", "HS256")
MIN_SECRET_BYTES = 32
MIN_RSA_BITS = 2048

_SPACE = re.compile(r"\s+")


class TenantKeyError(ConnectorError):
    """The tenant signing key is unusable, or not of the kind ``TENANT_SIGNING_ALG`` says."""


def _decodings(text: str) -> list[bytes]:
    """The bytes ``text`` stands for in the encodings a key is passed around in."""
    compact = _SPACE.sub("", text)
    out = []
    for decode in (
        lambda t: base64.b64decode(t + "=" * (-len(t) % 4), validate=True),
        lambda t: base64.urlsafe_b64decode(t + "=" * (-len(t) % 4)),
        bytes.fromhex,
    ):
        try:
            out.append(decode(compact))
        except (ValueError, binascii.Error):
            continue
    return out


def _looks_like_a_key(text: str) -> str | None:
    """What public key (or certificate) ``text`` is, in an encoding other than PEM; or None."""
    if "-----BEGIN" in text:
        return "PEM text not at the start"
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and ("kty" in data or "keys" in data):
        return "a JWK"
    for der in _decodings(text):
        try:
            load_der_public_key(der)
            return "a public key in DER (SPKI or PKCS#1), encoded as text"
        except (ValueError, TypeError):
            pass
        try:
            x509.load_der_x509_certificate(der)
            return "a certificate in DER, encoded as text"
        except ValueError:
            pass
    return None


def _rsa_public(text: str) -> rsa.RSAPublicKey:
    if "PUBLIC KEY" not in text.split("\n", 1)[0]:
        raise TenantKeyError("the tenant signing key must be a public key or a shared secret")
    try:
        public = load_pem_public_key(text.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError):
        raise TenantKeyError("the tenant signing key is not a valid PEM public key") from None
    if not isinstance(public, rsa.RSAPublicKey):
        raise TenantKeyError("the tenant signing key must be an RSA public key")
    if public.key_size < MIN_RSA_BITS:
        raise TenantKeyError(
            f"the tenant signing key is RSA-{public.key_size}: at least {MIN_RSA_BITS} bits"
        )
    return public


def verifying_key(key: str, algorithm: str | None = None) -> tuple[str, Any]:
    """The one algorithm ``key`` allows, and the key as PyJWT wants it.

    Args:
        key: a PEM RSA public key, or a shared secret (its UTF-8 bytes are the HMAC key).
        algorithm: ``TENANT_SIGNING_ALG`` as stored at setup; None derives it from the key.

    Raises:
        TenantKeyError: the key is unusable, a "secret" that is really a public key, or not of
            the kind ``algorithm`` says.
    """
    if algorithm is not None and algorithm not in ALGORITHMS:
        raise TenantKeyError(f"TENANT_SIGNING_ALG must be one of {', '.join(ALGORITHMS)}")
    text = key.strip()
    verifier: Any
    if text.startswith("-----BEGIN"):
        found, verifier = "RS256", _rsa_public(text)
    else:
        disguised = _looks_like_a_key(text)
        if disguised:
            raise TenantKeyError(
                f"the tenant signing key is not PEM but parses as {disguised}: refused as a "
                "shared secret (anyone holding the public key could sign commands with it); "
                "run setup again, or give the public key in PEM"
            )
        if len(text.encode("utf-8")) < MIN_SECRET_BYTES:
            raise TenantKeyError(
                f"a shared-secret tenant signing key must be at least {MIN_SECRET_BYTES} bytes"
            )
        found, verifier = "HS256", text.encode("utf-8")
    if algorithm is not None and algorithm != found:
        raise TenantKeyError(
            f"TENANT_SIGNING_ALG is {algorithm} but the tenant signing key is "
            f"{'an RSA public key (RS256)' if found == 'RS256' else 'a shared secret (HS256)'}"
        )
    return found, verifier
