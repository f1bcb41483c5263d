"""Tests for connector.profiles: GUID/SID codecs, DN parsing, decoding and profile mapping."""

from __future__ import annotations

import json
import math
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector import profiles
from connector.profiles import (
    RawEntry,
    decode_guid,
    decode_sid,
    default_profile,
    dn_organization_units,
    encode_sid,
    entry_to_raw_profile,
    guid_to_bytes,
    load_mapper,
    primary_group_sid,
    validate_profile,
)

# --------------------------------------------------------------------------- helpers


def _walk(value: Any) -> list[Any]:
    """Every node of a nested dict/list structure, keys included."""
    nodes = [value]
    if isinstance(value, dict):
        for k, v in value.items():
            nodes += [k, *_walk(v)]
    elif isinstance(value, list | tuple):
        for v in value:
            nodes += _walk(v)
    return nodes


def _assert_clean(value: Any) -> None:
    """No bytes anywhere, and json.dumps works."""
    nodes = _walk(value)
    assert not any(isinstance(n, bytes | bytearray | memoryview) for n in nodes)
    json.dumps(value, allow_nan=False)


# --------------------------------------------------------------------------- vectors

ADMINS_SID = "S-1-5-32-544"
ADMINS_SID_BYTES = bytes.fromhex("01 02 00 00 00 00 00 05 20 00 00 00 20 02 00 00")

DOMAIN_USER_SID = "S-1-5-21-3623811015-3361044348-30300820-1013"
# 21 = 0x15; 3623811015 = 0xd7fef7c7; 3361044348 = 0xc855777c; 30300820 = 0x01ce5a94;
# 1013 = 0x3f5 - each little-endian.
DOMAIN_USER_SID_BYTES = bytes.fromhex(
    "01 05 00 00 00 00 00 05 15 00 00 00 c7 f7 fe d7 7c 77 55 c8 94 5a ce 01 f5 03 00 00"
)
DOMAIN_USERS_SID = "S-1-5-21-3623811015-3361044348-30300820-513"

# Bytes 00 01 02 ... 0f: the first three fields (4, 2, 2 bytes) are little-endian,
# the last 8 bytes are read in order.
SEQ_GUID_BYTES = bytes(range(16))
SEQ_GUID = "03020100-0504-0706-0809-0a0b0c0d0e0f"

# A GUID as stored by AD and shown by its tools.
AD_GUID_BYTES = bytes.fromhex("df6fec9a2c9b6b47a9c190d0a2da59b8")
AD_GUID = "9aec6fdf-9b2c-476b-a9c1-90d0a2da59b8"


# --------------------------------------------------------------------------- GUID


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (SEQ_GUID_BYTES, SEQ_GUID),
        (AD_GUID_BYTES, AD_GUID),
        (b"\x00" * 16, "00000000-0000-0000-0000-000000000000"),
        (b"\xff" * 16, "ffffffff-ffff-ffff-ffff-ffffffffffff"),
    ],
)
def test_guid_known_vectors(raw: bytes, text: str) -> None:
    assert decode_guid(raw) == text
    assert guid_to_bytes(text) == raw
    assert guid_to_bytes(text.upper()) == raw


def test_decode_guid_is_lowercase_and_canonical() -> None:
    text = decode_guid(bytes.fromhex("ABCDEF0123456789ABCDEF0123456789"))
    assert text == text.lower()
    assert [len(p) for p in text.split("-")] == [8, 4, 4, 4, 12]


@pytest.mark.parametrize("length", [0, 1, 15, 17, 32])
def test_decode_guid_wrong_length(length: int) -> None:
    with pytest.raises(ValueError, match=f"16 bytes, got {length}"):
        decode_guid(b"\x01" * length)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "03020100050407060809-0a0b0c0d0e0f",
        "03020100-0504-0706-0809-0a0b0c0d0e0",
        "03020100-0504-0706-0809-0a0b0c0d0e0f0",
        "{03020100-0504-0706-0809-0a0b0c0d0e0f}",
        "urn:uuid:03020100-0504-0706-0809-0a0b0c0d0e0f",
        "03020100-0504-0706-0809-0a0b0c0d0e0g",
        " 03020100-0504-0706-0809-0a0b0c0d0e0f",
        "03020100-0504-0706-0809-0a0b0c0d0e0f\n",
        "0302010005040706080900a0b0c0d0e0f",
        "\uff10" * 8 + "-0504-0706-0809-0a0b0c0d0e0f",  # fullwidth digits
    ],
)
def test_guid_to_bytes_rejects_non_canonical(text: str) -> None:
    with pytest.raises(ValueError, match="not a GUID"):
        guid_to_bytes(text)


@given(st.binary(min_size=16, max_size=16))
def test_guid_round_trip(raw: bytes) -> None:
    text = decode_guid(raw)
    assert guid_to_bytes(text) == raw
    assert uuid.UUID(text).bytes_le == raw


