"""The directory core against a real Active Directory (Samba 4 as a domain controller)."""

import re
import time

import ldap
import pytest

from connector import errors

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def test_login_profile_with_nested_groups(ad_dir, samba_ad):
    profile = ad_dir.authenticate("dave", samba_ad.users["dave"])
    assert GUID.match(profile["id"])
    assert profile["nickname"] == "dave"
    assert profile["sAMAccountName"] == "dave"
    assert profile["objectSid"].startswith("S-1-5-21-")
    assert profile["name"] == {"givenName": "Dave", "familyName": "Davis"}
    assert profile["organizationUnits"] == []  # CN=Users is a container, not an OU
    assert sorted(profile["groups"]) == sorted(samba_ad.expected_groups["dave"])


def test_in_chain_groups_with_a_cycle(ad_dir, samba_ad):
    assert ad_dir.strategy.name == "ad"  # auto-detected from the root DSE
    groups = ad_dir.get_profile("bob")["groups"]
    assert sorted(groups) == sorted(samba_ad.expected_groups["bob"])


@pytest.mark.parametrize("strategy", ["member", "memberof"])
def test_walks_agree_with_the_in_chain_rule(ad_with, samba_ad, strategy):
    directory = ad_with(GROUPS_STRATEGY=strategy)
    for name in ("dave", "bob"):
        assert sorted(directory.get_profile(name)["groups"]) == sorted(
            samba_ad.expected_groups[name]
        )


def test_primary_group_optional(ad_with, samba_ad):
    directory = ad_with(GROUPS_INCLUDE_PRIMARY=True)
    groups = directory.get_profile("alice")["groups"]
    assert "Domain Users" in groups
    assert set(groups) - {"Domain Users"} == samba_ad.expected_groups["alice"]


def test_id_is_stable_and_the_guid_of_the_entry(ad_dir, ad_admin, samba_ad):
    from connector.profiles import decode_guid

    _, attrs = ad_admin.search_s(
        samba_ad.base, ldap.SCOPE_SUBTREE, "(sAMAccountName=carol)", ["objectGUID"]
    )[0]
    assert ad_dir.get_profile("carol")["id"] == decode_guid(attrs["objectGUID"][0])


@pytest.mark.parametrize(
    ("user", "kind", "code"),
    [
        ("disabled1", errors.AccountDisabled, "533"),
        ("expired1", errors.PasswordExpired, "532"),
        ("mustchange1", errors.PasswordChangeRequired, "773"),
        ("acctexp1", errors.AccountExpired, "701"),
    ],
)
def test_account_states(ad_dir, samba_ad, user, kind, code):
    with pytest.raises(kind) as info:
        ad_dir.authenticate(user, samba_ad.users[user])
    assert info.value.context["code"] == code
    assert samba_ad.users[user] not in str(info.value)


def test_wrong_password_52e(ad_dir, samba_ad):
    with pytest.raises(errors.WrongPassword) as info:
        ad_dir.authenticate("alice", "Wrong-Passw0rd!")
    assert info.value.context["code"] == "52e"


def test_unknown_user(ad_dir):
    with pytest.raises(errors.WrongUsername):
        ad_dir.authenticate("nobody", "Whatever-1")


def test_locked_after_threshold_775(ad_dir, samba_ad):
    for _ in range(3):
        with pytest.raises(errors.WrongPassword):
            ad_dir.authenticate("locked1", "Wrong-Passw0rd!")
    with pytest.raises(errors.AccountLocked) as info:
        ad_dir.authenticate("locked1", samba_ad.users["locked1"])
    assert info.value.context["code"] == "775"


def test_policy_allows_expired_and_must_change(ad_with, samba_ad):
    directory = ad_with(ALLOW_PASSWORD_EXPIRED=True, ALLOW_PASSWORD_CHANGE_REQUIRED=True)
    assert directory.authenticate("expired1", samba_ad.users["expired1"])["nickname"] == "expired1"
    assert (
        directory.authenticate("mustchange1", samba_ad.users["mustchange1"])["nickname"]
        == "mustchange1"
    )
    # never for a wrong password, and never for a disabled account
    with pytest.raises(errors.WrongPassword):
        directory.authenticate("expired1", "Wrong-Passw0rd!")
    with pytest.raises(errors.AccountDisabled):
        directory.authenticate("disabled1", samba_ad.users["disabled1"])


@pytest.mark.parametrize(
    "name", ["*", "*)(sAMAccountName=*", "alice)(|(cn=*", "\\", "alice\x00", "("]
)
def test_injection_attempts_find_nobody(ad_dir, samba_ad, name):
    with pytest.raises(errors.WrongUsername):
        ad_dir.authenticate(name, samba_ad.users["alice"])
    assert ad_dir.authenticate("alice", samba_ad.users["alice"])["nickname"] == "alice"


def test_search_users_anr_and_list_groups(ad_dir):
    found = ad_dir.search_users("car")
    assert [p["nickname"] for p in found] == ["carol"]
    groups = ad_dir.list_groups()
    assert {"Staff", "Team-Dev", "Team-Core", "Everyone", "Domain Users"} <= set(groups)


