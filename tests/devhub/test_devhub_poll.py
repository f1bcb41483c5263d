"""Poll (protocol §3): long-polls, signed commands, leases and redelivery."""

from __future__ import annotations

import threading
import time

import jwt
import pytest
from hub_agent import HubAgent
from waits import until


def _polling(hub, sub: str) -> bool:
    """Whether agent ``sub`` has a poll waiting at the hub."""
    return any(a["sub"] == sub and a["polling"] for a in hub.agents()["agents"])


def test_an_empty_poll_answers_server_time_and_lease(agent):
    before = time.time()
    answer = agent.poll(max=5, wait=0)
    assert answer["commands"] == []
    assert answer["leaseSeconds"] == 30
    assert before - 1 <= answer["serverTime"] / 1000 <= time.time() + 1
    assert time.time() - before < 1


def test_commands_are_jwts_signed_with_the_tenant_key(hub, agent):
    command_id = hub.queue("ping", {"pid": "p-1"})
    [command] = agent.poll()["commands"]
    assert command["id"] == command_id
    assert command["name"] == "ping"
    assert jwt.get_unverified_header(command["jwt"])["alg"] == "RS256"
    claims = agent.verify(command)  # checks the signature, iss and aud
    assert claims["jti"] == command_id
    assert claims["cmd"] == "ping"
    assert claims["payload"] == {"pid": "p-1"}
    assert claims["exp"] - claims["iat"] == 300
    assert abs(claims["iat"] - time.time()) < 5


def test_a_command_ttl_sets_its_lifetime(hub, agent):
    hub.queue("ping", {"pid": "p-1"}, ttl=45)
    [command] = agent.poll()["commands"]
    claims = agent.verify(command)
    assert claims["exp"] - claims["iat"] == 45


def test_claims_can_be_overridden_to_make_bad_commands(hub, agent):
    hub.queue("ping", {"pid": "p-1"}, claims={"aud": "someone-else", "jti": "other", "exp": None})
    [command] = agent.poll()["commands"]
    claims = jwt.decode(
        command["jwt"], agent.signing_key, algorithms=["RS256"], audience="someone-else"
    )
    assert claims["jti"] == "other"
    assert "exp" not in claims


def test_a_long_poll_returns_as_soon_as_a_command_is_queued(hub, agent):
    timer = threading.Timer(0.5, hub.queue, args=("ping", {"pid": "p-2"}))
    timer.start()
    start = time.monotonic()
    answer = agent.poll(max=1, wait=10)
    elapsed = time.monotonic() - start
    timer.join()
    assert [c["name"] for c in answer["commands"]] == ["ping"]
    assert 0.4 <= elapsed < 1.5, elapsed


def test_an_idle_long_poll_returns_after_wait(agent):
    start = time.monotonic()
    answer = agent.poll(max=1, wait=1.5)
    elapsed = time.monotonic() - start
    assert answer["commands"] == []
    assert 1.45 <= elapsed < 2.5, elapsed


def test_max_limits_a_batch_and_order_is_kept(hub, agent):
    ids = [hub.queue("ping", {"pid": f"p-{i}"}) for i in range(5)]
    first = agent.poll(max=2)["commands"]
    rest = agent.poll(max=10)["commands"]
    assert [c["id"] for c in first + rest] == ids
    assert hub.state()["leased"] == 5


@pytest.mark.parametrize(
    "body",
    [
        {"wait": 0},
        {"max": 0, "wait": 0},
        {"max": 101, "wait": 0},
        {"max": "1", "wait": 0},
        {"max": True, "wait": 0},
        {"max": 1},
        {"max": 1, "wait": -1},
        {"max": 1, "wait": 61},
        [1, 2],
    ],
)
def test_a_malformed_poll_is_400(agent, body):
    response = agent.call("poll", body)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"


def test_a_lapsed_lease_is_redelivered_to_another_agent(hub_factory):
    hub = hub_factory(lease_seconds=1)
    first, second = HubAgent(hub, "host-a/w1"), HubAgent(hub, "host-b/w1")
    first.register()
    second.register()
    command_id = hub.queue("ping", {"pid": "p-1"})
    leasing = time.monotonic()  # before the lease: the lapse cannot come sooner than 1 s after
    assert [c["id"] for c in first.poll(max=1)["commands"]] == [command_id]
    assert hub.command(command_id)["state"] == "leased"

    answer = second.poll(max=1, wait=5)  # woken by the lapse, not by a queue event
    elapsed = time.monotonic() - leasing
    assert [c["id"] for c in answer["commands"]] == [command_id]
    assert 0.95 <= elapsed < 3.0, elapsed
    view = hub.command(command_id)
    assert (view["state"], view["deliveries"], view["agent"]) == ("leased", 2, "host-b/w1")
    taken = {a["sub"]: a["commandsTaken"] for a in hub.agents()["agents"]}
    assert taken == {"host-a/w1": 1, "host-b/w1": 1}
    events = hub.state()["events"]
    assert events["leasesLapsed"] == 1
    assert events["redeliveries"] == 1


def test_concurrent_pollers_never_get_the_same_command(hub):
    agents = [HubAgent(hub, f"host/w{i}") for i in range(3)]
    for a in agents:
        a.register()
    got: list[str] = []
    lock = threading.Lock()

    def poll(a: HubAgent) -> None:
        for command in a.poll(max=1, wait=5)["commands"]:
            with lock:
                got.append(command["id"])

    threads = [threading.Thread(target=poll, args=(a,)) for a in agents]
    for t in threads:
        t.start()
    subs = {a.sub for a in agents}
    until(
        lambda: {a["sub"] for a in hub.agents()["agents"] if a["polling"]} >= subs,
        5,
        "every agent inside its long poll",
    )
    ids = [hub.queue("ping", {"pid": f"p-{i}"}) for i in range(3)]
    for t in threads:
        t.join(10)
    assert sorted(got) == sorted(ids)


def test_a_poll_whose_agent_went_away_takes_nothing(hub, agent):
    """An agent that stops cuts its waiting poll: the hub must not lease to that poll."""
    import json
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(hub.url("agent/poll"))
    body = json.dumps({"max": 5, "wait": 20}).encode()
    request = (
        f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Authorization: Bearer {agent.token()}\r\nX-Connector-Protocol: 2\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(request)
        until(lambda: _polling(hub, agent.sub), 5, "the hub holds the poll")
    # the agent went away; a command queued now must wait for a live poll
    time.sleep(0.2)  # the close reaches the hub (nothing to observe from here)
    command_id = hub.queue("ping", {"pid": "after-gone"})
    until(lambda: not _polling(hub, agent.sub), 5, "the abandoned poll ended")
    view = hub.command(command_id)
    assert view["state"] == "queued" and view["deliveries"] == 0, view
    [command] = agent.poll(max=5, wait=2)["commands"]
    assert command["id"] == command_id
    assert hub.command(command_id)["deliveries"] == 1
