"""Agent-token checks in-process (``connector/devhub/tokens.py``): a header is decoded once and
reused for the next tokens of the same agent, never a refused one, never the signature."""

from __future__ import annotations

import base64
import json
import secrets
import time

import jwt
import pytest
from hub_agent import b64, ec_key, kid_of, self_signed

from connector.devhub.tokens import AgentTokenError, parse_agent_cert, verify_agent_token

KEY = ec_key()
DER = self_signed(KEY, "tok-agent")
CERT = parse_agent_cert(b64(DER))


def token(key=KEY, headers: dict | None = None) -> str:
    now = int(time.time())
    claims = {"iss": "corp", "aud": "urn:acme", "sub": "h/w1", "iat": now, "exp": now + 60}
    claims["jti"] = secrets.token_urlsafe(16)
    return jwt.encode(claims, key, algorithm="ES256", headers=headers or {"kid": kid_of(DER)})


def verify(text: str):
    return verify_agent_token(text, [CERT], issuer="corp", audience="urn:acme", now=time.time())


def test_tokens_with_one_header_each_verify_their_own_signature():
    first, second = token(), token()
    assert first.split(".")[0] == second.split(".")[0]  # the header decoded once
    assert verify(first).sub == verify(second).sub == "h/w1"
    forged = token(key=ec_key())  # same header, another key
    assert forged.split(".")[0] == first.split(".")[0]
    with pytest.raises(AgentTokenError, match="signature does not verify"):
        verify(forged)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ({"alg": "none", "typ": "JWT"}, "alg must be RS256 or ES256"),
        ({"alg": "ES256", "crit": ["x"]}, "no crit header extension"),
    ],
)
def test_a_refused_header_is_refused_every_time(header, message):
    segment = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    _, payload, signature = token().split(".")
    for _ in range(2):
        with pytest.raises(AgentTokenError, match=message):
            verify(f"{segment}.{payload}.{signature}")


def test_a_payload_that_is_not_base64url_is_refused_as_malformed():
    header, _, signature = token().split(".")
    with pytest.raises(AgentTokenError, match="the payload is not base64url"):
        verify(f"{header}.é.{signature}")
