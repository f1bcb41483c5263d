"""Hub faults under a stream of logins: 500s, reset connections, slow answers, a hub gone for
a minute, and the hub's clock 10 minutes off in either direction.

While the hub misbehaves the commands wait in its queue and the results in the agent's outbox;
the agent backs off (0.5 s doubling to 30 s, full jitter) and never exits. Every command ends
with exactly one result, and the first login after the fault ends comes within the backoff
delay the agent had reached.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from configs import openldap_config
from faultkit import (
    OPENLDAP_LOGINS,
    FormStream,
    HubOutage,
    Stream,
    poll_until,
    start_connector,
    wait_log,
)
from hubs import DevHubProcess, start_devhub
from waits import until

pytestmark = pytest.mark.slow  # fault suite: outages timed in seconds (one of 60 s)

#: Longer than a poster can spend on one result while the hub fails: five failures in a row
#: (the 500 and reset faults below) cost up to 0.5 + 1 + 2 + 4 + 8 = 15.5 s of jittered
#: backoff. A lease that lapsed meanwhile would have the command run and answered twice.
LEASE = 20


@pytest.fixture(scope="module")
def site(tmp_path_factory, slapd) -> Iterator[tuple[DevHubProcess, object]]:
    """One hub and one connector (2 workers) for the faults that leave no trace behind."""
    tmp = tmp_path_factory.mktemp("hub-faults")
    hub = start_devhub(tmp / "hub", lease_seconds=LEASE)
    proc = start_connector(tmp / "c", hub, openldap_config(slapd))
    try:
        yield hub, proc
    finally:
        proc.stop()
        hub.stop()


def _faults_consumed(hub: DevHubProcess, timeout: float = 60) -> float:
    assert poll_until(lambda: not hub.admin("GET", "faults")["faults"], timeout, 0.05)
    return time.time()


def _run_hub_fault(site, fault_table, name, fault, *, limit, log_says, measured_from, ends=None):
    """Stream, inject ``fault``, and measure from when it was used up (or, with ``ends``,
    from when that log line appeared)."""
    hub, proc = site
    workers = proc.worker_pids()
    hub.clear_faults()
    offset = len(proc.log())
    stream = Stream(hub, OPENLDAP_LOGINS, rate=4, prefix=name.split()[0]).start()
    try:
        stream.wait_flowing()
        hub.add_fault(**fault)
        ended = _faults_consumed(hub)
        for text in log_says:
            wait_log(proc, re.escape(text), timeout=30, after=offset)
            if text == ends:
                ended = time.time()
        stream.wait_success_after(ended, limit + 5)
        stream.wait_flowing()
    finally:
        stream.stop()
    row = stream.row(
        name, recovery=stream.first_success_after(ended), limit=limit, measured_from=measured_from
    )
    fault_table.append(row)
    assert proc.proc.poll() is None and proc.worker_pids() == workers
    row.check()
    return row


def test_hub_answers_500(site, fault_table):
    # 5 failures in a row at most per poller or poster: its next delay is at most 0.5 * 2**4
    _run_hub_fault(
        site,
        fault_table,
        "hub answers 500 (5 requests)",
        {"status": 500, "count": 5},
        limit=10,
        log_says=["the hub answered 500"],
        measured_from="last 500 answered",
    )


def test_hub_resets_connections(site, fault_table):
    _run_hub_fault(
        site,
        fault_table,
        "hub drops connections unanswered (5)",
        {"close": 5},
        limit=10,
        log_says=["cannot reach the hub at"],
        measured_from="last connection dropped",
    )


def test_hub_answers_slowly(site, fault_table):
    # slow but within the read timeouts: late answers, no error, nothing to retry
    _run_hub_fault(
        site,
        fault_table,
        "hub answers 4 s late (6 requests)",
        {"delay": 4, "count": 6},
        limit=6,
        log_says=[],
        measured_from="last slow request began",
    )


def test_hub_slower_than_the_read_timeout(site, fault_table):
    # a poll held 20 s: longer than its read timeout (POLL_WAIT_SECONDS + 15 = 16 s); what the
    # hub hands that abandoned poll comes back to the queue when the lease lapses
    _run_hub_fault(
        site,
        fault_table,
        "hub holds a poll 20 s (read timeout 16 s)",
        {"delay": 20, "count": 1, "endpoint": "poll"},
        limit=5,
        log_says=["the hub did not answer in time"],
        measured_from="the held poll timed out",
        ends="the hub did not answer in time",
    )


def test_hub_down_for_a_minute(tmp_path, slapd, fault_table):
    """The hub's address refuses connections for 60 s; open connections are cut.

    60 s is longer than the agent needs to reach its longest backoff (30 s, after about 32 s
    of failures at worst), so this outage stands for any longer one: the retry interval never
    grows past the cap, and the first login after the hub is back comes within 30 s (plus a
    poll).

    The lease (100 s) outlasts the outage plus the longest backoff, so a command whose result
    waits in one worker's outbox is not handed to the other worker meanwhile (that would run
    it twice: delivery is at least once).

    Browser sign-ins go on throughout (protocol §5: no hub call in the sign-in): those made
    during the outage wait in their worker's relay queue and all land once the hub is back.
    """
    outage = HubOutage()
    hub = start_devhub(tmp_path / "hub", lease_seconds=100, public_url=outage.url)
    outage.target = ("127.0.0.1", int(hub.base.rsplit(":", 1)[1]))
    # adHub is on the outage proxy's origin, not the ticket's: setup needs it confirmed
    proc = start_connector(
        tmp_path / "c", hub, openldap_config(slapd), HUB_TRUSTED_ORIGINS=[outage.url]
    )
    assert outage.url in (tmp_path / "c" / "config.json").read_text()  # AD_HUB: via the proxy
    workers = proc.worker_pids()
    stream = Stream(hub, OPENLDAP_LOGINS, rate=2, prefix="down").start()
    form = FormStream(proc.url, OPENLDAP_LOGINS[:2], interval=1.0).start()
    try:
        stream.wait_flowing()
        # no command in flight at the cut: one handed to a poll already cut off (the hub
        # cannot tell) would wait for its lease to lapse (shown by the SIGKILL row)
        stream.pause()
        outage.down()
        went = time.time()
        # the hub's pending polls (cut at our end, 1 s at the hub's) end before anything is
        # queued again: a command must not go to a poll nobody reads
        until(lambda: not any(a["polling"] for a in hub.agents()["agents"]), 10, "polls ended")
        stream.resume()
        time.sleep(58.5)  # the outage itself: a minute without the hub is the fault
        outage.up()
        back = time.time()
        stream.wait_success_after(back, 40)
        stream.wait_flowing()
        form.wait_after(back, 303)
    finally:
        form.stop()
        stream.stop(timeout=90)
        relay = form.relay(hub, timeout=45)
        outage.close()
        alive = proc.proc.poll() is None and proc.worker_pids() == workers
        log = proc.log()
        proc.stop()
        hub.stop()
    row = stream.row(
        "hub down for 60 s (refused, open connections cut)",
        recovery=stream.first_success_after(back),
        limit=35,
        measured_from="hub reachable again",
        signins=form.summary(),
        relay=relay,
    )
    fault_table.append(row)
    assert alive
    row.check()
    assert set(form.statuses()) == {303}, form.outcomes  # the outage never showed to a person
    assert form.first_after(back, 303) is not None
    assert f"hub poll failed: cannot reach the hub at {outage.url}" in log
    assert re.search(r"relaying \d+ sign-ins failed: cannot reach the hub", log)
    reconnected = log.rfind("connected to the hub")
    assert reconnected > log.find("hub poll failed"), "no reconnection logged"
    assert went < back


@pytest.mark.parametrize("offsets", [(600, 0, -600, 0)], ids=["+600,0,-600,0"])
def test_hub_clock_ten_minutes_off(site, fault_table, offsets):
    """The hub's clock jumps 10 minutes ahead, back, 10 minutes behind, back: far beyond the
    60 s JWT leeway. The agent times its tokens and checks commands on the hub's clock, learnt
    from every answer (``serverTime``, and the ``Date`` of a refusal), so logins go on.

    The stream pauses around each jump: a command signed just before the hub's clock jumps is
    legitimately expired (or from the future) in the hub's new time, which is the hub's doing.
    """
    hub, proc = site
    workers = proc.worker_pids()
    offset_at = len(proc.log())
    stream = Stream(hub, OPENLDAP_LOGINS, rate=4, prefix="skew").start()
    recoveries = []
    try:
        stream.wait_flowing()
        for seconds in offsets:
            stream.pause()
            hub.set_clock_offset(seconds)
            stream.clock_moved(seconds)
            moved = time.time()
            stream.resume()
            recoveries.append(stream.wait_success_after(moved, 10))
            stream.wait_flowing()
    finally:
        stream.stop()
        hub.set_clock_offset(0)
    row = stream.row(
        "hub clock +600 s, 0, -600 s, 0 (JWT leeway 60 s)",
        recovery=None if None in recoveries else max(r for r in recoveries if r is not None),
        limit=5,
        measured_from="each jump of the hub clock (worst)",
    )
    fault_table.append(row)
    assert proc.proc.poll() is None and proc.worker_pids() == workers
    row.check()
    log = proc.log()[offset_at:]
    said = [float(x) for x in re.findall(r"clock differs from the hub's by (-?[\d.]+) s", log)]
    assert any(x > 590 for x in said) and any(x < -590 for x in said), said
    assert "clock offset to the hub back to" in log
