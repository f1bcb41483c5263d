"""What the directory layer asks the server (a real OpenLDAP), request by request: paging only
where an answer can be larger than a server hands out at once, no more than is needed."""

import ldap
import ldap.ldapobject
import pytest
from ldap.controls import SimplePagedResultsControl

from connector.directory.search import UNPAGED_LIMIT


@pytest.fixture
def sent(monkeypatch):
    """Every search sent (base, filter, attributes, paged or not, size limit), in order."""
    out = []
    original = ldap.ldapobject.SimpleLDAPObject.search_ext

    def spy(self, base, scope, filterstr="(objectClass=*)", attrlist=None, *args, **kwargs):
        ctrls = kwargs.get("serverctrls") or []
        out.append(
            {
                "base": base,
                "filter": filterstr,
                "attrs": list(attrlist or []),
                "paged": any(c.controlType == SimplePagedResultsControl.controlType for c in ctrls),
                "sizelimit": kwargs.get("sizelimit", 0),
            }
        )
        return original(self, base, scope, filterstr, attrlist, *args, **kwargs)

    monkeypatch.setattr(ldap.ldapobject.SimpleLDAPObject, "search_ext", spy)
    return out


def test_a_user_lookup_is_one_plain_search_of_at_most_two(ldap_dir, sent):
    ldap_dir.find_user("dave")
    lookups = [s for s in sent if s["filter"] == "(uid=dave)"]
    assert lookups == [{**lookups[0], "paged": False, "sizelimit": 2}], (
        "the lookup is bounded: no paged-results control"
    )


def test_a_lookup_that_matches_several_keeps_what_came_before_the_limit(ldap_dir, sent):
    found = ldap_dir.find_entries("(objectClass=inetOrgPerson)")  # a lookup: at most 2
    assert len(found) == 2  # more match: the server stopped at the size limit
    asked = [s for s in sent if s["filter"] == "(objectClass=inetOrgPerson)"]
    # asked again after the size-limit error, its entries then kept as they came
    assert [(s["paged"], s["sizelimit"]) for s in asked] == [(False, 2), (False, 2)]


def test_searches_that_may_be_long_are_paged(ldap_with, sent):
    directory = ldap_with(LDAP_PAGE_SIZE=3)
    everyone = directory.search_users("", limit=5)  # a limit beyond the page size
    assert len(everyone) == 5
    listing = [s for s in sent if s["filter"] == directory.settings.ldap_search_all_query]
    assert listing and all(s["paged"] for s in listing)  # pages of 3 (then the abandon)


def test_a_listing_within_the_page_size_is_one_plain_search(ldap_dir, sent):
    found = ldap_dir.search_users("", limit=4)
    assert len(found) == 4
    listing = [s for s in sent if s["filter"] == ldap_dir.settings.ldap_search_all_query]
    assert [(s["paged"], s["sizelimit"]) for s in listing] == [(False, 4)]


def test_a_listing_beyond_the_unpaged_limit_is_paged(ldap_with, sent):
    directory = ldap_with(LDAP_PAGE_SIZE=UNPAGED_LIMIT * 2, LDAP_SEARCH_LIMIT=UNPAGED_LIMIT + 1)
    directory.search_users("", limit=UNPAGED_LIMIT + 1)
    listing = [s for s in sent if s["filter"] == directory.settings.ldap_search_all_query]
    assert listing and listing[0]["paged"]


def test_a_walk_level_is_one_plain_search_capped_at_the_page_size(ldap_with, sent):
    directory = ldap_with(LDAP_PAGE_SIZE=3)
    directory.get_profile("dave")  # each level of dave's walk finds fewer than 3 groups
    walk = [s for s in sent if s["filter"].startswith(("(member=", "(|(member="))]
    assert walk and [(s["paged"], s["sizelimit"]) for s in walk] == [(False, 3)] * len(walk)


@pytest.fixture
def joiner(slapd):
    """A person of this test's own directly in 7 groups of their own; all removed after."""
    uid = "wide-joiner"
    dn = slapd.add_person(uid, "Joiner-pw-7", policy=None)
    groups = [slapd.group_dn(f"wide-{i}") for i in range(7)]
    for i, gdn in enumerate(groups):
        slapd.add(gdn, {"objectClass": "groupOfNames", "cn": f"wide-{i}", "member": dn})
    yield uid, [f"wide-{i}" for i in range(7)]
    for gdn in groups:
        slapd.delete(gdn)
    slapd.delete(dn)


