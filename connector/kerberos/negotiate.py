"""The ``Authorization: Negotiate`` header and Kerberos principal names: pure text helpers."""

from __future__ import annotations

import base64
import binascii
from typing import Literal

from connector.errors import KerberosRejected

PrincipalMapping = Literal["strip_realm", "upn"]

#: Longest ``Authorization`` value accepted. A Kerberos ticket with a large PAC (many
#: groups) exceeds 8 KB; anything over 64 KB is refused before it is decoded.
MAX_HEADER_LENGTH = 64 * 1024


def decode_negotiate_header(value: str | None) -> bytes:
    """The token bytes of an ``Authorization: Negotiate <base64>`` value.

    Raises:
        KerberosRejected: not Negotiate, no token, too large, or not base64.
    """
    if value is None:
        raise KerberosRejected("no Authorization header", "not_negotiate")
    if len(value) > MAX_HEADER_LENGTH:
        raise KerberosRejected(
            f"Authorization header too large ({len(value)} > {MAX_HEADER_LENGTH})", "too_large"
        )
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() == "ntlm":
        raise KerberosRejected("NTLM is not supported; only Kerberos is", "ntlm")
    if scheme.lower() != "negotiate":
        raise KerberosRejected("Authorization scheme is not Negotiate", "not_negotiate")
    data = rest.strip()
    if not data:
        raise KerberosRejected("Negotiate header carries no token", "empty")
    try:
        token = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise KerberosRejected("Negotiate token is not valid base64", "bad_base64") from None
    if not token:
        raise KerberosRejected("Negotiate header carries no token", "empty")
    return token


def split_principal(principal: str) -> tuple[str, str | None]:
    """``(name, realm)`` of a principal; realm None when it has none.

    Handles ``name@REALM``, escaped characters (``alice\\@corp.example@REALM``, an
    enterprise name, gives ``alice@corp.example``) and the Windows form ``DOMAIN\\user``
    (gives ``user`` with no realm: a NetBIOS domain is not a realm).
    """
    if "\\" not in principal:  # the usual case: nothing escaped, no NetBIOS domain
        text, at, rest = principal.partition("@")
        return text, rest if at else None
    name: list[str] = []
    realm: str | None = None
    i = 0
    while i < len(principal):
        ch = principal[i]
        if ch == "\\" and i + 1 < len(principal) and principal[i + 1] in "@/\\":
            name.append(principal[i + 1])
            i += 2
            continue
        if ch == "@":
            realm = principal[i + 1 :]
            break
        name.append(ch)
        i += 1
    text = "".join(name)
    if realm is None and "\\" in text:
        text = text.rsplit("\\", 1)[1]
    return text, realm


def map_principal(principal: str, mapping: PrincipalMapping) -> str:
    """The directory username for a principal.

    ``strip_realm``: ``alice@EXAMPLE.TEST`` -> ``alice``, ``DOMAIN\\alice`` -> ``alice``.
    ``upn``: the whole principal (``alice@AD.EXAMPLE.TEST``; an enterprise principal gives
    its UPN, ``alice@corp.example``), for a lookup by ``userPrincipalName``.
    """
    name, realm = split_principal(principal)
    if mapping == "strip_realm":
        return name
    if mapping == "upn":
        if "@" in name or realm is None:
            return name
        return f"{name}@{realm}"
    raise ValueError(f"unknown principal mapping {mapping!r}")
