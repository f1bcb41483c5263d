"""Command tokens replayed or oddly timed (issue 13 #12), through a real connector: a command
the connector answered, handed out again (the same token, or another token under its id), is
refused and not run a second time; ``nbf`` in the future and NaN or infinite times are refused;
an RSA tenant key under 2048 bits is refused at setup.

A devhub of its own with an HS256 tenant key (so the test can sign tokens with any claims,
including ones PyJWT would not write) and OpenLDAP; the devhub's ``replay`` hands a done
command out again, keeping its first result (``lastResult`` shows the new answer).
"""

from __future__ import annotations

import json
import secrets
import time

import pytest
from configs import openldap_config
from connector_proc import ConnectorProcess, setup_config
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hostilekit import raw_jwt
from hubs import start_devhub

from connector.channel.provision import SetupError, setup_from_ticket
from connector.settings import load_settings


@pytest.fixture(scope="module")
def site(tmp_path_factory, slapd):
    """(hub, connector, the shared secret) — one connector, one worker."""
    work = tmp_path_factory.mktemp("replay")
    hub = start_devhub(work / "hub", alg="HS256", lease_seconds=30)
    state = work / "c"
    proc = None
    try:
        setup_config(state, openldap_config(slapd), hub.ticket_url, POLL_WAIT_SECONDS=1)
        secret = load_settings(state / "config.json", environ={}).tenant_signing_key
        proc = ConnectorProcess(state).start()
        yield hub, proc, secret, slapd
    finally:
        if proc is not None:
            proc.stop()
        hub.stop()


def _token(hub, secret: str, cid: str, payload: dict, **over) -> str:
    """An HS256 command token made by hand (``json.dumps`` writes NaN and Infinity)."""
    now = time.time()
    claims = {"iss": hub.ad_hub, "aud": hub.connection, "jti": cid, "cmd": "authenticate_user",
              "iat": int(now), "exp": int(now) + 300, "payload": payload, **over}  # fmt: skip
    return raw_jwt({"alg": "HS256", "typ": "JWT"}, claims, secret.encode())


def _login(slapd, pid: str) -> dict:
    return {"pid": pid, "username": "alice", "password": slapd.users["alice"]}


def _runs(proc, pid: str) -> int:
    """How many times the connector ran the login with correlation id ``pid``."""
    return proc.log().count(f"correlation={pid}")


def test_a_replayed_command_is_refused_not_run_again(site):
    hub, proc, secret, slapd = site
    cid, pid = f"replay-{secrets.token_hex(4)}", f"rp-{secrets.token_hex(4)}"
    token = _token(hub, secret, cid, _login(slapd, pid))
    hub.queue_raw(token, id=cid)
    first = hub.wait_done(cid, 30)
    assert first["result"]["profile"]["id"] == "alice" and _runs(proc, pid) == 1
    hub.replay(cid, token)
    again = hub.wait_done(cid, 30)
    assert again["resultCount"] == 2, again
    assert "command already answered (a replay)" in again["lastResult"]["err"]["message"]
    assert again["result"] == first["result"]  # the hub keeps the first
    assert _runs(proc, pid) == 1


def test_another_token_under_an_answered_id_is_refused(site):
    hub, proc, secret, slapd = site
    cid, pid = f"reuse-{secrets.token_hex(4)}", f"ru-{secrets.token_hex(4)}"
    hub.queue_raw(_token(hub, secret, cid, _login(slapd, pid)), id=cid)
    assert hub.wait_done(cid, 30)["result"]["profile"]["id"] == "alice"
    other_pid = f"ru2-{secrets.token_hex(4)}"
    hub.replay(cid, _token(hub, secret, cid, _login(slapd, other_pid)))
    again = hub.wait_done(cid, 30)
    assert "already used by another token" in again["lastResult"]["err"]["message"]
    assert _runs(proc, other_pid) == 0


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"exp": float("nan")}, "exp is not a finite number"),
        ({"exp": float("inf")}, "exp is not a finite number"),
        ({"iat": float("nan")}, "iat is not a finite number"),
        ({"iat": float("-inf")}, "iat is not a finite number"),
        ({"nbf": float("nan")}, "nbf is not a finite number"),
        ({"nbf": int(time.time()) + 86400}, "not valid yet (nbf)"),  # a day: fixed at collection
    ],
)
def test_odd_times_are_refused_without_running(site, over, reason):
    hub, proc, secret, slapd = site
    cid, pid = f"time-{secrets.token_hex(4)}", f"tm-{secrets.token_hex(4)}"
    hub.queue_raw(_token(hub, secret, cid, _login(slapd, pid), **over), id=cid)
    done = hub.wait_done(cid, 30)
    assert reason in done["result"]["err"]["message"], done
    assert _runs(proc, pid) == 0


def test_an_rsa_tenant_key_under_2048_bits_is_refused_at_setup(tmp_path, site):
    hub = site[0]
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    pem = weak.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hub.set_registration(signingKey=pem.decode())
    try:
        cfg = tmp_path / "config.json"
        cfg.write_text("{}")
        with pytest.raises(SetupError, match="RSA-1024: at least 2048 bits"):
            setup_from_ticket(cfg, hub.ticket_url, environ={})
    finally:
        hub.set_registration()
    assert json.loads(cfg.read_text()) == {}