# --------------------------------------------------------------------------- SID


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (ADMINS_SID_BYTES, ADMINS_SID),
        (DOMAIN_USER_SID_BYTES, DOMAIN_USER_SID),
        (bytes.fromhex("01 01 00 00 00 00 00 01 00 00 00 00"), "S-1-1-0"),  # Everyone
        (bytes.fromhex("01 01 00 00 00 00 00 00 00 00 00 00"), "S-1-0-0"),  # Null SID
        (bytes.fromhex("01 01 00 00 00 00 00 05 12 00 00 00"), "S-1-5-18"),  # SYSTEM
        (bytes.fromhex("01 00 00 00 00 00 00 05"), "S-1-5"),  # no sub-authority
        (
            bytes.fromhex("01 01 00 00 00 00 00 05 ff ff ff ff"),
            "S-1-5-4294967295",
        ),
        # Authority >= 2**32 is written in hex, 12 digits, as Windows does.
        (bytes.fromhex("01 01 00 01 00 00 00 00 07 00 00 00"), "S-1-0x000100000000-7"),
        (bytes.fromhex("01 01 ff ff ff ff ff ff 07 00 00 00"), "S-1-0xFFFFFFFFFFFF-7"),
        # Largest decimal authority.
        (bytes.fromhex("01 01 00 00 ff ff ff ff 07 00 00 00"), "S-1-4294967295-7"),
    ],
)
def test_sid_known_vectors(raw: bytes, text: str) -> None:
    assert decode_sid(raw) == text
    assert encode_sid(text) == raw


def test_sid_with_fifteen_sub_authorities() -> None:
    subs = list(range(1, 16))
    raw = bytes([1, 15, 0, 0, 0, 0, 0, 5]) + struct.pack("<15I", *subs)
    text = "S-1-5-" + "-".join(map(str, subs))
    assert decode_sid(raw) == text
    assert encode_sid(text) == raw


def test_encode_sid_accepts_lowercase_hex_authority() -> None:
    assert encode_sid("S-1-0x0000FFFFFFFF-1") == encode_sid("S-1-4294967295-1")
    assert encode_sid("S-1-0x00000000abcd-1") == encode_sid("S-1-43981-1")
    assert encode_sid("S-1-0X000000000005-32-544") == ADMINS_SID_BYTES


