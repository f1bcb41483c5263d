"""The admin API: signed and raw commands, command views, validation."""

from __future__ import annotations

import jwt
import pytest
import requests
from hub_agent import rsa_key
from hubs import DevHubError


def test_a_raw_command_is_delivered_verbatim(hub, agent):
    forged = jwt.encode(
        {"iss": hub.ad_hub, "aud": "corp", "jti": "forged-1", "cmd": "ping", "payload": {}},
        rsa_key(),
        algorithm="RS256",
    )
    command_id = hub.queue_raw(forged)  # id and name default to the token's jti and cmd
    assert command_id == "forged-1"
    [command] = agent.poll()["commands"]
    assert command == {"id": "forged-1", "name": "ping", "jwt": forged}
    with pytest.raises(jwt.InvalidSignatureError):
        agent.verify(command)
    agent.answer(command_id, {"err": {"name": "Unexpected", "message": "bad signature"}})
    view = hub.command(command_id)
    assert (view["state"], view["raw"], view["result"]["err"]["name"]) == (
        "done",
        True,
        "Unexpected",
    )


def test_a_raw_command_can_be_anything_with_a_name(hub, agent):
    unsigned = jwt.encode({"cmd": "ping"}, None, algorithm="none")
    first = hub.queue_raw(unsigned, id="c-none")
    second = hub.queue_raw("garbage", name="search_users")
    commands = agent.poll()["commands"]
    assert [(c["id"], c["name"], c["jwt"]) for c in commands] == [
        ("c-none", "ping", unsigned),
        (second, "search_users", "garbage"),
    ]
    assert first == "c-none"


def test_raw_command_errors(hub):
    with pytest.raises(DevHubError) as no_name:
        hub.queue_raw("garbage")
    assert no_name.value.status == 400
    hub.queue_raw("garbage", name="ping", id="dup")
    with pytest.raises(DevHubError) as duplicate:
        hub.queue_raw("garbage", name="ping", id="dup")
    assert duplicate.value.status == 409


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "ping", "payload": []},
        {"name": "ping", "ttl": 0},
        {"name": "ping", "ttl": 601},
        {"name": "ping", "claims": "x"},
    ],
)
def test_a_malformed_command_is_400(hub, body):
    response = requests.post(hub.url("api/commands"), json=body, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"


def test_command_views(hub):
    first = hub.queue("ping", {"pid": "p-1"})
    second = hub.queue("list_groups", {"pid": "p-2"})
    assert [c["id"] for c in hub.commands()] == [first, second]
    view = hub.command(first)
    assert {
        k: view[k] for k in ("id", "name", "state", "deliveries", "result", "resultCount", "agent")
    } == {
        "id": first,
        "name": "ping",
        "state": "queued",
        "deliveries": 0,
        "result": None,
        "resultCount": 0,
        "agent": None,
    }
    assert "jwt" not in view


def test_an_unknown_command_is_404(hub):
    response = requests.get(hub.url("api/commands/c-nope"), timeout=10)
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_command"
    bad_wait = requests.get(hub.url("api/commands/c-nope"), params={"wait": "x"}, timeout=10)
    assert bad_wait.status_code == 400


def test_unknown_routes_under_the_api_answer_json(hub):
    response = requests.get(hub.url("api/nothing"), timeout=10)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    response = requests.get(hub.url("agent/poll"), timeout=10)
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


def test_reset_starts_over_and_keeps_certificates_unless_asked(hub, agent):
    hub.queue("ping", {"pid": "p-1"})
    agent.poll()
    hub.add_fault(status=500)
    hub.set_clock_offset(60)
    hub.reset()
    state = hub.state()
    assert (state["commands"], state["agents"], state["pendingFaults"], state["events"]) == (
        0,
        0,
        0,
        {},
    )
    assert state["clockOffsetSeconds"] == 0
    assert agent.poll()["commands"] == []  # still registered
    hub.reset(certificates=True)
    assert agent.call("poll", {"max": 1, "wait": 0}).status_code == 401
