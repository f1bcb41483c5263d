"""Malformed, truncated, oversized, random, NTLM, replayed and misdirected Negotiate headers.

Over HTTP, against the connector under gunicorn (127.0.0.1 is offered Kerberos): the answer is
always the form, either ``401 WWW-Authenticate: Negotiate`` (no Negotiate token at all) or
``200`` with a reason (``Automatic sign-in did not work (…)``); never a 500, never a sign-in,
never a new challenge after a failed token (no prompt loop). Above gunicorn's header limit
(128 KB) gunicorn itself refuses the request (431) before the app sees it.

In process, the :class:`~connector.kerberos.KerberosAcceptor` takes many more: random bytes,
random DER/SPNEGO framing, and a real ticket mutated byte by byte or cut anywhere. Each ends
in ``KerberosRejected`` with a known code, or (a mutation the ticket's integrity does not
cover) in alice's own principal, never anybody else's.
"""

from __future__ import annotations

import base64
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import spnego
from faultkit import krb5_env, negotiate_header
from hostilekit import REALM_URL, is_form, message
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from connector.kerberos import MAX_HEADER_LENGTH, KerberosAcceptor, KerberosRejected

pytestmark = pytest.mark.slow  # hostile suite: thousands of property-based cases

REASON = "Automatic sign-in did not work ("
GUNICORN_FIELD_LIMIT = 131072  # connector.gunicorn_config.limit_request_field_size
CODES = {
    "not_negotiate", "empty", "too_large", "bad_base64", "malformed", "ntlm", "replay",
    "wrong_service", "bad_key", "expired", "not_yet_valid", "clock_skew", "realm",
    "no_principal", "multi_leg", "no_mechanism", "server", "rejected",
}  # fmt: skip
SPNEGO_OID = bytes.fromhex("06062b0601050502")
KRB5_OID = bytes.fromhex("06092a864886f712010202")
HTTP = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
IN_PROCESS = settings(max_examples=1000, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + body


def _get(hostile, authorization: str | bytes | None, wctx: str = "ctx-neg") -> requests.Response:
    headers = {} if authorization is None else {"Authorization": authorization}
    return requests.get(
        hostile.url(),
        params={"wtrealm": REALM_URL, "wctx": wctx},
        headers=headers,
        allow_redirects=False,
        timeout=30,
    )


def _assert_refused(resp: requests.Response, reason: str | None = None) -> None:
    """The form, never a sign-in or a 500: 401 + challenge without a token, else 200 + why."""
    assert resp.status_code in (200, 401), (resp.status_code, resp.text[:300])
    assert is_form(resp), resp.text[:300]
    assert "Location" not in resp.headers
    if resp.status_code == 401:
        assert resp.headers["WWW-Authenticate"] == "Negotiate"
        assert not message(resp.text)
    else:
        assert "WWW-Authenticate" not in resp.headers  # no prompt loop
        assert message(resp.text).startswith(REASON) or message(resp.text).startswith(
            "Kerberos sign-in"
        ), message(resp.text)
    if reason is not None:
        assert reason in message(resp.text), message(resp.text)


# --------------------------------------------------------------------------------------
# over HTTP, property-based
# --------------------------------------------------------------------------------------

tokens = st.one_of(
    st.binary(max_size=3000),
    st.binary(max_size=2000).map(lambda b: _der(0x60, SPNEGO_OID + b)),
    st.binary(max_size=2000).map(lambda b: _der(0x60, SPNEGO_OID + _der(0xA0, _der(0x30, b)))),
    st.binary(max_size=2000).map(lambda b: _der(0x60, KRB5_OID + b"\x01\x00" + b)),
    st.binary(max_size=2000).map(lambda b: _der(0xA1, _der(0x30, b))),
)


@HTTP
@given(token=tokens)
def test_random_negotiate_tokens_over_http(hostile, token):
    resp = _get(hostile, "Negotiate " + base64.b64encode(token).decode())
    _assert_refused(resp)


header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=300,
)


