"""The directory core against a real OpenLDAP (memberof + ppolicy overlays, StartTLS)."""

import json
import time

import ldap
import pytest

from connector import errors

DAVE_GROUPS = ["everyone", "staff", "team-core", "team-dev"]
ERIN_GROUPS = ["admins", "cycle-a", "cycle-b"]


def test_login_returns_profile_with_nested_groups(ldap_dir):
    profile = ldap_dir.authenticate("dave", "davepw")
    assert profile["id"] == "dave"
    assert profile["nickname"] == "dave"
    assert profile["dn"] == "uid=dave,ou=people,dc=example,dc=test"
    assert profile["emails"] == [{"value": "dave@example.test"}]
    assert profile["organizationUnits"] == ["people"]
    assert sorted(profile["groups"]) == DAVE_GROUPS
    assert "userPassword" not in json.dumps(profile)


@pytest.mark.parametrize("strategy", ["member", "memberof", "auto"])
def test_every_walk_flattens_depth_four_and_stops_on_a_cycle(ldap_with, strategy):
    directory = ldap_with(GROUPS_STRATEGY=strategy)
    assert sorted(directory.get_profile("dave")["groups"]) == DAVE_GROUPS
    assert sorted(directory.get_profile("erin")["groups"]) == ERIN_GROUPS
    assert directory.get_profile("frank")["groups"] == []


def test_group_properties_give_objects(ldap_with):
    directory = ldap_with(GROUP_PROPERTIES=["cn", "description"])
    groups = directory.get_profile("carol")["groups"]
    assert {g["cn"] for g in groups} == {"team-dev", "staff", "everyone"}


def test_wrong_password(ldap_dir):
    with pytest.raises(errors.WrongPassword) as info:
        ldap_dir.authenticate("alice", "not-alices")
    assert info.value.wire_name == "WrongPassword"
    assert "not-alices" not in str(info.value)


def test_unknown_user(ldap_dir):
    with pytest.raises(errors.WrongUsername):
        ldap_dir.authenticate("nobody", "whatever")


def test_empty_password_refused_before_any_bind(ldap_dir):
    with pytest.raises(errors.WrongPassword, match="empty password"):
        ldap_dir.authenticate("alice", "")
    assert ldap_dir.bind_pool.opened == 0
    assert ldap_dir.search_pool.opened == 0  # not even looked up


def test_locked_account_is_reported_as_locked(ldap_dir):
    for _ in range(3):
        with pytest.raises(errors.WrongPassword):
            ldap_dir.authenticate("locky", "wrong")
    # now even the right password is refused, and ppolicy says why
    with pytest.raises(errors.AccountLocked):
        ldap_dir.authenticate("locky", "lockypw")


def test_expired_password(ldap_dir, ldap_with):
    with pytest.raises(errors.PasswordExpired):
        ldap_dir.authenticate("expiry", "expirypw")
    allowed = ldap_with(ALLOW_PASSWORD_EXPIRED=True)
    assert allowed.authenticate("expiry", "expirypw")["id"] == "expiry"
    # the policy never turns a wrong password into a login
    with pytest.raises(errors.WrongPassword):
        allowed.authenticate("expiry", "wrong")


def test_password_change_required(ldap_dir, ldap_with):
    with pytest.raises(errors.PasswordChangeRequired):
        ldap_dir.authenticate("mustchange", "mustchangepw")
    allowed = ldap_with(ALLOW_PASSWORD_CHANGE_REQUIRED=True)
    assert allowed.authenticate("mustchange", "mustchangepw")["id"] == "mustchange"


def test_non_ascii_user_logs_in(ldap_dir):
    assert ldap_dir.authenticate("jürgen", "jürgenpw")["id"] == "jürgen"


def test_compatibility_equivalent_name_gets_the_directory_spelling(ldap_dir):
    # OpenLDAP matches names after Unicode normalisation: a fullwidth "a" (U+FF41) finds
    # alice, and the
    # profile carries the directory's own spelling, never the typed one.
    assert ldap_dir.authenticate("\uff41lice", "alicepw")["id"] == "alice"


def test_dn_with_special_characters(ldap_dir):
    profile = ldap_dir.authenticate("paren", "parenpw")
    assert profile["id"] == "paren"


