"""Groups from the Kerberos PAC on a real Negotiate sign-in (``GROUPS_SOURCE=pac``): curl and
headless Chromium against the connector under gunicorn, with Samba AD's KDC (tickets carry a
PAC) and an MIT KDC (tickets carry none: LDAP answers). ``GROUPS_STRATEGY=none`` on the AD site
makes LDAP name no group at all, so every group shown came from the PAC."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import ldap
import pytest
import requests
from configs import ad_config, openldap_config
from connector_proc import ConnectorProcess, setup_config
from hubs import DevHubProcess, start_devhub
from kerberos_clients import Chromium, curl_negotiate, kinit
from ldap.filter import filter_format
from waits import until

from connector import metrics

pytestmark = pytest.mark.slow

IN_CHAIN = "1.2.840.113556.1.4.1941"  # LDAP_MATCHING_RULE_IN_CHAIN


@dataclass
class Site:
    """A devhub and one connector (one worker: one SID cache) in front of a directory."""

    hub: DevHubProcess
    proc: ConnectorProcess
    state: Path
    krb5_conf: str
    ccache: str

    def url(self, wctx: str) -> str:
        query = urlencode({"wtrealm": "urn:acme", "wctx": wctx})
        return f"http://localhost:{self.proc.port}/wsfed?{query}"

    def group_queries_after(self, moment: float) -> int:
        """The worker's LDAP group queries so far, from a status it wrote after ``moment``."""

        def fresh() -> list[dict[str, Any]]:
            found = metrics.read_statuses(self.state / "run")
            return [s for s in found if s["updated"] > moment and s.get("group_cache")]

        (status,) = until(fresh, timeout=15, what="a worker status written after the sign-in")
        return int(status["group_cache"]["queries"])


@contextmanager
def _site(tmp: Path, directory_cfg: dict[str, Any], kdc: dict[str, str]) -> Iterator[Site]:
    hub = start_devhub(tmp / "hub", lease_seconds=4, kerberos=True, ip_ranges=["127.0.0.0/8"])
    proc = None
    try:
        state = tmp / "connector"
        setup_config(
            state,
            directory_cfg,
            hub.ticket_url,
            POLL_WAIT_SECONDS=2,
            KERBEROS_KEYTAB=kdc["keytab"],
            KERBEROS_REALMS=[kdc["realm"]],
            KERBEROS_SERVICE_PRINCIPAL="HTTP/localhost",
        )
        (tmp / "rcache").mkdir()
        env = {"KRB5_CONFIG": kdc["krb5_conf"], "KRB5RCACHEDIR": str(tmp / "rcache")}
        proc = ConnectorProcess(state, env=env, workers=1).start()  # one SID cache
        ccache = kinit(kdc["krb5_conf"], f"dave@{kdc['realm']}", kdc["password"], tmp / "cc")
        yield Site(hub, proc, state, kdc["krb5_conf"], ccache)
    finally:
        if proc is not None:
            proc.stop()
        hub.stop()


def _curl_groups(site: Site, tmp: Path) -> set[str]:
    result = curl_negotiate(site.url("ctx-pac"), tmp, krb5_conf=site.krb5_conf, ccache=site.ccache)
    assert [s for s, _ in result.responses][-1] == 303, result.stderr[-2000:]
    page = requests.get(
        result.headers["Location"], headers={"Accept": "application/json"}, timeout=10
    )
    assert page.status_code == 200, page.text
    profile = page.json()["profile"]
    assert profile["nickname"] == "dave"
    return set(profile["groups"])


def _samba_kdc(samba_ad: Any) -> dict[str, str]:
    return {
        "keytab": samba_ad.keytab,
        "realm": samba_ad.realm,
        "krb5_conf": samba_ad.krb5_conf,
        "password": samba_ad.users["dave"],
    }


def _in_chain_groups(samba_ad: Any, sam: str) -> set[str]:
    """The oracle: the names of every group ``sam`` is in, nested, as AD's in-chain rule says."""
    conn = samba_ad.connect(samba_ad.admin_dn, samba_ad.admin_pw)
    try:
        users = conn.search_s(
            samba_ad.base, ldap.SCOPE_SUBTREE, filter_format("(sAMAccountName=%s)", [sam]), ["1.1"]
        )
        (dn,) = [d for d, _ in users if d is not None]  # referrals have no DN
        in_chain = filter_format(f"(member:{IN_CHAIN}:=%s)", [dn])
        found = conn.search_s(samba_ad.base, ldap.SCOPE_SUBTREE, in_chain, ["cn"])
    finally:
        conn.unbind_s()
    return {attrs["cn"][0].decode() for d, attrs in found if d is not None}


def test_ad_ticket_groups_come_from_the_pac(tmp_path: Path, samba_ad: Any) -> None:
    cfg = ad_config(samba_ad, GROUPS_SOURCE="pac", GROUPS_STRATEGY="none")
    with _site(tmp_path, cfg, _samba_kdc(samba_ad)) as site:
        assert _curl_groups(site, tmp_path) == samba_ad.expected_groups["dave"]