def test_encode_sid_accepts_leading_zeros() -> None:
    assert encode_sid("S-1-05-032-0544") == ADMINS_SID_BYTES


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "at least 8 bytes, got 0"),
        (bytes.fromhex("01 02 00 00 00 00 00"), "at least 8 bytes, got 7"),
        (bytes.fromhex("02 01 00 00 00 00 00 05 20 00 00 00"), "revision 2"),
        (bytes.fromhex("00 01 00 00 00 00 00 05 20 00 00 00"), "revision 0"),
        # count says 2, one sub-authority present
        (bytes.fromhex("01 02 00 00 00 00 00 05 20 00 00 00"), "must be 16 bytes, got 12"),
        # count says 1, trailing garbage
        (ADMINS_SID_BYTES[:1] + b"\x01" + ADMINS_SID_BYTES[2:], "must be 12 bytes, got 16"),
        # truncated sub-authority
        (ADMINS_SID_BYTES[:-1], "must be 16 bytes, got 15"),
        (ADMINS_SID_BYTES + b"\x00", "must be 16 bytes, got 17"),
        (bytes([1, 16, 0, 0, 0, 0, 0, 5]) + b"\x00" * 64, "16 sub-authorities"),
        (bytes([1, 255, 0, 0, 0, 0, 0, 5]), "255 sub-authorities"),
    ],
)
def test_decode_sid_malformed(raw: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_sid(raw)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "S",
        "S-1",
        "S-1-",
        "S-1-5-",
        "S-1-5--32",
        "S-2-5-32-544",
        "S-0-5",
        "s-1-5-32-544",
        "X-1-5-32-544",
        "S-1-5-32-544-",
        " S-1-5-32-544",
        "S-1-5-32-544\n",
        "S-1-5-x",
        "S-1-5-+32",
        "S-1-5--1",
        "S-1-5-32-0x220",
        "S-1-0x5-32",  # hex authority must have 12 digits
        "S-1-\u0665-32",  # Arabic-Indic digit five
        "S-1-5-\uff13\uff12",  # fullwidth digits
    ],
)
def test_encode_sid_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError, match="not a SID string"):
        encode_sid(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("S-1-5-4294967296", "sub-authority out of range"),
        ("S-1-5-21-1-99999999999999999999", "sub-authority out of range"),
        ("S-1-281474976710656-1", "authority out of range"),
        ("S-1-5-" + "-".join(["1"] * 16), "more than 15"),
    ],
)
def test_encode_sid_rejects_out_of_range(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_sid(text)


@given(
    st.integers(min_value=0, max_value=2**48 - 1),
    st.lists(st.integers(min_value=0, max_value=2**32 - 1), max_size=15),
)
def test_sid_round_trip(authority: int, subs: list[int]) -> None:
    raw = (
        bytes([1, len(subs)]) + authority.to_bytes(6, "big") + struct.pack(f"<{len(subs)}I", *subs)
    )
    text = decode_sid(raw)
    assert text.startswith("S-1-")
    assert encode_sid(text) == raw
    assert decode_sid(encode_sid(text)) == text


# --------------------------------------------------------------------------- primary group


def test_primary_group_sid_replaces_rid() -> None:
    group = primary_group_sid(DOMAIN_USER_SID_BYTES, 513)
    assert group == encode_sid(DOMAIN_USERS_SID)
    assert decode_sid(group) == DOMAIN_USERS_SID
    assert len(group) == len(DOMAIN_USER_SID_BYTES)
    assert group[:-4] == DOMAIN_USER_SID_BYTES[:-4]
    assert group[-4:] == bytes.fromhex("01 02 00 00")


@pytest.mark.parametrize("rid", [0, 1, 512, 515, 2**32 - 1])
def test_primary_group_sid_range(rid: int) -> None:
    group = primary_group_sid(DOMAIN_USER_SID_BYTES, rid)
    assert decode_sid(group).rsplit("-", 1) == [DOMAIN_USER_SID.rsplit("-", 1)[0], str(rid)]


def test_primary_group_sid_single_sub_authority() -> None:
    assert decode_sid(primary_group_sid(encode_sid("S-1-5-18"), 7)) == "S-1-5-7"


@pytest.mark.parametrize("rid", [-1, 2**32, True, 513.0, "513"])
def test_primary_group_sid_bad_rid(rid: Any) -> None:
    with pytest.raises(ValueError, match="primaryGroupID"):
        primary_group_sid(DOMAIN_USER_SID_BYTES, rid)


@pytest.mark.parametrize(
    ("sid", "message"),
    [
        (encode_sid("S-1-5"), "no sub-authority"),
        (b"", "at least 8 bytes"),
        (DOMAIN_USER_SID_BYTES[:-2], "must be 28 bytes"),
    ],
)
def test_primary_group_sid_bad_user_sid(sid: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        primary_group_sid(sid, 513)


# --------------------------------------------------------------------------- DNs


@pytest.mark.parametrize(
    ("dn", "units"),
    [
        ("CN=Jane Doe,OU=Sales,OU=Staff,DC=corp,DC=example,DC=com", ["Sales", "Staff"]),
        ("uid=jdoe,ou=people,dc=example,dc=org", ["people"]),
        ("CN=Doe\\, Jane,OU=Sales\\, EMEA,OU=Staff,DC=corp,DC=com", ["Sales, EMEA", "Staff"]),
        ("CN=x,OU=R\\2CD,DC=corp", ["R,D"]),
        ("CN=x,OU=R\\2cD,DC=corp", ["R,D"]),
        ("CN=x,OU=A\\+B,DC=corp", ["A+B"]),
        ("CN=x,OU=A\\=B\\;C,DC=corp", ["A=B;C"]),
        ("CN=x,OU=\\#hash,OU=trail\\ ,DC=corp", ["#hash", "trail "]),
        ("CN=x,OU=back\\\\slash,DC=corp", ["back\\slash"]),
        ('CN=x,OU=quote\\"d,DC=corp', ['quote"d']),
        ("CN=x,OU=Équipe,OU=Zürich,DC=corp", ["Équipe", "Zürich"]),
        ("CN=x,OU=\\C3\\89quipe,OU=\\E6\\9D\\B1\\E4\\BA\\AC,DC=corp", ["Équipe", "東京"]),
        ("CN=x,OU=営業部,DC=corp", ["営業部"]),
        ("CN=x+OU=Inner,OU=Outer,DC=corp", ["Inner", "Outer"]),
        ("CN=x,ou=lower,Ou=Mixed,OU=Upper,DC=corp", ["lower", "Mixed", "Upper"]),
        ("CN=x,organizationalUnitName=Long,2.5.4.11=Oid,DC=corp", ["Long", "Oid"]),
        ("CN=x, OU=Spaced ,DC=corp", ["Spaced"]),
        ("CN=Only,DC=corp,DC=com", []),
        ("CN=x,O=Org,DC=corp", []),
        ("", []),
    ],
)
def test_dn_organization_units(dn: str, units: list[str]) -> None:
    assert dn_organization_units(dn) == units


@pytest.mark.parametrize("dn", ["not a dn", "CN=x,,DC=corp", "=x,DC=corp", "CN=x\\", "CN=a\\zz"])
def test_dn_organization_units_malformed(dn: str) -> None:
    with pytest.raises(ValueError, match="malformed DN"):
        dn_organization_units(dn)


# --------------------------------------------------------------------------- decoding

AD_DN = "CN=Doe\\, Jane,OU=Sales\\, EMEA,OU=Zürich,DC=corp,DC=example,DC=com"


def _ad_entry() -> RawEntry:
    return {
        "objectClass": [b"top", b"person", b"organizationalPerson", b"user"],
        "cn": [b"Doe, Jane"],
        "sn": [b"Doe"],
        "givenName": [b"Jane"],
        "displayName": ["Jane Doe (Zürich)".encode()],
        "distinguishedName": [AD_DN.encode()],
        "objectGUID": [AD_GUID_BYTES],
        "objectSid": [DOMAIN_USER_SID_BYTES],
        "sAMAccountName": [b"jdoe"],
        "sAMAccountType": [b"805306368"],
        "userPrincipalName": [b"jdoe@corp.example.com"],
        "mail": [b"jane.doe@example.com"],
        "proxyAddresses": [b"SMTP:jane.doe@example.com", b"smtp:jdoe@example.com"],
        "memberOf": [b"CN=Staff,OU=Groups,DC=corp,DC=example,DC=com"],
        "primaryGroupID": [b"513"],
        "department": [b"Sales"],
        "company": [b"Example"],
        "title": [b"Manager"],
        "manager": [b"CN=Boss,OU=Staff,DC=corp,DC=example,DC=com"],
        "telephoneNumber": [b"+41 44 000 00 00"],
        "otherTelephone": [b"+41 44 000 00 01"],
        "employeeID": [b"E-1001"],
        "description": [b"Line one\nline two\tand a tab"],
        "thumbnailPhoto": [b"\xff\xd8\xff\xe0" + b"\x00" * 96],
        "jpegPhoto": [b"\xff\xd8\xff" + b"\x10" * 50],
        "userCertificate": [b"\x30\x82\x01\x00" + b"\x00" * 10, b"\x30\x82" + b"\x00" * 20],
        "userPassword": [b"{SSHA}notreallyahash"],
        "unicodePwd": [b'"\x00s\x00e\x00c\x00r\x00e\x00t\x00"\x00'],
        "msExchMailboxGuid": [bytes(range(16))],
        "msExchMailboxSecurityDescriptor": [b"\x01\x00\x04\x80" + b"\x00" * 16],
        "nTSecurityDescriptor": [b"\x01\x00\x04\x9c" + b"\x00" * 16],
        "logonHours": [b"\xff" * 21],
        "mS-DS-ConsistencyGuid": [b"0123456789abcdef"],  # happens to be ASCII
        "msDS-GenerationId": [b"\x00" * 8],
        "whenCreated": [b"20240101120000.0Z"],
    }


def test_entry_to_raw_profile_ad() -> None:
    raw = entry_to_raw_profile(AD_DN, _ad_entry(), groups=["Staff", "Everyone, All"])
    _assert_clean(raw)
    assert raw["dn"] == AD_DN
    assert raw["objectGUID"] == AD_GUID
    assert raw["objectSid"] == DOMAIN_USER_SID
    assert raw["cn"] == "Doe, Jane"
    assert raw["displayName"] == "Jane Doe (Zürich)"
    assert raw["sAMAccountName"] == "jdoe"
    assert raw["primaryGroupID"] == "513"
    assert raw["description"] == "Line one\nline two\tand a tab"
    # Well-known multi-valued attributes are lists even with one value.
    assert raw["mail"] == ["jane.doe@example.com"]
    assert raw["memberOf"] == ["CN=Staff,OU=Groups,DC=corp,DC=example,DC=com"]
    assert raw["otherTelephone"] == ["+41 44 000 00 01"]
    assert raw["objectClass"] == ["top", "person", "organizationalPerson", "user"]
    assert raw["proxyAddresses"] == ["SMTP:jane.doe@example.com", "smtp:jdoe@example.com"]
    assert raw["groups"] == ["Staff", "Everyone, All"]
    assert raw["organizationUnits"] == ["Sales, EMEA", "Zürich"]


def test_binary_policy_markers_for_photos_and_certificates() -> None:
    raw = entry_to_raw_profile(AD_DN, _ad_entry(), groups=None)
    assert raw["thumbnailPhoto"] == {"binary": True, "bytes": 100}
    assert raw["jpegPhoto"] == [{"binary": True, "bytes": 53}]  # multi-valued in the schema
    assert raw["userCertificate"] == [
        {"binary": True, "bytes": 14},
        {"binary": True, "bytes": 22},
    ]


def test_binary_policy_drops_secrets_and_known_binaries() -> None:
    raw = entry_to_raw_profile(AD_DN, _ad_entry(), groups=None)
    lowered = {k.lower() for k in raw}
    for name in (
        "userPassword",
        "unicodePwd",
        "msExchMailboxGuid",
        "msExchMailboxSecurityDescriptor",
        "nTSecurityDescriptor",
        "logonHours",
        "mS-DS-ConsistencyGuid",
        "msDS-GenerationId",
    ):
        assert name.lower() not in lowered
    dumped = json.dumps(raw)
    assert "notreallyahash" not in dumped
    assert "0123456789abcdef" not in dumped


@pytest.mark.parametrize("name", sorted(profiles.SECRET_ATTRIBUTES))
@pytest.mark.parametrize("spelling", [str, str.lower, str.upper])
def test_secrets_always_dropped(name: str, spelling: Any) -> None:
    for attr in (spelling(name), spelling(name) + ";binary"):
        raw = entry_to_raw_profile(
            "cn=x,dc=example", {attr: [b"plain-text-secret"], "cn": [b"x"]}, groups=None
        )
        assert attr not in raw
        assert "plain-text-secret" not in json.dumps(raw)
        assert default_profile(raw)["id"] == "x"


@pytest.mark.parametrize("name", sorted(profiles.DROPPED_BINARY_ATTRIBUTES))
def test_known_binaries_dropped_even_if_they_decode(name: str) -> None:
    raw = entry_to_raw_profile("cn=x", {name: [b"looks like text"]}, groups=None)
    assert "looks like text" not in json.dumps(raw)
    assert set(raw) == {"dn", "organizationUnits"}


@pytest.mark.parametrize("name", sorted(profiles.BINARY_MARKER_ATTRIBUTES))
def test_marker_attributes_never_raw(name: str) -> None:
    raw = entry_to_raw_profile("cn=x", {name.upper(): [b"\x00\x01text"]}, groups=None)
    value = raw[name]
    markers = value if isinstance(value, list) else [value]
    assert markers == [{"binary": True, "bytes": 6}]
    assert "text" not in json.dumps(raw)


def test_options_are_kept_and_binary_classified_by_base_name() -> None:
    raw = entry_to_raw_profile(
        "cn=x",
        {"userCertificate;binary": [b"\x30\x82"], "description;lang-de": [b"Hallo"]},
        groups=None,
    )
    assert raw["userCertificate;binary"] == [{"binary": True, "bytes": 2}]
    assert raw["description;lang-de"] == "Hallo"


@pytest.mark.parametrize(
    "value",
    [
        b"\xff\xfe\x00",
        b"\xc3\x28",  # invalid continuation
        b"\xed\xa0\x80",  # UTF-8 encoded surrogate
        b"\x00" * 8,  # valid UTF-8, but NUL bytes
        b"abc\x01def",
        b"abc\x1bdef",
        b"abc\x7f",
    ],
)
def test_unknown_binary_attribute_dropped(value: bytes) -> None:
    raw = entry_to_raw_profile("cn=x", {"customBlob": [value], "cn": [b"x"]}, groups=None)
    assert "customBlob" not in raw
    assert raw["cn"] == "x"
    _assert_clean(raw)


def test_attribute_with_one_binary_value_dropped_whole() -> None:
    raw = entry_to_raw_profile("cn=x", {"customMulti": [b"fine", b"\xff"]}, groups=None)
    assert "customMulti" not in raw


def test_multi_valued_shaping() -> None:
    raw = entry_to_raw_profile(
        "uid=a,ou=people,dc=example",
        {
            "uid": [b"a"],
            "cn": [b"First", b"Second"],
            "mail": [b"one@example.com"],
            "telephoneNumber": [b"1", b"2"],
            "empty": [],
        },
        groups=[],
    )
    assert raw["uid"] == "a"
    assert raw["cn"] == ["First", "Second"]
    assert raw["mail"] == ["one@example.com"]
    assert raw["telephoneNumber"] == ["1", "2"]
    assert "empty" not in raw
    assert raw["groups"] == []


def test_attribute_names_case_insensitive_and_canonicalised() -> None:
    raw = entry_to_raw_profile(
        "cn=x,dc=corp",
        {
            "objectguid": [SEQ_GUID_BYTES],
            "OBJECTSID": [ADMINS_SID_BYTES],
            "samaccountname": [b"jdoe"],
            "MAIL": [b"a@example.com"],
            "Mail": [b"b@example.com"],
            "extensionAttribute1": [b"cc-42"],
        },
        groups=None,
    )
    assert raw["objectGUID"] == SEQ_GUID
    assert raw["objectSid"] == ADMINS_SID
    assert raw["sAMAccountName"] == "jdoe"
    assert sorted(raw["mail"]) == ["a@example.com", "b@example.com"]
    assert raw["extensionAttribute1"] == "cc-42"  # unknown names keep the server spelling
    assert "objectguid" not in raw and "MAIL" not in raw


def test_reserved_keys_cannot_be_overridden_by_attributes() -> None:
    raw = entry_to_raw_profile(
        "cn=x,ou=Real,dc=corp",
        {"DN": [b"cn=evil"], "groups": [b"Domain Admins"], "organizationUnits": [b"Fake"]},
        groups=None,
    )
    assert raw == {"dn": "cn=x,ou=Real,dc=corp", "organizationUnits": ["Real"]}


def test_groups_are_copied() -> None:
    groups = ["A"]
    raw = entry_to_raw_profile("cn=x", {}, groups=groups)
    groups.append("B")
    assert raw["groups"] == ["A"]


def test_groups_default_is_absent() -> None:
    assert "groups" not in entry_to_raw_profile("cn=x", {})


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"objectGUID": [b"\x01" * 15]}, "malformed objectGUID on 'cn=x'.*got 15"),
        ({"objectGUID": [SEQ_GUID_BYTES, AD_GUID_BYTES]}, "objectGUID of 'cn=x'.*exactly one"),
        ({"objectSid": [b"\x01\x02"]}, "malformed objectSid on 'cn=x'"),
        ({"objectSid": [ADMINS_SID_BYTES] * 2}, "objectSid of 'cn=x'.*exactly one"),
        (
            {"objectGUID": [AD_GUID.encode()]},  # text GUID where binary is expected
            "malformed objectGUID",
        ),
    ],
)
def test_malformed_identifiers_raise(attrs: RawEntry, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        entry_to_raw_profile("cn=x", attrs, groups=None)


def test_malformed_dn_raises() -> None:
    with pytest.raises(ValueError, match="malformed DN"):
        entry_to_raw_profile("not a dn", {"cn": [b"x"]}, groups=None)


def test_entry_to_raw_profile_does_not_mutate_input() -> None:
    entry = _ad_entry()
    before = {k: list(v) for k, v in entry.items()}
    entry_to_raw_profile(AD_DN, entry, groups=None)
    assert entry == before


# --------------------------------------------------------------------------- default profile


def test_default_profile_ad() -> None:
    raw = entry_to_raw_profile(AD_DN, _ad_entry(), groups=["Staff", "Everyone, All"])
    profile = default_profile(raw)
    _assert_clean(profile)
    assert None not in _walk(profile)
    assert profile == {
        "id": AD_GUID,
        "displayName": "Jane Doe (Zürich)",
        "name": {"familyName": "Doe", "givenName": "Jane"},
        "nickname": "jdoe",
        "groups": ["Staff", "Everyone, All"],
        "emails": [{"value": "jane.doe@example.com"}],
        "dn": AD_DN,
        "distinguishedName": AD_DN,
        "description": "Line one\nline two\tand a tab",
        "telephoneNumber": "+41 44 000 00 00",
        "department": "Sales",
        "company": "Example",
        "sAMAccountName": "jdoe",
        "sAMAccountType": "805306368",
        "userPrincipalName": "jdoe@corp.example.com",
        "title": "Manager",
        "manager": "CN=Boss,OU=Staff,DC=corp,DC=example,DC=com",
        "objectSid": DOMAIN_USER_SID,
        "employeeID": "E-1001",
        "organizationUnits": ["Sales, EMEA", "Zürich"],
    }


def test_default_profile_openldap() -> None:
    dn = "uid=jdoe,ou=people,ou=Zürich\\, CH,dc=example,dc=org"
    entry: RawEntry = {
        "objectClass": [b"inetOrgPerson", b"posixAccount"],
        "uid": [b"jdoe"],
        "cn": [b"Jane Doe"],
        "sn": [b"Doe"],
        "mail": [b"jane@example.org", b"j.doe@example.org"],
        "st": [b"ZH"],
        "postalCode": [b"8000"],
        "co": [b"Switzerland"],
        "employeeNumber": [b"42"],
        "userPassword": [b"{SSHA}abc"],
        "jpegPhoto": [b"\xff\xd8\xff\xe0"],
    }
    profile = default_profile(entry_to_raw_profile(dn, entry, groups=["devs"]))
    _assert_clean(profile)
    assert profile == {
        "id": "jdoe",
        "name": {"familyName": "Doe"},
        "nickname": "jdoe",
        "groups": ["devs"],
        "emails": [{"value": "jane@example.org"}, {"value": "j.doe@example.org"}],
        "dn": dn,
        "st": "ZH",
        "postalCode": "8000",
        "co": "Switzerland",
        "uid": "jdoe",
        "employeeNumber": "42",
        "organizationUnits": ["people", "Zürich, CH"],
    }


def test_default_profile_falls_back_to_cn() -> None:
    profile = default_profile(entry_to_raw_profile("cn=svc,dc=x", {"cn": [b"svc"]}))
    assert profile == {"id": "svc", "nickname": "svc", "dn": "cn=svc,dc=x", "organizationUnits": []}


def test_default_profile_uses_first_of_multi_valued_identifiers() -> None:
    raw = entry_to_raw_profile("cn=a,dc=x", {"uid": [b"", b"second"], "cn": [b"a", b"b"]})
    profile = default_profile(raw)
    assert profile["id"] == "second"
    assert profile["nickname"] == "second"


def test_default_profile_precedence() -> None:
    raw = {
        "objectGUID": SEQ_GUID,
        "uid": "u",
        "cn": "c",
        "sAMAccountName": "s",
        "dn": "cn=c,dc=x",
    }
    assert default_profile(raw)["id"] == SEQ_GUID
    assert default_profile(raw)["nickname"] == "s"
    del raw["objectGUID"], raw["sAMAccountName"]
    assert default_profile(raw)["id"] == "u"
    assert default_profile(raw)["nickname"] == "u"
    del raw["uid"]
    assert default_profile(raw)["id"] == "c"
    assert default_profile(raw)["nickname"] == "c"


def test_default_profile_case_insensitive_hand_built_raw() -> None:
    raw = {
        "OBJECTGUID": SEQ_GUID,
        "samaccountname": "jdoe",
        "MAIL": "single@example.com",
        "givenname": "Jane",
        "DN": "CN=x,OU=A\\2CB,DC=corp",
    }
    profile = default_profile(raw)
    assert profile["id"] == SEQ_GUID
    assert profile["nickname"] == "jdoe"
    assert profile["sAMAccountName"] == "jdoe"
    assert profile["emails"] == [{"value": "single@example.com"}]
    assert profile["name"] == {"givenName": "Jane"}
    assert profile["dn"] == "CN=x,OU=A\\2CB,DC=corp"
    assert profile["organizationUnits"] == ["A,B"]  # derived from the DN when absent


def test_default_profile_omits_absent_keys() -> None:
    profile = default_profile({"cn": "x", "sn": None, "mail": [], "title": None})
    assert profile == {"id": "x", "nickname": "x"}
    assert "name" not in profile and "emails" not in profile


def test_default_profile_without_any_identifier_has_no_id() -> None:
    assert "id" not in default_profile({"displayName": "Nobody"})


def test_default_profile_shares_no_mutable_state_with_raw() -> None:
    raw = entry_to_raw_profile(AD_DN, _ad_entry(), groups=["Staff"])
    profile = default_profile(raw)
    profile["groups"].append("Hacked")
    profile["organizationUnits"].clear()
    assert raw["groups"] == ["Staff"]
    assert raw["organizationUnits"] == ["Sales, EMEA", "Zürich"]


def test_default_profile_does_not_copy_binary_or_unknown_attributes() -> None:
    raw = entry_to_raw_profile(AD_DN, _ad_entry(), groups=None)
    profile = default_profile(raw)
    for name in ("thumbnailPhoto", "jpegPhoto", "userCertificate", "memberOf", "whenCreated"):
        assert name not in profile


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "cn",
                "uid",
                "mail",
                "sn",
                "givenName",
                "displayName",
                "objectClass",
                "description",
                "custom",
                "thumbnailPhoto",
                "userPassword",
                "logonHours",
            ]
        ),
        st.lists(st.binary(max_size=20), max_size=3),
    ),
    st.none() | st.lists(st.text(max_size=5), max_size=3),
)
def test_every_decoded_profile_is_json(attrs: RawEntry, groups: list[str] | None) -> None:
    raw = entry_to_raw_profile("cn=x,ou=y,dc=z", attrs, groups=groups)
    _assert_clean(raw)
    profile = default_profile(raw)
    _assert_clean(profile)
    assert None not in _walk(profile)
    assert "userPassword" not in raw and "logonHours" not in raw


