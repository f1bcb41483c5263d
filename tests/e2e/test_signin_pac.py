"""Groups from the Kerberos PAC on a real Negotiate sign-in (``GROUPS_SOURCE=pac``): curl
against the connector under gunicorn, with Samba AD's KDC (tickets carry a PAC) and an MIT KDC
(tickets carry none: LDAP answers). ``GROUPS_STRATEGY=none`` on the AD site makes LDAP name
no group at all, so every group shown came from the PAC."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from configs import ad_config, openldap_config
from connector_proc import ConnectorProcess, setup_config
from hubs import start_devhub
from kerberos_clients import curl_negotiate, kinit

pytestmark = pytest.mark.slow


def _signed_in_groups(tmp: Path, directory_cfg: dict[str, Any], kdc: dict[str, str]) -> set[str]:
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
        proc = ConnectorProcess(state, env=env).start()
        ccache = kinit(kdc["krb5_conf"], f"dave@{kdc['realm']}", kdc["password"], tmp / "cc")
        url = f"http://localhost:{proc.port}/wsfed?" + urlencode(
            {"wtrealm": "urn:acme", "wctx": "ctx-pac"}
        )
        result = curl_negotiate(url, tmp, krb5_conf=kdc["krb5_conf"], ccache=ccache)
        assert [s for s, _ in result.responses][-1] == 303, result.stderr[-2000:]
        page = requests.get(
            result.headers["Location"], headers={"Accept": "application/json"}, timeout=10
        )
        assert page.status_code == 200, page.text
        profile = page.json()["profile"]
        assert profile["nickname"] == "dave"
        return set(profile["groups"])
    finally:
        if proc is not None:
            proc.stop()
        hub.stop()


def test_ad_ticket_groups_come_from_the_pac(tmp_path: Path, samba_ad: Any) -> None:
    cfg = ad_config(samba_ad, GROUPS_SOURCE="pac", GROUPS_STRATEGY="none")
    kdc = {
        "keytab": samba_ad.keytab,
        "realm": samba_ad.realm,
        "krb5_conf": samba_ad.krb5_conf,
        "password": samba_ad.users["dave"],
    }
    assert _signed_in_groups(tmp_path, cfg, kdc) == samba_ad.expected_groups["dave"]


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
    assert _signed_in_groups(tmp_path, cfg, kdc) == {"team-core", "team-dev", "staff", "everyone"}
