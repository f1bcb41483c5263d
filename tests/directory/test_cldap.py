"""The CLDAP netlogon ping's wire formats: the request, the reply's BER, and the
NETLOGON_SAM_LOGON_RESPONSE_EX with its compressed names; malformed input of every length."""

import random
import struct

import pytest

from connector.directory.cldap import (
    NetlogonFormatError,
    _tlv,
    parse_netlogon,
    reply_netlogon,
    request,
)

GUID = bytes(range(16))


def labels(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\x00"


def pointer(offset: int) -> bytes:
    return bytes([0xC0 | offset >> 8, offset & 0xFF])


def response_ex(opcode: int = 23) -> bytes:
    """forest; domain = a pointer to the forest; dc1 + a pointer; AD; DC1; no user;
    the DC's site; the client's site = a pointer to the DC's site."""
    blob = struct.pack("<HHI", opcode, 0, 0x3F3FD) + GUID
    forest_at = len(blob)
    blob += labels("ad.example.test")
    blob += pointer(forest_at)
    blob += b"\x03dc1" + pointer(forest_at)
    blob += labels("AD") + labels("DC1") + b"\x00"
    site_at = len(blob)
    blob += labels("Default-First-Site-Name")
    blob += pointer(site_at)
    return blob + struct.pack("<IHH", 6, 0xFFFF, 0xFFFF)  # NtVersion, tokens


def ldap_reply(msgid: int, blob: bytes, attr: bytes = b"netlogon") -> bytes:
    def integer(v: int) -> bytes:
        return _tlv(0x02, v.to_bytes(4, "big"))

    attribute = _tlv(0x30, _tlv(0x04, attr) + _tlv(0x31, _tlv(0x04, blob)))
    entry = _tlv(0x64, _tlv(0x04, b"") + _tlv(0x30, attribute))
    done = _tlv(0x65, _tlv(0x0A, b"\x00") + _tlv(0x04, b"") + _tlv(0x04, b""))
    return _tlv(0x30, integer(msgid) + entry) + _tlv(0x30, integer(msgid) + done)


def test_the_names_compressed_or_not():
    got = parse_netlogon(response_ex())
    assert (got.forest, got.domain, got.dc_host) == (
        "ad.example.test",
        "ad.example.test",
        "dc1.ad.example.test",
    )
    assert (got.netbios_domain, got.netbios_host, got.user) == ("AD", "DC1", "")
    assert got.dc_site == got.client_site == "Default-First-Site-Name"
    assert got.flags == 0x3F3FD and got.domain_guid == GUID


def test_user_unknown_has_the_same_layout_and_other_opcodes_are_refused():
    assert parse_netlogon(response_ex(25)).client_site == "Default-First-Site-Name"
    with pytest.raises(NetlogonFormatError, match="opcode 19"):
        parse_netlogon(response_ex(19))


def test_the_request_is_one_ldap_search_for_netlogon():
    raw = request("ad.example.test", 0x1234)
    assert raw[0] == 0x30 and raw[1] == len(raw) - 2
    assert b"\x02\x02\x12\x34\x63" in raw  # message 0x1234, a searchRequest
    assert _tlv(0x04, b"DnsDomain") + _tlv(0x04, b"ad.example.test") in raw
    assert _tlv(0x04, b"NtVer") + _tlv(0x04, b"\x06\x00\x00\x00") in raw
    assert raw.endswith(_tlv(0x30, _tlv(0x04, b"Netlogon")))
    long_domain = "x" * 300 + ".test"  # long-form lengths
    assert _tlv(0x04, long_domain.encode()) in request(long_domain, 1)


def test_the_reply_gives_the_netlogon_value_of_its_message_only():
    blob = response_ex()
    assert reply_netlogon(ldap_reply(77, blob), 77) == blob
    assert reply_netlogon(ldap_reply(77, blob, attr=b"Netlogon"), 77) == blob
    with pytest.raises(NetlogonFormatError, match="not 78"):
        reply_netlogon(ldap_reply(77, blob), 78)
    with pytest.raises(NetlogonFormatError, match="without a Netlogon"):
        reply_netlogon(ldap_reply(77, blob, attr=b"other"), 77)


def test_pointer_loops_end():
    blob = struct.pack("<HHI", 23, 0, 0) + GUID + pointer(24)
    with pytest.raises(NetlogonFormatError, match="loop"):
        parse_netlogon(blob)


def test_every_cut_and_change_is_a_format_error_never_a_crash():
    reply = ldap_reply(5, response_ex())
    entry_only = reply[: 2 + reply[1]]  # the search entry's message, without searchResDone
    assert parse_netlogon(reply_netlogon(entry_only, 5)).client_site
    for n in range(len(reply)):
        if n != len(entry_only):
            with pytest.raises(NetlogonFormatError):
                parse_netlogon(reply_netlogon(reply[:n], 5))
    rng = random.Random(16)
    for _ in range(3000):
        changed = bytearray(reply)
        for _ in range(rng.randint(1, 4)):
            changed[rng.randrange(len(changed))] = rng.randrange(256)
        try:
            parse_netlogon(reply_netlogon(bytes(changed), 5))
        except NetlogonFormatError:
            pass