# --------------------------------------------------------------------------- pluggable mapper


def _write(tmp_path: Path, body: str, name: str = "mapper.py") -> str:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return str(path)


def _raw() -> dict[str, Any]:
    entry = _ad_entry()
    entry["extensionAttribute1"] = [b"CC-42"]
    return entry_to_raw_profile(AD_DN, entry, groups=["Staff"])


def test_load_mapper_none_is_default() -> None:
    assert load_mapper(None) is default_profile


def test_custom_mapper_extends_default(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "def map_profile(raw, default):\n"
        "    profile = default(raw)\n"
        "    profile['costCenter'] = raw.get('extensionAttribute1')\n"
        "    profile['email_verified'] = True\n"
        "    profile['hasPhoto'] = 'thumbnailPhoto' in raw\n"
        "    del profile['objectSid']\n"
        "    return profile\n",
    )
    mapper = load_mapper(path)
    raw = _raw()
    profile = mapper(raw)
    expected = default_profile(raw)
    del expected["objectSid"]
    expected.update(costCenter="CC-42", email_verified=True, hasPhoto=True)
    assert profile == expected
    _assert_clean(profile)


def test_custom_mapper_gets_a_copy_of_raw(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "def map_profile(raw, default):\n"
        "    raw['groups'].append('Injected')\n"
        "    raw.clear()\n"
        "    return {'id': 'x'}\n",
    )
    raw = _raw()
    load_mapper(path)(raw)
    assert raw["groups"] == ["Staff"]
    assert raw["objectGUID"] == AD_GUID