INJECTIONS = [
    "*",
    "a*",
    "*)(uid=*",
    ")(uid=*",
    "alice)(|(uid=*",
    "alice)(objectClass=*",
    "\\",
    "alice\\",
    "alice\x00",
    "\x00",
    "(",
    "alice" + "\u0301",
    "\udcff".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
    "x" * 5000,
]


@pytest.mark.parametrize("name", INJECTIONS, ids=range(len(INJECTIONS)))
def test_injection_attempts_find_nobody(ldap_dir, name):
    with pytest.raises(errors.WrongUsername):
        ldap_dir.authenticate(name, "alicepw")
    with pytest.raises(errors.WrongUsername):
        ldap_dir.get_profile(name)
    # and nothing broke
    assert ldap_dir.authenticate("alice", "alicepw")["id"] == "alice"


def test_search_injection_is_escaped(ldap_dir):
    assert ldap_dir.search_users("*)(uid=*") == []
    assert ldap_dir.search_users("\\") == []


def test_pre_escaped_names_are_not_escaped_twice(ldap_dir):
    # the caller escaped "(" already: the value reaches the filter as is
    with pytest.raises(errors.WrongUsername):
        ldap_dir.get_profile("\\28", escaped=True)
    assert ldap_dir.get_profile("alic\\65", escaped=True)["id"] == "alice"


def test_invalid_resulting_filter_means_no_such_user(ldap_dir):
    # pre-escaped input that makes the filter invalid: no crash, no such user
    with pytest.raises(errors.WrongUsername):
        ldap_dir.get_profile("alice)(", escaped=True)
    assert ldap_dir.authenticate("alice", "alicepw")["id"] == "alice"


def test_ambiguous_name_is_refused(ldap_dir):
    with pytest.raises(errors.WrongUsername, match="several"):
        ldap_dir.get_profile("*", escaped=True)


def test_group_cache_shows_changes_after_ttl_not_before(ldap_with, slapd_admin):
    directory = ldap_with(GROUPS_CACHE_SECONDS=4)
    group = "cn=admins,ou=groups,dc=example,dc=test"
    frank = "uid=frank,ou=people,dc=example,dc=test"
    assert directory.get_profile("frank")["groups"] == []
    slapd_admin.modify_s(group, [(ldap.MOD_ADD, "member", [frank.encode()])])
    try:
        assert directory.get_profile("frank")["groups"] == []  # cached
        assert directory.cache.hits >= 1
        time.sleep(4.1)  # past the cache's 4 s TTL (long enough that the
        # member-add above cannot outlast it on a loaded machine): time passing is the point
        assert directory.get_profile("frank")["groups"] == ["admins"]
    finally:
        slapd_admin.modify_s(group, [(ldap.MOD_DELETE, "member", [frank.encode()])])


def test_group_cache_is_bounded(ldap_with):
    directory = ldap_with(GROUPS_CACHE_MAX_ENTRIES=2)
    for name in ("alice", "bob", "carol", "dave"):
        directory.get_profile(name)
    assert len(directory.cache) == 2


def test_warm_cache_sends_no_group_queries(ldap_dir):
    ldap_dir.get_profile("dave")
    before = ldap_dir.strategy.queries
    ldap_dir.get_profile("dave")
    assert ldap_dir.strategy.queries == before


def test_search_users_with_limit(ldap_dir):
    found = ldap_dir.search_users("", limit=3)
    assert len(found) == 3
    assert {p["id"] for p in ldap_dir.search_users("ali")} == {"alice"}


def test_paged_search_returns_every_page(ldap_with):
    directory = ldap_with(LDAP_PAGE_SIZE=2)
    everyone = directory.search_users("*", limit=1000)
    assert len(everyone) >= 9
    assert len({p["dn"] for p in everyone}) == len(everyone)


def test_list_groups(ldap_dir):
    assert set(ldap_dir.list_groups()) >= {"staff", "team-dev", "team-core", "everyone", "admins"}


def test_change_password_off_by_default(ldap_dir):
    with pytest.raises(errors.InsufficientAccessRights, match="ENABLE_WRITE_BACK"):
        ldap_dir.change_password("bob", "new-bobpw")
    assert ldap_dir.authenticate("bob", "bobpw")["id"] == "bob"


