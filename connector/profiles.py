"""Decode raw directory entries (objectGUID, objectSid, DNs) and map them to hub profiles."""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.machinery
import importlib.util
import json
import logging
import os
import re
import struct
import sys
import uuid
from collections.abc import Callable
from typing import Any

import ldap
import ldap.dn

from connector.errors import ProfileError

__all__ = [
    "BINARY_MARKER_ATTRIBUTES",
    "DROPPED_BINARY_ATTRIBUTES",
    "MULTI_VALUED_ATTRIBUTES",
    "PROFILE_ATTRIBUTES",
    "SECRET_ATTRIBUTES",
    "ProfileMapper",
    "RawEntry",
    "decode_guid",
    "decode_sid",
    "default_profile",
    "dn_organization_units",
    "encode_sid",
    "entry_to_raw_profile",
    "guid_to_bytes",
    "load_mapper",
    "load_profile_mapper",
    "primary_group_sid",
    "validate_profile",
]

log = logging.getLogger(__name__)

RawEntry = dict[str, list[bytes]]
"""Attributes of one entry as python-ldap returns them: name -> list of raw values."""

ProfileMapper = Callable[[dict[str, Any]], dict[str, Any]]
"""A function turning a raw profile (see `entry_to_raw_profile`) into a hub profile."""

# ---------------------------------------------------------------------------
# Attribute classification. Names are matched case-insensitively and without
# attribute options (``userCertificate;binary`` is ``userCertificate``).
# ---------------------------------------------------------------------------

SECRET_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "userPassword",
        "unicodePwd",
        "authPassword",
        "unixUserPassword",
        "dBCSPwd",
        "ntPwdHistory",
        "lmPwdHistory",
        "supplementalCredentials",
        "pwdHistory",
        "sambaNTPassword",
        "sambaLMPassword",
        "sambaPasswordHistory",
        "krbPrincipalKey",
        "krbExtraData",
        "userPKCS12",
        "msDS-ManagedPassword",
        "msDS-ManagedPasswordId",
        "msDS-ManagedPasswordPreviousId",
        "msPKIAccountCredentials",
        "msPKIDPAPIMasterKeys",
        "ms-Mcs-AdmPwd",
        "msLAPS-Password",
        "msLAPS-EncryptedPassword",
        "msLAPS-EncryptedPasswordHistory",
        "msLAPS-EncryptedDSRMPassword",
        "msLAPS-EncryptedDSRMPasswordHistory",
        "msFVE-RecoveryPassword",
        "msFVE-KeyPackage",
    }
)
"""Password hashes, keys and other credentials: always dropped, whatever their encoding."""

BINARY_MARKER_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "jpegPhoto",
        "thumbnailPhoto",
        "photo",
        "thumbnailLogo",
        "userCertificate",
        "userSMIMECertificate",
        "cACertificate",
        "crossCertificatePair",
        "certificateRevocationList",
        "authorityRevocationList",
        "mSMQSignCertificates",
        "mSMQDigests",
    }
)
"""Photos and certificates: replaced by ``{"binary": True, "bytes": N}`` per value."""

DROPPED_BINARY_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "msExchMailboxGuid",
        "msExchArchiveGUID",
        "msExchDisabledArchiveGUID",
        "msExchMailboxSecurityDescriptor",
        "msExchMasterAccountSid",
        "msExchSafeSendersHash",
        "msExchSafeRecipientsHash",
        "msExchBlockedSendersHash",
        "msRTCSIP-UserRoutingGroupId",
        "nTSecurityDescriptor",
        "logonHours",
        "sIDHistory",
        "tokenGroups",
        "tokenGroupsGlobalAndUniversal",
        "tokenGroupsNoGCAcceptable",
        "mS-DS-ConsistencyGuid",
        "msDS-GenerationId",
        "msDS-AllowedToActOnBehalfOfOtherIdentity",
        "msDS-GroupMSAMembership",
        "msDS-ExternalDirectoryObjectId",
        "msDS-RevealedUsers",
        "msDS-SupportedEncryptionTypes",
        "replPropertyMetaData",
        "replUpToDateVector",
        "repsFrom",
        "repsTo",
        "dSASignature",
        "userParameters",
        "terminalServer",
        "securityIdentifier",
        "schemaIDGUID",
        "attributeSecurityGUID",
        "audio",
    }
)
"""Binary attributes of no use in a profile: always dropped, even when they happen to decode."""