def test_chromium_pac_groups_equal_the_in_chain_groups_and_a_warm_cache_asks_nothing(
    tmp_path: Path, samba_ad: Any
) -> None:
    oracle = _in_chain_groups(samba_ad, "dave")
    assert {"Team-Core", "Team-Dev", "Staff", "Everyone"} <= oracle  # nested 3 deep
    cfg = ad_config(samba_ad, GROUPS_SOURCE="pac", GROUPS_STRATEGY="none")
    with _site(tmp_path, cfg, _samba_kdc(samba_ad)) as site:
        env = {"KRB5_CONFIG": site.krb5_conf, "KRB5CCNAME": site.ccache}
        with Chromium(tmp_path / "chromium", env) as browser:
            shown = []
            queries = []
            for n in range(2):
                browser.get(site.url(f"ctx-chromium-{n}"))
                browser.wait_for("#groups")
                assert browser.texts("#method") == ["kerberos"]
                assert json.loads(browser.texts("#result")[0])["nickname"] == "dave"
                shown.append(set(browser.texts("#groups li")))
                queries.append(site.group_queries_after(time.time()))
        log = site.proc.log()
    assert shown == [oracle, oracle]
    assert queries[0] >= 1  # the cold cache looked the SIDs up
    assert queries[1] == queries[0]  # the warm one answered the second sign-in alone
    assert log.count("login method=kerberos user='dave' outcome=success") == 2


def test_mit_ticket_without_a_pac_falls_back_to_ldap(
    tmp_path: Path, slapd: Any, mit_kdc: Any
) -> None:
    cfg = openldap_config(slapd, GROUPS_SOURCE="pac")
    kdc = {
        "keytab": mit_kdc.keytab,
        "realm": mit_kdc.realm,
        "krb5_conf": mit_kdc.krb5_conf,
        "password": mit_kdc.users["dave"],
    }
    with _site(tmp_path, cfg, kdc) as site:
        groups = _curl_groups(site, tmp_path)
    assert groups == {"team-core", "team-dev", "staff", "everyone"}


def _dave_dn(conn: Any, samba_ad: Any) -> str:
    found = conn.search_s(samba_ad.base, ldap.SCOPE_SUBTREE, "(sAMAccountName=dave)", ["1.1"])
    (dn,) = [d for d, _ in found if d is not None]
    return str(dn)


def test_a_new_group_shows_with_a_new_ticket_and_a_rename_after_the_sid_cache_ttl(
    tmp_path: Path, samba_ad: Any
) -> None:
    """The PAC is the ticket's: a group added to dave shows once he has a new ticket (and not
    with the old one); the group's new name shows once its SID's cached name has expired."""
    ttl = 8
    cfg = ad_config(samba_ad, GROUPS_SOURCE="pac", GROUPS_STRATEGY="none", SID_CACHE_SECONDS=ttl)
    group_dn = f"CN=Pac-Added,CN=Users,{samba_ad.base}"
    conn = samba_ad.connect(samba_ad.admin_dn, samba_ad.admin_pw)
    try:
        with _site(tmp_path, cfg, _samba_kdc(samba_ad)) as site:
            before = _curl_groups(site, tmp_path)
            assert before == samba_ad.expected_groups["dave"]
            conn.add_s(
                group_dn,
                [
                    ("objectClass", [b"top", b"group"]),
                    ("sAMAccountName", [b"Pac-Added"]),
                    ("member", [_dave_dn(conn, samba_ad).encode()]),
                ],
            )
            # The old ticket's PAC does not have the group: the connector shows what Windows
            # itself would use until the user gets a new ticket.
            assert _curl_groups(site, tmp_path) == before
            kinit(site.krb5_conf, f"dave@{samba_ad.realm}", samba_ad.users["dave"], tmp_path / "cc")
            # The new group's SID is named (and its name cached) during this sign-in, so not
            # before this moment: the cached name cannot expire before named_at + ttl. (The
            # connector has one worker here, so one SID cache.)
            named_at = time.monotonic()
            assert _curl_groups(site, tmp_path) == before | {"Pac-Added"}

            conn.modify_s(group_dn, [(ldap.MOD_REPLACE, "sAMAccountName", [b"Pac-Renamed"])])
            conn.rename_s(group_dn, "CN=Pac-Renamed", delold=1)
            group_dn = f"CN=Pac-Renamed,CN=Users,{samba_ad.base}"
            # Within the TTL the cached name answers; after it the SID is named again.
            within = _curl_groups(site, tmp_path)
            assert time.monotonic() - named_at < ttl, "the machine was too slow to tell"
            assert within == before | {"Pac-Added"}
            until(
                lambda: _curl_groups(site, tmp_path) == before | {"Pac-Renamed"},
                timeout=ttl + 20,
                what="the renamed group in the profile",
                interval=0.5,
            )
            assert time.monotonic() - named_at >= ttl
    finally:
        try:
            conn.delete_s(group_dn)
        finally:
            conn.unbind_s()
