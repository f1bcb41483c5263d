"""Command tokens: only tenant-signed, unexpired commands for this connection ever run."""

import base64
import hashlib
import hmac
import json
import random
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tamper import flip_bit

from connector.channel.commands import Command, CommandRefused, CommandVerifier, ReplayCache
from connector.tenantkey import TenantKeyError

AUD = "corp"
ISS = "https://hub.test/tenants/acme"


@pytest.fixture(scope="module")
def tenant_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def tenant_pem(tenant_key):
    return (
        tenant_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture
def verifier(tenant_pem):
    return CommandVerifier(tenant_pem, audience=AUD, issuer=ISS)


def claims(**over):
    now = int(time.time())
    base = {
        "iss": ISS,
        "aud": AUD,
        "jti": "c-1",
        "cmd": "authenticate_user",
        "iat": now,
        "exp": now + 300,
        "payload": {"pid": "p1", "username": "alice", "password": "alicepw"},
    }
    base.update(over)
    return base


def cmd(token, cid="c-1", name="authenticate_user"):
    return {"id": cid, "name": name, "jwt": token}


def test_valid_command_is_accepted(verifier, tenant_key):
    token = jwt.encode(claims(), tenant_key, algorithm="RS256")
    command = verifier.verify(cmd(token))
    assert command.id == "c-1" and command.name == "authenticate_user"
    assert command.payload["username"] == "alice"
    assert "alicepw" not in repr(command)


def refused(verifier, raw, match):
    with pytest.raises(CommandRefused, match=match):
        verifier.verify(raw)


def test_signed_with_another_key(verifier):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused(verifier, cmd(jwt.encode(claims(), other, algorithm="RS256")), "signature")


def test_expired(verifier, tenant_key):
    old = int(time.time()) - 1000
    token = jwt.encode(claims(iat=old, exp=old + 300), tenant_key, algorithm="RS256")
    refused(verifier, cmd(token), "expired")


def test_wrong_audience(verifier, tenant_key):
    token = jwt.encode(claims(aud="other-connection"), tenant_key, algorithm="RS256")
    refused(verifier, cmd(token), "another connection")


def test_wrong_issuer(verifier, tenant_key):
    token = jwt.encode(claims(iss="https://evil.test"), tenant_key, algorithm="RS256")
    refused(verifier, cmd(token), "issuer")


def test_alg_none(verifier):
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=")
    refused(verifier, cmd((header + b"." + body + b".").decode()), "only RS256")


def test_hs256_keyed_with_the_public_key(verifier, tenant_pem):
    """The classic confusion attack: HMAC with the public key as the secret."""
    refused(verifier, cmd(_hs256(claims(), tenant_pem)), "only RS256")


def test_other_asymmetric_algorithm(verifier):
    key = ec.generate_private_key(ec.SECP256R1())
    refused(verifier, cmd(jwt.encode(claims(), key, algorithm="ES256")), "only RS256")


def test_token_for_another_command(verifier, tenant_key):
    token = jwt.encode(claims(jti="c-2"), tenant_key, algorithm="RS256")
    refused(verifier, cmd(token), "does not match")
    token = jwt.encode(claims(cmd="change_password"), tenant_key, algorithm="RS256")
    refused(verifier, cmd(token), "does not match")


def test_unknown_command_name(verifier, tenant_key):
    token = jwt.encode(claims(cmd="rm_rf"), tenant_key, algorithm="RS256")
    refused(verifier, cmd(token, name="rm_rf"), "unknown command")


def test_lifetime_too_long(verifier, tenant_key):
    now = int(time.time())
    token = jwt.encode(claims(iat=now, exp=now + 86400), tenant_key, algorithm="RS256")
    refused(verifier, cmd(token), "lifetime")


def test_missing_claims(verifier, tenant_key):
    c = claims()
    del c["exp"]
    refused(verifier, cmd(jwt.encode(c, tenant_key, algorithm="RS256")), "invalid")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ("not a dict", "not an object"),
        ({"name": "ping", "jwt": "x"}, "no valid id"),
        ({"id": "c-1", "name": "ping"}, "missing"),
        ({"id": "c-1", "name": "ping", "jwt": "garbage"}, "not a JWT"),
        ({"id": "c-1", "name": "ping", "jwt": "a" * 70000}, "too large"),
        ({"id": "x" * 500, "name": "ping", "jwt": "x"}, "no valid id"),
    ],
)
def test_malformed_entries(verifier, raw, match):
    refused(verifier, raw, match)