def test_group_cache_ttl_on_ad(ad_with, ad_admin, samba_ad):
    directory = ad_with(GROUPS_CACHE_SECONDS=4)
    before = set(directory.get_profile("alice")["groups"])
    assert "Team-Core" not in before
    group = f"CN=Team-Core,CN=Users,{samba_ad.base}"
    alice = ad_dir_dn(ad_admin, samba_ad, "alice")
    ad_admin.modify_s(group, [(ldap.MOD_ADD, "member", [alice.encode()])])
    try:
        assert set(directory.get_profile("alice")["groups"]) == before
        time.sleep(4.1)  # past the cache's 4 s TTL (long enough that the
        # member-add above cannot outlast it on a loaded machine): time passing is the point
        assert "Team-Core" in directory.get_profile("alice")["groups"]
    finally:
        ad_admin.modify_s(group, [(ldap.MOD_DELETE, "member", [alice.encode()])])


def ad_dir_dn(conn, samba_ad, sam):
    return conn.search_s(samba_ad.base, ldap.SCOPE_SUBTREE, f"(sAMAccountName={sam})", ["1.1"])[0][
        0
    ]


@pytest.fixture
def writer(ad_admin, samba_ad):
    """A throw-away AD user for password-change tests."""
    dn = f"CN=writer1,CN=Users,{samba_ad.base}"
    ad_admin.add_s(
        dn,
        [
            ("objectClass", [b"user"]),
            ("sAMAccountName", [b"writer1"]),
            ("unicodePwd", ['"Writer-Passw0rd!"'.encode("utf-16-le")]),
            ("userAccountControl", [b"512"]),
        ],
    )
    yield "writer1"
    ad_admin.delete_s(dn)


def test_change_password_on_ad(ad_with, samba_ad, writer):
    directory = ad_with(
        ENABLE_WRITE_BACK=True,
        ALLOW_ADMIN_PASSWORD_RESET=True,
        LDAP_BIND_USER=samba_ad.admin_dn,
        LDAP_BIND_PASSWORD=samba_ad.admin_pw,
    )
    profile = directory.change_password(writer, "Changed-Passw0rd!2")
    assert profile["nickname"] == writer
    assert directory.authenticate(writer, "Changed-Passw0rd!2")["nickname"] == writer
    with pytest.raises(errors.WrongPassword):
        directory.authenticate(writer, "Writer-Passw0rd!")
    # as the user, with the old password
    directory.change_password(writer, "Third-Passw0rd!3", old_password="Changed-Passw0rd!2")
    assert directory.authenticate(writer, "Third-Passw0rd!3")["nickname"] == writer


def test_complexity_refusal_on_ad(ad_with, samba_ad, writer):
    directory = ad_with(
        ENABLE_WRITE_BACK=True,
        ALLOW_ADMIN_PASSWORD_RESET=True,
        LDAP_BIND_USER=samba_ad.admin_dn,
        LDAP_BIND_PASSWORD=samba_ad.admin_pw,
    )
    with pytest.raises(errors.PasswordComplexity):
        directory.change_password(writer, "short")


def test_service_account_without_rights_is_refused(ad_with, samba_ad, writer):
    directory = ad_with(ENABLE_WRITE_BACK=True, ALLOW_ADMIN_PASSWORD_RESET=True)  # svc-proxy
    with pytest.raises(errors.InsufficientAccessRights):
        directory.change_password(writer, "Changed-Passw0rd!2")


def test_ad_refuses_password_change_without_tls(ad_with, samba_ad, writer):
    directory = ad_with(
        ENABLE_WRITE_BACK=True,
        LDAP_STARTTLS=False,
        LDAP_ALLOW_CLEARTEXT=True,  # AD's own refusal is what this test is about
        LDAP_BIND_USER=samba_ad.admin_dn,
        LDAP_BIND_PASSWORD=samba_ad.admin_pw,
    )
    with pytest.raises((errors.InsufficientAccessRights, errors.DirectoryUnavailable)):
        directory.change_password(writer, "Changed-Passw0rd!2")


def test_ldaps_and_upn_bind_user(ad_with, samba_ad):
    directory = ad_with(
        LDAP_URL=samba_ad.ldaps_uri,
        LDAP_STARTTLS=False,
        LDAP_BIND_USER=samba_ad.upn("svc-proxy"),
    )
    assert directory.authenticate("alice", samba_ad.users["alice"])["nickname"] == "alice"


# --- Kerberos sign-in: the ticket's realm is tied to the entry found --------------------------


def _domain_sid(ad_admin, samba_ad):
    from connector.profiles import decode_sid

    found = ad_admin.search_s(samba_ad.base, ldap.SCOPE_BASE, "(objectClass=*)", ["objectSid"])
    return decode_sid(found[0][1]["objectSid"][0])