def test_change_password_by_user_and_refused_for_service(ldap_with, slapd, slapd_admin):
    directory = ldap_with(ENABLE_WRITE_BACK=True)
    # resets are off by default: refused before the directory is asked
    with pytest.raises(errors.InsufficientAccessRights, match="ALLOW_ADMIN_PASSWORD_RESET"):
        directory.change_password("bob", "new-bobpw")
    # on, the read-only service account may still not reset passwords
    with pytest.raises(errors.InsufficientAccessRights, match="insufficient access rights"):
        ldap_with(ENABLE_WRITE_BACK=True, ALLOW_ADMIN_PASSWORD_RESET=True).change_password(
            "bob", "new-bobpw"
        )
    # a user may change their own, given the old one
    with pytest.raises(errors.WrongPassword):
        directory.change_password("bob", "new-bobpw", old_password="wrong")
    try:
        directory.change_password("bob", "new-bobpw", old_password="bobpw")
        assert directory.authenticate("bob", "new-bobpw")["id"] == "bob"
        with pytest.raises(errors.WrongPassword):
            directory.authenticate("bob", "bobpw")
    finally:
        slapd_admin.passwd_s("uid=bob,ou=people,dc=example,dc=test", None, "bobpw")


def test_admin_reset_with_a_privileged_bind_user(ldap_with, slapd, slapd_admin):
    privileged = {"LDAP_BIND_USER": slapd.admin_dn, "LDAP_BIND_PASSWORD": slapd.admin_pw}
    off = ldap_with(ENABLE_WRITE_BACK=True, **privileged)
    with pytest.raises(errors.InsufficientAccessRights, match="ALLOW_ADMIN_PASSWORD_RESET"):
        off.change_password("carol", "reset-carolpw")
    assert off.authenticate("carol", "carolpw")["id"] == "carol"
    directory = ldap_with(ENABLE_WRITE_BACK=True, ALLOW_ADMIN_PASSWORD_RESET=True, **privileged)
    try:
        directory.change_password("carol", "reset-carolpw")
        assert directory.authenticate("carol", "reset-carolpw")["id"] == "carol"
    finally:
        slapd_admin.passwd_s("uid=carol,ou=people,dc=example,dc=test", None, "carolpw")


def test_ldaps_url_works(ldap_with, slapd):
    directory = ldap_with(LDAP_URL=slapd.ldaps_uri, LDAP_STARTTLS=False)
    assert directory.authenticate("alice", "alicepw")["id"] == "alice"
    with directory.search_pool.connection() as conn:
        assert conn.tls


def test_untrusted_certificate_is_unavailable_with_a_hint(ldap_with, tmp_path):
    other_ca = tmp_path / "other-ca.pem"
    import subprocess

    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=Other CA",
            "-keyout",
            str(tmp_path / "k.pem"),
            "-out",
            str(other_ca),
        ],
        check=True,
        capture_output=True,
    )
    directory = ldap_with(LDAP_CA_FILE=str(other_ca))
    with pytest.raises(errors.DirectoryUnavailable, match="LDAP_CA_FILE"):
        directory.authenticate("alice", "alicepw")


def test_wrong_service_password_is_unavailable_and_says_so(ldap_with):
    directory = ldap_with(LDAP_BIND_PASSWORD="wrong")
    with pytest.raises(errors.DirectoryUnavailable, match="LDAP_BIND_USER"):
        directory.get_profile("alice")


def test_user_bind_never_changes_the_search_identity(ldap_dir):
    ldap_dir.authenticate("alice", "alicepw")
    with ldap_dir.search_pool.connection() as conn:
        assert conn.ldap.whoami_s() == "dn:cn=svc-proxy,ou=services,dc=example,dc=test"


def test_profile_mapper_from_settings_replaces_the_default(ldap_with, tmp_path):
    mapper = tmp_path / "mapper.py"
    mapper.write_text(
        "def map_profile(raw, default):\n"
        "    profile = default(raw)\n"
        "    profile['employee'] = raw['uid'].upper()\n"
        "    profile['groups'] = ['app-' + g for g in profile.get('groups', [])]\n"
        "    return profile\n"
    )
    directory = ldap_with(PROFILE_MAPPER=str(mapper))
    profile = directory.authenticate("carol", "carolpw")
    assert profile["employee"] == "CAROL"
    assert sorted(profile["groups"]) == ["app-everyone", "app-staff", "app-team-dev"]


def test_broken_profile_mapper_is_a_config_error(ldap_with, tmp_path):
    from connector.errors import ConfigError

    mapper = tmp_path / "mapper.py"
    mapper.write_text("def something_else(raw):\n    return raw\n")
    with pytest.raises(ConfigError, match="PROFILE_MAPPER"):
        ldap_with(PROFILE_MAPPER=str(mapper))


