"""Build DER / SPNEGO tokens by hand for the Kerberos tests (RFC 4178, RFC 2743 framing), so
that no test needs a private part of pyspnego to make one."""

from __future__ import annotations

NTLM_OID = bytes.fromhex("2b06010401823702020a")  # 1.3.6.1.4.1.311.2.2.10
KRB5_OID = bytes.fromhex("2a864886f712010202")  # 1.2.840.113554.1.2.2
MS_KRB5_OID = bytes.fromhex("2a864882f712010202")  # 1.2.840.48018.1.2.2
SPNEGO_OID = bytes.fromhex("2b0601050502")  # 1.3.6.1.5.5.2


def der(tag: int, body: bytes) -> bytes:
    """One DER element (single-byte tag, definite length)."""
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + body


def neg_token_init(mech_types: list[bytes], mech_token: bytes | None = None) -> bytes:
    """A SPNEGO NegTokenInit (RFC 4178 4.2.1) in its GSS framing, as a browser sends it."""
    body = der(0xA0, der(0x30, b"".join(der(0x06, oid) for oid in mech_types)))
    if mech_token is not None:
        body += der(0xA2, der(0x04, mech_token))
    return der(0x60, der(0x06, SPNEGO_OID) + der(0xA0, der(0x30, body)))
