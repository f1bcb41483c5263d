"""Injected faults: the agent's resilience can be tested against a real HTTP hub."""

from __future__ import annotations

import time

import pytest
import requests
from waits import until


def test_a_status_fault_answers_the_next_requests_with_it(hub, agent):
    assert hub.add_fault(status=500, count=2) == [{"kind": "status", "remaining": 2, "status": 500}]
    for _ in range(2):
        response = agent.call("poll", {"max": 1, "wait": 0})
        assert response.status_code == 500
        assert response.json()["error"] == "injected_fault"
    assert agent.call("poll", {"max": 1, "wait": 0}).status_code == 200
    assert hub.state()["events"]["faultsInjected"] == 2


def test_a_status_fault_can_carry_retry_after(hub, agent):
    hub.add_fault(status=503, retry_after=7)
    response = agent.call("poll", {"max": 1, "wait": 0})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"


def test_faults_come_before_protocol_and_token_checks(hub, agent):
    hub.add_fault(status=429)
    response = agent.call("poll", {"max": 1, "wait": 0}, headers={"Authorization": ""})
    assert response.status_code == 429


def test_faults_leave_the_admin_api_and_the_ticket_alone(hub, agent):
    hub.add_fault(status=500)
    assert hub.info()["connectionName"] == "corp"
    hub.queue("ping", {"pid": "p-1"})
    assert agent.call("poll", {"max": 1, "wait": 0}).status_code == 500
    assert len(agent.poll()["commands"]) == 1


def test_a_close_fault_drops_the_tcp_connection(hub, agent):
    hub.add_fault(close=1)
    with pytest.raises(requests.ConnectionError):
        agent.call("poll", {"max": 1, "wait": 0})
    assert agent.call("poll", {"max": 1, "wait": 0}).status_code == 200
    assert hub.admin("GET", "faults") == {"faults": []}


def test_a_close_fault_loses_the_results_it_swallows(hub, agent):
    command_id = hub.queue("ping", {"pid": "p-1"})
    agent.poll()
    hub.add_fault(close=1, endpoint="results")
    with pytest.raises(requests.ConnectionError):
        agent.answer(command_id, {})
    assert hub.command(command_id)["state"] == "leased"
    agent.answer(command_id, {})  # the agent retries until acknowledged
    assert hub.command(command_id)["state"] == "done"


def test_a_delay_fault_stalls_then_answers(hub, agent):
    hub.add_fault(delay=1.0, count=2)
    start = time.monotonic()
    assert agent.call("poll", {"max": 1, "wait": 0}).status_code == 200
    assert 1.0 <= time.monotonic() - start < 2.5
    with pytest.raises(requests.ReadTimeout):
        agent.call("poll", {"max": 1, "wait": 0}, timeout=0.3)
    # the hub still answers the stalled request (to nobody): let it finish inside this test
    until(lambda: hub.state()["events"]["polls"] >= 2, 5, "the stalled poll answered")
    assert hub.state()["events"]["polls"] == 2


def test_an_endpoint_fault_spares_the_other_endpoints(hub, agent):
    hub.add_fault(status=502, endpoint="results")
    assert agent.call("poll", {"max": 1, "wait": 0}).status_code == 200
    assert agent.call("results", {"results": [{"id": "x", "result": {}}]}).status_code == 502
    assert agent.call("results", {"results": [{"id": "x", "result": {}}]}).status_code == 200


def test_faults_apply_in_order_and_can_be_cleared(hub, agent):
    hub.add_fault(status=500)
    hub.add_fault(status=503)
    assert agent.call("poll", {"max": 1, "wait": 0}).status_code == 500
    assert [f["status"] for f in hub.admin("GET", "faults")["faults"]] == [503]
    hub.clear_faults()
    assert agent.call("poll", {"max": 1, "wait": 0}).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"status": 200},
        {"status": 500, "count": 0},
        {"close": 0},
        {"delay": -1},
        {"status": 500, "endpoint": "x"},
    ],
)
def test_a_bad_fault_is_400(hub, body):
    response = requests.post(hub.url("api/faults"), json=body, timeout=10)
    assert response.status_code == 400
    assert hub.admin("GET", "faults") == {"faults": []}
