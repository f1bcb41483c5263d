"""A tenant signing key passed off as a shared secret (issue 13 #3): the hub's RSA public key in
any text form but PEM (bare base64 of its DER, PKCS#1, hex, a JWK) once became an HS256 secret,
so anyone could sign commands with it. Setup refuses such a key from the hub, a config.json that
holds one does not start (the forged ``search_users`` signed with it is never run), and the
algorithm is stored explicitly (``TENANT_SIGNING_ALG``), derived once for an older config.json.

Against a devhub of its own (its ``registration`` answer tampered with) and OpenLDAP; the
hostile site's connectors are not involved.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
from configs import openldap_config
from connector_proc import ConnectorProcess, setup_config
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from hostilekit import raw_jwt
from hubs import start_devhub
from jwt.algorithms import RSAAlgorithm

from connector.channel.provision import SetupError, setup_from_ticket
from connector.errors import ConfigError
from connector.settings import load_settings


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    h = start_devhub(tmp_path_factory.mktemp("tenant-key"), lease_seconds=30)
    yield h
    h.stop()


@pytest.fixture(scope="module")
def hub_pem(hub, tmp_path_factory):
    """The hub's real public key (PEM), as a normal setup stores it."""
    cfg = tmp_path_factory.mktemp("pem") / "config.json"
    setup_from_ticket(cfg, hub.ticket_url, environ={})
    stored = json.loads(cfg.read_text())
    assert stored["TENANT_SIGNING_ALG"] == "RS256"
    return stored["TENANT_SIGNING_KEY"]


def _disguises(pem: str) -> dict[str, str]:
    public = load_pem_public_key(pem.encode())
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pkcs1 = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    return {
        "spki-base64": base64.b64encode(der).decode(),
        "spki-base64url": base64.urlsafe_b64encode(der).decode(),
        "pkcs1-base64": base64.b64encode(pkcs1).decode(),
        "spki-hex": der.hex(),
        "jwk": RSAAlgorithm.to_jwk(public),
    }


def _forged_search(hub, secret: str) -> str:
    """A search_users for everybody, HS256-signed with ``secret`` (made by hand: PyJWT refuses
    to key HMAC with a public key), queued verbatim at the hub; its id."""
    now = int(time.time())
    claims = {
        "iss": hub.ad_hub, "aud": hub.connection, "jti": f"forged-{now}", "cmd": "search_users",
        "iat": now, "exp": now + 300, "payload": {"pid": "forged", "search": "*"},
    }  # fmt: skip
    token = raw_jwt({"alg": "HS256", "typ": "JWT"}, claims, secret.encode())
    return hub.queue_raw(token, name="search_users", id=claims["jti"])


@pytest.mark.parametrize(
    "kind", ["spki-base64", "spki-base64url", "pkcs1-base64", "spki-hex", "jwk"]
)
def test_setup_refuses_a_public_key_handed_out_as_a_secret(tmp_path, hub, hub_pem, kind):
    disguised = _disguises(hub_pem)[kind]
    hub.set_registration(signingKey=disguised)
    try:
        cfg = tmp_path / "config.json"
        cfg.write_text("{}")
        with pytest.raises(SetupError) as info:
            setup_from_ticket(cfg, hub.ticket_url, environ={})
    finally:
        hub.set_registration()
    assert info.value.reason == "hub"
    assert "refused as a shared secret" in str(info.value)
    assert disguised[:40] not in str(info.value)
    assert json.loads(cfg.read_text()) == {}


@pytest.mark.parametrize(("alg", "key"), [("HS256", "pem"), ("RS256", "s" * 40)])
def test_a_stored_algorithm_not_matching_the_key_does_not_load(tmp_path, hub_pem, alg, key):
    cfg = tmp_path / "config.json"
    cfg.write_text(
        json.dumps({"TENANT_SIGNING_KEY": hub_pem if key == "pem" else key,
                    "TENANT_SIGNING_ALG": alg})
    )  # fmt: skip
    with pytest.raises(ConfigError, match=f"TENANT_SIGNING_ALG is {alg} but"):
        load_settings(cfg, environ={}, require_directory=False)


def test_a_config_holding_the_public_key_as_a_secret_never_runs_the_forged_command(
    tmp_path, hub, hub_pem, slapd
):
    """What an older setup stored from a tampered hub: the base64 DER of the public key,
    sealed as a shared secret, no TENANT_SIGNING_ALG. The connector refuses to start, saying
    why, and the forged search_users signed with the public key is never answered."""
    state = tmp_path / "c"
    setup_config(state, openldap_config(slapd), hub.ticket_url, POLL_WAIT_SECONDS=1)
    cfg = state / "config.json"
    box = load_settings(cfg, environ={}).secret_box
    disguised = _disguises(hub_pem)["spki-base64"]
    data = json.loads(cfg.read_text())
    data["TENANT_SIGNING_KEY"] = box.encrypt(disguised)
    del data["TENANT_SIGNING_ALG"]
    cfg.write_text(json.dumps(data))
    forged = _forged_search(hub, disguised)
    proc = ConnectorProcess(state)
    try:
        with pytest.raises(RuntimeError) as info:
            proc.start()
    finally:
        proc.stop()
    assert "TENANT_SIGNING_KEY: the tenant signing key is not PEM" in str(info.value)
    view = hub.command(forged)
    assert view["state"] != "done" and view.get("resultCount", 0) == 0, view


def test_an_older_config_gets_its_algorithm_derived_once_and_saved(tmp_path, hub, slapd):
    state = tmp_path / "c"
    setup_config(state, openldap_config(slapd), hub.ticket_url, POLL_WAIT_SECONDS=1)
    cfg = state / "config.json"
    data = json.loads(cfg.read_text())
    del data["TENANT_SIGNING_ALG"]  # set up before the key existed
    cfg.write_text(json.dumps(data))
    proc = ConnectorProcess(state).start()
    try:
        assert hub.wait_done(hub.queue("ping", {"pid": "derive"}), 30)["resultCount"] == 1
    finally:
        proc.stop()
    assert json.loads(cfg.read_text())["TENANT_SIGNING_ALG"] == "RS256"
    assert proc.log().count("TENANT_SIGNING_ALG was missing") == 1
