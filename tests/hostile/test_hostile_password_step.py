"""The sign-in form's password change step, attacked: a replayed ticket, a tampered or
invented one, one from another address or another browser, one past its time, and the step
reached without the directory ever confirming the old password. Every case changes nothing
(the person's old password still answers the same way) and is refused with plain words.

A connector of its own with two workers (a ticket issued by one is used at the other), write-
back on, and 127.0.0.1 trusted as a proxy so that each request names its client address.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Iterator

import ldap
import pytest
import requests
from configs import openldap_config
from connector_proc import ConnectorProcess
from faultkit import start_connector
from hostilekit import Site
from hubs import DevHubProcess, start_devhub
from password_step import Browserless, csrf, message, ticket
from tamper import flip_bit

OLD = "Hostile-Old-pw1"
NEW = "Hostile-New-pw7"  # never in a log


@pytest.fixture(scope="module")
def stepper(
    hostile: Site, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DevHubProcess, ConnectorProcess]]:
    tmp = tmp_path_factory.mktemp("hostile-password-step")
    hub = start_devhub(tmp / "hub", lease_seconds=10)
    cfg = openldap_config(hostile.slapd, ENABLE_WRITE_BACK=True, TRUSTED_PROXIES=["127.0.0.1"])
    proc = start_connector(tmp / "c", hub, cfg)
    hostile.extra.append(proc)  # its log is checked with the others at the end
    hostile.secrets.extend([OLD, NEW])
    try:
        yield hub, proc
    finally:
        hub.stop()


@pytest.fixture
def person(hostile: Site) -> Iterator[str]:
    """A must-change person of this test's own; their uid."""
    uid = f"hostilestep{time.monotonic_ns() % 10**9}"
    dn = hostile.slapd.add_person(uid, OLD, reset=True)
    yield uid
    hostile.slapd.delete(dn)


def still_must_change(hostile: Site, uid: str) -> bool:
    """Whether ``OLD`` still binds with ppolicy's changeAfterReset (nothing was changed)."""
    from ldap.controls.ppolicy import PasswordPolicyControl

    conn = ldap.initialize(hostile.slapd.uri)
    try:
        _, _, _, ctrls = conn.result3(
            conn.simple_bind(hostile.slapd.user_dn(uid), OLD, serverctrls=[PasswordPolicyControl()])
        )
    except ldap.INVALID_CREDENTIALS:
        return False
    finally:
        conn.unbind_s()
    return any(getattr(c, "error", None) == 2 for c in ctrls)


def step_page(
    proc: ConnectorProcess, uid: str, client: str = "192.0.2.20"
) -> tuple[Browserless, requests.Response]:
    form = Browserless(proc, client)
    page = form.sign_in(uid, OLD)
    assert page.status_code == 200 and 'name="step"' in page.text, page.text[:500]
    return form, page


def test_a_replayed_ticket_is_refused(hostile, stepper, person):
    _, proc = stepper
    form, page = step_page(proc, person)
    first = form.change(page, "short1")
    assert "too short" in message(first.text)
    replay = form.change(page, NEW)
    assert replay.status_code == 400 and "already used" in message(replay.text)
    assert still_must_change(hostile, person)


def test_a_tampered_ticket_is_refused(hostile, stepper, person):
    _, proc = stepper
    form, page = step_page(proc, person)
    real = ticket(page.text)
    flipped = flip_bit(real)  # a bit of its MAC
    assert flipped != real
    data = {"csrf_token": csrf(page.text), "step": flipped, "new_password": NEW}
    data["new_password2"] = NEW
    resp = form.s.post(proc.url + "/wsfed/password", data=data, allow_redirects=False, timeout=30)
    assert resp.status_code == 400 and "expired or was already used" in message(resp.text)
    assert still_must_change(hostile, person)


def test_a_ticket_from_another_address_is_refused_and_spent(hostile, stepper, person):
    _, proc = stepper
    form, page = step_page(proc, person)
    form.s.headers["X-Forwarded-For"] = "192.0.2.66"
    moved = form.change(page, NEW)
    assert moved.status_code == 400 and "another sign-in" in message(moved.text)
    form.s.headers["X-Forwarded-For"] = "192.0.2.20"
    assert "already used" in message(form.change(page, NEW).text)
    assert still_must_change(hostile, person)


def test_a_ticket_in_another_browser_is_refused(hostile, stepper, person):
    _, proc = stepper
    _, page = step_page(proc, person)
    thief = Browserless(proc, "192.0.2.20")  # same address, its own CSRF cookie and token
    own = thief.s.get(proc.url + "/wsfed", params=thief.query, timeout=10)
    data = {"csrf_token": csrf(own.text), "step": ticket(page.text)}
    data.update(new_password=NEW, new_password2=NEW, action="change")
    resp = thief.s.post(proc.url + "/wsfed/password", data=data, allow_redirects=False, timeout=30)
    assert resp.status_code == 400 and "another sign-in" in message(resp.text)
    assert still_must_change(hostile, person)


def test_a_ticket_past_its_time_is_refused(hostile, stepper, person):
    _, proc = stepper
    form, page = step_page(proc, person)
    store = proc.state_dir / "run" / "password-steps.sqlite3"
    with sqlite3.connect(store) as db:  # five minutes later, as far as the store can tell
        assert db.execute("UPDATE steps SET expires = expires - 301").rowcount >= 1
    late = form.change(page, NEW)
    assert late.status_code == 400 and "expired or was already used" in message(late.text)
    assert still_must_change(hostile, person)


def test_no_step_without_the_old_password_confirmed(hostile, stepper, person):
    _, proc = stepper
    form = Browserless(proc, "192.0.2.21")
    wrong = form.sign_in(person, "not-the-password")
    assert wrong.status_code == 401 and 'name="step"' not in wrong.text
    invented = {"csrf_token": csrf(wrong.text), "step": "x" * 43}
    invented.update(new_password=NEW, new_password2=NEW, action="skip")
    resp = form.s.post(
        proc.url + "/wsfed/password", data=invented, allow_redirects=False, timeout=30
    )
    assert resp.status_code == 400 and "Location" not in resp.headers
    no_csrf = {"step": "x" * 43, "new_password": NEW, "new_password2": NEW}
    resp = form.s.post(
        proc.url + "/wsfed/password", data=no_csrf, allow_redirects=False, timeout=30
    )
    assert resp.status_code == 400 and "session expired" in message(resp.text)
    assert still_must_change(hostile, person)


def test_a_required_step_cannot_be_skipped(hostile, stepper, person):
    _, proc = stepper
    form, page = step_page(proc, person)
    skipped = form.change(page, "", action="skip")
    assert skipped.status_code == 400 and "Location" not in skipped.headers
    assert 'name="step"' in skipped.text  # still the step, nothing handed to the hub
    assert still_must_change(hostile, person)


def test_the_store_keeps_no_password_or_ticket_in_clear(hostile, stepper, person):
    _, proc = stepper
    _, page = step_page(proc, person)
    store = proc.state_dir / "run" / "password-steps.sqlite3"
    assert stat.S_IMODE(os.stat(store).st_mode) == 0o600
    raw = store.read_bytes()
    for clear in (OLD, person, ticket(page.text)):
        assert clear.encode() not in raw