def test_kerberos_realm_tied_by_domain_sid_and_upn_suffix(ad_with, ad_admin, samba_ad):
    sid = _domain_sid(ad_admin, samba_ad)
    realms = [samba_ad.realm, "CHILD.AD.EXAMPLE.TEST"]
    directory = ad_with(
        KERBEROS_REALMS=realms,
        KERBEROS_REALM_DIRECTORIES=[
            f"{samba_ad.realm}=sid:{sid}",
            "CHILD.AD.EXAMPLE.TEST=sid:S-1-5-21-1-2-3",
        ],
    )
    assert directory.kerberos_profile("alice", samba_ad.realm)["nickname"] == "alice"
    with pytest.raises(errors.KerberosRejected) as info:
        directory.kerberos_profile("Administrator", "CHILD.AD.EXAMPLE.TEST")
    assert info.value.code == "realm_mismatch"
    by_upn = ad_with(
        KERBEROS_REALMS=realms,
        KERBEROS_PRINCIPAL_MAPPING="upn",
        KERBEROS_REALM_DIRECTORIES=["CHILD.AD.EXAMPLE.TEST=upn:child.ad.example.test"],
    )
    upn = samba_ad.upn("alice")
    assert by_upn.kerberos_profile(upn, samba_ad.realm, by_upn=True)["nickname"] == "alice"
    with pytest.raises(errors.KerberosRejected):  # victim\@ad.example.test@CHILD
        by_upn.kerberos_profile(upn, "CHILD.AD.EXAMPLE.TEST", by_upn=True)


# --- Kerberos sign-in: account state is checked, since no bind does it ------------------------


@pytest.mark.parametrize(
    ("user", "kind", "code"),
    [
        ("disabled1", errors.AccountDisabled, "uac:disabled"),
        ("acctexp1", errors.AccountExpired, "accountExpires"),
    ],
)
def test_kerberos_sign_in_checks_account_state(ad_with, samba_ad, user, kind, code):
    directory = ad_with(KERBEROS_REALMS=[samba_ad.realm])
    with pytest.raises(kind) as info:
        directory.kerberos_profile(user, samba_ad.realm)
    assert info.value.context["code"] == code
    assert directory.kerberos_profile("alice", samba_ad.realm)["nickname"] == "alice"


def test_kerberos_sign_in_refused_while_locked_out(ad_with, samba_ad):
    directory = ad_with(KERBEROS_REALMS=[samba_ad.realm])
    for _ in range(3):
        with pytest.raises((errors.WrongPassword, errors.AccountLocked)):
            directory.authenticate("locked1", "Wrong-Passw0rd!")
    with pytest.raises(errors.AccountLocked) as info:
        directory.kerberos_profile("locked1", samba_ad.realm)
    assert info.value.context["code"] == "uac:locked"
    samba_ad.samba_tool("user", "unlock", "locked1")
    assert directory.kerberos_profile("locked1", samba_ad.realm)["nickname"] == "locked1"


def test_admin_count_accounts_are_never_reset(ad_with, ad_admin, samba_ad, writer):
    dn = ad_dir_dn(ad_admin, samba_ad, writer)
    ad_admin.modify_s(dn, [(ldap.MOD_REPLACE, "adminCount", [b"1"])])
    directory = ad_with(
        ENABLE_WRITE_BACK=True,
        ALLOW_ADMIN_PASSWORD_RESET=True,
        LDAP_BIND_USER=samba_ad.admin_dn,
        LDAP_BIND_PASSWORD=samba_ad.admin_pw,
    )
    with pytest.raises(errors.InsufficientAccessRights, match="adminCount=1"):
        directory.change_password(writer, "Taken-Over-Passw0rd!")
    assert directory.authenticate(writer, "Writer-Passw0rd!")["nickname"] == writer
    # the user may still change their own, given the old one
    directory.change_password(writer, "Own-Choice-Passw0rd!", old_password="Writer-Passw0rd!")
    assert directory.authenticate(writer, "Own-Choice-Passw0rd!")["nickname"] == writer


@pytest.mark.parametrize("bind_user", ["upn", "netbios"])
def test_ad_service_account_is_never_reset(ad_with, samba_ad, bind_user):
    name = samba_ad.upn("svc-proxy") if bind_user == "upn" else f"{samba_ad.domain}\\svc-proxy"
    directory = ad_with(
        ENABLE_WRITE_BACK=True, ALLOW_ADMIN_PASSWORD_RESET=True, LDAP_BIND_USER=name
    )
    with pytest.raises(errors.InsufficientAccessRights, match="service account"):
        directory.change_password(
            "svc-proxy", "Taken-Over-Passw0rd!", old_password=samba_ad.bind_pw
        )
    assert directory.authenticate("svc-proxy", samba_ad.bind_pw)["nickname"] == "svc-proxy"


def test_empty_old_password_is_never_an_anonymous_bind_on_ad(ad_with, samba_ad, writer):
    directory = ad_with(ENABLE_WRITE_BACK=True)
    with pytest.raises(errors.WrongPassword, match="current password is wrong"):
        directory.change_password(writer, "Taken-Over-Passw0rd!", old_password="")
    assert directory.authenticate(writer, "Writer-Passw0rd!")["nickname"] == writer