# --- Kerberos sign-in: the ticket's realm is tied to the entry found --------------------------

PARTNERS = "ou=partners,dc=example,dc=test"


def _realm_refused(directory, username, realm, **kw):
    with pytest.raises(errors.KerberosRejected) as info:
        directory.kerberos_profile(username, realm, **kw)
    assert info.value.code == "realm_mismatch"
    assert realm in info.value.reason
    return info.value


def test_kerberos_first_realm_maps_to_ldap_base_by_default(ldap_with):
    directory = ldap_with(KERBEROS_REALMS=["EXAMPLE.TEST"])
    assert directory.kerberos_profile("alice", "EXAMPLE.TEST")["id"] == "alice"


def test_kerberos_second_realm_without_a_directory_signs_nobody_in(ldap_with, caplog):
    """administrator@CHILD must not become this directory's administrator."""
    directory = ldap_with(KERBEROS_REALMS=["EXAMPLE.TEST", "CHILD.TEST"])
    _realm_refused(directory, "alice", "CHILD.TEST")
    assert "is not in realm CHILD.TEST's directory" in caplog.text
    assert directory.kerberos_profile("alice", "EXAMPLE.TEST")["id"] == "alice"


def test_kerberos_realm_mapped_to_a_base_dn(ldap_with):
    directory = ldap_with(
        KERBEROS_REALMS=["EXAMPLE.TEST", "CHILD.TEST"],
        KERBEROS_REALM_DIRECTORIES=[f"CHILD.TEST=base:{PARTNERS}"],
    )
    _realm_refused(directory, "alice", "CHILD.TEST")
    mapped = ldap_with(
        KERBEROS_REALMS=["EXAMPLE.TEST", "CHILD.TEST"],
        KERBEROS_REALM_DIRECTORIES=["CHILD.TEST=base:OU=People, DC=example,DC=test"],
    )
    assert mapped.kerberos_profile("alice", "CHILD.TEST")["id"] == "alice"
    # an explicit entry for the first realm replaces its LDAP_BASE default
    only_partners = ldap_with(
        KERBEROS_REALMS=["EXAMPLE.TEST"],
        KERBEROS_REALM_DIRECTORIES=[f"EXAMPLE.TEST=base:{PARTNERS}"],
    )
    _realm_refused(only_partners, "alice", "EXAMPLE.TEST")


def test_kerberos_enterprise_principal_of_another_realm_is_refused(ldap_with):
    """``alice\\@example.test@OTHER.TEST`` maps (upn) to alice@example.test: OTHER.TEST's
    users live elsewhere, so alice is not signed in."""
    directory = ldap_with(
        KERBEROS_REALMS=["EXAMPLE.TEST", "OTHER.TEST"],
        KERBEROS_PRINCIPAL_MAPPING="upn",
        LDAP_USER_BY_UPN="(mail={0})",
        KERBEROS_REALM_DIRECTORIES=[f"OTHER.TEST=base:{PARTNERS}"],
    )
    _realm_refused(directory, "alice@example.test", "OTHER.TEST", by_upn=True)
    assert (
        directory.kerberos_profile("alice@example.test", "EXAMPLE.TEST", by_upn=True)["id"]
        == "alice"
    )


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("EXAMPLE.TEST", "expected REALM="),
        ("EXAMPLE.TEST=dc=example", "expected REALM="),
        ("EXAMPLE.TEST=dn:dc=example", "unknown kind"),
        ("EXAMPLE.TEST=base:not a dn", "not a DN"),
        ("EXAMPLE.TEST=sid:1-5-21", "not a domain SID"),
        ("=upn:example.test", "expected REALM="),
    ],
)
def test_kerberos_realm_directories_are_checked_when_loading(ldap_with, entry, problem):
    with pytest.raises(errors.ConfigError, match="KERBEROS_REALM_DIRECTORIES") as info:
        ldap_with(KERBEROS_REALMS=["EXAMPLE.TEST"], KERBEROS_REALM_DIRECTORIES=[entry])
    assert problem in str(info.value)


# --- Kerberos sign-in: account state is checked, since no bind does it ------------------------


