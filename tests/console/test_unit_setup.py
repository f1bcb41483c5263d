"""The setup form read, checked and turned into saved settings, without Flask or a directory.

The live test and the save against a real directory are in test_console_ops; here are the
refusals that come before any directory is asked, and they must leave no file behind.
"""

import pytest
from certkit import TestCA
from consolekit import settings_in

from connector import errors
from connector.settings import refine
from connector.web.console import setup

FORM = {
    "urls": "ldaps://dc1.example.com, ldaps://dc2.example.com\nldap://dc3.example.com",
    "base": " dc=example,dc=com ",
    "bind_user": "cn=svc,dc=example,dc=com",
    "bind_password": "Bind-Pw-1",
    "starttls": "on",
    "require_cert": "hard",
    "ca_file": "",
    "user_filter": "(uid={0})",
    "sample_user": " alice ",
}


def files(state):
    return sorted(p.name for p in state.iterdir())


def test_the_form_is_read_and_bounded():
    sub = setup.DirectorySubmission.parse({**FORM, "base": "x" * 5000, "urls": FORM["urls"]})
    assert sub.urls == [
        "ldaps://dc1.example.com",
        "ldaps://dc2.example.com",
        "ldap://dc3.example.com",
    ]
    assert len(sub.form["base"]) == 1024 and sub.sample_user == "alice"
    assert sub.form["starttls"] is True and sub.form["require_cert"] == "hard"
    assert "Bind-Pw-1" not in repr(sub)
    empty = setup.DirectorySubmission.parse({})
    assert empty.urls == [] and empty.form["starttls"] is False
    assert empty.form["require_cert"] == "demand"


def test_what_is_missing_is_said_all_at_once():
    empty = setup.DirectorySubmission.parse({})
    assert len(empty.problems(password_stored=False)) == 3
    assert len(empty.problems(password_stored=True)) == 2  # the stored password will do
    assert setup.DirectorySubmission.parse(FORM).problems(password_stored=False) == []


def test_changes_carry_the_password_only_when_typed():
    changes = setup.DirectorySubmission.parse(FORM).changes()
    assert changes["LDAP_BIND_PASSWORD"] == "Bind-Pw-1" and changes["LDAP_CA_FILE"] is None
    assert changes["LDAP_BASE"] == "dc=example,dc=com"
    without = setup.DirectorySubmission.parse({**FORM, "bind_password": ""}).changes()
    assert "LDAP_BIND_PASSWORD" not in without


def test_saved_values_never_hold_the_plain_password():
    one = {"LDAP_URLS": ["ldaps://a"], "LDAP_BIND_PASSWORD": "Bind-Pw-1", "LDAP_BASE": "dc=x"}
    saved = setup.saved_values(one, "sealed:abc", "/state/ldap-ca.pem")
    assert saved == {
        "LDAP_URL": "ldaps://a",
        "LDAP_URLS": None,
        "LDAP_BASE": "dc=x",
        "LDAP_BIND_CREDENTIALS": "sealed:abc",
        "LDAP_BIND_PASSWORD": None,
        "LDAP_CA_FILE": "/state/ldap-ca.pem",
    }
    two = {"LDAP_URLS": ["ldaps://a", "ldaps://b"], "LDAP_CA_FILE": None}
    assert setup.saved_values(two, None, None) == {
        "LDAP_URLS": ["ldaps://a", "ldaps://b"],
        "LDAP_URL": None,
        "LDAP_CA_FILE": None,
    }


def test_overridden_keys():
    env = ["LDAP_URL", "RUN_DIR", "CONSOLE_PASSWORD", "REALM"]
    assert setup.overridden(env) == ["LDAP_URL", "REALM"]


def test_the_form_shows_the_settings_in_force(tmp_path):
    s = settings_in(
        tmp_path, LDAP_URL="ldaps://dc1", LDAP_BASE="dc=x", LDAP_TLS_REQUIRE_CERT="allow"
    )
    form = setup.directory_form(s)
    assert form["urls"] == "ldaps://dc1" and form["require_cert"] == "allow"
    assert form["password_stored"] is False and form["sample_user"] == ""


def test_the_tls_choices_are_the_ones_the_settings_accept(tmp_path):
    s = settings_in(tmp_path)
    for choice in setup.TLS_CHOICES:
        assert refine(s, {"LDAP_TLS_REQUIRE_CERT": choice}).ldap_tls_require_cert == choice
    with pytest.raises(errors.ConfigError):
        refine(s, {"LDAP_TLS_REQUIRE_CERT": "sometimes"})


def test_an_incomplete_form_writes_nothing(tmp_path):
    s = settings_in(tmp_path)
    before = (tmp_path / "config.json").read_bytes()
    outcome = setup.save_directory(s, setup.DirectorySubmission.parse({"urls": "ldaps://a"}))
    assert not outcome.saved and len(outcome.context["directory_problems"]) == 2
    assert outcome.context["form"]["password_stored"] is False
    assert (tmp_path / "config.json").read_bytes() == before


def test_a_pasted_ca_that_is_not_pem_writes_nothing(tmp_path):
    s = settings_in(tmp_path)
    before = files(tmp_path)
    sub = setup.DirectorySubmission.parse({**FORM, "ca_pem": "-----BEGIN CERTIFICATE-----\nxx"})
    outcome = setup.save_directory(s, sub)
    assert outcome.context["directory_problems"] == ["The pasted CA certificate is not PEM."]
    assert files(tmp_path) == before


def test_settings_refused_by_their_checks_leave_no_ca_file(tmp_path):
    ca_pem = open(TestCA.create(tmp_path / "ca").ca_file).read()
    state = tmp_path / "state"
    s = settings_in(state)
    before = files(state)
    sub = setup.DirectorySubmission.parse({**FORM, "require_cert": "sometimes", "ca_pem": ca_pem})
    outcome = setup.save_directory(s, sub)
    assert not outcome.saved
    assert any("LDAP_TLS_REQUIRE_CERT" in p for p in outcome.context["directory_problems"])
    assert files(state) == before  # the pending CA file was removed


def test_every_tls_choice_offered_has_its_python_ldap_option():
    from connector.directory.connections import _REQUIRE_CERT

    assert set(_REQUIRE_CERT) == set(setup.TLS_CHOICES)
