"""``directory/passwords``: when a password expires (AD's computed time, OpenLDAP's policy),
and which refusals open the change step."""

from __future__ import annotations

import time

import pytest

from connector import errors
from connector.directory import passwords
from connector.directory.search import Entry

FILETIME_EPOCH = 11644473600


def entry(**attrs: str) -> Entry:
    return Entry("cn=x,dc=example,dc=test", {k: [v.encode()] for k, v in attrs.items()})


def filetime(epoch: int) -> str:
    return str((epoch + FILETIME_EPOCH) * 10_000_000)


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({"msDS-UserPasswordExpiryTimeComputed": filetime(1_800_000_000)}, "2027-01-15T08:00:00Z"),
        ({"msDS-UserPasswordExpiryTimeComputed": str(0x7FFFFFFFFFFFFFFF)}, None),  # never
        ({"msDS-UserPasswordExpiryTimeComputed": "0"}, None),  # must change: no date
        (
            {
                "msDS-UserPasswordExpiryTimeComputed": filetime(1_800_000_000),
                "userAccountControl": str(0x10200),  # DONT_EXPIRE_PASSWORD
            },
            None,
        ),
        ({"pwdChangedTime": "20260101000000Z"}, None),  # no policy of its own: unknown
        ({}, None),
    ],
)
def test_expiry_from_the_entry(attrs, expected):
    reader = passwords.ExpiryReader(directory=None)  # type: ignore[arg-type]
    assert reader.expires_at(entry(**attrs)) == expected


def test_openldap_expiry_is_changed_time_plus_the_policy_max_age(ldap_dir, slapd):
    from servers import CHANGE_STEP_MAX_AGE, CHANGE_STEP_POLICY

    policy = f"cn={CHANGE_STEP_POLICY},{slapd.policies_dn}"
    user = entry(pwdChangedTime="20260101000000Z", pwdPolicySubentry=policy)
    expected = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1767225600 + CHANGE_STEP_MAX_AGE))
    assert ldap_dir.expiry.expires_at(user) == expected
    gone = entry(pwdChangedTime="20260101000000Z", pwdPolicySubentry=f"cn=nope,{slapd.policies_dn}")
    assert ldap_dir.expiry.expires_at(gone) is None


def test_days_left():
    assert passwords.days_left("2026-01-11T00:00:00Z", now=1767225600) == 10
    assert passwords.days_left("garbage") is None and passwords.days_left(None) is None


@pytest.mark.parametrize(
    ("outcome", "offered"),
    [
        (errors.PasswordExpired("x", dn="cn=x", code="532"), True),
        (errors.PasswordChangeRequired("x", dn="cn=x", code="ppolicy:2"), True),
        (errors.PasswordExpired("x", dn="cn=x", code="ppolicy:grace"), True),
        (errors.PasswordExpired("x", dn="cn=x", code="ppolicy:0"), False),  # no grace left
        (errors.PasswordExpired("x", code="532"), False),  # no entry named
        (errors.WrongPassword("x", dn="cn=x"), False),
        (errors.AccountLocked("x", dn="cn=x"), False),
    ],
)
def test_which_refusals_open_the_change_step(outcome, offered):
    assert passwords.can_change_at_sign_in(outcome) is offered


def test_openldap_refusals_carry_their_reason(ldap_with, slapd):
    directory = ldap_with(ENABLE_WRITE_BACK=True)
    dn = slapd.add_person("pwhistory1", "History-One-pw1", reset=True)
    try:
        user = directory.find_user("pwhistory1")

        def refusal(old: str, new: str) -> str:
            with pytest.raises(errors.PasswordComplexity) as caught:
                passwords.change_as_user(directory, user, old, new, "pwhistory1")
            return str(caught.value.context["reason"])

        assert refusal("History-One-pw1", "short1") == "too_short"  # before any bind
        assert refusal("History-One-pw1", "History-One-pw1") == "in_history"  # the same
        passwords.change_as_user(directory, user, "History-One-pw1", "History-Two-pw2", "h")
        # back to the first one: the server's pwdInHistory says no (ppolicy error 8)
        assert refusal("History-Two-pw2", "History-One-pw1") == "in_history"
        with pytest.raises(errors.WrongPassword):
            passwords.change_as_user(directory, user, "History-One-pw1", "History-3-pw3", "h")
    finally:
        slapd.delete(dn)


def test_the_bind_tells_the_expiry_under_the_unreadable_default_policy(ldap_dir, slapd):
    import ldap

    from connector.directory.passwords import days_left

    default = slapd.default_policy_dn
    month, warn = str(30 * 86400).encode(), str(10 * 86400).encode()
    changed = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(time.time() - 25 * 86400))
    dn = slapd.add_person("pwdefault1", "Default-Old-pw1", policy=None, changed=changed)
    before = ldap_dir.authenticate("pwdefault1", "Default-Old-pw1")
    assert "password_expires_at" not in before  # pwdMaxAge 0: never
    slapd.modify(
        default,
        [(ldap.MOD_REPLACE, "pwdMaxAge", [month]), (ldap.MOD_REPLACE, "pwdExpireWarning", [warn])],
    )
    try:
        profile = ldap_dir.authenticate("pwdefault1", "Default-Old-pw1")
    finally:
        slapd.modify(
            default,
            [(ldap.MOD_REPLACE, "pwdMaxAge", [b"0"]), (ldap.MOD_DELETE, "pwdExpireWarning", None)],
        )
        slapd.delete(dn)
    left = days_left(profile["password_expires_at"])
    assert left is not None and 4.99 < left <= 5.0