def test_payload_must_be_an_object(verifier, tenant_key):
    token = jwt.encode(claims(payload=["x"]), tenant_key, algorithm="RS256")
    refused(verifier, cmd(token), "payload")


def test_hs256_tenant_secret():
    secret = "s" * 40
    v = CommandVerifier(secret, audience=AUD)
    token = jwt.encode(claims(), secret, algorithm="HS256")
    assert v.verify(cmd(token)).name == "authenticate_user"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused(v, cmd(jwt.encode(claims(), key, algorithm="RS256")), "only HS256")


def test_short_secret_refused():
    with pytest.raises(TenantKeyError, match="32 bytes"):
        CommandVerifier("short", audience=AUD)


def _hs256(body, secret):
    """An HS256 JWT made by hand (PyJWT refuses to key HMAC with anything like a public key)."""
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=")
    signing_input = header + b"." + payload
    mac = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()


def _disguises(public):
    """The tenant's public key in every text form that is not PEM."""
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pkcs1 = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(public)
    return {
        "spki-base64": base64.b64encode(der).decode(),
        "spki-base64-wrapped": "\n".join(
            base64.b64encode(der).decode()[i : i + 64] for i in range(0, 400, 64)
        ),
        "spki-base64url": base64.urlsafe_b64encode(der).rstrip(b"=").decode(),
        "pkcs1-base64": base64.b64encode(pkcs1).decode(),
        "spki-hex": der.hex(),
        "jwk": jwk,
        "jwks": json.dumps({"keys": [json.loads(jwk)]}),
        "pem-after-a-bom": "\ufeff"
        + public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode(),
    }


@pytest.mark.parametrize(
    "kind",
    ["spki-base64", "spki-base64-wrapped", "spki-base64url", "pkcs1-base64", "spki-hex", "jwk",
     "jwks", "pem-after-a-bom"],
)  # fmt: skip
def test_a_public_key_is_never_a_shared_secret(tenant_key, kind):
    """Issue 13 #3: the base64 DER of the RSA public key was taken for an HS256 secret, so a
    search_users HMAC-signed with it (by anyone: the key is public) ran."""
    disguised = _disguises(tenant_key.public_key())[kind]
    forged = _hs256(claims(cmd="search_users", payload={"pid": "f", "search": "*"}), disguised)
    for alg in (None, "HS256"):
        with pytest.raises(TenantKeyError, match="refused as a shared secret"):
            CommandVerifier(disguised, audience=AUD, algorithm=alg).verify(
                cmd(forged, name="search_users")
            )


def test_the_stored_algorithm_must_match_the_key(tenant_pem):
    with pytest.raises(TenantKeyError, match=r"TENANT_SIGNING_ALG is HS256 but .* RSA public"):
        CommandVerifier(tenant_pem, audience=AUD, algorithm="HS256")
    with pytest.raises(TenantKeyError, match=r"TENANT_SIGNING_ALG is RS256 but .* shared secret"):
        CommandVerifier("s" * 40, audience=AUD, algorithm="RS256")
    with pytest.raises(TenantKeyError, match="one of RS256, HS256"):
        CommandVerifier("s" * 40, audience=AUD, algorithm="none")
    assert CommandVerifier(tenant_pem, audience=AUD, algorithm="RS256").algorithm == "RS256"
    assert CommandVerifier("s" * 40, audience=AUD, algorithm="HS256").algorithm == "HS256"


def test_expiry_is_judged_on_the_hub_clock(tenant_pem, tenant_key):
    """Local clock one hour fast: a fresh command (hub time) is still accepted."""
    hub_now = time.time()
    v = CommandVerifier(tenant_pem, audience=AUD, issuer=ISS, clock=lambda: hub_now)
    token = jwt.encode(claims(iat=int(hub_now), exp=int(hub_now) + 300), tenant_key, "RS256")
    assert v.verify(cmd(token)).id == "c-1"
    late = CommandVerifier(tenant_pem, audience=AUD, issuer=ISS, clock=lambda: hub_now + 3600)
    refused(late, cmd(token), "expired")


