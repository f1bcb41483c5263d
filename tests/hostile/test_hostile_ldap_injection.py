# ruff: noqa: RUF001, RUF002, RUF003 - look-alike characters are the point here
"""An LDAP injection corpus in usernames and search strings, through the channel and the form,
against OpenLDAP and Active Directory (Samba).

The password sent with every name is a real user's, so a filter that an input could widen
(``al*``, ``*)(uid=*``, ``\\61lice``) would log somebody in. The oracle is the directory
itself: the connector must find exactly whom a search for the *literal* value finds (directory
matching rules included: OpenLDAP equates ``ALICE``, `` alice `` and fullwidth ``ａｌｉｃｅ``
with ``alice``); for every metacharacter entry that is nobody, asserted outright. Names with
control characters are refused before any search; over-long ones are refused as malformed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ldap
import pytest
from configs import ad_config
from faultkit import start_connector
from hostilekit import is_form, message
from hubs import DevHubProcess, start_devhub
from ldap.filter import escape_filter_chars

pytestmark = pytest.mark.slow  # hostile suite: its own hub, KDC and two connectors

#: Filter metacharacters, escapes, wildcards, DN and attribute syntax: nobody is named so.
METACHARACTERS = [
    "*",
    "**",
    "al*",
    "*lice",
    "a*e",
    "*)(uid=*",
    "*)(|(uid=*",
    "alice)(|(uid=*)",
    "alice)(&)",
    "alice)(!(uid=nobody)",
    "alice*)",
    "*()|&'",
    "(uid=*)",
    "(|(uid=alice)(uid=bob))",
    ")(",
    "(",
    ")",
    "|",
    "&",
    "!",
    "=",
    "~=alice",
    ">=a",
    "\\2a",
    "\\2A",
    "al\\2a",
    "\\61lice",
    "\\",
    "\\\\",
    "alice\\",
    "alice\\00",
    "uid=alice",
    "uid=alice,ou=people,dc=example,dc=test",
    "cn=admin,dc=example,dc=test",
    "admin*)((|userPassword=*)",
    "*)(objectClass=*",
    "alice)(objectClass=*",
    "sAMAccountName=*",
    "${jndi:ldap://127.0.0.1/x}",
    "' OR '1'='1",
    "alice%00",
    "%2a",
    "alice%29%28uid%3d%2a",
]
#: Refused before any search: control characters (NUL cuts a value on some servers).
CONTROL = ["alice\x00", "\x00", "al\x00ice", "alice\x00)(uid=*", "alice\r\nuid: admin", "\x1b[31m"]
#: Unicode look-alikes and invisible characters: whom they find is the directory's call.
UNICODE = [
    "ａｌｉｃｅ",
    "ＡＬＩＣＥ",
    "аlice",  # Cyrillic а
    "ALICE",
    " alice ",
    "alİce",
    "alice\u202e",
    "\u202ealice",
    "\u202eecila",
    "ali\u200bce",
    "alice\ufeff",
    "𝒶𝓁𝒾𝒸ℯ",
    "alice\u0301",
    "ｊüｒｇｅｎ",
    "jürgen",
    "🙂",
    "\u0000\u202e*",
]
LONG = ["a" * 1025, "a" * 5000, "*" * 1025, "a" * 1023 + "*", "a" * 1024]

ALL = METACHARACTERS + CONTROL + UNICODE + LONG
MAX_NAME = 1024  # connector.directory.service.MAX_USERNAME_LENGTH, and the channel's limit


def _control(value: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)


def _oracle_dns(conn: Any, base: str, template: str, value: str) -> set[str]:
    """DNs a search for the literal ``value`` finds (the directory's own matching rules)."""
    flt = template.replace("{0}", escape_filter_chars(value))
    try:
        found = conn.search_s(base, ldap.SCOPE_SUBTREE, flt, ["1.1"])
    except ldap.FILTER_ERROR:  # a value the server will not take in a filter: nobody
        return set()
    return {dn.lower() for dn, _ in found if dn}


class Directory:
    """One directory behind one hub: how names are looked up and how users are found."""

    def __init__(
        self,
        hub: DevHubProcess,
        admin: Any,
        base: str,
        by_name: str,
        search: str,
        search_all: str,
        password: str,
    ) -> None:
        self.hub = hub
        self.admin = admin
        self.base = base
        self.by_name = by_name
        self.search = search
        self.search_all = search_all
        self.password = password
        self.alice = self.expected_login("alice")

    def expected_login(self, name: str) -> str | None:
        """``"refused"``, ``None`` (nobody) or the DN the login must be for."""
        if len(name) > MAX_NAME:
            return "refused"
        if _control(name) or not name:
            return None
        found = _oracle_dns(self.admin, self.base, self.by_name, name)
        return found.pop() if len(found) == 1 else None

    def expected_search(self, text: str) -> set[str] | str:
        if len(text) > MAX_NAME:
            return "refused"
        text = text.strip()
        if _control(text):
            return set()
        if not text or text == "*":  # documented: an empty search or "*" lists everyone
            found = self.admin.search_s(self.base, ldap.SCOPE_SUBTREE, self.search_all, ["1.1"])
            return {dn.lower() for dn, _ in found if dn}
        return _oracle_dns(self.admin, self.base, self.search, text)


@pytest.fixture(scope="module")
def openldap(hostile) -> Directory:
    s = hostile.slapd
    return Directory(
        hostile.hub,
        s.admin(),
        s.base,
        "(uid={0})",
        "(&(objectClass=inetOrgPerson)(|(uid={0}*)(cn={0}*)))",
        "(objectClass=inetOrgPerson)",
        s.users["alice"],
    )


@pytest.fixture(scope="module")
def active_directory(hostile, samba_ad, tmp_path_factory) -> Iterator[Directory]:
    """Samba AD behind a hub of its own, with the default (Node connector's) filters."""
    tmp = tmp_path_factory.mktemp("hostile-ad")
    hub = start_devhub(tmp / "hub", lease_seconds=10)
    proc = start_connector(tmp / "c", hub, ad_config(samba_ad))
    hostile.extra.append(proc)  # its log is checked at the end too
    hostile.secrets += [samba_ad.bind_pw, samba_ad.users["alice"]]
    try:
        yield Directory(
            hub,
            samba_ad.connect(samba_ad.admin_dn, samba_ad.admin_pw),
            samba_ad.base,
            "(sAMAccountName={0})",
            "(&(objectCategory=person)(anr={0}))",
            "(objectCategory=person)",
            samba_ad.users["alice"],
        )
    finally:
        hub.stop()


def _check_logins(hostile, directory: Directory) -> None:
    commands = [
        ("authenticate_user", {"pid": f"inj-{i}", "username": name, "password": directory.password})
        for i, name in enumerate(ALL)
    ]
    results = hostile.results(commands, hub=directory.hub)
    for name, result in zip(ALL, results, strict=True):
        expected = directory.expected_login(name)
        if name in METACHARACTERS:
            assert expected is None, f"the directory itself matches {name!r}: {expected}"
        err = result.get("err")
        if expected == "refused":
            assert err == {
                "name": "Unexpected",
                "message": "malformed payload: username must be text",
            }, (name[:40], result)
        elif expected is None:
            assert err and err["name"] == "WrongUsername", (name, result)
            assert err["message"], result
        elif expected == directory.alice:
            assert "profile" in result, (name, result)
            assert result["profile"]["dn"].lower() == expected, (name, result["profile"]["dn"])
        else:  # somebody else: alice's password is not theirs
            assert err and err["name"] in ("WrongPassword", "AccountLocked"), (name, result)


def _check_searches(hostile, directory: Directory) -> None:
    commands = [
        ("search_users", {"pid": f"srch-{i}", "search": text}) for i, text in enumerate(ALL)
    ]
    results = hostile.results(commands, hub=directory.hub)
    for text, result in zip(ALL, results, strict=True):
        expected = directory.expected_search(text)
        if expected == "refused":
            assert result["err"]["name"] == "Unexpected", (text[:40], result)
            assert "malformed payload" in result["err"]["message"]
            continue
        assert "users" in result, (text, result)
        got = {u["dn"].lower() for u in result["users"]}
        assert got == expected, (text, sorted(got), sorted(expected))
        if text in METACHARACTERS and text != "*":
            assert got == set(), (text, got)


def test_openldap_usernames_through_the_channel(hostile, openldap):
    _check_logins(hostile, openldap)


def test_openldap_search_strings_through_the_channel(hostile, openldap):
    _check_searches(hostile, openldap)


def test_active_directory_usernames_through_the_channel(hostile, active_directory):
    _check_logins(hostile, active_directory)


def test_active_directory_search_strings_through_the_channel(hostile, active_directory):
    _check_searches(hostile, active_directory)


def test_escaped_names_from_the_hub_are_taken_as_escaped(hostile, openldap):
    """``escaped: true`` means the hub escaped the value (protocol §3.1): ``\\2a`` is a
    literal ``*`` then, and a raw ``*`` would be the hub's own wildcard (it is trusted to
    sign only what it escaped). An unbalanced filter is nobody, never an error."""
    pw = openldap.password
    names = [("\\2a", True), ("*)(uid=*", True), ("alice", True), ("alice", "yes")]
    results = hostile.results(
        [
            ("authenticate_user", {"pid": f"e{i}", "username": n, "password": pw, "escaped": e})
            for i, (n, e) in enumerate(names)
        ]
    )
    assert results[0]["err"]["name"] == "WrongUsername"
    assert results[1]["err"]["name"] == "WrongUsername"
    assert results[2]["profile"]["id"] == "alice"
    assert results[3]["err"] == {
        "name": "Unexpected",
        "message": "malformed payload: escaped must be true or false",
    }


@pytest.mark.parametrize("name", ALL, ids=[f"n{i}" for i in range(len(ALL))])
def test_usernames_through_the_form(hostile, openldap, name):
    typed = name.strip()[:MAX_NAME]  # what the form does with what it is given
    resp = hostile.submit(name, openldap.password)
    assert resp.status_code != 500
    if not typed:
        assert resp.status_code == 400 and message(resp.text) == "Enter your username and password."
        return
    expected = openldap.expected_login(typed)
    if expected == openldap.alice:
        assert resp.status_code == 303, (name, resp.status_code, message(resp.text))
    else:  # nobody, or somebody whose password this is not
        assert resp.status_code == 401, (name, resp.status_code)
        assert message(resp.text) in (
            "The username or password is incorrect.",
            "This account is locked after too many failed attempts. Try again later or contact "
            "your administrator.",
        )
        assert is_form(resp)
