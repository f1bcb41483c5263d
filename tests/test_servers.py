"""Contract of the server fixtures, checked with python-ldap directly."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import ldap
import ldap.filter
import pytest
from ldap.controls import DecodeControlTuples
from ldap.controls.ppolicy import PasswordPolicyControl
from servers import (
    AD_EXPECTED_GROUPS,
    PAREN_GROUP,
    SLAPD_EXPECTED_GROUPS,
    SambaAD,
    Slapd,
    free_port,
    make_ca,
)


def tls_conn(uri: str, ca_file: str) -> Any:
    """The documented python-ldap TLS recipe: CA, DEMAND, NEWCTX last, then StartTLS."""
    conn = ldap.initialize(uri)
    conn.protocol_version = 3
    conn.set_option(ldap.OPT_REFERRALS, 0)
    conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 5)
    conn.set_option(ldap.OPT_X_TLS_CACERTFILE, ca_file)
    conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
    conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
    if uri.startswith("ldap://"):
        conn.start_tls_s()
    return conn


def test_free_port_never_hands_out_a_port_twice() -> None:
    """2,000 ports asked for without binding any: the kernel's random picks among some
    14,000 repeat within a few hundred (the birthday bound), so the helper must remember."""
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)


PPOLICY_CLASSES = {PasswordPolicyControl.controlType: PasswordPolicyControl}


def ppolicy_of(ctrls: list[Any]) -> PasswordPolicyControl:
    decoded = DecodeControlTuples(ctrls, PPOLICY_CLASSES)
    found = [c for c in decoded if isinstance(c, PasswordPolicyControl)]
    assert found, f"no ppolicy response control in {ctrls!r}"
    return found[0]


def rdn_value(dn: str) -> str:
    return str(ldap.dn.str2dn(dn)[0][0][1])


# ------------------------------------------------------------------- OpenLDAP


@pytest.mark.parametrize("which", ["uri", "ldaps_uri"])
def test_slapd_tls_service_bind(slapd: Slapd, which: str) -> None:
    conn = tls_conn(getattr(slapd, which), slapd.ca_file)
    conn.simple_bind_s(slapd.bind_dn, slapd.bind_pw)
    assert conn.whoami_s() == "dn:" + slapd.bind_dn
    res = conn.search_s(slapd.base, ldap.SCOPE_SUBTREE, "(uid=alice)", ["mail", "userPassword"])
    assert res[0][1] == {"mail": [b"alice@example.test"]}  # no userPassword for the service


def test_slapd_tls_rejects_foreign_ca(slapd: Slapd, tmp_path: Path) -> None:
    other = make_ca(tmp_path, ["127.0.0.1"], ["localhost"])
    with pytest.raises(ldap.CONNECT_ERROR):
        tls_conn(slapd.uri, other.ca_file)


def _groups_by_walking_memberof(conn: Any, dn: str) -> set[str]:
    seen: set[str] = set()
    todo = [dn]
    while todo:
        entry = conn.search_s(todo.pop(), ldap.SCOPE_BASE, "(objectClass=*)", ["memberOf"])
        for raw in entry[0][1].get("memberOf", []):
            group = raw.decode()
            if group not in seen:
                seen.add(group)
                todo.append(group)
    return {rdn_value(g) for g in seen}


def test_slapd_nested_groups(slapd: Slapd) -> None:
    conn = tls_conn(slapd.uri, slapd.ca_file)
    conn.simple_bind_s(slapd.bind_dn, slapd.bind_pw)
    dave = conn.search_s(slapd.user_dn("dave"), ldap.SCOPE_BASE, attrlist=["memberOf"])
    assert dave[0][1]["memberOf"] == [slapd.group_dn("team-core").encode()]  # direct only
    for child, parent in [("team-core", "team-dev"), ("team-dev", "staff"), ("staff", "everyone")]:
        got = conn.search_s(slapd.group_dn(child), ldap.SCOPE_BASE, attrlist=["memberOf"])
        assert got[0][1]["memberOf"] == [slapd.group_dn(parent).encode()]
    for user, expected in SLAPD_EXPECTED_GROUPS.items():
        assert _groups_by_walking_memberof(conn, slapd.user_dn(user)) == expected, user


def test_slapd_unicode_and_special_dns(slapd: Slapd) -> None:
    conn = tls_conn(slapd.uri, slapd.ca_file)
    conn.simple_bind_s(slapd.user_dn("jürgen"), slapd.users["jürgen"])
    assert conn.whoami_s() == "dn:" + slapd.user_dn("jürgen")
    flt = f"(cn={ldap.filter.escape_filter_chars('Paren (Test), Jr')})"
    res = conn.search_s(slapd.people_dn, ldap.SCOPE_ONELEVEL, flt, ["uid", "memberOf"])
    assert [dn for dn, _ in res] == [slapd.user_dn("paren")]
    assert [rdn_value(g.decode()) for g in res[0][1]["memberOf"]] == [PAREN_GROUP]


def test_slapd_ppolicy_password_expired(slapd: Slapd) -> None:
    conn = tls_conn(slapd.uri, slapd.ca_file)
    with pytest.raises(ldap.INVALID_CREDENTIALS) as ei:
        conn.simple_bind_s(
            slapd.user_dn("expiry"), slapd.users["expiry"], serverctrls=[PasswordPolicyControl()]
        )
    ctrl = ppolicy_of(ei.value.args[0]["ctrls"])
    assert ctrl.error == 0  # RFC draft: 0 = passwordExpired (2 is changeAfterReset)


def test_slapd_ppolicy_change_after_reset(slapd: Slapd) -> None:
    conn = tls_conn(slapd.uri, slapd.ca_file)
    msgid = conn.simple_bind(
        slapd.user_dn("mustchange"),
        slapd.users["mustchange"],
        serverctrls=[PasswordPolicyControl()],
    )
    _, _, _, ctrls = conn.result3(msgid, resp_ctrl_classes=PPOLICY_CLASSES)
    found = [c for c in ctrls if isinstance(c, PasswordPolicyControl)]
    assert found and found[0].error == 2  # changeAfterReset (bind itself succeeds)


def test_slapd_factory_restart_keeps_data(slapd_factory: Any) -> None:
    server = slapd_factory()
    port, pid = server.port, server.pid
    dn = f"cn=extra,{server.groups_dn}"
    server.add(
        dn, {"objectClass": "groupOfNames", "cn": "extra", "member": server.user_dn("frank")}
    )
    server.restart()
    assert (server.port, server.pid != pid) == (port, True)
    conn = tls_conn(server.uri, server.ca_file)
    conn.simple_bind_s(server.user_dn("frank"), server.users["frank"])
    got = conn.search_s(server.user_dn("frank"), ldap.SCOPE_BASE, attrlist=["memberOf"])
    assert got[0][1]["memberOf"] == [dn.encode()]
    server.kill()  # crash: mdb must survive SIGKILL
    server.start()
    conn = tls_conn(server.uri, server.ca_file)
    conn.simple_bind_s(server.bind_dn, server.bind_pw)
    assert conn.search_s(dn, ldap.SCOPE_BASE, attrlist=["cn"]) == [(dn, {"cn": [b"extra"]})]
    server.delete(dn)


# ------------------------------------------------------------------- Samba AD


@pytest.mark.parametrize("which", ["uri", "ldaps_uri"])
def test_ad_tls_service_bind(samba_ad: SambaAD, which: str) -> None:
    print("samba_ad start-up timings:", samba_ad.timings)
    conn = tls_conn(getattr(samba_ad, which), samba_ad.ca_file)
    conn.simple_bind_s(samba_ad.bind_dn, samba_ad.bind_pw)
    res = conn.search_s(
        samba_ad.base, ldap.SCOPE_SUBTREE, "(sAMAccountName=alice)", ["mail", "givenName"]
    )
    assert res[0][1] == {"mail": [b"alice@ad.example.test"], "givenName": [b"Alice"]}


@pytest.mark.parametrize("user", sorted(AD_EXPECTED_GROUPS))
def test_ad_nested_groups_in_chain(samba_ad: SambaAD, user: str) -> None:
    conn = tls_conn(samba_ad.uri, samba_ad.ca_file)
    conn.simple_bind_s(samba_ad.bind_dn, samba_ad.bind_pw)
    dn = conn.search_s(samba_ad.base, ldap.SCOPE_SUBTREE, f"(sAMAccountName={user})", ["cn"])
    flt = f"(member:1.2.840.113556.1.4.1941:={ldap.filter.escape_filter_chars(dn[0][0])})"
    got = {
        rdn_value(d) for d, _ in conn.search_s(samba_ad.base, ldap.SCOPE_SUBTREE, flt, ["cn"]) if d
    }
    assert got == AD_EXPECTED_GROUPS[user]


@pytest.mark.parametrize(
    ("user", "code"),
    [
        ("disabled1", "533"),
        ("expired1", "532"),
        ("mustchange1", "773"),
        ("acctexp1", "701"),
    ],
)
def test_ad_bind_failure_codes(samba_ad: SambaAD, user: str, code: str) -> None:
    conn = tls_conn(samba_ad.uri, samba_ad.ca_file)
    with pytest.raises(ldap.INVALID_CREDENTIALS) as ei:
        conn.simple_bind_s(samba_ad.upn(user), samba_ad.users[user])
    assert f"data {code}," in ei.value.args[0]["info"]


def test_ad_kerberos_material(samba_ad: SambaAD, tmp_path: Path) -> None:
    assert os.path.getsize(samba_ad.keytab) > 0
    klist = shutil.which("klist")
    kinit = shutil.which("kinit")
    assert klist and kinit, "krb5-user (kinit/klist) is required"
    env = {**os.environ, **samba_ad.env, "KRB5CCNAME": f"FILE:{tmp_path}/cc"}
    keys = subprocess.run(
        [klist, "-ke", samba_ad.keytab], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "HTTP/localhost@AD.EXAMPLE.TEST" in keys and "aes256" in keys and "arcfour" not in keys
    r = subprocess.run(
        [kinit, f"alice@{samba_ad.realm}"],
        input=samba_ad.users["alice"] + "\n",
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
