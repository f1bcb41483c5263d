"""The agent under gunicorn against the devhub: a window of commands larger than its pool,
results posted in batches, readiness known at once, and a re-registration that waits for the
hub instead of giving up."""

import time

import pytest
import requests
from configs import openldap_config
from connector_proc import ConnectorProcess, setup_config
from hubs import start_devhub
from slowproxy import SlowProxy
from waits import until, within

from connector.channel.identity import AgentIdentity
from connector.settings import load_settings

pytestmark = pytest.mark.slow  # a connector per case, long polls held for seconds


def _ready(proc: ConnectorProcess) -> bool:
    try:
        return requests.get(proc.url + "/ready", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def test_a_backlog_is_taken_in_windows_and_answered_in_batches(tmp_path, slapd):
    hub = start_devhub(tmp_path / "hub", lease_seconds=10)
    state = tmp_path / "c"
    setup_config(
        state, openldap_config(slapd), hub.ticket_url, POLL_WAIT_SECONDS=2, AGENT_CONCURRENCY=2
    )
    proc = ConnectorProcess(state).start()
    try:
        assert hub.wait_done(hub.queue("ping", {"pid": "warm"}), 30)["resultCount"] == 1
        hub.add_fault(delay=3, count=1, endpoint="poll")
        # the poll in flight returns; the next one takes the fault and is held while we queue
        until(lambda: hub.state()["pendingFaults"] == 0, 10, "the next poll is held")
        n = 40
        ids = [
            hub.queue(
                "authenticate_user", {"pid": f"b{i}", "username": "alice", "password": "alicepw"}
            )
            for i in range(n)
        ]
        for cid in ids:
            done = hub.wait_done(cid, 60)
            assert done["resultCount"] == 1 and done["deliveries"] == 1, done
            assert done["result"]["profile"]["id"] == "alice"
        events = hub.state()["events"]
        # a poll asked for more than the 2 commands the pool runs at once (window 2 x 4)
        assert 2 < events["largestPoll"] <= 8, events
        # results went back several at a time
        assert events["resultPosts"] < n, events
    finally:
        proc.stop()
        hub.stop()


def test_ready_at_once_although_polls_are_long(tmp_path, slapd):
    hub = start_devhub(tmp_path / "hub")
    state = tmp_path / "c"
    setup_config(state, openldap_config(slapd), hub.ticket_url, POLL_WAIT_SECONDS=30)
    started = time.monotonic()
    proc = ConnectorProcess(state).start()
    try:
        within(lambda: _ready(proc), 25 - (time.monotonic() - started), interval=0.1)
        took = time.monotonic() - started
        # the first poll does not wait: ready long before one 30 s poll could have returned
        assert _ready(proc), proc.log()[-3000:]
        assert took < 15, took
    finally:
        proc.stop()
        hub.stop()


def test_new_certificate_is_registered_once_the_hub_is_back(tmp_path, slapd):
    hub = start_devhub(tmp_path / "hub", lease_seconds=4)
    forward = SlowProxy("127.0.0.1", int(hub.base.rsplit(":", 1)[1]), 0.0)
    port = forward.port
    ticket = f"http://127.0.0.1:{port}/tickets/{hub.ticket}"  # the hub, reached through it
    state = tmp_path / "c"
    setup_config(state, openldap_config(slapd), ticket, POLL_WAIT_SECONDS=1)
    settings = load_settings(state / "config.json", environ={})
    assert str(port) in str(settings.ad_hub)
    rotated = AgentIdentity.generate()
    rotated.save(state, settings.secret_box)  # the administrator rotated the key ...
    forward.close()  # ... and the hub cannot be reached when the connector starts
    proc = ConnectorProcess(state).start()
    try:
        until(lambda: "cannot start polling" in proc.log(), 20, "the first poll failed")
        assert not _ready(proc)
        forward = SlowProxy("127.0.0.1", int(hub.base.rsplit(":", 1)[1]), 0.0, port=port)
        # the same worker registers the new certificate and polls: no restart
        done = hub.wait_done(hub.queue("ping", {"pid": "back"}), 60)
        assert done["resultCount"] == 1
        stored = load_settings(state / "config.json", environ={})
        assert stored.agent_cert_thumbprint == rotated.kid
        assert proc.log().count("registered the new agent certificate") == 1
    finally:
        proc.stop()
        forward.close()
        hub.stop()


def test_sigterm_cuts_an_idle_long_poll(tmp_path, slapd):
    hub = start_devhub(tmp_path / "hub")
    state = tmp_path / "c"
    setup_config(state, openldap_config(slapd), hub.ticket_url, POLL_WAIT_SECONDS=40)
    proc = ConnectorProcess(state).start()
    try:
        assert hub.wait_done(hub.queue("ping", {"pid": "idle"}), 30)["resultCount"] == 1
        # the agent is back in a poll the hub may hold for 40 s
        until(lambda: any(a["polling"] for a in hub.agents()["agents"]), 10, "a held poll")
        started = time.monotonic()
        assert proc.terminate() == 0, proc.log()[-3000:]
        took = time.monotonic() - started
        assert took < 10, took  # not the 40 s hold
        log = proc.log()
        assert "draining: cut the waiting poll" in log
        assert "agent drained: every result acknowledged" in log
        assert "hub poll failed" not in log
        # the next connector takes the work at once: nothing stayed leased to the old one
        proc = ConnectorProcess(state).start()
        done = hub.wait_done(hub.queue("ping", {"pid": "after"}), 30)
        assert done["resultCount"] == 1 and done["deliveries"] == 1, done
    finally:
        proc.stop()
        hub.stop()
