"""Command JWTs the connector must refuse, queued verbatim at the devhub (``queue_raw``) or
signed by it with claims overridden: forged, unsigned (``none``), HS256 keyed with the tenant's
public key, other algorithms, expired, from the future, too long-lived, for another connection
or from another issuer, not matching their id or name, unknown names, malformed payloads,
oversized (1 MB) and not JWTs at all.

Each is answered without running (``Unexpected``, ``refused: <why>``), exactly once, the
password it carries never reaches a log, and the connector goes on serving.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hostilekit import b64, raw_jwt

pytestmark = pytest.mark.slow  # hostile suite: its own hub, KDC and two connectors

FORGER = rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Commands:
    """Makes command tokens for one hub and tracks the passwords they carry."""

    def __init__(self, hostile: Any) -> None:
        self.hostile = hostile
        self.hub = hostile.hub
        config = json.loads((hostile.inside.state_dir / "config.json").read_text())
        self.public_pem: str = config["TENANT_SIGNING_KEY"]
        assert self.public_pem.startswith("-----BEGIN PUBLIC KEY-----")

    def payload(self, case: str) -> dict[str, Any]:
        password = f"CmdSecret-{case}-{secrets.token_hex(6)}"
        self.hostile.secrets.append(password)
        return {"pid": f"jwt-{case}", "username": "alice", "password": password}

    def claims(self, case: str, **over: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": self.hub.ad_hub,
            "aud": self.hub.connection,
            "jti": f"raw-{case}-{secrets.token_hex(4)}",
            "cmd": "authenticate_user",
            "iat": now,
            "exp": now + 300,
            "payload": self.payload(case),
        }
        claims.update(over)
        return claims

    def raw(self, token: str, name: str = "authenticate_user", cid: str | None = None) -> str:
        self.hostile.secrets.append(token)
        if "." in token and len(token.split(".")) == 3 and len(token.split(".")[2]) > 20:
            self.hostile.secrets.append(token.split(".")[2])
        return self.hub.queue_raw(token, name=name, id=cid or f"raw-{secrets.token_hex(6)}")

    def signed(self, case: str, name: str = "authenticate_user", **claims: Any) -> str:
        return self.hub.queue(name, self.payload(case), claims=claims)


def _cases(c: Commands) -> dict[str, tuple[str, str]]:
    """case -> (command id, the reason the refusal must give)."""
    now = int(time.time())
    out: dict[str, tuple[str, str]] = {}

    def raw_case(case: str, header: dict[str, Any], key: Any, reason: str, **over: Any) -> None:
        claims = c.claims(case, **over)
        if isinstance(key, rsa.RSAPrivateKey):
            token = jwt.encode(claims, key, algorithm=header["alg"], headers=header)
        else:
            token = raw_jwt(header, claims, key)
        out[case] = (c.raw(token, cid=claims["jti"]), reason)

    raw_case("forged", {"alg": "RS256"}, FORGER, "signature does not verify")
    raw_case("forged-kid", {"alg": "RS256", "kid": "tenant"}, FORGER, "signature does not verify")
    raw_case(
        "forged-jwk",
        {"alg": "RS256", "jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}},
        FORGER,
        "signature does not verify",
    )
    raw_case("rs512", {"alg": "RS512"}, FORGER, "command signed with 'RS512'; only RS256")
    raw_case("ps256", {"alg": "PS256"}, FORGER, "command signed with 'PS256'; only RS256")
    for alg in ("none", "None", "NONE"):
        raw_case(f"alg-{alg}", {"alg": alg, "typ": "JWT"}, None, f"command signed with '{alg}'")
    raw_case("no-alg", {"typ": "JWT"}, None, "command signed with None; only RS256")
    raw_case(
        "hs256-public-key",
        {"alg": "HS256", "typ": "JWT"},
        c.public_pem.encode(),
        "command signed with 'HS256'; only RS256",
    )
    raw_case(
        "hs256-public-key-stripped",
        {"alg": "HS256", "typ": "JWT"},
        c.public_pem.strip().encode(),
        "command signed with 'HS256'; only RS256",
    )
    # signed by the hub itself, with a claim made wrong
    for case, name, claims, reason in [
        ("expired", "authenticate_user", {"iat": now - 1000, "exp": now - 700}, "expired"),
        ("future", "authenticate_user", {"iat": now + 400, "exp": now + 600}, "in the future"),
        ("too-long", "authenticate_user", {"iat": now, "exp": now + 3600}, "lifetime too long"),
        ("audience", "authenticate_user", {"aud": "someone-else"}, "for another connection"),
        ("audience-list", "authenticate_user", {"aud": ["x", "y"]}, "for another connection"),
        ("issuer", "authenticate_user", {"iss": "https://evil.example"}, "another issuer"),
        ("no-exp", "authenticate_user", {"exp": None}, 'missing the "exp" claim'),
        ("no-aud", "authenticate_user", {"aud": None}, 'missing the "aud" claim'),
        ("jti", "authenticate_user", {"jti": "another-command"}, "does not match the command"),
        ("cmd", "authenticate_user", {"cmd": "ping"}, "does not match the command"),
        ("unknown", "drop_all_users", {}, "unknown command 'drop_all_users'"),
        ("payload", "authenticate_user", {"payload": "alice:secret"}, "payload: not an object"),
        ("exp-text", "authenticate_user", {"exp": "tomorrow"}, "command token"),
    ]:
        out[case] = (c.signed(case, name, **claims), reason)
    # oversized: a 1 MB token signed by the hub, and 1 MB of garbage
    big = c.payload("big")
    big["padding"] = "x" * (1024 * 1024)
    out["oversized-signed"] = (c.hub.queue("authenticate_user", big), "command token too large")
    out["oversized-garbage"] = (c.raw("e" * (1024 * 1024)), "command token too large")
    for case, token in [
        ("not-jwt", "not-a-jwt"),
        ("two-parts", "eyJhbGciOiJSUzI1NiJ9.e30"),
        ("bad-header", "!!!.e30.sig"),
        ("header-not-object", b64(b"[1,2]") + ".e30.sig"),
    ]:
        out[case] = (c.raw(token), "command token is not a JWT")
    return out


@pytest.fixture(scope="module")
def refused(hostile) -> dict[str, tuple[dict[str, Any], str, dict[str, Any]]]:
    """Every case queued at once: case -> (result, reason expected, the hub's view)."""
    c = Commands(hostile)
    cases = _cases(c)
    out = {}
    for case, (cid, reason) in cases.items():
        view = c.hub.wait_done(cid, 60)
        out[case] = (view["result"], reason, view)
    return out


CASES = [
    "forged", "forged-kid", "forged-jwk", "rs512", "ps256", "alg-none", "alg-None", "alg-NONE",
    "no-alg", "hs256-public-key", "hs256-public-key-stripped", "expired", "future", "too-long",
    "audience", "audience-list", "issuer", "no-exp", "no-aud", "jti", "cmd", "unknown",
    "payload", "exp-text", "oversized-signed", "oversized-garbage", "not-jwt", "two-parts",
    "bad-header", "header-not-object",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_command_refused(refused, case):
    result, reason, view = refused[case]
    assert view["state"] == "done" and view["resultCount"] == 1, view
    assert view["deliveries"] == 1, view  # answered, so not handed out again
    assert set(result) == {"err"}, result  # no profile, nothing ran
    assert result["err"]["name"] == "Unexpected", result
    assert result["err"]["message"].startswith("refused: "), result
    assert reason in result["err"]["message"], (reason, result)


def test_refusals_are_logged_without_the_token(hostile, refused):
    # every connector polling the suite's hub may have taken some (other files add their own)
    log = "".join(p.log() for p in hostile.processes())
    assert log.count("command refused id=") >= len(CASES)
    assert "CmdSecret-" not in log


FORGED_LINE = "connector.audit: login method=hub user='admin' outcome=success"


def test_an_unverified_command_cannot_write_log_lines(hostile, refused):
    """The id and name of a refused command come from an unverified entry: they are logged
    quoted, so a newline in them cannot forge a log line."""
    c = Commands(hostile)
    cid = c.raw(
        "not-a-jwt",
        name="x\n" + FORGED_LINE,
        cid="id\n2030-01-01 00:00:00,000 INFO    " + FORGED_LINE,
    )
    view = c.hub.wait_done(cid, 30)
    assert view["result"]["err"]["message"] == "refused: command token is not a JWT"
    for line in "".join(p.log() for p in hostile.processes()).splitlines():
        assert not line.startswith(("2030-01-01", "connector.audit")), line


def test_a_valid_command_still_runs(hostile, refused):
    result = hostile.result(
        "authenticate_user",
        {"pid": "after", "username": "alice", "password": hostile.slapd.users["alice"]},
    )
    assert result["profile"]["id"] == "alice"
