"""Groups from the Kerberos PAC: tickets from Samba's KDC, accepted in-process with
python-gssapi; checked against LDAP (the in-chain rule) and against Samba's own PAC parser."""

import json
import subprocess

import gssapi
import ldap
import pytest
from gssapi.raw import acquire_cred_with_password, ext_rfc6680
from ldap.filter import escape_filter_chars

from connector.kerberos.pac import (
    PacFormatError,
    logon_info_of,
    parse_logon_info,
    sid_bytes,
    sid_text,
)
from connector.profiles import decode_sid

KRB5 = gssapi.OID.from_int_seq("1.2.840.113554.1.2.2")

_SAMBA_PARSE = r"""
import json, sys
from samba.ndr import ndr_unpack
from samba.dcerpc import krb5pac
pac = ndr_unpack(krb5pac.PAC_DATA, sys.stdin.buffer.read())
for b in pac.buffers:
    if b.type == krb5pac.PAC_TYPE_LOGON_INFO:
        base = b.info.info.info3.base
        dom = str(base.domain_sid)
        info3 = b.info.info.info3
        print(json.dumps({
            "user": "%s-%d" % (dom, base.rid),
            "primary": "%s-%d" % (dom, base.primary_gid),
            "groups": ["%s-%d" % (dom, g.rid) for g in base.groups.rids or []],
            "extra": [str(s.sid) for s in (info3.sids or [])],
        }))
"""


@pytest.fixture
def ad_krb(samba_ad, monkeypatch, tmp_path):
    monkeypatch.setenv("KRB5_CONFIG", samba_ad.krb5_conf)
    monkeypatch.setenv("KRB5CCNAME", f"MEMORY:pac-{id(tmp_path)}")
    monkeypatch.setenv("KRB5RCACHEDIR", str(tmp_path))
    monkeypatch.setenv("KRB5_KTNAME", "FILE:/nonexistent/never-used.keytab")
    return samba_ad


def accepted(samba_ad, user):
    """An accepted context for ``user``'s ticket to HTTP/localhost (no ccache shared)."""
    name = gssapi.Name(f"{user}@{samba_ad.realm}", gssapi.NameType.kerberos_principal)
    creds = acquire_cred_with_password(
        name, samba_ad.users[user].encode(), usage="initiate", mechs=[KRB5]
    ).creds
    target = gssapi.Name("HTTP@localhost", gssapi.NameType.hostbased_service)
    client = gssapi.SecurityContext(name=target, creds=creds, usage="initiate", mech=KRB5)
    acceptor = gssapi.Credentials(usage="accept", store={"keytab": samba_ad.keytab})
    server = gssapi.SecurityContext(creds=acceptor, usage="accept")
    server.step(client.step())
    assert server.complete
    return server


def in_chain_sids(samba_ad, user):
    conn = samba_ad.connect(samba_ad.admin_dn, samba_ad.admin_pw)
    try:
        (dn, attrs), *_ = conn.search_s(
            samba_ad.base, ldap.SCOPE_SUBTREE, f"(sAMAccountName={user})", ["objectSid"]
        )
        groups = conn.search_s(
            samba_ad.base,
            ldap.SCOPE_SUBTREE,
            f"(member:1.2.840.113556.1.4.1941:={escape_filter_chars(dn)})",
            ["objectSid"],
        )
    finally:
        conn.unbind_s()
    return decode_sid(attrs["objectSid"][0]), {
        decode_sid(a["objectSid"][0]) for d, a in groups if d
    }


@pytest.mark.parametrize("user", ["dave", "bob", "alice"])
def test_pac_groups_equal_the_in_chain_groups(ad_krb, user):
    info = logon_info_of(accepted(ad_krb, user).initiator_name)
    assert info is not None
    user_sid, groups = in_chain_sids(ad_krb, user)
    assert info.user_sid == user_sid
    assert info.primary_group_sid == user_sid.rsplit("-", 1)[0] + "-513"  # Domain Users
    # the KDC flattens nested global groups: the PAC's domain groups ARE the in-chain ones
    assert set(info.group_sids) - {info.primary_group_sid} == groups
    assert info.primary_group_sid in info.all_group_sids


def test_parser_agrees_with_sambas_own(ad_krb):
    ctx = accepted(ad_krb, "dave")
    whole = ext_rfc6680.get_name_attribute(ctx.initiator_name, b"urn:mspac:")
    assert whole.authenticated
    r = subprocess.run(
        ["/usr/bin/python3", "-c", _SAMBA_PARSE],
        input=bytes(whole.values[0]),
        capture_output=True,
        check=True,
    )
    samba = json.loads(r.stdout)
    ours = logon_info_of(ctx.initiator_name)
    assert ours is not None
    assert ours.user_sid == samba["user"]
    assert ours.primary_group_sid == samba["primary"]
    assert list(ours.group_sids) == samba["groups"]
    assert list(ours.extra_sids) == samba["extra"] and samba["extra"]  # e.g. S-1-18-1


