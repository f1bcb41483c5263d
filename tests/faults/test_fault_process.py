"""Process faults under a stream of logins: a worker SIGKILLed while it holds commands,
SIGTERM during load (drain, start again, go on), and the configuration directory read-only.

A slow directory (a TCP proxy that delays every reply) makes the workers hold commands long
enough to be caught holding them.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import pytest
from configs import openldap_config
from connector_proc import ConnectorProcess, setup_config
from faultkit import (
    FAST,
    OPENLDAP_LOGINS,
    FormStream,
    ReadOnlyStateConnector,
    Stream,
    agent_pid,
    launch,
    poll_until,
    start_connector,
    wait_agents,
    wait_log,
)
from slowproxy import SlowProxy

pytestmark = pytest.mark.slow  # fault suite: killed and restarted workers


def _files(state):
    """The state directory's files, but the gunicorn logs the tests write there."""
    return sorted(p.name for p in state.iterdir() if not p.name.startswith("gunicorn-"))


@pytest.fixture
def slow_directory(slapd) -> Iterator[dict[str, object]]:
    """OpenLDAP behind a proxy delaying each reply 0.15 s: a login takes about a second."""
    proxy = SlowProxy("127.0.0.1", slapd.port, delay=0.15)
    try:
        yield openldap_config(
            slapd,
            LDAP_URL=proxy.url,
            LDAP_STARTTLS=False,
            LDAP_ALLOW_CLEARTEXT=True,  # the delay is per chunk: TLS would add round trips
            GROUPS_CACHE_SECONDS=0,
        )
    finally:
        proxy.close()


def _holder(stream: Stream, pids: list[int], timeout: float = 15) -> tuple[int, list[str]]:
    """A worker that holds commands right now, and their ids."""
    found: list[tuple[int, list[str]]] = []

    def check() -> bool:
        leased = [v for v in stream.commands() if v["state"] == "leased"]
        by_pid = {pid: [v["id"] for v in leased if agent_pid(v["agent"]) == pid] for pid in pids}
        pid = max(by_pid, key=lambda p: len(by_pid[p]))
        if len(by_pid[pid]) >= 2:
            found.append((pid, by_pid[pid]))
            return True
        return False

    assert poll_until(check, timeout, 0.05), "no worker held two commands"
    return found[-1]


def test_worker_sigkilled_while_holding_commands(
    tmp_path, hub_factory, slow_directory, fault_table
):
    lease = 6
    hub = hub_factory(lease_seconds=lease)
    proc = start_connector(tmp_path / "c", hub, slow_directory)
    workers = proc.worker_pids()
    stream = Stream(hub, OPENLDAP_LOGINS, rate=3, prefix="kill").start()
    try:
        stream.wait_flowing()
        victim, held = _holder(stream, workers)
        os.kill(victim, signal.SIGKILL)
        killed = time.time()
        # what it answered between the look and the kill (a loaded machine) was not held; read
        # once gunicorn has reaped it, so that a results post it sent just before is counted
        poll_until(lambda: victim not in proc.worker_pids(), 10, 0.05)
        held = [v["id"] for v in stream.commands() if v["id"] in held and v["state"] != "done"]
        assert held, "the worker answered everything it held before it was killed"
        assert poll_until(lambda: not set(held) & set(stream.pending()), 30, 0.2)
        all_back = time.time()
        replaced = poll_until(lambda: len(proc.worker_pids()) == 2, 15)
        stream.wait_flowing()
    finally:
        stream.stop()
        alive = proc.proc.poll() is None
        now_workers = proc.worker_pids()
        log = proc.log()
        proc.stop()
    row = stream.row(
        f"worker SIGKILLed holding {len(held)} commands",
        recovery=all_back - killed,
        limit=lease + 8,
        measured_from="kill, until its commands were answered",
    )
    fault_table.append(row)
    assert alive and replaced, log[-3000:]
    assert victim not in now_workers and len(now_workers) == 2
    assert set(workers) - {victim} <= set(now_workers)  # the other worker was left alone
    row.check()
    for cid in held:
        view = stream.views[cid]
        assert view["deliveries"] >= 2 and view["resultCount"] == 1, view
        assert agent_pid(view["agent"]) != victim
    assert f"Worker (pid:{victim}) was sent SIGKILL!" in log
    assert "Booting worker with pid" in log.split(f"Worker (pid:{victim}) was sent SIGKILL!")[1]


