"""Valid Kerberos tickets that must still not sign anybody in: a realm the directory entry
does not belong to, an account locked since the ticket was issued.

Real tickets from the MIT KDC (realm EXAMPLE.TEST) against connectors under gunicorn that
accept two realms, ``CORP.TEST`` first (it maps to ``LDAP_BASE``) and ``EXAMPLE.TEST`` second,
so EXAMPLE.TEST plays a child or trusted realm:

* ``unmapped``: EXAMPLE.TEST is not in ``KERBEROS_REALM_DIRECTORIES``: nobody is signed in
  (before the fix, ``alice@EXAMPLE.TEST`` became this directory's alice);
* ``alice_only``: EXAMPLE.TEST maps to alice's own entry (``base:uid=alice,…``): alice signs
  in, bob (whose ticket is just as valid) does not.

And on ``inside`` (one realm): bob, locked by the password policy (``pwdAccountLockedTime``,
set with the Relax control, as after too many failures or by an administrator), still holds a
valid ticket: he gets the form saying the account is locked, as the form itself would.

Every refusal is the form with the reason, 200, no new challenge, and an audit line.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import ldap
import pytest
import requests
from connector_proc import ConnectorProcess
from faultkit import launch, negotiate_header, wait_agents
from hostilekit import REALM_URL, is_form, message

REALMS = '["CORP.TEST", "EXAMPLE.TEST"]'
REFUSED = "Automatic sign-in did not work (your realm EXAMPLE.TEST may not sign in as"


def _connector(hostile, realm_directories: str | None) -> ConnectorProcess:
    env = {
        "KRB5_CONFIG": hostile.kdc.krb5_conf,
        "KRB5RCACHEDIR": str(hostile.workdir / "rcache"),
        "KERBEROS_REALMS": REALMS,
    }
    if realm_directories is not None:
        env["KERBEROS_REALM_DIRECTORIES"] = realm_directories
    proc = launch(lambda: ConnectorProcess(hostile.inside.state_dir, workers=1, env=env))
    hostile.extra.append(proc)  # stopped with the site; its log is checked at the end
    wait_agents(hostile.hub, proc)
    return proc


@pytest.fixture(scope="module")
def unmapped(hostile) -> Iterator[ConnectorProcess]:
    yield _connector(hostile, None)


@pytest.fixture(scope="module")
def alice_only(hostile) -> Iterator[ConnectorProcess]:
    entry = hostile.slapd.user_dn("alice")
    yield _connector(hostile, f'["EXAMPLE.TEST=base:{entry}"]')


def _sign_in(hostile, proc: ConnectorProcess, user: str) -> requests.Response:
    header = negotiate_header(
        f"{user}@EXAMPLE.TEST", hostile.kdc.users[user], hostile.kdc.krb5_conf
    )
    hostile.secrets.append(header.split()[1])
    return requests.get(
        hostile.url(proc),
        params={"wtrealm": REALM_URL, "wctx": f"ctx-realm-{user}"},
        headers={"Authorization": header},
        allow_redirects=False,
        timeout=30,
    )


def _assert_realm_refused(resp: requests.Response, proc: ConnectorProcess, user: str) -> None:
    assert resp.status_code == 200 and is_form(resp), (resp.status_code, resp.text[:300])
    assert "Location" not in resp.headers and "WWW-Authenticate" not in resp.headers
    assert message(resp.text).startswith(REFUSED), message(resp.text)
    audit = f"login method=kerberos user='{user}' outcome=rejected:realm_mismatch"
    assert audit in proc.log()


@pytest.mark.parametrize("user", ["alice", "bob"])
def test_a_realm_without_a_directory_signs_nobody_in(hostile, unmapped, user):
    _assert_realm_refused(_sign_in(hostile, unmapped, user), unmapped, user)


def test_a_ticket_signs_in_only_an_entry_of_its_realm(hostile, alice_only):
    _assert_realm_refused(_sign_in(hostile, alice_only, "bob"), alice_only, "bob")
    resp = _sign_in(hostile, alice_only, "alice")
    assert resp.status_code == 303, message(resp.text)


@pytest.mark.parametrize("how", ["by-an-administrator", "just-now"])
def test_a_locked_account_keeps_no_kerberos_sign_in(hostile, how):
    slapd = hostile.slapd
    locked_time = (
        "000001010000Z"
        if how == "by-an-administrator"
        else time.strftime("%Y%m%d%H%M%SZ", time.gmtime())
    )
    slapd.modify(
        slapd.user_dn("bob"), [(ldap.MOD_REPLACE, "pwdAccountLockedTime", locked_time)], relax=True
    )
    try:
        resp = _sign_in(hostile, hostile.inside, "bob")
    finally:
        slapd.unlock("bob")
    assert resp.status_code == 200 and is_form(resp), (resp.status_code, resp.text[:300])
    assert "Location" not in resp.headers and "WWW-Authenticate" not in resp.headers
    assert message(resp.text).startswith("This account is locked"), message(resp.text)
    assert "login method=kerberos user='bob' outcome=AccountLocked" in hostile.inside.log()
