"""Results (protocol §4): idempotent by command id, Unavailable requeues, admin long-poll."""

from __future__ import annotations

import threading
import time

import pytest
from hub_agent import HubAgent

PROFILE = {"user_id": "alice", "email": "alice@example.test", "groups": ["staff", "everyone"]}


def test_the_first_result_wins_and_later_ones_are_acked_and_counted(hub, agent):
    command_id = hub.queue(
        "authenticate_user", {"pid": "p-1", "username": "alice", "password": "pw"}
    )
    agent.poll()
    assert agent.answer(command_id, {"profile": PROFILE}) == [command_id]
    wrong = {"err": {"name": "WrongPassword", "message": "late"}}
    assert agent.answer(command_id, wrong) == [command_id]
    view = hub.command(command_id)
    assert view["state"] == "done"
    assert view["result"] == {"profile": PROFILE}
    assert view["resultCount"] == 2
    assert view["agent"] == agent.sub
    assert hub.state()["events"]["resultsDuplicate"] == 1


def test_a_result_from_an_agent_whose_lease_lapsed_still_counts(hub_factory):
    hub = hub_factory(lease_seconds=1)
    first, second = HubAgent(hub, "a/w1"), HubAgent(hub, "b/w1")
    first.register()
    second.register()
    command_id = hub.queue("ping", {"pid": "p-1"})
    first.poll()
    second.poll(wait=3)  # redelivered after the lapse
    first.answer(command_id, {})
    second.answer(command_id, {"err": {"name": "Unexpected", "message": "too late"}})
    view = hub.command(command_id)
    assert (view["state"], view["result"], view["agent"], view["resultCount"]) == (
        "done",
        {},
        "a/w1",
        2,
    )


def test_unknown_ids_are_acked_and_ignored(hub, agent):
    assert agent.post_results([{"id": "never-issued", "result": {}}]) == ["never-issued"]
    assert hub.state()["events"]["resultsUnknown"] == 1
    assert hub.commands() == []


def test_a_batch_is_acked_in_order(hub, agent):
    ids = [hub.queue("ping", {"pid": f"p-{i}"}) for i in range(3)]
    agent.poll()
    acked = agent.post_results([{"id": i, "result": {}} for i in reversed(ids)])
    assert acked == list(reversed(ids))
    assert hub.state()["done"] == 3


def test_unavailable_puts_the_command_back_three_times_then_it_is_final(hub, agent):
    command_id = hub.queue("authenticate_user", {"pid": "p-1", "username": "a", "password": "b"})
    unavailable = {"err": {"name": "Unavailable", "message": "no LDAP server answered"}}
    for attempt in range(1, 4):
        [command] = agent.poll()["commands"]
        assert command["id"] == command_id
        agent.answer(command_id, unavailable)
        view = hub.command(command_id)
        assert (view["state"], view["unavailableRequeues"], view["result"]) == (
            "queued",
            attempt,
            None,
        )
    [command] = agent.poll()["commands"]
    agent.answer(command_id, unavailable)
    view = hub.command(command_id)
    assert (view["state"], view["deliveries"], view["resultCount"]) == ("done", 4, 4)
    assert view["result"] == unavailable
    assert agent.poll()["commands"] == []


def test_an_unavailable_command_goes_to_the_front_of_the_queue(hub, agent):
    first = hub.queue("ping", {"pid": "p-1"})
    agent.poll()
    second = hub.queue("ping", {"pid": "p-2"})
    agent.answer(first, {"err": {"name": "Unavailable", "message": "down"}})
    assert [c["id"] for c in agent.poll()["commands"]] == [first, second]


@pytest.mark.parametrize(
    "body",
    [
        {"results": []},
        {"results": [{"id": str(i), "result": {}} for i in range(101)]},
        {"results": [{"result": {}}]},
        {"results": [{"id": "", "result": {}}]},
        {"results": [{"id": "x", "result": "ok"}]},
        {"results": [{"id": "x", "result": {"err": {"name": "Oops", "message": "m"}}}]},
        {"results": [{"id": "x", "result": {"err": {"name": "WrongPassword"}}}]},
        {"results": "x"},
        {},
    ],
)
def test_malformed_results_are_400(hub, agent, body):
    response = agent.call("results", body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "bad_request"
    assert hub.state()["events"].get("resultsReceived", 0) == 0


def test_the_admin_long_poll_returns_when_the_result_arrives(hub, agent):
    command_id = hub.queue("ping", {"pid": "p-1"})
    agent.poll()
    timer = threading.Timer(0.5, agent.answer, args=(command_id, {}))
    timer.start()
    start = time.monotonic()
    view = hub.command(command_id, wait=10)
    elapsed = time.monotonic() - start
    timer.join()
    assert view["state"] == "done"
    assert 0.4 <= elapsed < 2, elapsed


def test_the_admin_long_poll_gives_up_after_wait(hub):
    command_id = hub.queue("ping", {"pid": "p-1"})
    start = time.monotonic()
    assert hub.command(command_id, wait=1)["state"] == "queued"
    assert 0.9 <= time.monotonic() - start < 2


def test_passwords_are_kept_only_in_the_signed_command(hub, agent):
    password = "Tr0ub4dor&3-unique"
    command_id = hub.queue(
        "change_password",
        {"pid": "p-1", "username": "alice", "password": password, "oldPassword": password + "0"},
    )
    view = hub.command(command_id)
    assert view["payload"] == {"pid": "p-1", "username": "alice"}
    [command] = agent.poll()["commands"]
    assert agent.verify(command)["payload"]["password"] == password
    agent.answer(command_id, {"profile": PROFILE})
    assert password not in str(hub.commands())
    assert password not in hub.log_text()
