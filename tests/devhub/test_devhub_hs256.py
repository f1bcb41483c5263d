"""A tenant with an HS256 signing key: a shared secret instead of a PEM public key."""

from __future__ import annotations

import jwt
import pytest
from hub_agent import HubAgent


def test_hs256_commands_verify_with_the_shared_secret_only(hub_factory):
    hub = hub_factory(alg="HS256")
    agent = HubAgent(hub)
    secret = agent.register()
    assert not secret.startswith("-----BEGIN")
    assert len(secret.encode()) >= 32
    assert hub.state()["alg"] == "HS256"

    command_id = hub.queue("list_groups", {"pid": "p-1"})
    [command] = agent.poll()["commands"]
    assert jwt.get_unverified_header(command["jwt"])["alg"] == "HS256"
    claims = agent.verify(command)
    assert (claims["jti"], claims["cmd"], claims["payload"]) == (
        command_id,
        "list_groups",
        {"pid": "p-1"},
    )
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(command["jwt"], "x" * 64, algorithms=["HS256"], audience="corp")


def test_agents_still_authenticate_with_rs256(hub_factory):
    hub = hub_factory(alg="HS256")
    agent = HubAgent(hub)
    secret = agent.register()
    forged = jwt.encode({"iss": "corp", "aud": "urn:acme", "sub": "x"}, secret, algorithm="HS256")
    response = agent.call("poll", {"max": 1, "wait": 0}, token=forged)
    assert response.status_code == 401
    assert "alg must be RS256" in response.json()["message"]
    assert agent.call("poll", {"max": 1, "wait": 0}).status_code == 200