def test_custom_mapper_result_is_normalised_copy(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "STATE = {'tags': ['a']}\n"
        "def map_profile(raw, default):\n"
        "    return {'id': 'x', 'tags': STATE['tags'], 'pair': (1, 2), 3: 'three'}\n",
    )
    mapper = load_mapper(path)
    profile = mapper({})
    assert profile == {"id": "x", "tags": ["a"], "pair": [1, 2], "3": "three"}
    profile["tags"].append("b")
    assert mapper({})["tags"] == ["a"]


def test_custom_mapper_any_extension_and_helpers(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "import dataclasses\n"
        "@dataclasses.dataclass\n"
        "class Extra:\n"
        "    value: str\n"
        "def map_profile(raw, default):\n"
        "    return {'id': raw['objectGUID'], 'extra': dataclasses.asdict(Extra('v'))}\n",
        name="custom-mapper.conf",
    )
    assert load_mapper(path)(_raw()) == {"id": AD_GUID, "extra": {"value": "v"}}


def test_two_mapper_files_are_independent(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _write(tmp_path / "a", "def map_profile(raw, default):\n    return {'id': 'a'}\n")
    second = _write(tmp_path / "b", "def map_profile(raw, default):\n    return {'id': 'b'}\n")
    assert load_mapper(first)({}) == {"id": "a"}
    assert load_mapper(second)({}) == {"id": "b"}


def test_mapper_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.py")
    with pytest.raises(ValueError, match="does not exist") as info:
        load_mapper(path)
    assert path in str(info.value)


def test_mapper_path_is_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist or is not a file") as info:
        load_mapper(str(tmp_path))
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize(
    "body",
    [
        "x = 1\n",
        "",
        "def mapProfile(raw, default):\n    return default(raw)\n",
        "map_profile = {'id': 'x'}\n",
        "map_profile = None\n",
    ],
)
def test_mapper_without_callable_map_profile(tmp_path: Path, body: str) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(ValueError, match="defines no callable map_profile") as info:
        load_mapper(path)
    assert path in str(info.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("def map_profile(raw, default)\n    return raw\n", "SyntaxError"),
        ("raise RuntimeError('boom at import')\n", "RuntimeError: boom at import"),
        ("import module_that_does_not_exist_xyz\n", "ModuleNotFoundError"),
    ],
)
def test_mapper_that_fails_to_import(tmp_path: Path, body: str, message: str) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(ValueError, match="failed to import") as info:
        load_mapper(path)
    assert path in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("returns", "message"),
    [
        ("None", "must return a dict, got NoneType"),
        ("[raw]", "must return a dict, got list"),
        ("'id'", "must return a dict, got str"),
        ("{'id': 'x', 'photo': b'\\xff'}", "not JSON-serialisable"),
        ("{'id': 'x', 'tags': {'a'}}", "not JSON-serialisable"),
        ("{'id': 'x', 'score': float('nan')}", "not JSON-serialisable"),
        ("{'id': 'x', (1, 2): 'tuple key'}", "not JSON-serialisable"),
        ("{'id': 'x', 'when': __import__('datetime').date(2024, 1, 1)}", "not JSON-serialisable"),
        ("{'displayName': 'no id'}", "non-empty string 'id', got None"),
        ("{'id': ''}", "non-empty string 'id', got ''"),
        ("{'id': '   '}", "non-empty string 'id'"),
        ("{'id': None}", "non-empty string 'id', got None"),
        ("{'id': 42}", "non-empty string 'id', got 42"),
        ("{'id': ['a']}", "non-empty string 'id'"),
    ],
)
def test_mapper_returning_invalid_profile(tmp_path: Path, returns: str, message: str) -> None:
    path = _write(tmp_path, f"def map_profile(raw, default):\n    return {returns}\n")
    mapper = load_mapper(path)
    with pytest.raises(ValueError, match="profile mapper file") as info:
        mapper(_raw())
    assert path in str(info.value)
    assert message in str(info.value)


