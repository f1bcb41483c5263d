"""A minimal agent side of the channel protocol, to test the devhub with (not the connector).

It makes its own key (RSA by default, ECDSA P-256 on request) and self-signed certificate with
``cryptography``, registers through the ticket, signs agent tokens with PyJWT, and talks to the
hub with ``requests``.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import jwt
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hubs import DevHubProcess


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@functools.cache
def key_for(sub: str) -> rsa.RSAPrivateKey:
    """One key per agent id for the whole run (RSA key generation is slow)."""
    return rsa_key()


def self_signed(key: Any, cn: str = "test-agent", serial: int | None = None) -> bytes:
    """DER of a self-signed certificate for ``key`` (RSA, EC or Ed25519)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def ec_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP256R1())


def ec_cert(curve: ec.EllipticCurve | None = None) -> bytes:
    return self_signed(ec_key(curve), "ec-agent")


def ed25519_cert() -> bytes:
    return self_signed(ed25519.Ed25519PrivateKey.generate(), "ed25519-agent")


def alg_of(key: Any) -> str:
    """The agent-token algorithm of a key: ES256 for EC, RS256 for RSA."""
    return "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"


def b64(der: bytes) -> str:
    return base64.b64encode(der).decode()


def kid_of(der: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


class HubAgent:
    """One agent (one ``sub``) with its key pair; ``clock_offset`` shifts its token times."""

    def __init__(
        self,
        hub: DevHubProcess,
        sub: str = "test-host/w1",
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None = None,
    ) -> None:
        self.hub = hub
        self.sub = sub
        self.key = key or key_for(sub)
        self.der = self_signed(self.key, sub.replace("/", "-"))
        self.kid = kid_of(self.der)
        self.signing_key: str | None = None
        self.clock_offset = 0.0

    # ---- provisioning ----------------------------------------------------------------------

    def register(self, sign_in_endpoint: str = "https://connector.test/signin") -> str:
        response = requests.post(
            self.hub.ticket_url,
            json={
                "certs": [b64(self.der)],
                "signInEndpoint": sign_in_endpoint,
                "agentVersion": "test/1",
            },
            timeout=10,
            verify=self.hub.verify,
        )
        assert response.status_code == 200, response.text
        self.signing_key = response.json()["signingKey"]
        return self.signing_key

    # ---- tokens and requests ---------------------------------------------------------------

    def token(
        self,
        headers: dict[str, Any] | None = None,
        key: Any = None,
        alg: str | None = None,
        **claims: Any,
    ) -> str:
        """An agent token; ``claims`` override the defaults (None removes one); ``alg`` is
        the key's unless given."""
        now = int(time.time() + self.clock_offset)
        body: dict[str, Any] = {
            "iss": self.hub.connection,
            "aud": self.hub.realm,
            "sub": self.sub,
            "iat": now,
            "exp": now + 120,
            "jti": secrets.token_urlsafe(16),
        }
        for name, value in claims.items():
            if value is None:
                body.pop(name, None)
            else:
                body[name] = value
        header = {"kid": self.kid, **(headers or {})}
        header = {k: v for k, v in header.items() if v is not None}
        key = key or self.key
        return jwt.encode(body, key, algorithm=alg or alg_of(key), headers=header)

    def call(
        self,
        endpoint: str,
        body: Any,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 75.0,
    ) -> requests.Response:
        """``POST {adHub}/agent/{endpoint}`` with a fresh token (or ``token``)."""
        sent = {
            "Authorization": f"Bearer {token or self.token()}",
            "X-Connector-Protocol": "2",
            **(headers or {}),
        }
        return requests.post(
            self.hub.url(f"agent/{endpoint}"),
            json=body,
            headers={k: v for k, v in sent.items() if v},
            timeout=timeout,
            verify=self.hub.verify,
        )

    def poll(self, max: int = 10, wait: float = 0) -> dict[str, Any]:
        response = self.call("poll", {"max": max, "wait": wait})
        assert response.status_code == 200, response.text
        return dict(response.json())

    def post_results(self, results: list[dict[str, Any]]) -> list[str]:
        response = self.call("results", {"results": results})
        assert response.status_code == 200, response.text
        return list(response.json()["acked"])

    def answer(self, command_id: str, result: dict[str, Any]) -> list[str]:
        return self.post_results([{"id": command_id, "result": result}])

    def verify(self, command: dict[str, Any]) -> dict[str, Any]:
        """The command's claims, verified as an agent must (key kind decides the algorithm).

        Times are checked on the hub's clock (``clock_offset``): PyJWT's own checks use the
        local clock, and refuse an ``iat`` ahead of it.
        """
        assert self.signing_key is not None, "register first"
        alg = "RS256" if self.signing_key.startswith("-----BEGIN PUBLIC KEY-----") else "HS256"
        claims = jwt.decode(
            command["jwt"],
            self.signing_key,
            algorithms=[alg],
            audience=self.hub.connection,
            issuer=self.hub.ad_hub,
            options={"verify_exp": False, "verify_iat": False, "require": ["iat", "exp", "jti"]},
        )
        if claims["exp"] < time.time() + self.clock_offset - 60:
            raise jwt.ExpiredSignatureError("command expired (hub time)")
        return dict(claims)


class AnsweringAgent(threading.Thread):
    """A background agent: long-polls and answers each command with ``respond(name, payload)``."""

    def __init__(
        self,
        agent: HubAgent,
        respond: Callable[[str, dict[str, Any]], dict[str, Any]],
        wait: float = 2.0,
    ) -> None:
        super().__init__(daemon=True)
        self.agent = agent
        self.respond = respond
        self.wait = wait
        self.stopping = threading.Event()
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                for command in self.agent.poll(max=10, wait=self.wait)["commands"]:
                    claims = self.agent.verify(command)
                    result = self.respond(command["name"], claims["payload"])
                    self.agent.answer(command["id"], result)
        except BaseException as e:  # reported by stop()
            self.errors.append(e)

    def stop(self) -> None:
        self.stopping.set()
        self.join(self.wait + 10)
        assert not self.errors, self.errors