MULTI_VALUED_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "mail",
        "memberOf",
        "member",
        "uniqueMember",
        "memberUid",
        "proxyAddresses",
        "objectClass",
        "otherTelephone",
        "otherMobile",
        "otherHomePhone",
        "otherIpPhone",
        "otherPager",
        "otherFacsimileTelephoneNumber",
        "otherMailbox",
        "url",
        "servicePrincipalName",
        "altSecurityIdentities",
        "businessCategory",
        "ou",
        "o",
        "jpegPhoto",
        "userCertificate",
        "userSMIMECertificate",
    }
)
"""Attributes always returned as a list, even with one value."""

_DEFAULT_COPIED = (
    "distinguishedName",
    "st",
    "description",
    "postalCode",
    "telephoneNumber",
    "mobile",
    "co",
    "l",
    "streetAddress",
    "department",
    "company",
    "mailNickname",
    "sAMAccountName",
    "sAMAccountType",
    "userPrincipalName",
    "title",
    "manager",
    "objectSid",
    "uid",
    "employeeID",
    "employeeNumber",
)

_DEFAULT_COPIED_LOWER = tuple((name, name.lower()) for name in _DEFAULT_COPIED)

_OTHER_KNOWN = (
    "objectGUID",
    "displayName",
    "givenName",
    "sn",
    "cn",
    "commonName",
    "primaryGroupID",
    "userAccountControl",
    "whenCreated",
    "whenChanged",
    "pwdLastSet",
    "accountExpires",
    "lastLogonTimestamp",
    "entryUUID",
)

PROFILE_ATTRIBUTES: tuple[str, ...] = tuple(
    dict.fromkeys(
        (
            "uid",
            "cn",
            "displayName",
            "givenName",
            "sn",
            "mail",
            "memberOf",
            "objectClass",
            *_DEFAULT_COPIED,
            *_OTHER_KNOWN,
        )
    )
)
"""The user attributes asked for and given to a mapper: what the default mapper reads, and the
well-known ones beside them. Nothing else is requested (never ``*``), so a server that returns a
password hash in some attribute of its own sends nothing the connector did not name; a custom
mapper names more in its module's ``ATTRIBUTES`` list."""

# An attribute description: a name or an OID, with options (``userCertificate;binary``).
_ATTRIBUTE_NAME = re.compile(r"^(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+)(?:;[A-Za-z0-9-]+)*$")

# Lower-case name -> the schema's spelling, so that raw profiles have stable keys
# (``raw["sAMAccountName"]``) whatever case the server or the request used.
_CANONICAL: dict[str, str] = {
    name.lower(): name
    for names in (
        SECRET_ATTRIBUTES,
        BINARY_MARKER_ATTRIBUTES,
        DROPPED_BINARY_ATTRIBUTES,
        MULTI_VALUED_ATTRIBUTES,
        _DEFAULT_COPIED,
        _OTHER_KNOWN,
    )
    for name in names
}

_SECRET_LOWER = frozenset(name.lower() for name in SECRET_ATTRIBUTES)
_MARKER_LOWER = frozenset(name.lower() for name in BINARY_MARKER_ATTRIBUTES)
_DROPPED_LOWER = frozenset(name.lower() for name in DROPPED_BINARY_ATTRIBUTES)
_MULTI_LOWER = frozenset(name.lower() for name in MULTI_VALUED_ATTRIBUTES)

# Keys the decoding layer adds itself; directory attributes of the same name are ignored.
_RESERVED_LOWER = frozenset({"dn", "groups", "organizationunits"})

_OU_TYPES = frozenset({"ou", "organizationalunitname", "2.5.4.11"})

_GUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_SID_RE = re.compile(r"S-1-(?P<auth>[0-9]+|0[xX][0-9a-fA-F]{12})(?P<subs>(?:-[0-9]+)*)")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

_GUID_LEN = 16
_SID_HEADER_LEN = 8
_SID_MAX_SUB_AUTHORITIES = 15
_MAX_AUTHORITY = 2**48 - 1
_MAX_UINT32 = 2**32 - 1


