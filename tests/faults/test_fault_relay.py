"""Relayed sign-ins (protocol §5) under faults: the hub refusing or dropping the relay for a
while (every sign-in lands once it takes them), and a worker SIGKILLed while it holds sign-ins
the hub has not acknowledged (those are lost, and each waiting browser gets the hub's clear
page at the end of its wait: the documented window)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import requests
from configs import openldap_config
from faultkit import (
    OPENLDAP_LOGINS,
    FormStream,
    Row,
    poll_until,
    relay_tally,
    start_connector,
    wait_agents,
)

pytestmark = pytest.mark.slow  # fault suite: hubs that refuse, workers killed


def _relay_row(fault: str, form: FormStream, hub, **row) -> Row:
    """A row for a test of browser sign-ins only (no command stream)."""
    return Row(
        fault=fault,
        sent=0,
        results=0,
        lost=0,
        duplicated=0,
        slowest=0.0,
        errors={},
        signins=form.summary(),
        relay=row.pop("relay", None) or form.relay(hub),
        **row,
    )


def test_hub_refuses_and_drops_the_relay_for_a_while(tmp_path, hub_factory, slapd, fault_table):
    hub = hub_factory()
    proc = start_connector(tmp_path / "c", hub, openldap_config(slapd))
    form = FormStream(proc.url, OPENLDAP_LOGINS[:2], interval=0.3).start()
    try:
        assert poll_until(lambda: form.statuses()[303] >= 2, 30)
        hub.add_fault(status=503, count=3, retry_after=1, endpoint="signins")
        hub.add_fault(close=2, endpoint="signins")
        faulted = time.time()
        assert poll_until(lambda: not hub.faults(), 60), hub.faults()
        cleared = time.time()
        assert poll_until(lambda: form.first_after(cleared, 303) is not None, 30)
    finally:
        form.stop()
        relay = form.relay(hub, timeout=30)
        log = proc.log()
        proc.stop()
    landed_after = max(0.0, cleared - faulted)
    row = _relay_row(
        "hub refuses (503 x3) then drops (x2) the relay",
        form,
        hub,
        relay=relay,
        recovery=round(landed_after, 1),
        limit=20,
        measured_from="first refused relay, until taken",
    )
    fault_table.append(row)
    assert set(form.statuses()) == {303}, form.outcomes
    relay.check(row.fault)
    assert "relaying" in log and "sign-ins failed: the hub answered 503" in log
    assert hub.state()["events"]["signinRelays"] < len(form.refs) + 5


def test_worker_sigkilled_holding_relayed_signins(tmp_path, hub_factory, slapd, fault_table):
    """Protocol §5.4: sign-ins the hub has not acknowledged die with a SIGKILLed worker; each
    browser waiting for one at the hub gets the clear "unknown" page when its wait ends."""
    hub = hub_factory()
    proc = start_connector(tmp_path / "c", hub, openldap_config(slapd), workers=1)
    [victim] = proc.worker_pids()
    hub.add_fault(status=503, count=1000, endpoint="signins")  # nothing is acknowledged
    form = FormStream(proc.url, OPENLDAP_LOGINS[:2])
    pages: list[requests.Response] = []
    browsers: list[threading.Thread] = []
    try:
        for _ in range(4):
            status, _ = form.once()
            assert status == 303
            browser = threading.Thread(
                target=lambda url=form.locations[-1]: pages.append(requests.get(url, timeout=30))
            )
            browser.start()
            browsers.append(browser)
        assert poll_until(lambda: hub.state()["waiting"] == 4, 15)
        os.kill(victim, signal.SIGKILL)
        killed = time.time()
        hub.clear_faults()
        for browser in browsers:
            browser.join(30)
        turned_away = time.time()
        [replacement] = wait_agents(hub, proc)
        status, _ = form.once()  # the new worker relays again
        assert status == 303
        landed = relay_tally(hub, form.refs[-1:], timeout=15)
        log = proc.log()
    finally:
        proc.stop()
    lost = relay_tally(hub, form.refs[:-1])
    row = _relay_row(
        "worker SIGKILLed holding 4 relayed sign-ins",
        form,
        hub,
        relay=lost,
        recovery=round(turned_away - killed, 1),
        limit=11,
        measured_from="kill, until the browsers' pages",
    )
    fault_table.append(row)
    assert (lost.sent, lost.landed, lost.duplicated) == (4, 0, 0)  # the documented window
    assert [p.status_code for p in pages] == [400] * 4
    assert all("reference is unknown: no connector relayed it within 10 s" in p.text for p in pages)
    assert (landed.sent, landed.landed) == (1, 1)
    assert replacement != victim
    assert f"Worker (pid:{victim}) was sent SIGKILL!" in log