@pytest.mark.parametrize(
    ("claim", "value", "match"),
    [
        ("exp", float("nan"), "exp is not a finite number"),
        ("exp", float("inf"), "exp is not a finite number"),
        ("iat", float("nan"), "iat is not a finite number"),
        ("iat", float("-inf"), "iat is not a finite number"),
        ("exp", True, "exp is not a finite number"),
        ("exp", "9999999999", "exp is not a finite number"),
        ("nbf", float("nan"), "nbf is not a finite number"),
        ("nbf", time.time() + 86400, r"not valid yet \(nbf\)"),  # a day: fixed at collection
    ],
)
def test_time_claims_must_be_finite_and_nbf_is_honoured(tenant_key, verifier, claim, value, match):
    """NaN compares false with every time: an exp of NaN never expired."""
    token = jwt.encode(claims(**{claim: value}), tenant_key, algorithm="RS256")
    refused(verifier, cmd(token), match)


def test_an_nbf_within_the_leeway_or_past_is_accepted(tenant_key, verifier):
    for nbf in (time.time() - 10, time.time() + 30):
        token = jwt.encode(claims(nbf=nbf), tenant_key, algorithm="RS256")
        assert verifier.verify(cmd(token)).id == "c-1"


def test_rsa_keys_under_2048_bits_are_refused():
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    short = weak.public_key()
    pem = short.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    with pytest.raises(TenantKeyError, match="RSA-1024: at least 2048 bits"):
        CommandVerifier(pem, audience=AUD)


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


def _command(cid, digest="d1", expires=1_000_660.0):
    return Command(cid, "ping", {}, digest, expires)


def test_replay_cache_lets_redeliveries_run_until_a_final_answer():
    cache = ReplayCache(Clock())
    assert cache.admit(_command("a")) is None
    assert cache.admit(_command("a")) is None  # lease lapsed before any answer: runs again
    cache.answered("a", final=False)  # Unavailable: the hub hands it out again
    assert cache.admit(_command("a")) is None
    cache.answered("a", final=True)
    assert cache.admit(_command("a")) == "command already answered (a replay)"
    assert "another token" in cache.admit(_command("a", digest="d2"))
    cache.answered("unknown", final=True)  # an id never admitted: nothing to do
    assert len(cache) == 1


def test_replay_cache_forgets_at_expiry_and_when_full():
    clock = Clock()
    cache = ReplayCache(clock, max_entries=3)
    for i in range(3):
        cache.admit(_command(f"c{i}", expires=clock.now + 100 + i))
        cache.answered(f"c{i}", final=True)
    cache.admit(_command("c3", expires=clock.now + 500))  # full: the soonest to expire goes
    assert len(cache) == 3 and cache.admit(_command("c0", expires=clock.now + 100)) is None
    assert cache.admit(_command("c2", expires=clock.now + 102)) is not None
    clock.now += 200  # past every expiry but c3's
    assert cache.admit(_command("c2", expires=clock.now + 50)) is None
    assert len(cache) == 2  # c3 and the new c2


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed(header: dict, body: object, secret: str = "s" * 40) -> str:
    """An HS256 compact JWS of exactly this header and body (any JSON, any shape)."""
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(body).encode())
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(mac)


def _pyjwt_answer(verifier, token):
    """What PyJWT's decode (the long path) makes of ``token``: its claims or its refusal."""
    try:
        return verifier._decode(token)
    except CommandRefused as exc:
        return f"refused: {exc}"