# ---------------------------------------------------------------------------
# objectGUID / objectSid
# ---------------------------------------------------------------------------


def decode_guid(b: bytes) -> str:
    """Convert a binary AD ``objectGUID`` to its canonical text form.

    The first three fields are stored little-endian, the last two big-endian (the
    Microsoft GUID layout), so ``df6fec9a2c9b6b47a9c190d0a2da59b8`` reads
    ``9aec6fdf-9b2c-476b-a9c1-90d0a2da59b8``.

    Args:
        b: The 16 raw bytes.

    Returns:
        The GUID as ``xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`` in lower case.

    Raises:
        ProfileError: If ``b`` is not exactly 16 bytes long.
    """
    if len(b) != _GUID_LEN:
        raise ProfileError(f"objectGUID must be {_GUID_LEN} bytes, got {len(b)}")
    return str(uuid.UUID(bytes_le=bytes(b)))


def guid_to_bytes(text: str) -> bytes:
    """Convert a GUID in canonical text form to AD's binary ``objectGUID`` layout.

    This is the inverse of `decode_guid`; it is what a search filter on
    ``objectGUID`` needs (after ``ldap.filter.escape_filter_chars(..., 1)``).

    Args:
        text: ``xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx``, either case.

    Returns:
        The 16 bytes, first three fields little-endian.

    Raises:
        ProfileError: If ``text`` is not a GUID in canonical form.
    """
    if not _GUID_RE.fullmatch(text):
        raise ProfileError(f"not a GUID in canonical form: {text!r}")
    return uuid.UUID(text).bytes_le


def _parse_sid(b: bytes) -> tuple[int, list[int]]:
    """Validate a binary SID and split it into identifier authority and sub-authorities.

    Raises:
        ProfileError: If the SID is malformed.
    """
    if len(b) < _SID_HEADER_LEN:
        raise ProfileError(f"objectSid must be at least {_SID_HEADER_LEN} bytes, got {len(b)}")
    revision, count = b[0], b[1]
    if revision != 1:
        raise ProfileError(f"unsupported SID revision {revision}")
    if count > _SID_MAX_SUB_AUTHORITIES:
        raise ProfileError(f"SID has {count} sub-authorities, at most 15 allowed")
    expected = _SID_HEADER_LEN + 4 * count
    if len(b) != expected:
        raise ProfileError(
            f"SID with {count} sub-authorities must be {expected} bytes, got {len(b)}"
        )
    authority = int.from_bytes(b[2:8], "big")
    subs = list(struct.unpack(f"<{count}I", b[8:]))
    return authority, subs


def decode_sid(b: bytes) -> str:
    """Convert a binary ``objectSid`` to its text form (``S-1-5-21-…``).

    Layout: revision byte, sub-authority count, 6-byte big-endian identifier
    authority, then the 32-bit little-endian sub-authorities. An authority of
    2**32 or more is written in hex (``0x…``, 12 digits), as Windows does.

    Args:
        b: The raw SID bytes.

    Returns:
        The SID string.

    Raises:
        ProfileError: If the revision is not 1, there are more than 15
            sub-authorities, or the length does not match the count.
    """
    authority, subs = _parse_sid(bytes(b))
    auth_text = str(authority) if authority <= _MAX_UINT32 else f"0x{authority:012X}"
    return "-".join(["S-1", auth_text, *(str(s) for s in subs)])


def encode_sid(text: str) -> bytes:
    """Convert a SID string (``S-1-5-21-…``) to its binary form.

    This is the inverse of `decode_sid`.

    Args:
        text: The SID string; the authority may be decimal or ``0x`` + 12 hex digits.

    Returns:
        The binary SID.

    Raises:
        ProfileError: If ``text`` is not a revision-1 SID, an authority or
            sub-authority is out of range, or there are more than 15 sub-authorities.
    """
    match = _SID_RE.fullmatch(text)
    if match is None:
        raise ProfileError(f"not a SID string: {text!r}")
    auth_text = match["auth"]
    authority = int(auth_text, 16) if auth_text[:2].lower() == "0x" else int(auth_text)
    if authority > _MAX_AUTHORITY:
        raise ProfileError(f"SID identifier authority out of range in {text!r}")
    subs = [int(part) for part in match["subs"].split("-")[1:]]
    if len(subs) > _SID_MAX_SUB_AUTHORITIES:
        raise ProfileError(f"SID {text!r} has more than 15 sub-authorities")
    if any(s > _MAX_UINT32 for s in subs):
        raise ProfileError(f"SID sub-authority out of range in {text!r}")
    return (
        bytes([1, len(subs)]) + authority.to_bytes(6, "big") + struct.pack(f"<{len(subs)}I", *subs)
    )