def test_truncated_or_damaged_logon_info_is_refused(ad_krb):
    ctx = accepted(ad_krb, "dave")
    blob = bytes(
        ext_rfc6680.get_name_attribute(ctx.initiator_name, b"urn:mspac:logon-info").values[0]
    )
    assert parse_logon_info(blob).group_sids
    for cut in (0, 7, 20, 100, len(blob) // 2, len(blob) - 1):
        with pytest.raises(PacFormatError):
            parse_logon_info(blob[:cut])
    with pytest.raises(PacFormatError):
        parse_logon_info(b"\x01\x00" + blob[2:])  # big-endian: not what AD sends


def test_sid_round_trip():
    text = "S-1-5-21-1004336348-1177238915-682003330-512"
    assert sid_text(sid_bytes(text)) == text
    assert decode_sid(sid_bytes(text)) == text
    for bad in ("S-1", "X-1-5", "S-1-5-x", "S-1-5-" + "-".join(["1"] * 16), "S-1-5-4294967296"):
        with pytest.raises(PacFormatError):
            sid_bytes(bad)


@pytest.fixture
def pac_directory(samba_ad, tmp_path):
    from configs import ad_config

    from connector.directory import Directory
    from connector.settings import load_settings

    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(ad_config(samba_ad, GROUPS_SOURCE="pac", KERBEROS_REALMS=[samba_ad.realm]))
    )
    directory = Directory(load_settings(path, environ={}))
    yield directory
    directory.close()


@pytest.mark.parametrize("user", ["dave", "bob", "carol"])
def test_profile_groups_from_the_pac_equal_ldaps_and_a_warm_cache_asks_nothing(
    ad_krb, pac_directory, user
):
    info = logon_info_of(accepted(ad_krb, user).initiator_name)
    from_ldap = pac_directory.get_profile(user)["groups"]
    assert sorted(from_ldap) == sorted(ad_krb.expected_groups[user])  # the oracle
    strategy_queries = pac_directory.strategy.queries
    cold = pac_directory.kerberos_profile(user, ad_krb.realm, logon_info=info)
    assert cold["groups"] == from_ldap
    assert pac_directory.sids.queries == 1  # one search for the whole batch
    assert pac_directory.strategy.queries == strategy_queries  # no group strategy query
    pac_directory.cache.clear()  # not even the per-user group cache helps below
    warm = pac_directory.kerberos_profile(user, ad_krb.realm, logon_info=info)
    assert warm == cold
    assert pac_directory.sids.queries == 1
    assert pac_directory.strategy.queries == strategy_queries


def test_primary_group_from_the_pac_when_asked(ad_krb, samba_ad, tmp_path):
    from configs import ad_config

    from connector.directory import Directory
    from connector.settings import load_settings

    path = tmp_path / "config.json"
    cfg = ad_config(
        samba_ad, GROUPS_SOURCE="pac", GROUPS_INCLUDE_PRIMARY=True, KERBEROS_REALMS=[samba_ad.realm]
    )
    path.write_text(json.dumps(cfg))
    directory = Directory(load_settings(path, environ={}))
    try:
        info = logon_info_of(accepted(ad_krb, "alice").initiator_name)
        profile = directory.kerberos_profile("alice", samba_ad.realm, logon_info=info)
        assert sorted(profile["groups"]) == sorted(directory.get_profile("alice")["groups"])
        assert "Domain Users" in profile["groups"]
    finally:
        directory.close()


def test_someone_elses_pac_is_not_used(ad_krb, pac_directory):
    bobs = logon_info_of(accepted(ad_krb, "bob").initiator_name)
    profile = pac_directory.kerberos_profile("dave", ad_krb.realm, logon_info=bobs)
    assert sorted(profile["groups"]) == sorted(ad_krb.expected_groups["dave"])
    assert pac_directory.sids.queries == 0


def test_no_pac_falls_back_to_ldap(ad_krb, pac_directory):
    profile = pac_directory.kerberos_profile("carol", ad_krb.realm, logon_info=None)
    assert sorted(profile["groups"]) == sorted(ad_krb.expected_groups["carol"])
    assert pac_directory.sids.queries == 0 and pac_directory.strategy.queries == 1


def test_sid_filter_escapes_every_byte():
    from connector.directory.sids import sid_filter

    flt = sid_filter(["S-1-5-21-1-2-3-512", "S-1-18-1"])
    assert flt.startswith("(|(objectSid=\\01\\05\\00\\00\\00\\00\\00\\05\\15\\00")
    assert flt.count("(objectSid=") == 2
    assert "*" not in flt and flt.count("(") == flt.count(")")


def test_a_group_added_shows_with_the_next_ticket(ad_krb, pac_directory):
    team = f"CN=Team-Core,CN=Users,{ad_krb.base}"
    alice = pac_directory.find_user("alice").dn
    before = pac_directory.kerberos_profile(
        "alice", ad_krb.realm, logon_info=logon_info_of(accepted(ad_krb, "alice").initiator_name)
    )["groups"]
    assert "Team-Core" not in before
    admin = ad_krb.connect(ad_krb.admin_dn, ad_krb.admin_pw)
    admin.modify_s(team, [(ldap.MOD_ADD, "member", [alice.encode()])])
    try:
        after = pac_directory.kerberos_profile(
            "alice",
            ad_krb.realm,
            logon_info=logon_info_of(accepted(ad_krb, "alice").initiator_name),
        )["groups"]
        # Team-Core is in Team-Dev: the KDC flattens, so both arrive with the new ticket
        assert sorted(after) == sorted([*before, "Team-Core", "Team-Dev"])
        assert pac_directory.sids.queries == 2  # only the new SIDs were looked up
    finally:
        admin.modify_s(team, [(ldap.MOD_DELETE, "member", [alice.encode()])])
        admin.unbind_s()
