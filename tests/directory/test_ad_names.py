"""The names people type, against a real Active Directory (Samba 4 as a domain controller):
``alice``, ``ADEX\\alice``, her UPN, an alternate UPN suffix, an e-mail address."""

import ldap
import pytest

from connector import errors
from connector.directory.names import parse, unescape

ALT_SUFFIX = "alt.example.test"
NINA_PW = "Nina-Passw0rd!"
NINA_MAIL = "nina.names@mail.example.test"
NINA_ALIAS = "nn@alias.example.test"
SHARED_MAIL = "shared@mail.example.test"


def _partitions(conn):
    root = conn.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["configurationNamingContext"])
    return "CN=Partitions," + root[0][1]["configurationNamingContext"][0].decode()


def _add_user(conn, base, sam, attrs):
    dn = f"CN={sam},CN=Users,{base}"
    entry = {
        "objectClass": [b"top", b"person", b"organizationalPerson", b"user"],
        "sAMAccountName": [sam.encode()],
        "unicodePwd": [f'"{NINA_PW}"'.encode("utf-16-le")],
        "userAccountControl": [b"512"],
        **{k: [v.encode() for v in vs] for k, vs in attrs.items()},
    }
    conn.add_s(dn, list(entry.items()))
    return dn


@pytest.fixture(scope="module")
def names_data(samba_ad):
    """An alternate UPN suffix in the forest; nina, whose UPN uses it and who has an e-mail
    address and a proxy address; two users sharing one address."""
    conn = samba_ad.connect(samba_ad.admin_dn, samba_ad.admin_pw)
    partitions = _partitions(conn)
    conn.modify_s(partitions, [(ldap.MOD_ADD, "uPNSuffixes", [ALT_SUFFIX.encode()])])
    added = []
    try:
        added.append(
            _add_user(
                conn,
                samba_ad.base,
                "nina",
                {
                    "userPrincipalName": [f"nina@{ALT_SUFFIX}"],
                    "mail": [NINA_MAIL],
                    "proxyAddresses": [f"SMTP:{NINA_MAIL}", f"smtp:{NINA_ALIAS}"],
                },
            )
        )
        for twin in ("twin1", "twin2"):
            added.append(_add_user(conn, samba_ad.base, twin, {"mail": [SHARED_MAIL]}))
        yield
    finally:
        for dn in added:
            conn.delete_s(dn)
        conn.modify_s(partitions, [(ldap.MOD_DELETE, "uPNSuffixes", [ALT_SUFFIX.encode()])])
        conn.unbind_s()


def test_parse_forms():
    assert parse("alice").kind == "plain"
    assert parse("ADEX\\alice") == parse("ADEX\\alice").__class__(
        "downlevel", "ADEX\\alice", "alice", "ADEX"
    )
    assert parse("a@b.example").user == "a" and parse("a@b.example").domain == "b.example"
    for odd in ("\\alice", "ADEX\\", "@example", "alice@", "A\\b\\c", "A\\b@c"):
        assert parse(odd).kind == "plain", odd
    assert unescape("ADEX\\5calice") == "ADEX\\alice"
    assert unescape("j\\c3\\a9r\\c3\\b4me") == "jérôme"


@pytest.mark.parametrize(
    "typed",
    ["alice", "ADEX\\alice", "adex\\ALICE", "alice@ad.example.test", "ALICE@AD.EXAMPLE.TEST"],
)
def test_alice_by_every_name_is_the_same_person(ad_dir, samba_ad, typed):
    reference = ad_dir.authenticate("alice", samba_ad.users["alice"])
    assert ad_dir.authenticate(typed, samba_ad.users["alice"]) == reference
    assert reference["nickname"] == "alice"


def test_hub_escaped_downlevel_name(ad_dir, samba_ad):
    profile = ad_dir.authenticate("ADEX\\5calice", samba_ad.users["alice"], escaped=True)
    assert profile["nickname"] == "alice"


@pytest.mark.parametrize("typed", ["OTHER\\alice", "ADEXX\\alice", "AD\\alice"])
def test_other_domain_finds_nobody(ad_dir, samba_ad, typed):
    with pytest.raises(errors.WrongUsername):
        ad_dir.authenticate(typed, samba_ad.users["alice"])


def test_wrong_password_by_upn_is_a_wrong_password(ad_dir):
    with pytest.raises(errors.WrongPassword):
        ad_dir.authenticate("alice@ad.example.test", "Wrong-Passw0rd!")


def test_forest_names_read_from_partitions(ad_dir, names_data):
    forest = ad_dir.names.forest
    assert forest.domain_nc("adex").lower() == "dc=ad,dc=example,dc=test"
    assert {"ad.example.test", ALT_SUFFIX} <= forest.upn_suffixes


@pytest.mark.parametrize("email", [False, True])
def test_alternate_upn_suffix(ad_with, names_data, email):
    directory = ad_with(LOGIN_BY_EMAIL=email)
    profile = directory.authenticate(f"nina@{ALT_SUFFIX}", NINA_PW)
    assert profile["sAMAccountName"] == "nina"
    assert directory.authenticate("ADEX\\nina", NINA_PW) == profile
    assert directory.authenticate("nina", NINA_PW) == profile


def test_email_only_when_asked(ad_with, names_data):
    off = ad_with()
    for address in (NINA_MAIL, NINA_ALIAS):
        with pytest.raises(errors.WrongUsername):
            off.authenticate(address, NINA_PW)
    on = ad_with(LOGIN_BY_EMAIL=True)
    reference = on.authenticate("nina", NINA_PW)
    assert on.authenticate(NINA_MAIL, NINA_PW) == reference
    assert on.authenticate(NINA_MAIL.upper(), NINA_PW) == reference
    assert on.authenticate(NINA_ALIAS, NINA_PW) == reference  # a proxy address


def test_ambiguous_email_signs_nobody_in(ad_with, names_data):
    directory = ad_with(LOGIN_BY_EMAIL=True)
    with pytest.raises(errors.WrongUsername) as info:
        directory.authenticate(SHARED_MAIL, NINA_PW)
    assert "several" in str(info.value)
    # each twin still signs in by their own name
    assert directory.authenticate("twin1", NINA_PW)["sAMAccountName"] == "twin1"


def test_kerberos_mapping_keeps_its_own_filter(ad_dir, samba_ad):
    # a name mapped from a principal is never read as DOMAIN\user
    with pytest.raises(errors.WrongUsername):
        ad_dir.find_user("ADEX\\alice", typed=False)
    assert ad_dir.find_user("alice", typed=False).first("sAMAccountName") == "alice"