def test_kerberos_sign_in_refused_for_a_ppolicy_locked_account(ldap_with, slapd):
    directory = ldap_with(KERBEROS_REALMS=["EXAMPLE.TEST"])
    assert directory.kerberos_profile("bob", "EXAMPLE.TEST")["id"] == "bob"
    for _ in range(3):  # the default policy locks after three failures
        with pytest.raises(errors.WrongPassword):
            directory.authenticate("bob", "not-bobpw")
    with pytest.raises(errors.AccountLocked) as info:
        directory.kerberos_profile("bob", "EXAMPLE.TEST")
    assert info.value.context["code"] == "ppolicy:locked"
    slapd.unlock("bob")
    assert directory.kerberos_profile("bob", "EXAMPLE.TEST")["id"] == "bob"


def test_kerberos_sign_in_refused_for_an_administratively_locked_account(ldap_with, slapd):
    directory = ldap_with(KERBEROS_REALMS=["EXAMPLE.TEST"])
    slapd.modify(
        slapd.user_dn("carol"),
        [(ldap.MOD_REPLACE, "pwdAccountLockedTime", "000001010000Z")],
        relax=True,
    )
    try:
        with pytest.raises(errors.AccountLocked):
            directory.kerberos_profile("carol", "EXAMPLE.TEST")
        # a password would not help either: the same kind as the form
        with pytest.raises(errors.AccountLocked):
            directory.authenticate("carol", slapd.users["carol"])
    finally:
        slapd.unlock("carol")
    assert directory.kerberos_profile("carol", "EXAMPLE.TEST")["id"] == "carol"


# --- password changes: what never reaches the directory ---------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "kind"),
    [
        ("", "new-bobpw", errors.WrongPassword),  # an empty bind is an anonymous bind
        ("bobpw\x00", "new-bobpw", errors.WrongPassword),
        ("\x00bobpw", "new-bobpw", errors.WrongPassword),
        ("b" * 4097, "new-bobpw", errors.WrongPassword),
        ("bobpw", "", errors.PasswordComplexity),
        ("bobpw", "new-bobpw\x00tail", errors.PasswordComplexity),
        ("bobpw", "n" * 4097, errors.PasswordComplexity),
    ],
    ids=["old-empty", "old-nul", "old-nul-first", "old-long", "new-empty", "new-nul", "new-long"],
)
def test_change_password_refuses_empty_nul_and_long_passwords(ldap_with, slapd, old, new, kind):
    directory = ldap_with(ENABLE_WRITE_BACK=True, ALLOW_ADMIN_PASSWORD_RESET=True)
    try:
        with pytest.raises(kind) as info:
            directory.change_password("bob", new, old_password=old)
        assert "bobpw" not in str(info.value)
    finally:
        slapd.admin().passwd_s(slapd.user_dn("bob"), None, "bobpw")
    assert directory.authenticate("bob", "bobpw")["id"] == "bob"


def test_the_service_account_password_is_never_changed(ldap_with, slapd):
    """With alice as the service account, neither a reset nor a change by her old password
    may touch it: the connector would lock itself out."""
    alice = slapd.user_dn("alice")
    directory = ldap_with(
        ENABLE_WRITE_BACK=True,
        ALLOW_ADMIN_PASSWORD_RESET=True,
        LDAP_BIND_USER=alice.upper(),
        LDAP_BIND_PASSWORD=slapd.users["alice"],
    )
    try:
        for old in (None, slapd.users["alice"]):
            with pytest.raises(errors.InsufficientAccessRights, match="service account"):
                directory.change_password("alice", "taken-over-pw", old_password=old)
    finally:
        slapd.admin().passwd_s(alice, None, slapd.users["alice"])
    assert directory.authenticate("alice", slapd.users["alice"])["id"] == "alice"


# --- profiles: an allow list of attributes, never "*" ------------------------------------------

HASHES = {  # hash-looking values in attributes no deny list knows (as 389-DS passwordHistory)
    "carLicense": "{SSHA}3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
    "roomNumber": "$6$rounds=5000$saltsalt$0123456789abcdefABCDEF",
    "employeeType": "{PBKDF2-SHA512}10000$c2FsdA$aGFzaA",
}
RAW_MAPPER = (
    "def map_profile(raw, default):\n"
    "    profile = default(raw)\n"
    "    profile['raw'] = raw\n"  # a mapper that passes everything on
    "    return profile\n"
)


@pytest.fixture
def carol_with_hashes(slapd):
    dn = slapd.user_dn("carol")
    slapd.modify(dn, [(ldap.MOD_REPLACE, name, value) for name, value in HASHES.items()])
    yield dn
    slapd.modify(dn, [(ldap.MOD_DELETE, name, None) for name in HASHES])


