"""connector.kerberos.tokens: the error number in an acceptor's error token, read from bytes alone.

The layouts are built here by hand (RFC 4120 / 4121 / 4178 / 2743); real error tokens from
MIT's acceptor are covered in test_kerberos.py (replay, wrong service, clock skew)."""

from __future__ import annotations

import random

import pytest
from gssbuild import KRB5_OID, MS_KRB5_OID, NTLM_OID, SPNEGO_OID, der, neg_token_init

from connector.kerberos.tokens import der_length_ok, is_ntlm_token, krb_error_code, spnego_init_ok


def integer(value: int) -> bytes:
    return der(0x02, value.to_bytes((value.bit_length() + 8) // 8 or 1, "big", signed=True))


def krb_error(code: int, *, padding: int = 0) -> bytes:
    """KRB-ERROR with pvno, msg-type, stime, susec, error-code, realm, sname."""
    fields = (
        der(0xA0, integer(5))
        + der(0xA1, integer(30))
        + der(0xA4, der(0x18, b"20260101000000Z"))
        + der(0xA5, integer(123456))
        + der(0xA6, integer(code))
        + der(0xA9, der(0x1B, b"EXAMPLE.TEST" + b"X" * padding))
    )
    return der(0x7E, der(0x30, fields))


def mech_token(inner: bytes, oid: bytes = KRB5_OID, tok_id: bytes = b"\x03\x00") -> bytes:
    return der(0x60, der(0x06, oid) + tok_id + inner)


def neg_token_resp(response: bytes | None, state: int = 2) -> bytes:
    body = der(0xA0, der(0x0A, bytes([state])))
    if response is not None:
        body += der(0xA2, der(0x04, response))
    return der(0xA1, der(0x30, body))


@pytest.mark.parametrize("code", [31, 32, 33, 34, 35, 36, 37, 41, 44, 45, 60, 127])
def test_error_code_bare_and_inside_spnego(code: int) -> None:
    bare = mech_token(krb_error(code))
    assert krb_error_code(bare) == code
    assert krb_error_code(neg_token_resp(bare)) == code
    assert krb_error_code(mech_token(krb_error(code), oid=MS_KRB5_OID)) == code


def test_long_lengths() -> None:
    token = neg_token_resp(mech_token(krb_error(34, padding=70_000)))
    assert token[1] == 0x83  # three length bytes somewhere on the way
    assert krb_error_code(token) == 34


@pytest.mark.parametrize(
    "token",
    [
        None,
        b"",
        b"\x00",
        neg_token_resp(None),  # a reject with no mechanism token
        neg_token_resp(None, state=0),
        mech_token(krb_error(34), tok_id=b"\x02\x00"),  # an AP-REP, not an error
        mech_token(b"\x30\x00"),  # not [APPLICATION 30]
        mech_token(der(0x7E, der(0x30, der(0xA0, integer(5))))),  # no error-code
        mech_token(der(0x7E, der(0x30, der(0xA6, der(0x02, b""))))),  # empty integer
        mech_token(der(0x7E, der(0x30, der(0xA6, der(0x04, b"\x22"))))),  # not an integer
        der(0x60, b"\x02\x01\x00"),  # no OID
        b"NTLMSSP\x00\x02\x00\x00\x00",
    ],
)
def test_no_error_code(token: bytes | None) -> None:
    assert krb_error_code(token) is None


def test_every_truncation_and_byte_flip_is_an_answer_never_an_exception() -> None:
    rng = random.Random(1234)
    token = neg_token_resp(mech_token(krb_error(37)))
    for cut in range(len(token)):
        assert krb_error_code(token[:cut]) is None  # every length is checked
    answers = set()
    for _ in range(3000):
        bad = bytearray(token)
        bad[rng.randrange(len(bad))] = rng.randrange(256)
        answer = krb_error_code(bytes(bad))
        assert answer is None or isinstance(answer, int)
        answers.add(answer)
    assert None in answers and 37 in answers
    for size in (1, 2, 3, 10, 100, 1000):
        krb_error_code(rng.randbytes(size))


def test_der_length_ok() -> None:
    whole = mech_token(krb_error(34))
    assert der_length_ok(whole)
    assert not der_length_ok(whole[:-1])
    assert not der_length_ok(whole + b"\x00")
    assert not der_length_ok(b"\x60\x84\xff\xff\xff\xff")
    assert der_length_ok(b"raw, not DER-framed")


def test_is_ntlm_token() -> None:
    assert is_ntlm_token(b"NTLMSSP\x00\x01\x00\x00\x00")
    ntlm_oid = der(0x06, NTLM_OID)
    assert is_ntlm_token(der(0x30, ntlm_oid))
    assert not is_ntlm_token(der(0x30, ntlm_oid + der(0x06, KRB5_OID)))
    assert not is_ntlm_token(der(0x30, der(0x06, MS_KRB5_OID) + ntlm_oid))


def _spnego(body: bytes) -> bytes:
    return der(0x60, der(0x06, SPNEGO_OID) + der(0xA0, der(0x30, body)))


MECHS = der(0xA0, der(0x30, der(0x06, MS_KRB5_OID) + der(0x06, KRB5_OID)))


@pytest.mark.parametrize(
    "token",
    [
        neg_token_init([KRB5_OID], b"ticket"),
        neg_token_init([MS_KRB5_OID, KRB5_OID, NTLM_OID], b"t" * 3000),
        neg_token_init([KRB5_OID]),
        _spnego(MECHS + der(0xA1, der(0x03, b"\x00")) + der(0xA2, der(0x04, b"t"))),
        _spnego(MECHS + der(0xA2, der(0x04, b"t")) + der(0xA3, der(0x04, b"mic"))),
        mech_token(b"not SPNEGO: the library's to judge"),
        b"raw bytes",
    ],
)
def test_spnego_init_ok(token: bytes) -> None:
    assert spnego_init_ok(token)


@pytest.mark.parametrize(
    "token",
    [
        b"\x60\x82\x01\x00" + der(0x06, SPNEGO_OID) + b"x" * 248,  # what follows the OID
        neg_token_init([]),  # no mechanism
        _spnego(der(0xA0, der(0x30, der(0x04, b"not an OID")))),
        _spnego(der(0xA2, der(0x04, b"t")) + MECHS),  # fields out of order
        _spnego(MECHS + MECHS),  # a field twice
        _spnego(MECHS + der(0xA4, der(0x04, b"t"))),  # no such field
        _spnego(MECHS + der(0xA2, der(0x30, b""))),  # mechToken not an OCTET STRING
        _spnego(MECHS + der(0xA2, der(0x04, b"t") + b"\x00")),  # junk inside a field
        _spnego(MECHS) + b"\x00",  # junk after the token
        der(0x60, der(0x06, SPNEGO_OID) + der(0xA1, b"")),  # not a NegTokenInit
        der(0x60, der(0x06, SPNEGO_OID) + der(0xA0, der(0x31, MECHS))),  # not a SEQUENCE
        der(0x60, der(0x06, SPNEGO_OID)),  # nothing after the OID
    ],
)
def test_spnego_init_malformed(token: bytes) -> None:
    assert not spnego_init_ok(token)


def test_spnego_init_every_truncation() -> None:
    token = neg_token_init([MS_KRB5_OID, KRB5_OID], b"ticket" * 50)
    assert spnego_init_ok(token)
    for cut in range(1, len(token)):
        assert not spnego_init_ok(token[:cut])
