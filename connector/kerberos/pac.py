"""The groups a Kerberos ticket from Active Directory carries: its PAC's logon information.

MIT's GSSAPI exposes the PAC of an accepted context as RFC 6680 name attributes of the
initiator's name; ``urn:mspac:logon-info`` is the ``KERB_VALIDATION_INFO`` structure
([MS-PAC] 2.5), NDR-encoded with a type serialisation header ([MS-RPCE] 2.2.6). The GSS
library has verified the PAC's server signature before it answers (it says so:
``authenticated``); an unauthenticated attribute is never used.

Why a parser of our own for the part we read: Samba's Python bindings (``samba.dcerpc.krb5pac``)
are built for Debian's own interpreter and are not on PyPI, so the connector's Python cannot
import them; impacket parses it too, but it is a whole protocol suite whose requirements
(pyOpenSSL, ldap3, pycryptodomex, flask) would pull a different ``cryptography`` than the
connector pins. The subset read here is fixed by [MS-PAC] and small: SIDs and RIDs. Every
read is bounds-checked; anything malformed is a :class:`PacFormatError` (the caller falls
back to LDAP). The tests compare this parser with Samba's own on real tickets.
"""

from __future__ import annotations

import dataclasses
import logging
import struct
from typing import Any

from connector import errors

log = logging.getLogger(__name__)

LOGON_INFO = b"urn:mspac:logon-info"
#: SE_GROUP_RESOURCE etc. do not matter here: every listed group is a membership
_MAX_COUNT = 100_000  # more SIDs than any token holds: a corrupt count


class PacFormatError(errors.ConnectorError):
    """The PAC's logon information is not the structure [MS-PAC] describes."""


def sid_text(raw: bytes) -> str:
    """A binary SID as ``S-1-5-21-…``.

    Raises:
        PacFormatError: the bytes are not a SID.
    """
    if len(raw) < 8 or len(raw) != 8 + 4 * raw[1]:
        raise PacFormatError("not a SID")
    authority = int.from_bytes(raw[2:8], "big")
    subs = struct.unpack_from(f"<{raw[1]}I", raw, 8)
    return "S-1-{}{}".format(authority, "".join(f"-{s}" for s in subs))


def sid_bytes(text: str) -> bytes:
    """``S-1-5-21-…`` as a binary SID (for an ``objectSid`` filter).

    Raises:
        PacFormatError: the text is not a SID.
    """
    parts = text.split("-")
    if len(parts) < 3 or parts[0].upper() != "S" or not all(p.isdigit() for p in parts[1:]):
        raise PacFormatError(f"not a SID: {text!r}")
    subs = [int(p) for p in parts[3:]]
    if len(subs) > 15 or any(s > 0xFFFFFFFF for s in subs) or int(parts[2]) >= 1 << 48:
        raise PacFormatError(f"not a SID: {text!r}")
    head = bytes([int(parts[1]), len(subs)]) + int(parts[2]).to_bytes(6, "big")
    return head + struct.pack(f"<{len(subs)}I", *subs)


@dataclasses.dataclass(frozen=True)
class LogonInfo:
    """What the PAC says of the user: SIDs as text.

    Attributes:
        user_sid: the user's SID (domain SID + UserId).
        primary_group_sid: the primary group's SID (domain SID + PrimaryGroupId).
        group_sids: the domain's groups (``GroupIds``, already flattened by the KDC).
        extra_sids: ``ExtraSids`` (other domains' groups, well-known SIDs such as S-1-18-1).
        resource_group_sids: ``ResourceGroupIds`` under ``ResourceGroupDomainSid``.
    """

    user_sid: str
    primary_group_sid: str
    group_sids: tuple[str, ...]
    extra_sids: tuple[str, ...]
    resource_group_sids: tuple[str, ...]

    @property
    def all_group_sids(self) -> tuple[str, ...]:
        """Every group SID, each once, in the PAC's order (the primary group first)."""
        seq = (
            self.primary_group_sid,
            *self.group_sids,
            *self.extra_sids,
            *self.resource_group_sids,
        )
        return tuple(dict.fromkeys(seq))


class _Reader:
    """Little-endian NDR reads with bounds checks."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def align(self, n: int) -> None:
        self.pos += -self.pos % n

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise PacFormatError("logon info ends early")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self) -> int:
        self.align(2)
        value: int = struct.unpack("<H", self.take(2))[0]
        return value

    def u32(self) -> int:
        self.align(4)
        value: int = struct.unpack("<I", self.take(4))[0]
        return value

    def count(self) -> int:
        n = self.u32()
        if n > _MAX_COUNT:
            raise PacFormatError(f"implausible count {n}")
        return n

    def unicode_string_header(self) -> int:
        """An RPC_UNICODE_STRING's fixed part; returns its buffer pointer."""
        self.u16(), self.u16()
        return self.u32()

    def skip_unicode_buffer(self) -> None:
        """A deferred conformant varying WCHAR array."""
        self.count()  # maximum count
        self.u32()  # offset
        actual = self.count()
        self.take(2 * actual)

    def sid(self) -> str:
        """A deferred RPC_SID (conformant: its sub-authority count first)."""
        n = self.count()
        body = self.take(8 + 4 * n)
        if body[1] != n:
            raise PacFormatError("SID count disagrees with its array")
        return sid_text(body)

    def memberships(self) -> list[int]:
        """A deferred conformant array of GROUP_MEMBERSHIP: the RIDs."""
        n = self.count()
        rids = []
        for _ in range(n):
            rids.append(self.u32())
            self.u32()  # attributes
        return rids


