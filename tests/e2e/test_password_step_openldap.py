"""The sign-in form's password change step on OpenLDAP (ppolicy), end to end: gunicorn
connector + devhub + slapd, headless Chromium for the whole walk of a must-change user.

Every test adds people of its own under the ``change-step`` policy (30 days, 3 grace sign-ins,
at least 8 characters, 3 remembered), so that changing their passwords touches nobody else's.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import ldap
import pytest
from configs import openldap_config
from connector_proc import ConnectorProcess
from hubs import DevHubProcess
from kerberos_clients import Chromium
from password_step import Browserless, chromium_change, connector_with_hub, message, wait_for_text
from servers import CHANGE_STEP_MAX_AGE, Slapd

pytestmark = pytest.mark.slow

GROUP = "pw-step-group"


@pytest.fixture(scope="module")
def env(tmp_path_factory, slapd) -> Iterator[tuple[DevHubProcess, ConnectorProcess]]:
    tmp = tmp_path_factory.mktemp("password-step")
    with connector_with_hub(tmp, openldap_config(slapd)) as running:
        yield running


@pytest.fixture
def people(slapd: Slapd) -> Iterator[dict[str, str]]:
    """uid -> DN of the people a test adds (removed afterwards, with their group)."""
    added: dict[str, str] = {}
    yield added
    for dn in added.values():
        slapd.delete(dn)
    if added:
        try:
            slapd.delete(slapd.group_dn(GROUP))
        except ldap.NO_SUCH_OBJECT:
            pass


def _generalized(epoch: float) -> str:
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(epoch))


def add(slapd: Slapd, people: dict[str, str], uid: str, password: str, **kw: Any) -> str:
    people[uid] = slapd.add_person(uid, password, **kw)
    return people[uid]


def in_group(slapd: Slapd, dn: str) -> None:
    slapd.add(
        slapd.group_dn(GROUP),
        {"objectClass": [b"groupOfNames"], "cn": [GROUP.encode()], "member": [dn.encode()]},
    )


def binds(slapd: Slapd, dn: str, password: str) -> bool:
    conn = ldap.initialize(slapd.uri)
    try:
        conn.simple_bind_s(dn, password)
        return True
    except ldap.INVALID_CREDENTIALS:
        return False
    finally:
        conn.unbind_s()


@pytest.mark.parametrize("kind", ["must-change", "expired"])
def test_in_chromium_a_new_password_is_asked_and_the_sign_in_lands_with_groups(
    env, slapd, people, tmp_path, kind
):
    hub, proc = env
    uid, old, new = f"pwchromium-{kind}", "Chromium-Old-pw1", "Chromium-New-pw22"
    if kind == "must-change":
        dn = add(slapd, people, uid, old, reset=True)
    else:
        dn = add(slapd, people, uid, old, changed="20200101000000Z")
    in_group(slapd, dn)
    with Chromium(tmp_path / "chromium", {}) as browser:
        url = f"{proc.url}/wsfed?wtrealm=urn:acme&wctx=ctx-chromium"
        attempt = chromium_change(browser, url, uid, old)
        assert "expired or must be changed" in browser.text()
        assert "Not now" not in browser.text()  # required: no skipping
        assert "too short" in attempt("short1")
        assert "used this password before" in attempt(old)  # the current one
        attempt(new)
        wait_for_text(browser, hub.url("login/callback"), GROUP)
    assert binds(slapd, dn, new)
    assert not binds(slapd, dn, old)


def test_expired_user_with_grace_changes_and_signs_in(env, slapd, people):
    hub, proc = env
    dn = add(slapd, people, "pwexpired1", "Expired-Old-pw1", changed="20200101000000Z")
    form = Browserless(proc)
    step = form.sign_in("pwexpired1", "Expired-Old-pw1")
    assert step.status_code == 200 and 'name="new_password"' in step.text, step.text[:500]
    assert "Not now" not in step.text  # required: no skipping
    differ = form.change(step, "Expired-New-pw2", "Expired-New-pw3")
    assert differ.status_code == 400 and "not the same" in message(differ.text)
    done = form.change(differ, "Expired-New-pw2")
    assert done.status_code == 303, done.text[:500]
    query = parse_qs(urlsplit(done.headers["Location"]).query)
    assert done.headers["Location"].startswith(hub.url("login/callback"))
    assert query["wctx"] == ["ctx-pw"] and query["ref"]
    assert binds(slapd, dn, "Expired-New-pw2")
    assert not binds(slapd, dn, "Expired-Old-pw1")


def test_wrong_password_of_an_expired_user_gets_no_step(env, slapd, people):
    _, proc = env
    add(slapd, people, "pwexpired2", "Expired-Old-pw1", changed="20200101000000Z")
    resp = Browserless(proc).sign_in("pwexpired2", "not-the-password")
    assert resp.status_code == 401
    assert 'name="step"' not in resp.text and "incorrect" in message(resp.text)


def test_the_step_is_single_use_and_bound_to_its_address(env, slapd, people):
    _, proc = env
    dn = add(slapd, people, "pwreset2", "Reset-Old-pw1", reset=True)
    form = Browserless(proc)
    step = form.sign_in("pwreset2", "Reset-Old-pw1")
    refused = form.change(step, "short1")
    assert "too short" in message(refused.text)
    replay = form.change(step, "Reset-New-pw22")  # the first page's ticket: spent
    assert replay.status_code == 400 and "already used" in message(replay.text)
    # the live ticket, from another address: refused, and spent by the attempt
    form.s.headers["X-Forwarded-For"] = "192.0.2.99"
    elsewhere = form.change(refused, "Reset-New-pw22")
    assert elsewhere.status_code == 400 and "another sign-in" in message(elsewhere.text)
    form.s.headers["X-Forwarded-For"] = "192.0.2.10"
    again = form.change(refused, "Reset-New-pw22")
    assert again.status_code == 400 and "already used" in message(again.text)
    assert binds(slapd, dn, "Reset-Old-pw1")  # nothing changed


def test_a_password_about_to_expire_is_offered_and_can_be_skipped(env, slapd, people):
    hub, proc = env
    changed = time.time() - CHANGE_STEP_MAX_AGE + 5 * 86400
    dn = add(slapd, people, "pwsoon1", "Soon-Old-pw1", changed=_generalized(changed))
    form = Browserless(proc)
    step = form.sign_in("pwsoon1", "Soon-Old-pw1")
    assert step.status_code == 200, step.text[:500]
    assert "expires in 5 days" in step.text and "Not now" in step.text
    skipped = form.change(step, "", action="skip")
    assert skipped.status_code == 303, skipped.text[:500]
    assert skipped.headers["Location"].startswith(hub.url("login/callback"))
    assert binds(slapd, dn, "Soon-Old-pw1")


def test_password_expires_at_on_the_profile(env, slapd, people):
    hub, _ = env
    changed = int(time.time()) - 86400
    add(slapd, people, "pwdated1", "Dated-Old-pw1", changed=_generalized(changed))
    want = datetime.datetime.fromtimestamp(changed + CHANGE_STEP_MAX_AGE, datetime.UTC)
    done = hub.wait_done(
        hub.queue("authenticate_user", {"username": "pwdated1", "password": "Dated-Old-pw1"})
    )
    assert done["result"]["profile"]["password_expires_at"] == want.strftime("%Y-%m-%dT%H:%M:%SZ")
    # alice's policy is the server's default, which LDAP does not publish: unknown, so absent
    done = hub.wait_done(
        hub.queue("authenticate_user", {"username": "alice", "password": "alicepw"})
    )
    assert "profile" in done["result"] and "password_expires_at" not in done["result"]["profile"]


def test_hub_change_password_with_the_old_one_works_for_a_must_change_user(env, slapd, people):
    hub, _ = env
    dn = add(slapd, people, "pwreset3", "Reset-Old-pw1", reset=True)
    short = hub.wait_done(
        hub.queue(
            "change_password",
            {"username": "pwreset3", "password": "short1", "oldPassword": "Reset-Old-pw1"},
        )
    )
    assert short["result"]["err"]["name"] == "PasswordComplexity"
    done = hub.wait_done(
        hub.queue(
            "change_password",
            {"username": "pwreset3", "password": "Reset-New-pw22", "oldPassword": "Reset-Old-pw1"},
        )
    )
    assert "profile" in done["result"], done
    assert binds(slapd, dn, "Reset-New-pw22") and not binds(slapd, dn, "Reset-Old-pw1")


def test_the_last_grace_sign_in_spent_by_the_form_is_said_plainly(env, slapd, people):
    _, proc = env
    policy = f"cn=one-grace,{slapd.policies_dn}"
    slapd.add(
        policy,
        {
            "objectClass": [b"top", b"device", b"pwdPolicy"],
            "cn": [b"one-grace"],
            "pwdAttribute": [b"userPassword"],
            "pwdMaxAge": [b"60"],
            "pwdGraceAuthNLimit": [b"1"],
            "pwdAllowUserChange": [b"TRUE"],
        },
    )
    try:
        dn = add(
            slapd,
            people,
            "pwgrace1",
            "Grace-Old-pw1",
            policy="one-grace",
            changed="20200101000000Z",
        )
        form = Browserless(proc)
        step = form.sign_in("pwgrace1", "Grace-Old-pw1")  # spends the one grace sign-in
        assert 'name="new_password"' in step.text, step.text[:500]
        refused = form.change(step, "Grace-New-pw22")
        assert refused.status_code == 403
        assert "no longer lets you change it yourself" in message(refused.text)
        assert not binds(slapd, dn, "Grace-New-pw22")
    finally:
        slapd.delete(policy)  # the person goes with the fixture


def test_the_offered_change_takes_a_refusal_then_a_new_password(env, slapd, people):
    hub, proc = env
    changed = time.time() - CHANGE_STEP_MAX_AGE + 2 * 86400
    dn = add(slapd, people, "pwsoon2", "Soon-Old-pw1", changed=_generalized(changed))
    form = Browserless(proc)
    step = form.sign_in("pwsoon2", "Soon-Old-pw1")
    assert "expires in 2 days" in step.text
    refused = form.change(step, "short1")
    assert refused.status_code == 400 and "too short" in message(refused.text)
    assert "expires soon" in refused.text and "Not now" in refused.text  # still optional
    done = form.change(refused, "Soon-New-pw22")
    assert done.status_code == 303 and done.headers["Location"].startswith(
        hub.url("login/callback")
    )
    assert binds(slapd, dn, "Soon-New-pw22") and not binds(slapd, dn, "Soon-Old-pw1")


def test_without_grace_the_form_says_expired_and_the_hub_hears_it_too(env, slapd, people):
    hub, proc = env
    # the fixture's "expiry": expired under a policy without grace sign-ins (no step possible)
    resp = Browserless(proc).sign_in("expiry", "expirypw")
    assert resp.status_code == 401 and 'name="step"' not in resp.text
    assert "expired" in message(resp.text)
    # a grace sign-in is an expired password too: the hub is told so, as for AD's 532
    add(slapd, people, "pwexpired3", "Expired-Old-pw1", changed="20200101000000Z")
    done = hub.wait_done(
        hub.queue("authenticate_user", {"username": "pwexpired3", "password": "Expired-Old-pw1"})
    )
    assert done["result"]["err"]["name"] == "PasswordExpired"