def _odd_tokens(secret: str) -> dict[str, str]:
    """Tokens at the edges of what PyJWT accepts: header, claim and encoding shapes."""
    h = {"alg": "HS256", "typ": "JWT"}
    good = claims(iss=ISS)
    plain = _signed(h, good, secret)
    head, body, sig = plain.split(".")
    flipped = flip_bit(sig, 0)
    cases = {
        "plain": plain,
        "kid": _signed({**h, "kid": "k1"}, good, secret),
        "kid-not-text": _signed({**h, "kid": 7}, good, secret),
        "kid-null": _signed({**h, "kid": None}, good, secret),
        "crit": _signed({**h, "crit": ["b64"], "b64": True}, good, secret),
        "crit-unknown": _signed({**h, "crit": ["x-ours"]}, good, secret),
        "b64-true": _signed({**h, "b64": True}, good, secret),
        "b64-false": _signed({**h, "b64": False, "crit": ["b64"]}, good, secret),
        "alg-lowercase": _signed({**h, "alg": "hs256"}, good, secret),
        "no-alg": _signed({"typ": "JWT"}, good, secret),
        "header-a-list": _signed(["HS256"], good, secret),  # type: ignore[arg-type]
        "claims-a-list": _signed(h, [good], secret),
        "claims-a-string": _signed(h, "claims", secret),
        "aud-list": _signed(h, {**good, "aud": ["x", AUD]}, secret),
        "aud-list-other": _signed(h, {**good, "aud": ["x", "y"]}, secret),
        "aud-list-mixed": _signed(h, {**good, "aud": [AUD, 3]}, secret),
        "aud-empty": _signed(h, {**good, "aud": ""}, secret),
        "aud-empty-list": _signed(h, {**good, "aud": []}, secret),
        "aud-object": _signed(h, {**good, "aud": {AUD: 1}}, secret),
        "aud-null": _signed(h, {**good, "aud": None}, secret),
        "iss-missing": _signed(h, {k: v for k, v in good.items() if k != "iss"}, secret),
        "iss-not-text": _signed(h, {**good, "iss": [ISS]}, secret),
        "iss-other": _signed(h, {**good, "iss": ISS + "/"}, secret),
        "jti-number": _signed(h, {**good, "jti": 1}, secret),
        "jti-null": _signed(h, {**good, "jti": None}, secret),
        "sub-text": _signed(h, {**good, "sub": "hub"}, secret),
        "sub-number": _signed(h, {**good, "sub": 5}, secret),
        "sub-null": _signed(h, {**good, "sub": None}, secret),
        "exp-null": _signed(h, {**good, "exp": None}, secret),
        "iat-missing": _signed(h, {k: v for k, v in good.items() if k != "iat"}, secret),
        "other-secret": _signed(h, good, "t" * 40),
        "signature-flipped": f"{head}.{body}.{flipped}",
        "signature-empty": f"{head}.{body}.",
        "padded": f"{head}{'=' * (-len(head) % 4)}.{body}.{sig}=",
        "non-canonical-signature": f"{head}.{body}.{sig[:-1]}{chr(ord(sig[-1]) + 1)}",
        "four-segments": f"{head}.{body}.{sig}.{sig}",
        "spaces": f" {plain}",
        "newline": f"{plain}\n",
        "non-ascii": f"{head}.{body}.{sig}é",
        "utf16-claims": f"{head}.{_b64(json.dumps(good).encode('utf-16'))}.{sig}",
        "deep-header": f"{_b64(b'[' * 100000)}.{body}.{sig}",
    }
    return cases


def test_the_short_path_accepts_only_what_pyjwt_accepts_with_the_same_claims():
    """Most commands skip PyJWT's decode (one parse, the key prepared once): for every token at
    the edges, that path either hands the decision to PyJWT or gives PyJWT's own claims."""
    secret = "s" * 40
    v = CommandVerifier(secret, audience=AUD, issuer=ISS, algorithm="HS256")
    taken = set()
    for case, token in _odd_tokens(secret).items():
        short = v._plain.claims(token)
        if short is not None:
            taken.add(case)
            assert short == _pyjwt_answer(v, token), case
    # the common shapes take it (else the comparison above proves nothing)...
    assert {"plain", "kid", "aud-list", "sub-text"} <= taken
    # ...and the refusals, and valid but unusual encodings, never do
    assert not taken & {"crit", "b64-true", "padded", "kid-not-text", "signature-flipped"}
    # an empty audience claim is a missing one for PyJWT, even when ours is empty too
    nameless = CommandVerifier(secret, audience="", algorithm="HS256")
    empty = _signed({"alg": "HS256"}, claims(aud=""), secret)
    assert nameless._plain.claims(empty) is None
    assert "aud" in _pyjwt_answer(nameless, empty)