def test_mapper_returning_circular_structure(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "def map_profile(raw, default):\n    p = {'id': 'x'}\n    p['self'] = p\n    return p\n",
    )
    with pytest.raises(ValueError, match="not JSON-serialisable") as info:
        load_mapper(path)({})
    assert path in str(info.value)


def test_mapper_that_raises(tmp_path: Path) -> None:
    path = _write(tmp_path, "def map_profile(raw, default):\n    return raw['missing']\n")
    with pytest.raises(ValueError, match="map_profile raised KeyError") as info:
        load_mapper(path)({})
    assert path in str(info.value)
    assert isinstance(info.value.__cause__, KeyError)


def test_mapper_with_wrong_signature(tmp_path: Path) -> None:
    path = _write(tmp_path, "def map_profile(raw):\n    return {'id': 'x'}\n")
    with pytest.raises(ValueError, match="map_profile raised TypeError") as info:
        load_mapper(path)({})
    assert path in str(info.value)


def test_default_without_id_fails_through_custom_mapper(tmp_path: Path) -> None:
    path = _write(tmp_path, "def map_profile(raw, default):\n    return default(raw)\n")
    with pytest.raises(ValueError, match="non-empty string 'id'"):
        load_mapper(path)({"displayName": "Nobody"})


def test_validate_profile_directly() -> None:
    assert validate_profile({"id": "x", "n": math.pi}) == {"id": "x", "n": math.pi}
    with pytest.raises(ValueError, match=r"^custom source: "):
        validate_profile({}, "custom source")