@HTTP
@given(
    value=header_text, prefix=st.sampled_from(["", "Negotiate ", "negotiate ", "NTLM ", "Basic "])
)
def test_random_authorization_text_over_http(hostile, value, prefix):
    header = prefix + value
    assume(not header[:1].isspace())  # requests refuses to send leading whitespace
    resp = _get(hostile, header.encode("latin-1"))
    assert resp.status_code < 500, resp.status_code
    if resp.status_code == 400:  # gunicorn's refusal of a value it cannot parse, not the app's
        assert not is_form(resp), resp.text[:300]
        return
    _assert_refused(resp)


@pytest.mark.parametrize(
    "size",
    [1, 100, 8 * 1024, 40 * 1024, MAX_HEADER_LENGTH - 20, MAX_HEADER_LENGTH + 10, 100 * 1024,
     GUNICORN_FIELD_LIMIT - 200],
)  # fmt: skip
def test_large_negotiate_headers(hostile, size):
    value = "Negotiate " + base64.b64encode(random.Random(size).randbytes(size)).decode()[:size]
    if size > 64:
        hostile.secrets.append(value)
    resp = _get(hostile, value)
    if len(value) > MAX_HEADER_LENGTH:
        _assert_refused(resp, "Authorization header too large")
    else:
        _assert_refused(resp)


@pytest.mark.parametrize("size", [GUNICORN_FIELD_LIMIT + 10, 1024 * 1024])
def test_headers_beyond_gunicorn_limit(hostile, size):
    """gunicorn refuses the request (431) or drops it; the worker goes on serving."""
    value = "Negotiate " + "A" * size
    try:
        resp = _get(hostile, value)
    except requests.ConnectionError:
        pass  # gunicorn closed the connection before reading it all
    else:
        assert resp.status_code in (400, 431), resp.status_code  # Header Fields Too Large
    _assert_refused(_get(hostile, None))  # still serving


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("Negotiate", "carries no token"),
        ("Negotiate ", None),
        ("Negotiate    ", None),
        ("Negotiate =", "not valid base64"),
        ("Negotiate ====", "not valid base64"),
        ("Negotiate YQ", "not valid base64"),
        ("Negotiate !!!!", "not valid base64"),
        ("Negotiate YWJj ZGVm", "not valid base64"),
        ("Negotiate \u00e9\u00e9\u00e9\u00e9", "not valid base64"),
        ("NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAKAGFKAAAADw==", "NTLM is not supported"),
        (
            "Negotiate TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAKAGFKAAAADw==",
            "NTLM is not supported",
        ),
        ("Negotiate " + base64.b64encode(b"\x60\x82\xff\xff" + b"x" * 10).decode(), "truncated"),
        ("Basic YWxpY2U6YWxpY2Vwdw==", None),
        ("Bearer eyJhbGciOiJub25lIn0.e30.", None),
        ("Digest username=alice", None),
    ],
)
def test_malformed_negotiate_headers(hostile, value, reason):
    resp = _get(hostile, value.encode("latin-1"))
    _assert_refused(resp, reason)


def test_ntlm_inside_spnego_is_refused(hostile):
    ntlm = spnego.client("dave", "davepw", hostname="localhost", service="HTTP", protocol="ntlm")
    token = ntlm.step()
    assert token
    mech_types = _der(0xA0, _der(0x30, bytes.fromhex("060a2b06010401823702020a")))  # NTLM only
    init = _der(0xA0, _der(0x30, mech_types + _der(0xA2, _der(0x04, token))))
    wrapped = _der(0x60, SPNEGO_OID + init)
    for value in (base64.b64encode(token).decode(), base64.b64encode(wrapped).decode()):
        _assert_refused(_get(hostile, "Negotiate " + value), "NTLM is not supported")


def test_real_token_works_once_then_replay_is_refused(hostile):
    header = negotiate_header("alice@EXAMPLE.TEST", "alicepw", hostile.kdc.krb5_conf)
    hostile.secrets.append(header.split()[1])
    first = _get(hostile, header, "ctx-replay")
    assert first.status_code == 303, message(first.text)
    mutual = first.headers.get("WWW-Authenticate", "").partition(" ")[2]
    if mutual:
        hostile.secrets.append(mutual)
    for _ in range(2):  # both workers share the replay cache
        _assert_refused(_get(hostile, header, "ctx-replay"), "already used (replay)")
    # a cut-down copy of the used token: still refused, never a sign-in
    raw = base64.b64decode(header.split()[1])
    _assert_refused(_get(hostile, "Negotiate " + base64.b64encode(raw[:-40]).decode()))


