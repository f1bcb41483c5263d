"""Alter a signed token so that it really differs once decoded.

Changing the last character of a base64 text is no change one time in a few: that character can
carry padding bits the decoder drops (a 20-byte signature is 27 characters, 162 bits), so "...B"
and "...A" decode to the same bytes and the altered token is still valid. These helpers flip a
bit of the decoded bytes and encode again, so the change survives decoding.
"""

from __future__ import annotations

import base64


def flip_bit(segment: str, index: int = -1) -> str:
    """`segment` (base64url, padded or not) with the low bit of decoded byte `index` flipped."""
    padded = segment.rstrip("=")
    raw = bytearray(base64.urlsafe_b64decode(padded + "=" * (-len(padded) % 4)))
    raw[index] ^= 0x01
    encoded = base64.urlsafe_b64encode(bytes(raw)).decode("ascii")
    return encoded if segment.endswith("=") else encoded.rstrip("=")


def with_signature_flipped(token: str) -> str:
    """A `payload.timestamp.signature` token (itsdangerous) with a bit of its signature flipped."""
    head, _, signature = token.rpartition(".")
    altered = f"{head}.{flip_bit(signature)}"
    assert altered != token
    return altered
