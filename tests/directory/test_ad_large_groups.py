"""Large groups against a real Active Directory (Samba 4 as a domain controller): a group of
3,001 members and a user directly in 1,600 groups, read completely (ranged values, paged
searches), by every group strategy."""

import ldap
import pytest

from connector.directory import passwords
from connector.directory.search import Entry, complete_ranges, range_of, ranged, search

pytestmark = pytest.mark.slow  # a group of 3,001 members and a user in 1,600 groups on Samba

CONTACTS = 3000
GROUPS = 1599  # + Big: "wide" is directly in 1,600 groups
WIDE_PW = "Wide-Passw0rd!"


_BULK = """
ou = data["ou"]
db.add({"dn": ou, "objectClass": "organizationalUnit"})
db.newuser("wide", data["pw"], userou=ou.split(",")[0])
contacts = ["CN=c%04d,%s" % (i, ou) for i in range(data["contacts"])]
for dn in contacts:
    db.add({"dn": dn, "objectClass": "contact"})
for i in range(data["groups"]):
    db.add({"dn": "CN=g%04d,%s" % (i, ou), "objectClass": "group", "member": [data["wide"]]})
db.add({"dn": data["big"], "objectClass": "group", "member": [data["wide"]] + contacts})
db.add({"dn": "CN=Big-Parent," + ou, "objectClass": "group", "member": [data["big"]]})
"""


#: links first (each delete of a linked object rewrites the other end), then the objects
_UNBULK = """
m = ldb.Message(ldb.Dn(db, data["big"]))
m["member"] = ldb.MessageElement([], ldb.FLAG_MOD_DELETE, "member")
db.modify(m)
db.delete(data["wide"])
db.delete(data["ou"], ["tree_delete:1"])
"""


@pytest.fixture(scope="module")
def bulk(samba_ad):
    """OU=Bulk: user ``wide`` in groups g0000…g1598 and in Big, whose other 3,000 members are
    contacts; Big-Parent holds Big (one level of nesting above it). Written into the DC's
    sam.ldb in one transaction (seconds; LDAP adds one by one take a minute)."""
    ou = f"OU=Bulk,{samba_ad.base}"
    data = {
        "ou": ou,
        "pw": WIDE_PW,
        "wide": f"CN=wide,{ou}",
        "big": f"CN=Big,{ou}",
        "contacts": CONTACTS,
        "groups": GROUPS,
    }
    samba_ad.samdb(_BULK, data)
    try:
        yield {**data, "names": {f"g{i:04d}" for i in range(GROUPS)}}
    finally:
        samba_ad.samdb(_UNBULK, data)


def test_range_names():
    assert range_of("member;range=0-1499") == ("member", 0, 1499)
    assert range_of("memberOf;Range=1500-*") == ("memberOf", 1500, None)
    assert range_of("member;binary;range=3-4") == ("member;binary", 3, 4)
    assert range_of("member") is None
    assert range_of("member;range=x-1") is None


def test_the_server_answers_in_ranges_and_the_connector_reads_to_the_end(ad_dir, samba_ad, bulk):
    admin = samba_ad.connect(samba_ad.admin_dn, samba_ad.admin_pw)
    try:
        raw = admin.search_s(
            bulk["big"], ldap.SCOPE_BASE, "(objectClass=*)", ["member;range=0-1499"]
        )
    finally:
        admin.unbind_s()
    # the oracle: one read holds 1,500 values and says where it stopped
    assert {k: len(v) for k, v in raw[0][1].items()} == {"member;range=0-1499": 1500}

    def read(conn):
        return search(
            conn,
            ad_dir.settings,
            bulk["big"],
            "(objectClass=*)",
            ranged(["member", "cn"]),
            scope=ldap.SCOPE_BASE,
        )

    (entry,) = ad_dir._run(read, "read Big")
    assert sorted(entry.attrs) == ["cn", "member"]
    members = {v.decode().lower() for v in entry.values("member")}
    assert len(entry.values("member")) == len(members) == CONTACTS + 1
    assert bulk["wide"].lower() in members


def test_small_steps_read_to_the_end_too(ad_dir, bulk):
    def read(conn):
        first = conn.ldap.search_s(
            bulk["big"], ldap.SCOPE_BASE, "(objectClass=*)", ["member;range=0-99"]
        )
        return complete_ranges(conn, ad_dir.settings, Entry(*first[0]), step=100)

    entry = ad_dir._run(read, "read Big in steps of 100")
    assert len(set(entry.values("member"))) == CONTACTS + 1


def test_the_users_memberof_is_complete(ad_dir, bulk):
    user = ad_dir.find_user("wide")
    assert len(set(user.values("memberOf"))) == GROUPS + 1


def test_the_password_steps_read_of_the_user_is_complete(ad_dir, bulk):
    # the entry read again by DN (password change at sign-in) asks for memberOf by range, as
    # Windows would answer anyway; Samba then stops at 1,500 and the rest is read after it
    user = passwords.user_by_dn(ad_dir, bulk["wide"])
    assert len(set(user.values("memberOf"))) == GROUPS + 1
    assert ad_dir._user_attrs() != ad_dir.user_attributes  # memberOf;range=0-1499 asked


def test_complete_ranges_leaves_plain_entries_alone(ad_dir):
    plain = Entry("CN=x", {"cn": [b"x"]})
    assert ad_dir._run(lambda conn: complete_ranges(conn, ad_dir.settings, plain), "x") is plain


#: not "member": Samba answers (|(member=…)…) over 1,600 groups in minutes, not seconds
@pytest.mark.parametrize("strategy", ["ad", "memberof"])
def test_every_strategy_finds_all_the_groups(ad_with, bulk, strategy):
    directory = ad_with(GROUPS_STRATEGY=strategy, LDAP_PAGE_SIZE=500, LDAP_OPERATION_TIMEOUT=60)
    profile = directory.authenticate("wide", WIDE_PW)
    assert set(profile["groups"]) == bulk["names"] | {"Big", "Big-Parent"}


def test_list_groups_pages_to_the_end(ad_with, bulk):
    listed = set(ad_with(LDAP_PAGE_SIZE=300).list_groups())
    assert bulk["names"] | {"Big", "Big-Parent", "Staff", "Domain Users"} <= listed


def test_search_users_is_paged_to_its_limit(ad_with, bulk):
    directory = ad_with(LDAP_PAGE_SIZE=200, LDAP_SEARCH_LIMIT=5000)
    found = directory.search_users("c", limit=5000)
    # contacts are persons too: all 3,000 "c…" (and carol), across 200-entry pages
    names = {p["nickname"] for p in found}
    assert {f"c{i:04d}" for i in range(CONTACTS)} <= names
    assert len(directory.search_users("c", limit=250)) == 250
