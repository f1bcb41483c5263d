"""Agent authentication (protocol §2): every refusal says which check failed."""

from __future__ import annotations

import base64
import time

import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hub_agent import HubAgent, ec_key, rsa_key


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_valid_token_is_accepted(agent):
    assert agent.call("poll", {"max": 1, "wait": 0}).status_code == 200


def test_a_token_without_kid_is_checked_against_every_certificate(hub, agent):
    other = HubAgent(hub, "other/w1")
    other.register()
    assert agent.call("poll", {"max": 1, "wait": 0}, agent.token(headers={"kid": None})).ok


def test_an_es256_agent_and_an_rs256_agent_both_authenticate(hub, agent):
    """Protocol §2: a P-256 certificate takes ES256 tokens; an RSA one (registered before)
    keeps taking RS256, also when the token names no kid."""
    es = HubAgent(hub, "es/w1", key=ec_key())
    es.register()
    assert jwt.get_unverified_header(es.token())["alg"] == "ES256"
    assert es.call("poll", {"max": 1, "wait": 0}).status_code == 200
    assert es.call("poll", {"max": 1, "wait": 0}, es.token(headers={"kid": None})).ok
    assert agent.call("poll", {"max": 1, "wait": 0}).status_code == 200
    assert agent.call("poll", {"max": 1, "wait": 0}, agent.token(headers={"kid": None})).ok


def test_alg_must_be_the_registered_certificates(hub, agent):
    """A token whose alg is not its certificate's is refused before any signature check,
    whatever key signed it (here: ES256 under the RSA certificate's kid, and the reverse)."""
    es = HubAgent(hub, "es/w1", key=ec_key())
    es.register()
    cases = [
        (agent.token(key=ec_key()), f"alg ES256 does not match the certificate kid {agent.kid!r}"),
        (es.token(key=rsa_key()), f"alg RS256 does not match the certificate kid {es.kid!r}"),
        (es.token(alg="HS256", key="k" * 32), "alg must be RS256 or ES256, not 'HS256'"),
    ]
    for token, fragment in cases:
        response = es.call("poll", {"max": 1, "wait": 0}, token=token)
        assert response.status_code == 401, response.text
        assert fragment in response.json()["message"]


def test_malformed_es256_tokens_are_refused(hub):
    """The hub verifies tokens itself (no PyJWT on the hot path): a DER signature where JWS
    wants R || S, a crit header, padding junk and non-JSON parts are each refused."""
    es = HubAgent(hub, "es/w1", key=ec_key())
    es.register()
    good = es.token()
    head, body, sig = good.split(".")
    der = es.key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    cases = {
        "DER signature": (f"{head}.{body}.{b64url(der)}", "signature does not verify"),
        "crit": (es.token(headers={"crit": ["exp"]}), "no crit header extension"),
        "junk": (f"{head}.{body}!.{sig}", "payload is not base64url"),
        "not JSON": (f"{head}.{b64url(b'[1')}.{sig}", "signature does not verify"),
        "four parts": (good + ".x", "not three dot-separated segments"),
    }
    for name, (token, fragment) in cases.items():
        response = es.call("poll", {"max": 1, "wait": 0}, token=token)
        assert response.status_code == 401, name
        assert fragment in response.json()["message"], (name, response.json())
    assert es.call("poll", {"max": 1, "wait": 0}, token=good).status_code == 200


@pytest.mark.parametrize("version", [None, "1", "3", "2.0"])
def test_the_protocol_header_is_required(agent, version):
    response = agent.call(
        "poll", {"max": 1, "wait": 0}, headers={"X-Connector-Protocol": version or ""}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_protocol"


def test_a_missing_token_is_401(agent):
    response = agent.call("poll", {"max": 1, "wait": 0}, headers={"Authorization": ""})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert "missing" in response.json()["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def _failures(agent: HubAgent) -> dict[str, tuple[str, str]]:
    now = int(time.time())
    stranger = rsa_key()
    return {
        "wrong key, registered kid": (agent.token(key=stranger), "signature does not verify"),
        "wrong key, no kid": (agent.token(key=stranger, headers={"kid": None}), "any of the 1"),
        "unknown kid": (agent.token(headers={"kid": "nope"}), "kid 'nope' names no"),
        "wrong aud": (agent.token(aud="urn:other"), "aud must be the realm"),
        "wrong iss": (agent.token(iss="other"), "iss must be the connection"),
        "expired": (agent.token(iat=now - 400, exp=now - 100), "expired"),
        "too long": (agent.token(iat=now, exp=now + 301), "at most 300 s"),
        "iat in future": (agent.token(iat=now + 120, exp=now + 200), "in the future"),
        "no jti": (agent.token(jti=None), "claim jti is missing"),
        "no sub": (agent.token(sub=None), "claim sub is missing"),
        "number jti": (agent.token(jti=5), "jti must be a non-empty string"),
        "text exp": (agent.token(exp="soon"), "NumericDate"),
        "HS256": (
            jwt.encode({"iss": "corp", "aud": "urn:acme"}, "k" * 32, algorithm="HS256"),
            "alg must be RS256",
        ),
        "alg none": (jwt.encode({"iss": "corp"}, None, algorithm="none"), "alg must be RS256"),
        "garbage": ("not-a-jwt", "malformed token"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "wrong key, registered kid",
        "wrong key, no kid",
        "unknown kid",
        "wrong aud",
        "wrong iss",
        "expired",
        "too long",
        "iat in future",
        "no jti",
        "no sub",
        "number jti",
        "text exp",
        "HS256",
        "alg none",
        "garbage",
    ],
)
def test_bad_tokens_are_refused_with_the_failed_check(hub, agent, case):
    token, fragment = _failures(agent)[case]
    response = agent.call("poll", {"max": 1, "wait": 0}, token=token)
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"] == "invalid_token"
    assert fragment in body["message"]
    assert abs(body["serverTime"] / 1000 - time.time()) < 5
    assert hub.state()["events"]["authFailures"] == 1


def test_a_replayed_jti_is_refused(agent):
    token = agent.token()
    assert agent.call("poll", {"max": 1, "wait": 0}, token=token).status_code == 200
    again = agent.call("results", {"results": [{"id": "x", "result": {}}]}, token=token)
    assert again.status_code == 401
    assert "replayed" in again.json()["message"]


def test_without_registered_certificates_every_token_is_refused(hub):
    agent = HubAgent(hub)  # not registered
    response = agent.call("poll", {"max": 1, "wait": 0})
    assert response.status_code == 401
    assert "no agent certificate is registered" in response.json()["message"]


def test_results_and_signins_need_the_token_too(agent):
    for endpoint in ("results", "signins"):
        response = agent.call(endpoint, {}, headers={"Authorization": "Basic dXNlcjpwdw=="})
        assert response.status_code == 401
