"""The CLDAP netlogon ping: which AD site this machine is in, asked of a domain controller.

A DC answers an LDAP search sent in one UDP datagram to port 389 ([MS-ADTS] 6.3.3: base ``""``,
filter ``(&(DnsDomain=<domain>)(NtVer=<flags>))``, attribute ``Netlogon``) with a
``NETLOGON_SAM_LOGON_RESPONSE_EX`` ([MS-ADTS] 6.3.1.9): the forest, domain and DC names, the
DC's site and **the client's site**, which the DC works out from the address the datagram came
from and the forest's subnet objects. :class:`~connector.directory.discovery.DcLocator` uses it
so that ``LDAP_DOMAIN`` prefers the site's DCs without ``LDAP_SITE``.

The request and the reply are a few BER elements of LDAPv3 (RFC 4511); they are written and
read here (:func:`request`, :func:`reply_netlogon`) rather than with an ASN.1 library: the
connector's LDAP library speaks TCP only, and the subset is small. Names in the response are
RFC 1035 names with compression pointers (:func:`parse_netlogon`). Every read is bounded: a
malformed reply raises :class:`NetlogonFormatError`, never an IndexError.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import socket
import struct

from connector import errors

log = logging.getLogger(__name__)

#: NETLOGON_NT_VERSION_5 | NETLOGON_NT_VERSION_5EX: ask for the _EX response
NT_VERSION = 0x00000006
#: LOGON_SAM_LOGON_RESPONSE_EX, and LOGON_SAM_USER_UNKNOWN_EX (same layout)
_OPCODES = (23, 25)
_MAX_POINTER_JUMPS = 32


class NetlogonFormatError(errors.DirectoryError):
    """A CLDAP reply, or the netlogon structure in it, is not what [MS-ADTS] describes."""


@dataclasses.dataclass(frozen=True)
class Netlogon:
    """What a DC says in its ``NETLOGON_SAM_LOGON_RESPONSE_EX``."""

    flags: int
    domain_guid: bytes
    forest: str
    domain: str
    dc_host: str
    netbios_domain: str
    netbios_host: str
    user: str
    dc_site: str
    client_site: str


# --- BER, the subset a netlogon ping needs ----------------------------------------------------


def _tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + value


def _int(tag: int, value: int) -> bytes:
    return _tlv(tag, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True))


def request(domain: str, msgid: int, nt_version: int = NT_VERSION) -> bytes:
    """The search request of a netlogon ping for ``domain``, as one LDAPMessage."""
    equality = [
        _tlv(0xA3, _tlv(0x04, b"DnsDomain") + _tlv(0x04, domain.encode())),
        _tlv(0xA3, _tlv(0x04, b"NtVer") + _tlv(0x04, struct.pack("<I", nt_version))),
    ]
    search = (
        _tlv(0x04, b"")  # base: the root DSE
        + _int(0x0A, 0)  # scope: base
        + _int(0x0A, 0)  # derefAliases: never
        + _int(0x02, 0)  # sizeLimit
        + _int(0x02, 0)  # timeLimit
        + _tlv(0x01, b"\x00")  # typesOnly: false
        + _tlv(0xA0, b"".join(equality))  # filter: and
        + _tlv(0x30, _tlv(0x04, b"Netlogon"))
    )
    return _tlv(0x30, _int(0x02, msgid) + _tlv(0x63, search))


def _read(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """The element at ``pos``: (tag, start of its value, end of its value)."""
    if pos + 2 > end:
        raise NetlogonFormatError("CLDAP reply: an element is cut short")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first & 0x80:
        size = first & 0x7F
        if not 0 < size <= 4 or pos + size > end:
            raise NetlogonFormatError("CLDAP reply: a length is malformed")
        length = int.from_bytes(data[pos : pos + size], "big")
        pos += size
    else:
        length = first
    if pos + length > end:
        raise NetlogonFormatError("CLDAP reply: an element runs past its container")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    while start < end:
        tag, vstart, vend = _read(data, start, end)
        out.append((tag, vstart, vend))
        start = vend
    return out


def reply_netlogon(data: bytes, msgid: int) -> bytes:
    """The ``Netlogon`` value of the search entry in a CLDAP reply to ``msgid``.

    Raises:
        NetlogonFormatError: not a reply to ``msgid``, or no ``Netlogon`` value in it.
    """
    for tag, start, end in _children(data, 0, len(data)):
        parts = _children(data, start, end) if tag == 0x30 else []
        if len(parts) < 2 or parts[0][0] != 0x02:
            raise NetlogonFormatError("CLDAP reply: not an LDAP message")
        got = int.from_bytes(data[parts[0][1] : parts[0][2]], "big", signed=True)
        if got != msgid:
            raise NetlogonFormatError(f"CLDAP reply to message {got}, not {msgid}")
        op, ostart, oend = parts[1]
        if op != 0x64:  # not a search entry (searchResDone: no entry came)
            continue
        fields = _children(data, ostart, oend)
        if len(fields) != 2 or fields[1][0] != 0x30:
            raise NetlogonFormatError("CLDAP reply: a malformed search entry")
        for atag, astart, aend in _children(data, fields[1][1], fields[1][2]):
            pair = _children(data, astart, aend) if atag == 0x30 else []
            if len(pair) != 2 or pair[0][0] != 0x04 or pair[1][0] != 0x31:
                raise NetlogonFormatError("CLDAP reply: a malformed attribute")
            if data[pair[0][1] : pair[0][2]].lower() != b"netlogon":
                continue
            values = _children(data, pair[1][1], pair[1][2])
            if values:
                return data[values[0][1] : values[0][2]]
    raise NetlogonFormatError("CLDAP reply without a Netlogon value")


# --- NETLOGON_SAM_LOGON_RESPONSE_EX -------------------------------------------------------------


def _name(blob: bytes, pos: int) -> tuple[str, int]:
    """An RFC 1035 name at ``pos`` (labels, or a pointer back into ``blob``), and where the
    next field starts."""
    labels: list[str] = []
    after: int | None = None
    jumps = 0
    while True:
        if pos >= len(blob):
            raise NetlogonFormatError("netlogon: a name runs past the end")
        size = blob[pos]
        if size == 0:
            pos += 1
            break
        if size & 0xC0 == 0xC0:
            if pos + 2 > len(blob):
                raise NetlogonFormatError("netlogon: a name pointer is cut short")
            jumps += 1
            if jumps > _MAX_POINTER_JUMPS:
                raise NetlogonFormatError("netlogon: name pointers loop")
            if after is None:
                after = pos + 2
            pos = ((size & 0x3F) << 8) | blob[pos + 1]
            continue
        if size & 0xC0 or pos + 1 + size > len(blob):
            raise NetlogonFormatError("netlogon: a malformed name label")
        labels.append(blob[pos + 1 : pos + 1 + size].decode("utf-8", "replace"))
        pos += 1 + size
    return ".".join(labels), pos if after is None else after


def parse_netlogon(blob: bytes) -> Netlogon:
    """A ``NETLOGON_SAM_LOGON_RESPONSE_EX``'s fields, up to the client's site name.

    Raises:
        NetlogonFormatError: another opcode (an older NtVer's layout), or a malformed field.
    """
    if len(blob) < 24:
        raise NetlogonFormatError("netlogon: shorter than its fixed fields")
    opcode, _, flags = struct.unpack_from("<HHI", blob, 0)
    if opcode not in _OPCODES:
        raise NetlogonFormatError(f"netlogon: opcode {opcode}, not a SAM_LOGON_RESPONSE_EX")
    names = []
    pos = 24
    for _ in range(8):
        name, pos = _name(blob, pos)
        names.append(name)
    return Netlogon(flags, bytes(blob[8:24]), *names)


# --- the ping ------------------------------------------------------------------------------------


def ping(host: str, domain: str, timeout: float, port: int = 389) -> Netlogon:
    """Send a netlogon ping for ``domain`` to the DC at ``host`` (UDP) and read its answer.

    Raises:
        DirectoryUnavailable: no answer in ``timeout`` seconds (or the port refused it).
        NetlogonFormatError: the answer is malformed.
    """
    msgid = 1 + secrets.randbelow(2**31 - 2)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(timeout)
            sock.connect(address)  # only this address's datagrams are received
            sock.send(request(domain, msgid))
            data = sock.recv(65535)
    except OSError as exc:
        raise errors.DirectoryUnavailable(
            f"no CLDAP netlogon answer from {host}:{port}: {exc or type(exc).__name__}"
        ) from exc
    return parse_netlogon(reply_netlogon(data, msgid))