def primary_group_sid(user_sid: bytes, primary_group_id: int) -> bytes:
    """Build the SID of a user's primary group from the user's SID.

    AD does not list the primary group (usually Domain Users) in ``memberOf``;
    its SID is the user's domain SID with ``primaryGroupID`` as the RID.

    Args:
        user_sid: The user's binary ``objectSid``.
        primary_group_id: The user's ``primaryGroupID`` (e.g. 513).

    Returns:
        The binary SID of the primary group.

    Raises:
        ProfileError: If ``user_sid`` is malformed or has no sub-authority, or
            ``primary_group_id`` is not a 32-bit unsigned integer.
    """
    if (
        isinstance(primary_group_id, bool)
        or not isinstance(primary_group_id, int)
        or not 0 <= primary_group_id <= _MAX_UINT32
    ):
        raise ProfileError(
            f"primaryGroupID must be a 32-bit unsigned integer: {primary_group_id!r}"
        )
    sid = bytes(user_sid)
    _, subs = _parse_sid(sid)
    if not subs:
        raise ProfileError("user SID has no sub-authority (RID) to replace")
    return sid[:-4] + struct.pack("<I", primary_group_id)


# ---------------------------------------------------------------------------
# DNs
# ---------------------------------------------------------------------------


def dn_organization_units(dn: str) -> list[str]:
    """List the organizational units named in a DN, from the entry outward.

    Escapes (``\\,``, ``\\+``, ``\\2C``, UTF-8 hex escapes) are resolved by
    python-ldap's DN parser, so ``CN=x,OU=Sales\\, EMEA,OU=Staff,DC=corp`` gives
    ``["Sales, EMEA", "Staff"]``. An ``ou`` inside a multi-valued RDN counts too.

    Args:
        dn: A distinguished name in RFC 4514 string form.

    Returns:
        The ``ou`` values, nearest to the entry first; empty if there are none.

    Raises:
        ProfileError: If ``dn`` cannot be parsed.
    """
    try:
        rdns = ldap.dn.str2dn(dn)
    except ldap.DECODING_ERROR as exc:
        raise ProfileError(f"malformed DN: {dn!r}") from exc
    return [
        value for rdn in rdns for attr_type, value, _flags in rdn if attr_type.lower() in _OU_TYPES
    ]


# ---------------------------------------------------------------------------
# Raw entry -> raw profile
# ---------------------------------------------------------------------------