def test_profile_attributes_hold_what_the_default_mapper_reads_and_no_secret() -> None:
    asked = {a.lower() for a in profiles.PROFILE_ATTRIBUTES}
    read = {"objectguid", "uid", "cn", "displayname", "sn", "givenname", "samaccountname", "mail"}
    assert read | {a.lower() for a in profiles._DEFAULT_COPIED} <= asked
    assert not asked & {a.lower() for a in profiles.SECRET_ATTRIBUTES}
    assert "*" not in asked and "+" not in asked


def test_load_profile_mapper_returns_the_declared_attributes(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text(
        'ATTRIBUTES = ("costCenter", "extensionAttribute1", "costCenter", "1.2.840.113556.1.4.1")\n'
        "def map_profile(raw, default):\n    return default(raw)\n"
    )
    _, declared = profiles.load_profile_mapper(str(path))
    assert declared == ("costCenter", "extensionAttribute1", "1.2.840.113556.1.4.1")
    assert profiles.load_profile_mapper(None) == (default_profile, ())


def test_text_values_with_control_characters_are_dropped_and_others_kept() -> None:
    """Every BMP character, alone and inside text: dropped exactly for C0 controls other than
    tab, LF and CR, and DEL (the printable fast path agrees with the rule)."""
    from connector.profiles import _decode_text

    dropped = {c for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)} | {0x7F}
    for code in range(0x10000):
        if 0xD800 <= code <= 0xDFFF:
            continue  # surrogates are not UTF-8
        for text in (chr(code), f"a{chr(code)}b"):
            got = _decode_text(text.encode("utf-8"))
            assert got == (None if code in dropped else text), hex(code)
