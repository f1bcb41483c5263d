"""Domain controllers through DNS: SRV records from Samba's internal DNS (on the DC's loopback
alias), RFC 2782 order, the site's DCs first, and failover past a dead DC listed first."""

import json
import random

import pytest
from configs import ad_config
from servers import free_port

from connector import errors
from connector.directory import cldap
from connector.directory.discovery import DcLocator, Srv, rfc2782_order
from connector.settings import load_settings

SITE = "Default-First-Site-Name"

_SET_SRV = r"""
from samba.dcerpc import dnsp
from samba.ndr import ndr_pack, ndr_unpack
dn = data["dn"]
res = db.search(dn, scope=ldb.SCOPE_BASE, attrs=["dnsRecord"])
old = [bytes(v) for v in res[0]["dnsRecord"]]
print(json.dumps([v.hex() for v in old]))
if data.get("restore"):
    new = [bytes.fromhex(v) for v in data["restore"]]
else:
    new = []
    for v in old:
        rec = ndr_unpack(dnsp.DnssrvRpcRecord, v)
        if rec.wType == dnsp.DNS_TYPE_SRV:
            rec.data.wPriority = 10          # the real DC: tried second
        new.append(ndr_pack(rec))
    dead = ndr_unpack(dnsp.DnssrvRpcRecord, old[0])
    dead.wType = dnsp.DNS_TYPE_SRV
    srv = dnsp.srv()
    srv.wPriority, srv.wWeight, srv.wPort = 0, 100, data["dead_port"]
    srv.nameTarget = data["target"]
    dead.data = srv
    new.insert(0, ndr_pack(dead))
m = ldb.Message(ldb.Dn(db, dn))
m["dnsRecord"] = ldb.MessageElement(new, ldb.FLAG_MOD_REPLACE, "dnsRecord")
db.modify(m)
"""


def settings_for(samba_ad, tmp_path, **overrides):
    cfg = ad_config(samba_ad, LDAP_DOMAIN="ad.example.test", DNS_SERVERS=[samba_ad.addr])
    del cfg["LDAP_URL"]
    cfg.update(overrides)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return load_settings(path, environ={})


def test_rfc2782_priority_then_weight():
    records = [
        Srv("c", 389, 20, 0),
        Srv("a", 389, 10, 0),
        Srv("heavy", 389, 10, 90),
        Srv("light", 389, 10, 10),
    ]
    firsts = {"heavy": 0, "light": 0, "a": 0}
    for seed in range(2000):
        order = rfc2782_order(records, random.Random(seed))
        assert {r.host for r in order[:3]} == {"a", "heavy", "light"}
        assert order[3].host == "c"  # a higher priority number always comes after
        firsts[order[0].host] += 1
    # weights 90 : 10 : 0 (a zero weight keeps a small chance, as the RFC says)
    assert firsts["heavy"] > 5 * firsts["light"] > 0
    assert firsts["a"] < firsts["light"]


def test_srv_records_of_samba(samba_ad, tmp_path):
    locator = DcLocator(settings_for(samba_ad, tmp_path))
    answers = locator.lookup()
    assert [(a.host.lower(), a.port) for a in answers] == [("dc1.ad.example.test", 389)]
    assert locator.urls() == (f"ldap://{samba_ad.addr}:389",)


def test_site_records_come_first_and_once(samba_ad, tmp_path):
    locator = DcLocator(settings_for(samba_ad, tmp_path, LDAP_SITE=SITE))
    answers = locator.lookup()
    assert len(answers) == 1 and answers[0].in_site


def test_the_dc_says_which_site_this_machine_is_in(samba_ad):
    answer = cldap.ping(samba_ad.addr, "ad.example.test", timeout=5)
    assert answer.client_site == answer.dc_site == SITE
    assert answer.dc_host.lower() == "dc1.ad.example.test"
    assert answer.forest.lower() == answer.domain.lower() == "ad.example.test"
    assert answer.netbios_domain == samba_ad.domain


def test_without_ldap_site_the_site_comes_from_a_cldap_ping(samba_ad, tmp_path):
    locator = DcLocator(settings_for(samba_ad, tmp_path))
    answers = locator.lookup()
    assert (locator.site, locator.site_source) == (SITE, "CLDAP")
    assert [(a.host.lower(), a.in_site) for a in answers] == [("dc1.ad.example.test", True)]


def test_a_dc_that_does_not_answer_the_ping_leaves_no_site():
    with pytest.raises(errors.DirectoryUnavailable, match="no CLDAP netlogon answer"):
        cldap.ping("127.0.0.1", "ad.example.test", timeout=2, port=free_port())


