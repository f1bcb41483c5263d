"""The agent identity (protocol §1.2, §2): new keys are P-256 (ES256), an RSA key made by an
earlier version keeps signing RS256, and the hub's verification takes each with its own
algorithm only."""

from __future__ import annotations

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from connector.channel.identity import AgentIdentity
from connector.devhub.tokens import AgentTokenError, parse_agent_cert, verify_agent_token
from connector.secretbox import SecretBox

NOW = 1_800_000_000.0


def _token(identity: AgentIdentity) -> str:
    return identity.token(issuer="corp", audience="urn:acme", subject="h/w1", now=NOW)


def _verify(token: str, identity: AgentIdentity) -> str:
    cert = parse_agent_cert(identity.cert_b64)
    return verify_agent_token(token, [cert], issuer="corp", audience="urn:acme", now=NOW).sub


def test_a_new_identity_is_p256_and_signs_es256(tmp_path):
    made = AgentIdentity.generate("host")
    assert isinstance(made.key, ec.EllipticCurvePrivateKey) and made.alg == "ES256"
    made.save(tmp_path, SecretBox(tmp_path / "secret.key"))
    loaded = AgentIdentity.load(tmp_path, SecretBox(tmp_path / "secret.key"))
    assert loaded is not None and loaded.kid == made.kid and loaded.alg == "ES256"
    token = _token(loaded)
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "typ": "JWT", "kid": made.kid}
    assert _verify(token, made) == "h/w1"
    assert parse_agent_cert(made.cert_b64).alg == "ES256"


def test_an_existing_rsa_key_keeps_signing_rs256(tmp_path):
    legacy = AgentIdentity.generate("host", alg="RS256")
    legacy.save(tmp_path, SecretBox(tmp_path / "secret.key"))
    loaded = AgentIdentity.load(tmp_path, SecretBox(tmp_path / "secret.key"))
    assert loaded is not None and isinstance(loaded.key, rsa.RSAPrivateKey)
    assert loaded.alg == "RS256" and loaded.kid == legacy.kid
    token = _token(loaded)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert _verify(token, legacy) == "h/w1"


def test_a_token_verifies_only_with_its_certificates_algorithm():
    es, rs = AgentIdentity.generate("es"), AgentIdentity.generate("rs", alg="RS256")
    # rs's key signing ES256-labelled tokens cannot happen; a forged header must not pass
    forged = jwt.encode({"sub": "x"}, es.key, algorithm="ES256", headers={"kid": rs.kid})
    with pytest.raises(AgentTokenError, match="alg ES256 does not match the certificate kid"):
        _verify(forged, rs)
    unsigned = jwt.encode({"sub": "x"}, None, algorithm="none")
    with pytest.raises(AgentTokenError, match="alg must be RS256 or ES256"):
        _verify(unsigned, es)


def test_other_keys_are_refused(tmp_path):
    with pytest.raises(ValueError, match="alg must be ES256 or RS256"):
        AgentIdentity.generate(alg="EdDSA")
    p384 = ec.generate_private_key(ec.SECP384R1())
    cert = AgentIdentity.generate().cert
    with pytest.raises(ValueError, match="not P-256"):
        AgentIdentity(p384, cert)


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_a_token_is_what_pyjwt_would_encode(monkeypatch, alg):
    """The token is written without PyJWT's encode: the same bytes but the (random) ES256
    signature, which PyJWT verifies."""
    made = AgentIdentity.generate("host", alg=alg)
    monkeypatch.setattr("connector.channel.identity.secrets.token_urlsafe", lambda n: "j" * n)
    token = _token(made)
    claims = {"iss": "corp", "aud": "urn:acme", "sub": "h/w1", "iat": int(NOW)}
    claims |= {"exp": int(NOW) + 120, "jti": "j" * 18}
    expected = jwt.encode(claims, made.key, algorithm=alg, headers={"kid": made.kid})
    if alg == "RS256":  # deterministic signature: the very same token
        assert token == expected
    else:
        assert token.rsplit(".", 1)[0] == expected.rsplit(".", 1)[0]
    public = made.key.public_key()
    decoded = jwt.decode(token, public, algorithms=[alg], audience="urn:acme", leeway=10**10)
    assert decoded == claims
