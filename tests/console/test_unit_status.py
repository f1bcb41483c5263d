"""The status aggregator's summaries, fed plain dictionaries (no Flask, no workers)."""

import datetime
from types import SimpleNamespace

import pytest

from connector.web.console import status

HUB = SimpleNamespace(
    hub_configured=True, ad_hub="https://hub.example/t", connection="c", realm="urn:r"
)


def worker(pid, agent=None, ldap=None, **more):
    found = {"pid": pid, "started": 1000.0 + pid, **more}
    if agent is not None:
        found["agent"] = agent
    if ldap is not None:
        found["ldap"] = ldap
    return found


def test_this_worker_replaces_its_own_file_and_rows_are_in_pid_order():
    old_self = worker(20, agent={"connected": False})
    rows = status.merge_workers(
        worker(20, agent={"connected": True}), [worker(300), old_self, worker(3)]
    )
    assert [w["pid"] for w in rows] == [3, 20, 300]  # by number, not as text
    assert rows[1]["agent"] == {"connected": True}


def test_hub_summary_counts_connected_agents():
    found = status.agents(
        [
            worker(1, agent={"connected": True, "connected_since": 50.0, "last_poll": 90.0}),
            worker(2, agent={"connected": True, "connected_since": 40.0, "last_poll": 95.0}),
            worker(3, agent={"connected": False, "last_error": "hub said 503"}),
            worker(4),  # no agent (no hub)
        ]
    )
    hub = status.hub_summary(HUB, found)
    assert hub["connected"] is True and hub["connected_workers"] == 2 and hub["agents"] == 3
    assert hub["connected_since"] == 40.0 and hub["last_poll"] == 95.0
    assert hub["last_error"] == "hub said 503" and hub["ad_hub"] == HUB.ad_hub


def test_hub_summary_with_no_agent():
    hub = status.hub_summary(HUB, [])
    assert hub["connected"] is False and hub["agents"] == 0
    assert hub["connected_since"] is None and hub["last_poll"] is None


@pytest.mark.parametrize(
    ("offset", "ok"),
    [(None, True), (0.0, True), (30.0, True), (-30.0, True), (30.5, False), (-31, False)],
)
def test_the_clock_is_judged_by_the_latest_poll(offset, ok):
    found = [{"last_poll": 10.0, "clock_offset_seconds": 999.0}, {"last_poll": 20.0}]
    if offset is not None:
        found[1]["clock_offset_seconds"] = offset
    clock = status.clock_summary(status.latest_poll(found), 30.0)
    assert clock == {"offset_seconds": offset, "ok": ok, "limit": 30.0}


def test_no_poll_no_offset():
    assert status.latest_poll([{"connected": True}]) is None
    assert status.clock_summary(None, 5.0)["ok"] is True


def test_a_server_is_down_when_any_worker_saw_it_down():
    a, b, c = "ldaps://a", "ldaps://b", "ldaps://c"
    rows = [
        worker(1, ldap={a: {"up": True, "checked": 10.0}, b: {"up": True, "checked": 12.0}}),
        worker(2, ldap={a: {"up": True, "checked": 11.0}, b: {"up": False, "error": "timeout"}}),
        worker(3, ldap="not a dict"),
    ]
    ldap = status.ldap_summary([a, b, c], rows)
    assert ldap[a] == {"up": True, "error": None, "checked": 11.0}
    assert ldap[b] == {"up": False, "error": "timeout", "checked": 12.0}
    assert ldap[c] == {"up": True, "error": None, "checked": None}  # nobody has looked yet


def test_cache_ratio_and_counts():
    samples = {
        "connector_group_cache_hits_total": [({}, 3.0), ({}, 6.0)],
        "connector_group_cache_misses_total": [({}, 3.0)],
        "connector_commands_total": [
            ({"name": "ping", "outcome": "success"}, 2.0),
            ({"name": "authenticate_user", "outcome": "success"}, 5.0),
            ({"name": "authenticate_user", "outcome": "WrongPassword"}, 1.0),
        ],
        "connector_logins_total": [
            ({"method": "form", "outcome": "success"}, 4.0),
            ({"method": "console", "outcome": "throttled"}, 1.0),
        ],
    }
    assert status.cache_summary(samples) == {"hits": 9, "misses": 3, "ratio": 0.75}
    assert status.cache_summary({})["ratio"] is None
    commands, logins = status.counts(samples)
    assert commands == {"WrongPassword": 1, "success": 7}
    assert logins == [
        {"method": "console", "outcome": "throttled", "count": 1},
        {"method": "form", "outcome": "success", "count": 4},
    ]


def test_worker_rows_default_what_a_worker_without_agent_lacks():
    rows = status.worker_rows(
        [worker(1), worker(2, agent={"connected": True, "inflight": 3, "outcomes": {"ok": 1}})]
    )
    assert rows[0] == {
        "pid": 1, "started": 1001.0, "connected": False, "last_poll": None, "outcomes": {},
        "inflight": 0,
    }  # fmt: skip
    assert rows[1]["connected"] is True and rows[1]["inflight"] == 3
    assert rows[1]["outcomes"] == {"ok": 1}


def test_kerberos_summary_only_when_set_up():
    off = SimpleNamespace(kerberos_auth=False, kerberos_keytab=None)
    assert status.kerberos_summary(off) is None


@pytest.mark.parametrize(
    ("ago", "said"),
    [(0, "(0 s ago)"), (119, "(119 s ago)"), (120, "(2 min ago)"), (7199, "(119 min ago)"),
     (7200, "(2 h ago)"), (-5, "(0 s ago)")],
)  # fmt: skip
def test_when(ago, said):
    ts = 1_700_000_000.0
    stamp = datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
    assert status.when(ts, now=ts + ago) == f"{stamp} {said}"


@pytest.mark.parametrize("ts", [None, 0, "", "yesterday"])
def test_when_never(ts):
    assert status.when(ts) == "never"
