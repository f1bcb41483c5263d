"""Directory faults under a stream of logins: a server killed and restarted, failover between
two servers and back, the Samba AD DC stopped and started.

Each test: devhub -> connector (gunicorn, 2 workers) -> directory, ``authenticate_user`` at a
steady rate over the channel and form sign-ins over HTTP, the fault in the middle. While the
directory is down a login is answered ``Unavailable`` (the hub may retry it; protocol §4) and the
form says the directory cannot be reached (503); nothing is lost, nothing answered twice, the
connector never exits, and it logs which server failed and when it answered again.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from configs import ad_config, openldap_config
from faultkit import OPENLDAP_LOGINS, FormStream, Stream, start_connector
from servers import MonitoredSlapd, ldap_ops
from waits import until, within

pytestmark = pytest.mark.slow  # fault suite: outages timed in seconds

LEASE = 10  # seconds; longer than any single login takes here, even during an outage


def test_directory_server_killed_and_restarted(tmp_path, hub_factory, slapd_factory, fault_table):
    server = slapd_factory()
    hub = hub_factory(lease_seconds=LEASE)
    cfg = openldap_config(server, LDAP_CONNECT_TIMEOUT=1)
    proc = start_connector(tmp_path / "c", hub, cfg)
    workers = proc.worker_pids()
    stream = Stream(hub, OPENLDAP_LOGINS, rate=4).start()
    form = FormStream(proc.url, OPENLDAP_LOGINS[:2]).start()
    try:
        stream.wait_flowing()
        server.kill()  # SIGKILL: a crash, not a shutdown
        time.sleep(4)  # the outage itself: 4 s of traffic against a dead server is the fault
        server.start()  # same ports, same database
        back = time.time()
        stream.wait_success_after(back, 15)
        stream.wait_flowing()
        form.wait_after(back, 303)
    finally:
        form.stop()
        relay = form.relay(hub)
        stream.stop()
        alive = proc.proc.poll() is None and proc.worker_pids() == workers
        log = proc.log()
        proc.stop()
    row = stream.row(
        "directory server killed, restarted after 4 s",
        recovery=stream.first_success_after(back),
        limit=5,
        measured_from="server restarted",
        signins=form.summary(),
        relay=relay,
    )
    fault_table.append(row)
    assert alive  # the master and the same workers, all along
    row.check({"Unavailable"})
    assert row.errors.get("Unavailable"), "the outage was not noticed"
    assert row.slowest < LEASE, "a command waited for its lease to lapse (a retry was dropped)"
    assert set(form.statuses()) <= {303, 503}, form.outcomes
    assert form.first_after(back, 303) is not None
    assert f"LDAP server {server.uri} failed" in log
    assert f"LDAP server {server.uri} is answering again" in log


def _binds(server: MonitoredSlapd) -> int:
    """Binds the server completed since it started (read anonymously: not one of them)."""
    import ldap

    conn = ldap.initialize(server.ldapi_uri)
    try:
        return ldap_ops(conn).get("Bind", 0)
    finally:
        conn.unbind_s()


def test_failover_to_the_second_server_and_back(
    tmp_path: Path, request, hub_factory, slapd_factory, fault_table
):
    first = MonitoredSlapd(tmp_path / "first")  # its cn=Monitor shows where the logins go
    request.addfinalizer(first.stop)
    first.start()
    second = slapd_factory()
    bundle = tmp_path / "cas.pem"  # each test server has its own CA
    bundle.write_text(Path(first.ca_file).read_text() + Path(second.ca_file).read_text())
    hub = hub_factory(lease_seconds=LEASE)
    cfg = openldap_config(
        first,
        LDAP_URLS=[first.uri, second.uri],
        LDAP_CA_FILE=str(bundle),
        LDAP_CONNECT_TIMEOUT=1,
        LDAP_SERVER_RETRY_SECONDS=1,
    )
    proc = start_connector(tmp_path / "c", hub, cfg)
    workers = proc.worker_pids()
    stream = Stream(hub, OPENLDAP_LOGINS, rate=4).start()
    form = FormStream(proc.url, OPENLDAP_LOGINS[:2]).start()
    try:
        stream.wait_flowing()
        first.kill()
        first_down = time.time()
        # failed over: the second server answers while the first is down
        stream.wait_success_after(first_down, 10)
        first.start()
        # once LDAP_SERVER_RETRY_SECONDS (1 s here) have passed, the first server is preferred
        # again: the logins go back to it (each is a bind there) while the second still
        # answers (the pools do not keep lending connections to the second)
        until(lambda: _binds(first) >= 5, 10, "logins back on the first server")
        back_at = _binds(first)
        second.kill()  # now only the first one can answer: it must be used
        second_down = time.time()
        stream.wait_success_after(second_down, 10)
        after_second_down = within(lambda: _binds(first) - back_at, 10) or 0
        second.start()
        stream.wait_flowing()
    finally:
        form.stop()
        relay = form.relay(hub)
        stream.stop()
        alive = proc.proc.poll() is None and proc.worker_pids() == workers
        log = proc.log()
        proc.stop()
    recoveries = [stream.first_success_after(first_down), stream.first_success_after(second_down)]
    row = stream.row(
        "first of 2 servers down (failover), back; then the second down",
        recovery=None if None in recoveries else max(r for r in recoveries if r is not None),
        limit=3,
        measured_from="each server killed (worst)",
        signins=form.summary(),
        relay=relay,
    )
    fault_table.append(row)
    assert alive
    row.check()  # no error at all: the other server answered every time
    assert set(form.statuses()) == {303}, form.outcomes
    assert f"LDAP server {first.uri} failed" in log
    assert after_second_down > 0  # the logins went on, on the first server


def test_samba_dc_stopped_mid_stream(tmp_path, hub_factory, samba_ad, fault_table):
    hub = hub_factory(lease_seconds=LEASE)
    proc = start_connector(tmp_path / "c", hub, ad_config(samba_ad, LDAP_CONNECT_TIMEOUT=1))
    workers = proc.worker_pids()
    logins = [(u, samba_ad.users[u]) for u in ("alice", "bob", "carol", "dave")]
    stream = Stream(hub, logins, rate=3).start()
    form = FormStream(proc.url, logins[:2]).start()
    try:
        stream.wait_flowing()
        samba_ad.stop()  # SIGTERM to the DC, its children follow
        time.sleep(2)  # the outage itself: 2 s of traffic against a stopped DC is the fault
        samba_ad.start()  # returns once LDAP and Kerberos answer
        back = time.time()
        stream.wait_success_after(back, 15)
        stream.wait_flowing()
        form.wait_after(back, 303)
    finally:
        form.stop()
        relay = form.relay(hub)
        stream.stop()
        if not samba_ad.running:  # shared by the session: leave it answering
            samba_ad.start()
        alive = proc.proc.poll() is None and proc.worker_pids() == workers
        log = proc.log()
        proc.stop()
    row = stream.row(
        "Samba AD DC stopped, started again",
        recovery=stream.first_success_after(back),
        limit=5,
        measured_from="DC answering again",
        signins=form.summary(),
        relay=relay,
    )
    fault_table.append(row)
    assert alive
    row.check({"Unavailable"})
    assert row.slowest < LEASE, "a command waited for its lease to lapse (a retry was dropped)"
    assert set(form.statuses()) <= {303, 503}, form.outcomes
    assert form.first_after(back, 303) is not None
    assert f"LDAP server {samba_ad.uri} failed" in log, log[-3000:]