def test_only_the_domain_configured_signs_people_in(samba_ad, tmp_path, make_directory):
    cfg = ad_config(samba_ad, LDAP_DOMAIN="ad.example.test", DNS_SERVERS=[samba_ad.addr])
    del cfg["LDAP_URL"]
    directory = make_directory(cfg)
    profile = directory.authenticate("alice", samba_ad.users["alice"])
    assert profile["sAMAccountName"] == "alice"
    assert list(directory.servers.health()) == [f"ldap://{samba_ad.addr}:389"]


def test_unknown_domain_is_unavailable_not_a_crash(samba_ad, make_directory):
    cfg = ad_config(samba_ad, LDAP_DOMAIN="nowhere.example.test", DNS_SERVERS=[samba_ad.addr])
    del cfg["LDAP_URL"]
    directory = make_directory(cfg)
    with pytest.raises(errors.DirectoryUnavailable):
        directory.authenticate("alice", samba_ad.users["alice"])
    assert directory.servers.locator.last_error


@pytest.fixture
def dead_dc_first(samba_ad):
    """The SRV answers, the domain's and the site's, list a DC where nothing listens
    (priority 0) before the real one."""
    zone = f"DC=_msdcs.ad.example.test,CN=MicrosoftDNS,DC=ForestDnsZones,{samba_ad.base}"
    names = ["_ldap._tcp.dc", f"_ldap._tcp.{SITE}._sites.dc"]
    saved = []
    for name in names:
        data = {"dn": f"DC={name},{zone}", "dead_port": 1, "target": "dc1.ad.example.test"}
        saved.append((data, json.loads(samba_ad.samdb(_SET_SRV, data))))
    yield
    for data, old in saved:
        samba_ad.samdb(_SET_SRV, {**data, "restore": old})


def test_a_dead_dc_listed_first_is_passed_over(samba_ad, tmp_path, make_directory, dead_dc_first):
    cfg = ad_config(samba_ad, LDAP_DOMAIN="ad.example.test", DNS_SERVERS=[samba_ad.addr])
    del cfg["LDAP_URL"]
    directory = make_directory(cfg)
    urls = directory.servers.urls
    assert urls == (f"ldap://{samba_ad.addr}:1", f"ldap://{samba_ad.addr}:389")
    profile = directory.authenticate("alice", samba_ad.users["alice"])
    assert profile["sAMAccountName"] == "alice"
    health = directory.servers.health()
    assert health[urls[0]]["up"] is False and health[urls[1]]["up"] is True


def test_check_shows_the_srv_answers_and_checks_each_dc(samba_ad, tmp_path):
    from connector.directory.check import check_directory

    steps = check_directory(settings_for(samba_ad, tmp_path, LDAP_SITE=SITE), "alice")
    dns_step = steps[0]
    assert dns_step.name == "dns" and dns_step.ok, dns_step.line()
    assert "dc1.ad.example.test:389 priority 0 weight 100 (site Default-First-Site-Name)" in (
        dns_step.detail
    )
    assert f"site {SITE} from LDAP_SITE" in dns_step.detail
    learned = check_directory(settings_for(samba_ad, tmp_path), "alice")[0]
    assert f"site {SITE} from CLDAP" in learned.detail, learned.line()
    assert f"ldap://{samba_ad.addr}:389" in dns_step.detail
    assert all(s.ok for s in steps), [s.line() for s in steps]
    assert {s.target for s in steps[1:]} == {f"ldap://{samba_ad.addr}:389"}


def test_check_says_when_dns_knows_no_dc(samba_ad, tmp_path):
    from connector.directory.check import check_directory

    steps = check_directory(settings_for(samba_ad, tmp_path, LDAP_DOMAIN="nowhere.example.test"))
    assert [s.name for s in steps] == ["dns"] and not steps[0].ok
    assert "_ldap._tcp.dc._msdcs.nowhere.example.test" in steps[0].detail


def test_dns_asked_again_only_when_stale(samba_ad, tmp_path):
    now = [1000.0]
    settings = settings_for(samba_ad, tmp_path, LDAP_DNS_REFRESH_SECONDS=60)
    locator = DcLocator(settings, clock=lambda: now[0])
    first = locator.urls()
    assert locator.urls() == first and locator.lookups == 1
    now[0] += 59
    locator.urls()
    assert locator.lookups == 1
    now[0] += 1
    assert locator.urls() == first and locator.lookups == 2
