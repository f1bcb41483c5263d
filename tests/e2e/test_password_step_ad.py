"""The sign-in form's password change step on Active Directory (Samba AD DC), end to end:
gunicorn connector + devhub + Samba over StartTLS, headless Chromium for a must-change user.

The people are the fixture's step people (``AD_STEP_PEOPLE``: must change via pwdLastSet=0,
expired via a 2-day PSO and a pwdLastSet 3 days old, one 5 days before expiry), kept for these
tests alone since their passwords change; each PSO wants 8 characters, complexity, 3 remembered.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import ldap
import pytest
from configs import ad_config
from connector_proc import ConnectorProcess
from hubs import DevHubProcess
from kerberos_clients import Chromium
from password_step import Browserless, chromium_change, connector_with_hub, message, wait_for_text
from servers import AD_STEP_GROUP, AD_STEP_PEOPLE

pytestmark = pytest.mark.slow

POLICY_WORDS = "too short, too simple, one you have used before"


@pytest.fixture(scope="module")
def env(tmp_path_factory, samba_ad) -> Iterator[tuple[DevHubProcess, ConnectorProcess]]:
    tmp = tmp_path_factory.mktemp("password-step-ad")
    with connector_with_hub(tmp, ad_config(samba_ad)) as running:
        yield running


def dn_of(samba_ad: Any, sam: str) -> str:
    conn = samba_ad.connect(samba_ad.bind_dn, samba_ad.bind_pw)
    try:
        found = conn.search_s(samba_ad.base, ldap.SCOPE_SUBTREE, f"(sAMAccountName={sam})", ["1.1"])
    finally:
        conn.unbind_s()
    return str(found[0][0])


def binds(samba_ad: Any, sam: str, password: str) -> bool:
    try:
        samba_ad.connect(dn_of(samba_ad, sam), password).unbind_s()
        return True
    except ldap.INVALID_CREDENTIALS:
        return False


@pytest.mark.parametrize(
    ("sam", "code", "short_words"),
    [
        # the domain's policy (minPwdLength 7) is readable: the connector says "too short"
        ("stepmust1", "773", "The new password is too short."),
        # a PSO the service account may not read: AD's own refusal, which names no rule
        ("stepexp2", "532", POLICY_WORDS),
    ],
)
def test_in_chromium_a_new_password_is_asked_and_the_sign_in_lands_with_groups(
    env, samba_ad, tmp_path, sam, code, short_words
):
    hub, proc = env
    old, new = AD_STEP_PEOPLE[sam][0], f"{sam}-New-pw22!"
    assert f"data {code}" in _bind_error(samba_ad, sam, old)
    with Chromium(tmp_path / "chromium", {}) as browser:
        url = f"{proc.url}/wsfed?wtrealm=urn:acme&wctx=ctx-chromium"
        attempt = chromium_change(browser, url, sam, old)
        assert "expired or must be changed" in browser.text()
        assert short_words in attempt("Sh0rt!")
        assert POLICY_WORDS in attempt(old)  # in the history
        attempt(new)
        wait_for_text(browser, hub.url("login/callback"), AD_STEP_GROUP)
    assert binds(samba_ad, sam, new)
    assert not binds(samba_ad, sam, old)


def _bind_error(samba_ad: Any, sam: str, password: str) -> str:
    try:
        samba_ad.connect(dn_of(samba_ad, sam), password).unbind_s()
    except ldap.INVALID_CREDENTIALS as exc:
        return str(exc.args[0].get("info", ""))
    return ""


def test_expired_user_changes_and_signs_in(env, samba_ad):
    hub, proc = env
    old = AD_STEP_PEOPLE["stepexp1"][0]
    assert "data 532" in _bind_error(samba_ad, "stepexp1", old)
    form = Browserless(proc)
    step = form.sign_in("stepexp1", old)
    assert step.status_code == 200 and 'name="new_password"' in step.text, step.text[:500]
    short = form.change(step, "Sh0rt!")
    assert short.status_code == 400 and POLICY_WORDS in message(short.text)
    done = form.change(short, "Stepexp-New-pw22!")
    assert done.status_code == 303, done.text[:500]
    assert done.headers["Location"].startswith(hub.url("login/callback"))
    assert binds(samba_ad, "stepexp1", "Stepexp-New-pw22!")
    assert not binds(samba_ad, "stepexp1", old)


def test_the_step_is_single_use_and_bound_to_its_address(env, samba_ad):
    _, proc = env
    old = AD_STEP_PEOPLE["stepreplay1"][0]
    form = Browserless(proc)
    step = form.sign_in("stepreplay1", old)
    replay_source = form.change(step, "Sh0rt!")
    assert "too short" in message(replay_source.text)  # the domain's policy: no PSO
    assert "already used" in message(form.change(step, "Stepreplay-New-pw22!").text)
    form.s.headers["X-Forwarded-For"] = "192.0.2.99"
    assert "another sign-in" in message(form.change(replay_source, "Stepreplay-New-pw22!").text)
    assert "data 773" in _bind_error(samba_ad, "stepreplay1", old)  # nothing changed


def test_a_password_about_to_expire_is_offered_and_can_be_skipped(env, samba_ad):
    hub, proc = env
    old = AD_STEP_PEOPLE["stepsoon1"][0]
    form = Browserless(proc)
    step = form.sign_in("stepsoon1", old)
    assert step.status_code == 200, step.text[:500]
    assert "expires in 5 days" in step.text and "Not now" in step.text
    skipped = form.change(step, "", action="skip")
    assert skipped.status_code == 303 and skipped.headers["Location"].startswith(
        hub.url("login/callback")
    )
    assert binds(samba_ad, "stepsoon1", old)


def test_password_expires_at_on_the_profile(env, samba_ad):
    hub, _ = env
    conn = samba_ad.connect(samba_ad.bind_dn, samba_ad.bind_pw)
    try:
        found = conn.search_s(
            samba_ad.base, ldap.SCOPE_SUBTREE, "(sAMAccountName=stepsoon1)", ["pwdLastSet"]
        )
    finally:
        conn.unbind_s()
    last_set = int(found[0][1]["pwdLastSet"][0]) / 10_000_000 - 11644473600
    want = datetime.datetime.fromtimestamp(last_set + 10 * 86400, datetime.UTC)
    old = AD_STEP_PEOPLE["stepsoon1"][0]
    done = hub.wait_done(hub.queue("authenticate_user", {"username": "stepsoon1", "password": old}))
    assert done["result"]["profile"]["password_expires_at"] == want.strftime("%Y-%m-%dT%H:%M:%SZ")
    # the domain's default maximum age (42 days) applies to alice: known
    done = hub.wait_done(
        hub.queue("authenticate_user", {"username": "alice", "password": "Alice-Passw0rd!"})
    )
    assert done["result"]["profile"]["password_expires_at"] > want.strftime("%Y-%m-%d")


def test_hub_change_password_with_the_old_one_for_must_change_and_expired(env, samba_ad):
    hub, _ = env
    for sam in ("stephub1", "stephub2"):
        old = AD_STEP_PEOPLE[sam][0]
        short = hub.wait_done(
            hub.queue("change_password", {"username": sam, "password": "x1!", "oldPassword": old})
        )
        assert short["result"]["err"]["name"] == "PasswordComplexity"
        new = f"{sam}-New-pw22!"
        done = hub.wait_done(
            hub.queue("change_password", {"username": sam, "password": new, "oldPassword": old})
        )
        assert "profile" in done["result"], done
        assert binds(samba_ad, sam, new) and not binds(samba_ad, sam, old)