def test_profiles_hold_only_the_attributes_asked_for(ldap_with, tmp_path, carol_with_hashes):
    mapper = tmp_path / "mapper.py"
    mapper.write_text(RAW_MAPPER)
    directory = ldap_with(PROFILE_MAPPER=str(mapper))
    profiles = [
        directory.authenticate("carol", "carolpw"),
        directory.get_profile("carol"),
        *directory.search_users("carol"),
    ]
    for profile in profiles:
        text = json.dumps(profile)
        assert profile["raw"]["uid"] == "carol" and profile["raw"]["mail"]
        for name, value in HASHES.items():
            assert name not in profile["raw"] and value not in text, name
        # what the account checks read is not profile data either
        assert "pwdAccountLockedTime" not in profile["raw"]


def test_a_mapper_declares_the_attributes_it_reads(ldap_with, tmp_path, carol_with_hashes):
    mapper = tmp_path / "mapper.py"
    mapper.write_text('ATTRIBUTES = ["carLicense"]\n' + RAW_MAPPER)
    directory = ldap_with(PROFILE_MAPPER=str(mapper))
    raw = directory.authenticate("carol", "carolpw")["raw"]
    assert raw["carLicense"] == HASHES["carLicense"]
    assert "roomNumber" not in raw and "employeeType" not in raw


@pytest.mark.parametrize(
    ("declared", "problem"),
    [
        ('["*"]', "no wildcards"),
        ('["+"]', "no wildcards"),
        ('"carLicense"', "must be a list"),
        ('["userPassword"]', "names secrets"),
        ('["pwdHistory;binary"]', "names secrets"),
        ('["cn)(uid=*"]', "not an attribute name"),
    ],
)
def test_a_mapper_cannot_ask_for_everything_or_for_secrets(ldap_with, tmp_path, declared, problem):
    mapper = tmp_path / "mapper.py"
    mapper.write_text(f"ATTRIBUTES = {declared}\n" + RAW_MAPPER)
    with pytest.raises(errors.ConfigError, match="PROFILE_MAPPER") as info:
        ldap_with(PROFILE_MAPPER=str(mapper))
    assert problem in str(info.value)


def _generalized(seconds_ago: float) -> str:
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(time.time() - seconds_ago))


@pytest.fixture
def carol_own_policy(slapd):
    """carol under a policy of her own that locks for 60 s (readable, unlike the default)."""
    policy = f"cn=lock-60s,{slapd.policies_dn}"
    slapd.add(
        policy,
        {
            "objectClass": ["top", "device", "pwdPolicy"],
            "cn": "lock-60s",
            "pwdAttribute": "userPassword",
            "pwdLockout": "TRUE",
            "pwdLockoutDuration": "60",
        },
    )
    dn = slapd.user_dn("carol")
    slapd.modify(dn, [(ldap.MOD_REPLACE, "pwdPolicySubentry", policy)], relax=True)
    try:
        yield dn
    finally:
        slapd.unlock("carol")
        slapd.modify(dn, [(ldap.MOD_DELETE, "pwdPolicySubentry", None)], relax=True)
        slapd.delete(policy)


@pytest.mark.parametrize(
    ("locked_time", "locked"),
    [
        (lambda: _generalized(5), True),  # locked 5 s ago for 60 s
        (lambda: _generalized(7200), False),  # the lockout lapsed long ago
        (lambda: "000001010000Z", True),  # locked by an administrator: for good
    ],
    ids=["fresh", "lapsed", "for-good"],
)
def test_kerberos_sign_in_honours_the_entry_policy_lockout_duration(
    ldap_with, slapd, carol_own_policy, locked_time, locked
):
    directory = ldap_with(KERBEROS_REALMS=["EXAMPLE.TEST"])
    slapd.modify(
        carol_own_policy,
        [(ldap.MOD_REPLACE, "pwdAccountLockedTime", locked_time())],
        relax=True,
    )
    if locked:
        with pytest.raises(errors.AccountLocked):
            directory.kerberos_profile("carol", "EXAMPLE.TEST")
    else:
        assert directory.kerberos_profile("carol", "EXAMPLE.TEST")["id"] == "carol"
        # and the form agrees: the password still works
        assert directory.authenticate("carol", slapd.users["carol"])["id"] == "carol"