def _decode_text(value: bytes) -> str | None:
    """Decode one value as UTF-8 text, or return None if it looks binary."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text.isprintable() and _CONTROL_RE.search(text):  # printable: no control chars
        return None
    return text


@functools.lru_cache(maxsize=1024)  # a directory's attribute names: a small, fixed set
def _canonical_name(name: str) -> tuple[str, str, str | None]:
    """Return (key to use in the raw profile, lower-case base name without options, and
    what that key merges under: None for an attribute never put in a raw profile)."""
    base, sep, options = name.partition(";")
    lower = base.lower()
    key = _CANONICAL.get(lower, base) + sep + options
    return key, lower, None if lower in _SECRET_LOWER or lower in _RESERVED_LOWER else key.lower()


def _shape(lower: str, values: list[Any]) -> Any:
    """Return a list for multi-valued attributes, the single value otherwise."""
    if lower in _MULTI_LOWER or len(values) > 1:
        return values
    return values[0]


def _decode_single(dn: str, name: str, values: list[bytes], decode: Callable[[bytes], str]) -> str:
    """Decode a single-valued binary identifier, naming the entry on failure.

    Raises:
        ProfileError: If there is not exactly one value or it does not decode.
    """
    try:
        if len(values) != 1:
            raise ProfileError(f"{name} of {dn!r} must have exactly one value, got {len(values)}")
        try:
            return decode(values[0])
        except ValueError as exc:
            raise ProfileError(f"malformed {name} on {dn!r}: {exc}") from exc
    except ProfileError as exc:
        log.error("no profile for %s: %s", dn, exc)
        raise


def entry_to_raw_profile(
    dn: str, attrs: RawEntry, *, groups: list[str] | None = None
) -> dict[str, Any]:
    """Decode a python-ldap entry into a JSON-ready "raw profile".

    Attribute names are matched case-insensitively; well-known attributes get
    their schema spelling as key (``samaccountname`` -> ``sAMAccountName``), others
    keep the server's spelling. Text values become ``str``: a single value as a
    ``str``, several values - or any value of a well-known multi-valued attribute
    such as ``mail`` or ``memberOf`` - as a ``list[str]``.

    Binary policy (raw bytes never reach the result):

    * ``objectGUID`` -> canonical GUID text; ``objectSid`` -> ``S-1-…`` text.
    * Secrets (`SECRET_ATTRIBUTES`: ``userPassword``, ``unicodePwd``, hashes,
      keys) are always dropped.
    * Photos and certificates (`BINARY_MARKER_ATTRIBUTES`) become a marker
      ``{"binary": True, "bytes": N}`` per value, so a mapper can tell they exist.
    * Known binaries (`DROPPED_BINARY_ATTRIBUTES`) and any other attribute with a
      value that is not valid UTF-8, or that contains control characters other
      than tab/CR/LF, are dropped.

    The result also carries ``dn``, ``organizationUnits`` (see
    `dn_organization_units`) and, when given, ``groups``; attributes of those
    names from the directory are ignored.

    Args:
        dn: The entry's DN.
        attrs: The entry's attributes as python-ldap returns them.
        groups: The user's (flattened) group names, if they were looked up.

    Returns:
        A dict of JSON-serialisable values.

    Raises:
        ProfileError: If ``objectGUID`` or ``objectSid`` is malformed or
            multi-valued, or ``dn`` cannot be parsed.
    """
    merged: dict[str, tuple[str, str, list[bytes]]] = {}
    for name, values in attrs.items():
        key, lower, merge_as = _canonical_name(name)
        if merge_as is None:  # a secret, or a name the raw profile gives itself
            continue
        # Two spellings of the same attribute (unlikely, but possible): merge them.
        previous = merged.get(merge_as)
        merged[merge_as] = (key, lower, values if previous is None else previous[2] + values)

    raw: dict[str, Any] = {}
    for key, lower, values in merged.values():
        if not values:
            continue
        if lower == "objectguid":
            raw[key] = _decode_single(dn, "objectGUID", values, decode_guid)
        elif lower == "objectsid":
            raw[key] = _decode_single(dn, "objectSid", values, decode_sid)
        elif lower in _MARKER_LOWER:
            raw[key] = _shape(lower, [{"binary": True, "bytes": len(v)} for v in values])
        elif lower in _DROPPED_LOWER:
            continue
        else:
            texts = [_decode_text(v) for v in values]
            if None in texts:
                continue
            raw[key] = _shape(lower, texts)

    raw["dn"] = dn
    raw["organizationUnits"] = dn_organization_units(dn)
    if groups is not None:
        raw["groups"] = list(groups)
    return raw


# ---------------------------------------------------------------------------
# Default mapping
# ---------------------------------------------------------------------------


def _first(value: Any) -> Any:
    """Return the first non-empty element of a list, or a non-empty scalar, else None."""
    if isinstance(value, list):
        return next((v for v in value if v not in (None, "")), None)
    return None if value in (None, "") else value


def _as_list(value: Any) -> list[Any]:
    """Return ``value`` as a list: lists are copied, None is empty, scalars are wrapped."""
    if value is None:
        return []
    if isinstance(value, list):
        return list(value)
    return [value]


def _copy_value(value: Any) -> Any:
    """Copy lists and dicts so the profile shares nothing mutable with the raw dict."""
    if type(value) is str:  # the usual single value
        return value
    if isinstance(value, list) and all(type(v) is str for v in value):
        return list(value)  # text values (the usual case): a shallow copy is a deep one
    return copy.deepcopy(value) if isinstance(value, list | dict) else value


def _pick(lowered: dict[str, Any], names: tuple[str, ...]) -> Any:
    """Return the first present, non-empty attribute among ``names`` (lower-case; the first
    value if a list)."""
    for name in names:
        value = _first(lowered.get(name))
        if value is not None:
            return value
    return None


_ID_NAMES = ("objectguid", "uid", "cn", "commonname")
_NICKNAME_NAMES = ("samaccountname", "uid", "cn", "commonname")


def default_profile(raw: dict[str, Any]) -> dict[str, Any]:
    """Map a raw profile to the hub profile, like the Node connector's default mapper.

    Lookups are case-insensitive. ``id`` is ``objectGUID``, else ``uid``, else
    ``cn``; ``nickname`` is ``sAMAccountName``, else ``uid``, else ``cn``;
    ``emails`` lists every ``mail``; ``organizationUnits`` is a list of OU names,
    nearest first (not the Node connector's comma-joined string). Common AD and
    LDAP attributes are copied through under their schema names. Keys with no
    value are omitted rather than set to null.

    Args:
        raw: A raw profile, as built by `entry_to_raw_profile`.

    Returns:
        The profile.

    Raises:
        ProfileError: If ``organizationUnits`` is absent and ``dn`` cannot be parsed.
    """
    lowered: dict[str, Any] = {}
    for key, value in raw.items():
        lowered.setdefault(key.lower(), value)

    profile: dict[str, Any] = {
        "id": _pick(lowered, _ID_NAMES),
        "displayName": _copy_value(lowered.get("displayname")),
        "name": {
            k: v
            for k, v in (
                ("familyName", _first(lowered.get("sn"))),
                ("givenName", _first(lowered.get("givenname"))),
            )
            if v is not None
        }
        or None,
        "nickname": _pick(lowered, _NICKNAME_NAMES),
        "groups": _copy_value(lowered.get("groups")),
        "emails": [{"value": m} for m in _as_list(lowered.get("mail"))] or None,
        "dn": lowered.get("dn"),
    }
    for name, lower in _DEFAULT_COPIED_LOWER:
        value = lowered.get(lower)
        if value is not None:  # most are absent: no copy to make, no key to drop below
            profile[name] = _copy_value(value)

    units = lowered.get("organizationunits")
    if units is None and isinstance(lowered.get("dn"), str):
        units = dn_organization_units(lowered["dn"])
    profile["organizationUnits"] = _copy_value(units)

    return {k: v for k, v in profile.items() if v is not None}


# ---------------------------------------------------------------------------
# Pluggable mapper
# ---------------------------------------------------------------------------


def validate_profile(profile: Any, source: str = "profile mapper") -> dict[str, Any]:
    """Check that a mapped profile can be sent to the hub.

    Args:
        profile: What a mapper returned.
        source: Named in error messages (e.g. the mapper file).

    Returns:
        A JSON round-tripped copy of the profile (plain dicts, lists and scalars).

    Raises:
        ProfileError: If ``profile`` is not a dict, is not JSON-serialisable, or has
            no non-empty string ``id``.
    """
    if not isinstance(profile, dict):
        raise ProfileError(
            f"{source}: map_profile must return a dict, got {type(profile).__name__}"
        )
    try:
        text = json.dumps(profile, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"{source}: profile is not JSON-serialisable: {exc}") from exc
    result: dict[str, Any] = json.loads(text)
    profile_id = result.get("id")
    if not isinstance(profile_id, str) or not profile_id.strip():
        raise ProfileError(
            f"{source}: profile must have a non-empty string 'id', got {profile_id!r}"
        )
    return result


def _import_file(path: str) -> Any:
    """Import the Python file at ``path`` as a fresh module.

    Raises:
        ProfileError: If the file is missing or fails to import.
    """
    if not os.path.isfile(path):
        raise ProfileError(f"profile mapper file {path!r} does not exist or is not a file")
    digest = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:16]
    module_name = f"_connector_profile_mapper_{digest}"
    loader = importlib.machinery.SourceFileLoader(module_name, path)
    spec = importlib.util.spec_from_file_location(module_name, path, loader=loader)
    if spec is None:  # pragma: no cover - cannot happen with an explicit loader
        raise ProfileError(f"profile mapper file {path!r} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise ProfileError(
            f"profile mapper file {path!r} failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    return module


def load_mapper(path: str | None) -> ProfileMapper:
    """Return the profile mapper: the default one, or ``map_profile`` from a file.

    See :func:`load_profile_mapper`, which also returns the attributes the file declares.

    Raises:
        ProfileError: as :func:`load_profile_mapper`.
    """
    return load_profile_mapper(path)[0]


def _declared_attributes(module: Any, path: str) -> tuple[str, ...]:
    """A mapper file's ``ATTRIBUTES``: the user attributes it reads beyond `PROFILE_ATTRIBUTES`.

    Raises:
        ProfileError: not a list of attribute names, a wildcard, or a secret attribute.
    """
    declared = getattr(module, "ATTRIBUTES", ())
    if isinstance(declared, str) or not isinstance(declared, list | tuple):
        raise ProfileError(f"profile mapper file {path!r}: ATTRIBUTES must be a list of names")
    bad = [a for a in declared if not isinstance(a, str) or not _ATTRIBUTE_NAME.match(a)]
    if bad:
        raise ProfileError(
            f"profile mapper file {path!r}: ATTRIBUTES holds what is not an attribute name "
            f"(no wildcards): {', '.join(repr(a) for a in bad)}"
        )
    secret = [a for a in declared if a.partition(";")[0].lower() in _SECRET_LOWER]
    if secret:
        raise ProfileError(
            f"profile mapper file {path!r}: ATTRIBUTES names secrets, never read: "
            f"{', '.join(secret)}"
        )
    return tuple(dict.fromkeys(declared))


def load_profile_mapper(path: str | None) -> tuple[ProfileMapper, tuple[str, ...]]:
    """Return the profile mapper and the user attributes it needs beyond `PROFILE_ATTRIBUTES`:
    the default mapper and none, or ``map_profile`` and ``ATTRIBUTES`` from a file.

    The file is imported as a Python module (never ``eval``-ed) and must define
    ``map_profile(raw, default)``, where ``default`` is `default_profile`, so that
    a mapper can extend the default::

        def map_profile(raw, default):
            profile = default(raw)
            profile["costCenter"] = raw.get("extensionAttribute1")
            return profile

    The raw profile holds only the attributes of `PROFILE_ATTRIBUTES` (and ``dn``,
    ``organizationUnits``, ``groups``); a mapper that reads others lists them in the
    module-level ``ATTRIBUTES``::

        ATTRIBUTES = ["extensionAttribute1"]

    Names only (no ``*`` or ``+``), and never a secret (`SECRET_ATTRIBUTES`).

    The mapper receives a copy of the raw profile. Its result is checked with
    `validate_profile` on every call.

    Args:
        path: Path of the mapper file, or None for `default_profile`.

    Returns:
        A callable ``(raw) -> profile`` and the attributes the file declares.

    Raises:
        ProfileError: When the file is missing, fails to import, has no callable
            ``map_profile`` or a bad ``ATTRIBUTES``; the returned callable raises ProfileError
            when ``map_profile`` raises or returns an invalid profile. Messages name the file.
    """
    if path is None:
        return default_profile, ()
    module = _import_file(path)
    declared = _declared_attributes(module, path)
    custom = getattr(module, "map_profile", None)
    if not callable(custom):
        raise ProfileError(
            f"profile mapper file {path!r} defines no callable map_profile(raw, default)"
        )
    source = f"profile mapper file {path!r}"

    def mapper(raw: dict[str, Any]) -> dict[str, Any]:
        try:
            try:
                result = custom(copy.deepcopy(raw), default_profile)
            except Exception as exc:
                raise ProfileError(
                    f"{source}: map_profile raised {type(exc).__name__}: {exc}"
                ) from exc
            return validate_profile(result, source)
        except ProfileError as exc:
            log.error("no profile for %s: %s", raw.get("dn"), exc)
            raise

    return mapper, declared
