"""``user@domain`` on OpenLDAP: mapped by LDAP_USER_BY_QUALIFIED_NAME, or by mail when asked."""

import pytest

from connector import errors


def test_qualified_name_needs_a_mapping(ldap_with):
    with pytest.raises(errors.WrongUsername):
        ldap_with().authenticate("alice@example.test", "alicepw")


@pytest.mark.parametrize(
    "template", ["(mail={0})", "(&(uid={1})(mail=*@{2}))", "(&(objectClass=person)(uid={1}))"]
)
def test_qualified_name_by_filter(ldap_with, template):
    directory = ldap_with(LDAP_USER_BY_QUALIFIED_NAME=template)
    assert directory.authenticate("alice@example.test", "alicepw") == directory.authenticate(
        "alice", "alicepw"
    )
    with pytest.raises(errors.WrongPassword):
        directory.authenticate("alice@example.test", "bobpw")


def test_qualified_name_values_are_escaped(ldap_with):
    directory = ldap_with(LDAP_USER_BY_QUALIFIED_NAME="(&(uid={1})(mail=*@{2}))")
    for name in ("*@example.test", "alice@*", "a*)(uid=*@example.test"):
        with pytest.raises(errors.WrongUsername):
            directory.authenticate(name, "alicepw")


def test_email_on_openldap(ldap_with):
    directory = ldap_with(LOGIN_BY_EMAIL=True)
    assert directory.authenticate("bob@example.test", "bobpw")["id"] == "bob"


def test_bad_template_is_a_config_error(ldap_with):
    with pytest.raises(errors.ConfigError, match="LDAP_USER_BY_QUALIFIED_NAME"):
        ldap_with(LDAP_USER_BY_QUALIFIED_NAME="(mail=alice)")