def test_the_short_path_agrees_with_pyjwt_on_random_mutations(tenant_key, tenant_pem):
    """Seeded byte flips, cuts and splices of RS256 and HS256 tokens: wherever the short path
    answers, PyJWT accepts the token with the same claims."""
    rng = random.Random(12)
    secret = "s" * 40
    for verifier, token in (
        (CommandVerifier(secret, audience=AUD, issuer=ISS), _signed({"alg": "HS256"}, claims())),
        (
            CommandVerifier(tenant_pem, audience=AUD, issuer=ISS),
            jwt.encode(claims(iss=ISS), tenant_key, algorithm="RS256"),
        ),
    ):
        alphabet = "ABCXYZabcxyz0189-_.=é "
        for _ in range(400):
            chars = list(token)
            for _ in range(rng.randint(1, 3)):
                at = rng.randrange(len(chars))
                chars[at : at + rng.randint(0, 2)] = rng.choice(alphabet) * rng.randint(0, 2)
            mutated = "".join(chars)
            short = verifier._plain.claims(mutated)
            if short is not None:
                assert short == _pyjwt_answer(verifier, mutated), mutated
        assert verifier._plain.claims(token) == _pyjwt_answer(verifier, token)


def test_the_short_path_agrees_with_pyjwt_on_random_claim_shapes():
    """Validly signed tokens whose header and claims take seeded random JSON values."""
    rng = random.Random(7)
    secret = "s" * 40
    v = CommandVerifier(secret, audience=AUD, issuer=ISS, algorithm="HS256")
    values = [None, "", AUD, ISS, "x", 0, 1, 1.5, True, [], [AUD], ["x", AUD], [AUD, None], {}]
    taken = refused = 0
    for _ in range(600):
        header = {"alg": rng.choice(["HS256", "HS256", "RS256", None])}
        for name in rng.sample(["typ", "kid", "crit", "b64", "cty"], rng.randint(0, 2)):
            header[name] = rng.choice(values)
        body = claims(iss=ISS)
        for name in rng.sample(["aud", "iss", "jti", "sub", "exp", "iat", "nbf"], 2):
            if rng.random() < 0.2:
                body.pop(name, None)
            else:
                body[name] = rng.choice(values)
        token = _signed(header, body, secret)
        short, long = v._plain.claims(token), _pyjwt_answer(v, token)
        if short is not None:
            taken += 1
            assert short == long, (header, body)
        refused += isinstance(long, str)
    assert taken > 20 and refused > 300  # both sides of the line were tried


def test_a_header_taken_once_lets_no_other_header_through(verifier, tenant_key):
    assert verifier.verify(cmd(jwt.encode(claims(), tenant_key, algorithm="RS256"))).id == "c-1"
    # the same header again is recognised; any other header is checked (and refused) anew
    crit = jwt.encode(claims(jti="c-2"), tenant_key, "RS256", headers={"crit": ["exp"]})
    with pytest.raises(CommandRefused):
        verifier.verify(cmd(crit, cid="c-2"))
    assert verifier.verify(cmd(jwt.encode(claims(jti="c-3"), tenant_key, "RS256"), "c-3")).id


def test_a_payload_json_reads_only_from_utf8_takes_the_long_path(tenant_key, tenant_pem):
    """UTF-16 JSON (which json's detection reads) and a UTF-8 BOM: PyJWT's answer, not ours."""
    verifier = CommandVerifier(tenant_pem, audience=AUD, issuer=ISS)
    header = base64.urlsafe_b64encode(b'{"alg":"RS256","typ":"JWT"}').rstrip(b"=")
    for data in (
        json.dumps(claims()).encode("utf-16-le"),
        b"\xef\xbb\xbf" + json.dumps(claims()).encode(),
    ):
        assert verifier._plain.claims(_rs256_by_hand(header, data, tenant_key)) is None
        try:
            expected = jwt.decode(
                _rs256_by_hand(header, data, tenant_key),
                tenant_key.public_key(),
                ["RS256"],
                audience=AUD,
                issuer=ISS,
            )["jti"]
        except jwt.PyJWTError:
            expected = None
        try:
            got = verifier.verify(cmd(_rs256_by_hand(header, data, tenant_key))).id
        except CommandRefused:
            got = None
        assert got == expected


def _rs256_by_hand(header: bytes, payload: bytes, key) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    body = header + b"." + base64.urlsafe_b64encode(payload).rstrip(b"=")
    sig = key.sign(body, padding.PKCS1v15(), hashes.SHA256())
    return (body + b"." + base64.urlsafe_b64encode(sig).rstrip(b"=")).decode()