def test_ticket_for_another_service_is_refused(hostile):
    with krb5_env(hostile.kdc.krb5_conf):
        ctx = spnego.client("bob@EXAMPLE.TEST", "bobpw", hostname="otherhost", service="HTTP",
                            protocol="negotiate")  # fmt: skip
        token = ctx.step()
    value = base64.b64encode(token).decode()
    hostile.secrets.append(value)
    _assert_refused(_get(hostile, "Negotiate " + value), "another service")


def test_kerberos_is_never_offered_to_a_spoofed_address(hostile):
    """``outside`` has 127.0.0.1 outside its range and trusts no proxy: whatever
    X-Forwarded-For says, no challenge, and a good ticket is not even looked at."""
    header = negotiate_header("alice@EXAMPLE.TEST", "alicepw", hostile.kdc.krb5_conf)
    hostile.secrets.append(header.split()[1])
    for xff in ("10.1.2.3", "10.1.2.3, 127.0.0.1", "127.0.0.1, 10.1.2.3", "[::ffff:10.1.2.3]:1"):
        resp = requests.get(
            hostile.url(hostile.outside),
            params={"wtrealm": REALM_URL, "wctx": "ctx-xff"},
            headers={"X-Forwarded-For": xff, "Authorization": header},
            allow_redirects=False,
            timeout=30,
        )
        assert resp.status_code == 200 and is_form(resp), xff
        assert "WWW-Authenticate" not in resp.headers and not message(resp.text)
    assert "login method=kerberos" not in hostile.outside.log()


# --------------------------------------------------------------------------------------
# in process: the acceptor itself, many more examples
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def acceptor(hostile, tmp_path_factory) -> Iterator[KerberosAcceptor]:
    rcache = tmp_path_factory.mktemp("rcache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KRB5_CONFIG", hostile.kdc.krb5_conf)
        mp.setenv("KRB5RCACHEDIR", str(rcache))
        yield KerberosAcceptor(
            hostile.kdc.keytab,
            [hostile.kdc.realm],
            service_principal="HTTP/localhost",
            replay_cache=f"file2:{Path(rcache) / 'rc2'}",
        )


def _accept(acceptor: KerberosAcceptor, token: bytes) -> str | None:
    """The principal accepted, or None when rejected (anything else fails the test)."""
    try:
        return acceptor.accept("Negotiate " + base64.b64encode(token).decode()).principal
    except KerberosRejected as exc:
        assert exc.code in CODES, exc
        assert exc.reason and "\n" not in exc.reason
        return None


@IN_PROCESS
@given(token=tokens)
def test_acceptor_random_tokens(acceptor, token):
    assert _accept(acceptor, token) is None


@pytest.fixture(scope="module")
def real_token(hostile) -> bytes:
    header = negotiate_header("alice@EXAMPLE.TEST", "alicepw", hostile.kdc.krb5_conf)
    hostile.secrets.append(header.split()[1])
    return base64.b64decode(header.split()[1])


@IN_PROCESS
@given(data=st.data())
def test_acceptor_mutated_real_token(acceptor, real_token, data):
    token = bytearray(real_token)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(token) - 1))
        token[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(token)))
    assert _accept(acceptor, bytes(token[:cut])) in (None, "alice@EXAMPLE.TEST")


def test_acceptor_every_truncation_of_a_real_token(acceptor, real_token):
    for cut in range(0, len(real_token), 7):
        assert _accept(acceptor, real_token[:cut]) is None


def test_slow_header_does_not_block_others(hostile):
    """A client that sends half a Negotiate header and stalls holds one thread, not the
    worker: others are served meanwhile."""
    host, port = "127.0.0.1", hostile.inside.port
    with socket.create_connection((host, port)) as slow:
        slow.sendall(b"GET /wsfed HTTP/1.1\r\nHost: x\r\nAuthorization: Negotiate YII")
        _assert_refused(_get(hostile, None))