def test_a_walk_level_larger_than_a_page_is_asked_again_paged(ldap_with, sent, joiner):
    uid, names = joiner
    paged = ldap_with(LDAP_PAGE_SIZE=3, GROUPS_CACHE_SECONDS=0).get_profile(uid)
    first = [s for s in sent if s["filter"] == f"(member={paged['dn']})"]
    # the plain search stopped at 3 (sizeLimitExceeded): the level asked again, in pages of 3
    assert [(s["paged"], s["sizelimit"]) for s in first[:2]] == [(False, 3), (True, 0)]
    assert sorted(paged["groups"]) == sorted(names)  # every group, none twice
    sent.clear()
    whole = ldap_with(GROUPS_CACHE_SECONDS=0).get_profile(uid)  # within the default page
    first = [s for s in sent if s["filter"] == f"(member={whole['dn']})"]
    assert [(s["paged"], s["sizelimit"]) for s in first] == [(False, 500)]
    assert whole["groups"] == paged["groups"]


def test_the_member_walk_reads_only_the_names_of_groups(ldap_dir, sent):
    ldap_dir.get_profile("dave")
    walk = [s for s in sent if s["filter"].startswith(("(member=", "(|(member="))]
    assert len(walk) == 5  # dave's groups are 4 levels deep, and a level finds nothing
    assert all(s["attrs"] == ["cn"] for s in walk)


def test_a_user_lookup_asks_only_for_what_the_schema_defines(ldap_dir, sent):
    profile = ldap_dir.get_profile("alice")
    asked = {a.lower() for s in sent if s["filter"] == "(uid=alice)" for a in s["attrs"]}
    # OpenLDAP's schema has no AD attributes: asking costs slapd, and answers nothing
    assert not asked & {"samaccountname", "objectguid", "useraccountcontrol", "lockouttime"}
    # what it defines is still asked for, operational attributes included
    assert {"uid", "mail", "memberof", "pwdchangedtime", "pwdaccountlockedtime"} <= asked
    assert profile["id"] == "alice" and profile["emails"] == [{"value": "alice@example.test"}]


SCHEMA = [
    b"( 2.5.4.3 NAME ( 'cn' 'commonName' ) DESC 'RFC4519: common name(s)' SUP name )",
    b"( 0.9.2342.19200300.100.1.1 NAME 'uid' EQUALITY caseIgnoreMatch )",
    b"(1.3.6.1.4.1.42.2.27.8.1.16 NAME 'pwdChangedTime' DESC 'x' NO-USER-MODIFICATION )",
    b"( 1.2.3.4 DESC 'a type without a name' )",
]


def test_schema_attribute_names_reads_every_name_and_oid():
    from connector.directory.search import schema_attribute_names

    assert schema_attribute_names(SCHEMA) == {
        "2.5.4.3",
        "cn",
        "commonname",
        "0.9.2342.19200300.100.1.1",
        "uid",
        "1.3.6.1.4.1.42.2.27.8.1.16",
        "pwdchangedtime",
        "1.2.3.4",
    }
    assert schema_attribute_names([]) == frozenset()


def test_entry_values_are_found_whatever_the_spelling():
    from connector.directory.search import Entry

    entry = Entry("uid=a,dc=x", {"sAMAccountName": [b"a"], "mail": [b"m1"], "MAIL": [b"m2"]})
    assert entry.values("sAMAccountName") == [b"a"]  # as the server spells it
    assert entry.values("samaccountname") == [b"a"]
    assert entry.values("Mail") == [b"m1"]  # the first spelling wins, as before
    assert entry.values("MAIL") == [b"m2"]  # the exact spelling first
    assert entry.values("pwdChangedTime") == [] and entry.first("cn") is None
    assert entry.first("SAMACCOUNTNAME") == "a"
    assert entry == Entry("uid=a,dc=x", dict(entry.attrs))  # the index is not compared


def test_only_option_names_send_an_entry_to_the_range_reads():
    from connector.directory.search import Entry, complete_ranges

    plain = Entry("cn=g", {"cn": [b"g"], "member": [b"uid=a"]})
    assert complete_ranges(None, None, plain) is plain  # type: ignore[arg-type]
    ranged = Entry("cn=g", {"cn": [b"g"], "member;range=0-*": [b"uid=a"]})
    assert complete_ranges(None, None, ranged).attrs == {"cn": [b"g"], "member": [b"uid=a"]}  # type: ignore[arg-type]