def parse_logon_info(blob: bytes) -> LogonInfo:
    """The SIDs in a ``PAC_LOGON_INFO`` buffer (KERB_VALIDATION_INFO with its NDR type
    serialisation header).

    Raises:
        PacFormatError: the buffer is not that structure.
    """
    r = _Reader(blob)
    head = r.take(8)
    if head[0] != 1 or head[1] != 0x10:  # version 1, little-endian
        raise PacFormatError("not an NDR type serialisation (version 1, little-endian)")
    length = r.u32()  # private header: object buffer length (padded to 8), filler
    r.take(4)
    if 16 + length > len(blob):
        raise PacFormatError("logon info shorter than its header says")
    if r.u32() == 0:
        raise PacFormatError("no logon info")
    r.take(6 * 8)  # six FILETIMEs
    string_ptrs = [r.unicode_string_header() for _ in range(6)]
    r.u16(), r.u16()  # LogonCount, BadPasswordCount
    user_id, primary_id = r.u32(), r.u32()
    group_count, groups_ptr = r.u32(), r.u32()
    r.u32()  # UserFlags
    r.take(16)  # UserSessionKey
    string_ptrs += [r.unicode_string_header() for _ in range(2)]  # LogonServer, DomainName
    domain_ptr = r.u32()
    r.take(8)  # Reserved1
    r.u32(), r.u32()  # UserAccountControl, SubAuthStatus
    r.take(16), r.u32(), r.u32()  # two FILETIMEs, FailedILogonCount, Reserved3
    sid_count, extra_ptr = r.u32(), r.u32()
    resource_domain_ptr = r.u32()
    resource_count, resource_ptr = r.u32(), r.u32()

    # deferred referents, in the order of their pointers
    for ptr in string_ptrs[:6]:
        if ptr:
            r.skip_unicode_buffer()
    rids = r.memberships() if groups_ptr else []
    if len(rids) != group_count:
        raise PacFormatError("GroupCount disagrees with GroupIds")
    for ptr in string_ptrs[6:]:
        if ptr:
            r.skip_unicode_buffer()
    if not domain_ptr:
        raise PacFormatError("no LogonDomainId")
    domain = r.sid()
    extra: list[str] = []
    if extra_ptr:
        n = r.count()
        if n != sid_count:
            raise PacFormatError("SidCount disagrees with ExtraSids")
        pointers = []
        for _ in range(n):
            pointers.append(r.u32())
            r.u32()  # attributes
        extra = [r.sid() for p in pointers if p]
    resource: list[str] = []
    if resource_domain_ptr:
        resource_domain = r.sid()
        resource_rids = r.memberships() if resource_ptr else []
        if len(resource_rids) != resource_count:
            raise PacFormatError("ResourceGroupCount disagrees with ResourceGroupIds")
        resource = [f"{resource_domain}-{rid}" for rid in resource_rids]
    return LogonInfo(
        user_sid=f"{domain}-{user_id}",
        primary_group_sid=f"{domain}-{primary_id}",
        group_sids=tuple(f"{domain}-{rid}" for rid in rids),
        extra_sids=tuple(extra),
        resource_group_sids=tuple(resource),
    )


def logon_info_of(initiator_name: Any) -> LogonInfo | None:
    """The PAC's logon information of an accepted context's initiator name (python-gssapi,
    raw or high-level), or None when the ticket has none (an MIT KDC issues no PAC), the
    library cannot say, or it is malformed. Only a PAC whose server signature the library
    verified (``authenticated``) is read."""
    try:
        from gssapi.raw import ext_rfc6680
    except ImportError:  # a GSSAPI without RFC 6680 (not MIT's): no PAC
        return None
    try:
        attr = ext_rfc6680.get_name_attribute(initiator_name, LOGON_INFO)
    except Exception as exc:  # noqa: BLE001 - GSSError, or no such attribute: no PAC
        log.debug("no PAC logon info in the ticket: %s", type(exc).__name__)
        return None
    if not attr.authenticated or not attr.values:
        log.warning("a PAC whose signature the GSS library did not verify is ignored")
        return None
    try:
        return parse_logon_info(bytes(attr.values[0]))
    except PacFormatError as exc:
        log.warning("the ticket's PAC logon info is malformed (%s): groups from LDAP", exc)
        return None
