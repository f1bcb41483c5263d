"""Read the few fields of GSS/SPNEGO/Kerberos tokens the Negotiate acceptor looks at (pure).

Three questions, each answered from the bytes alone, with every read bounds-checked:

* :func:`is_ntlm_token`: does a client's token carry or offer NTLM only (refused before any
  library sees it)?
* :func:`der_length_ok`: does a DER-framed token's outer length add up (a truncated token is
  ``malformed``, not whatever the library makes of it)?
* :func:`spnego_init_ok`: is a SPNEGO token's NegTokenInit well-formed? MIT's SPNEGO answers
  a token it cannot parse with a bare "failure" whose minor code it has remapped (see below),
  indistinguishable from other failures, so the envelope is checked here first.
* :func:`krb_error_code`: the Kerberos protocol error number (RFC 4120 §7.5.9: 34 replay,
  37 clock skew, …) in the error token an acceptor produced. MIT's SPNEGO mechanism remaps
  the Kerberos minor status into numbers of its own (allocated per process, in the order
  errors first occur), so the minor code of a failed SPNEGO accept does not say what went
  wrong; the KRB-ERROR inside the error token does, in numbers fixed by the protocol.

Layouts read (DER, definite lengths only):
``NegTokenResp ::= [1] SEQUENCE { negState [0], supportedMech [1], responseToken [2] OCTET
STRING, mechListMIC [3] }`` (RFC 4178 §4.2.2); the mechanism token ``[APPLICATION 0] { OID,
TOK_ID (03 00 for KRB_ERROR), KRB-ERROR }`` (RFC 2743 §3.1, RFC 4121 §4.1);
``KRB-ERROR ::= [APPLICATION 30] SEQUENCE { …, error-code [6] Int32, … }`` (RFC 4120 §5.9.1).
"""

from __future__ import annotations

__all__ = ["der_length_ok", "is_ntlm_token", "krb_error_code", "spnego_init_ok"]

_NTLM_SIGNATURE = b"NTLMSSP\x00"
_NTLM_OID_DER = bytes.fromhex("060a2b0601040182370202" + "0a")  # 1.3.6.1.4.1.311.2.2.10
KRB5_OIDS_DER = (
    bytes.fromhex("06092a864886f712010202"),  # 1.2.840.113554.1.2.2
    bytes.fromhex("06092a864882f712010202"),  # 1.2.840.48018.1.2.2 (Microsoft's alias)
)
_KRB_ERROR_TOK_ID = b"\x03\x00"
_SPNEGO_OID_DER = bytes.fromhex("06062b0601050502")  # 1.3.6.1.5.5.2
#: NegTokenInit's fields, in order, and the universal type inside each
_NEG_TOKEN_INIT_FIELDS = {0xA0: 0x30, 0xA1: 0x03, 0xA2: 0x04, 0xA3: 0x04}


def is_ntlm_token(token: bytes) -> bool:
    """True for NTLM: a raw NTLMSSP message, or SPNEGO carrying or offering only NTLM."""
    if _NTLM_SIGNATURE in token:
        return True
    return _NTLM_OID_DER in token and not any(oid in token for oid in KRB5_OIDS_DER)


def der_length_ok(token: bytes) -> bool:
    """For a DER-framed token (GSS 0x60 / NegTokenResp 0xa1): does its length add up?"""
    if len(token) < 2 or token[0] not in (0x60, 0xA1):
        return True  # not DER-framed here (e.g. a raw token): leave it to the library
    first = token[1]
    if first < 0x80:
        return len(token) == 2 + first
    count = first & 0x7F
    if count == 0 or count > 4 or len(token) < 2 + count:
        return False
    length = int.from_bytes(token[2 : 2 + count], "big")
    return len(token) == 2 + count + length


def _tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int] | None:
    """``(tag, body start, body end)`` of the element at ``pos``, or None if it does not fit
    in ``data[:end]`` (single-byte tags, definite lengths: all these layouts use)."""
    if pos + 2 > end:
        return None
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > end:
            return None
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > end:
        return None
    return tag, pos, pos + length


def _child(data: bytes, start: int, end: int, tag: int) -> tuple[int, int] | None:
    """Body ``(start, end)`` of the first element tagged ``tag`` among those in
    ``data[start:end]``."""
    while start < end:
        found = _tlv(data, start, end)
        if found is None:
            return None
        t, body, after = found
        if t == tag:
            return body, after
        start = after
    return None


def _inside(data: bytes, span: tuple[int, int] | None, tag: int) -> tuple[int, int] | None:
    """Body of the single element tagged ``tag`` that fills ``span``."""
    if span is None:
        return None
    found = _tlv(data, span[0], span[1])
    if found is None or found[0] != tag:
        return None
    return found[1], found[2]


def krb_error_code(token: bytes | None) -> int | None:
    """The KRB-ERROR ``error-code`` in an acceptor's error token, bare or inside a SPNEGO
    NegTokenResp; None when the token holds none (or is not one of these layouts)."""
    if not token:
        return None
    whole: tuple[int, int] | None = (0, len(token))
    if token[0] == 0xA1:  # NegTokenResp: its responseToken is the mechanism's token
        seq = _inside(token, _inside(token, whole, 0xA1), 0x30)
        if seq is None:
            return None
        whole = _inside(token, _child(token, *seq, 0xA2), 0x04)
    gss = _inside(token, whole, 0x60)
    if gss is None:
        return None
    oid = _tlv(token, gss[0], gss[1])
    if oid is None or oid[0] != 0x06:
        return None
    start = oid[2]
    if token[start : start + 2] != _KRB_ERROR_TOK_ID:
        return None
    body = _inside(token, _inside(token, (start + 2, gss[1]), 0x7E), 0x30)
    code = _inside(token, _child(token, *body, 0xA6), 0x02) if body else None
    if code is None or not 1 <= code[1] - code[0] <= 4:
        return None
    return int.from_bytes(token[code[0] : code[1]], "big", signed=True)


def spnego_init_ok(token: bytes) -> bool:
    """For a token framed as SPNEGO (``[APPLICATION 0] { 1.3.6.1.5.5.2, … }``): is the rest a
    NegTokenInit (RFC 4178 §4.2.1) whose every element fits, with at least one mechanism,
    each an OID? True for any other token (a bare Kerberos one: the library's to judge)."""
    gss = _tlv(token, 0, len(token))
    if gss is None or gss[0] != 0x60 or gss[2] != len(token):
        return not token.startswith(b"\x60")
    _, start, end = gss
    if token[start : start + len(_SPNEGO_OID_DER)] != _SPNEGO_OID_DER:
        return True
    init = _tlv(token, start + len(_SPNEGO_OID_DER), end)
    if init is None or init[0] != 0xA0 or init[2] != end:
        return False
    seq = _inside(token, (init[1], init[2]), 0x30)
    if seq is None or seq[1] != init[2]:
        return False
    pos, last_tag, mechs = seq[0], 0, 0
    while pos < seq[1]:
        field = _tlv(token, pos, seq[1])
        if field is None or field[0] not in _NEG_TOKEN_INIT_FIELDS or field[0] <= last_tag:
            return False
        inner = _tlv(token, field[1], field[2])
        if inner is None or inner[0] != _NEG_TOKEN_INIT_FIELDS[field[0]] or inner[2] != field[2]:
            return False
        if field[0] == 0xA0:
            oid = inner[1]
            while oid < inner[2]:
                element = _tlv(token, oid, inner[2])
                if element is None or element[0] != 0x06:
                    return False
                oid, mechs = element[2], mechs + 1
        pos, last_tag = field[2], field[0]
    return mechs > 0