def test_sigterm_during_load_drains_then_a_restart_goes_on(
    tmp_path, hub_factory, slow_directory, fault_table
):
    hub = hub_factory(lease_seconds=30)  # longer than the drain: nothing is handed out twice
    state = tmp_path / "c"
    proc = start_connector(state, hub, slow_directory)
    workers = proc.worker_pids()
    stream = Stream(hub, OPENLDAP_LOGINS, rate=3, prefix="term").start()
    second: ConnectorProcess | None = None
    alive = False
    try:
        stream.wait_flowing()
        _, held = _holder(stream, workers)
        code = proc.terminate()
        stopped = time.time()
        first_log = proc.log()
        second = launch(lambda: ConnectorProcess(state, workers=2, threads=4))
        wait_agents(hub, second)
        started = time.time()
        stream.wait_success_after(started, 15)
        stream.wait_flowing()
    finally:
        stream.stop()
        if second is not None:
            alive = second.proc.poll() is None and second.worker_pids() != []
            second.stop()
        proc.stop()
    row = stream.row(
        f"SIGTERM holding {len(held)}+ commands; started again",
        recovery=stream.first_success_after(started),
        limit=5,
        measured_from="restarted connector ready",
    )
    fault_table.append(row)
    assert code == 0, first_log[-3000:]
    assert alive
    row.check()
    for cid in held:  # finished and posted by the draining worker, not handed out again
        view = stream.views[cid]
        assert view["deliveries"] == 1 and view["resultCount"] == 1, view
        assert view["doneAt"] / 1000 <= stopped + 1, view
    assert first_log.count("agent drained: every result acknowledged") == 2, first_log[-3000:]


def test_config_directory_read_only(tmp_path, hub_factory, slapd, fault_table):
    """The state directory (config.json, secret.key, agent.key) on a read-only file system.

    The connector is set up, then the administrator puts a new plain LDAP_BIND_PASSWORD in
    config.json (the connector seals such a password on start). With the directory mounted
    read-only it cannot: it says so, keeps the password in memory, and serves.
    """
    hub = hub_factory(lease_seconds=10)
    state = tmp_path / "c"
    cfg = openldap_config(slapd)
    setup_config(state, cfg, hub.ticket_url, **FAST)  # set up while writable
    config = json.loads((state / "config.json").read_text())
    assert "LDAP_BIND_PASSWORD" not in config and config["LDAP_BIND_CREDENTIALS"]
    del config["LDAP_BIND_CREDENTIALS"]
    config["LDAP_BIND_PASSWORD"] = slapd.bind_pw
    (state / "config.json").write_text(json.dumps(config))
    before = _files(state)

    proc = launch(lambda: ReadOnlyStateConnector(state, workers=2, threads=4))
    wait_agents(hub, proc)
    workers = proc.worker_pids()
    stream = Stream(hub, OPENLDAP_LOGINS, rate=4, prefix="ro").start()
    form = FormStream(proc.url, OPENLDAP_LOGINS[:2]).start()
    try:
        stream.wait_flowing()
        warning = wait_log(proc, r"could not encrypt LDAP_BIND_PASSWORD in \S+ \(([^)]*)\)")
    finally:
        form.stop()
        relay = form.relay(hub)
        stream.stop()
        alive = proc.proc.poll() is None and proc.worker_pids() == workers
        proc.stop()
    row = stream.row(
        "config directory read-only (plain password to seal)",
        recovery=None,
        limit=None,
        measured_from="- (served throughout)",
        signins=form.summary(),
        relay=relay,
    )
    fault_table.append(row)
    assert alive
    row.check()
    assert set(form.statuses()) == {303}, form.outcomes
    assert warning.group(1) == "Read-only file system"
    assert "it stays in plain text there" in proc.log()
    # nothing was written: the password is still plain, no temporary files were left
    assert json.loads((state / "config.json").read_text())["LDAP_BIND_PASSWORD"] == slapd.bind_pw
    assert _files(state) == before
