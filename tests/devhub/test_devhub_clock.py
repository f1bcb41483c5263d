"""The hub clock's offset: serverTime, command times, token checks and Date move together."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import requests


def test_an_offset_moves_server_time_and_command_times(hub, agent):
    hub.set_clock_offset(3600)
    agent.clock_offset = 3600  # an agent that already measured the offset
    answer = agent.poll()
    assert abs(answer["serverTime"] / 1000 - (time.time() + 3600)) < 5
    hub.queue("ping", {"pid": "p-1"})
    [command] = agent.poll()["commands"]
    claims = agent.verify(command)
    assert abs(claims["iat"] - (time.time() + 3600)) < 5


def test_a_hub_clock_ahead_makes_local_tokens_expired_and_says_the_hub_time(hub, agent):
    hub.set_clock_offset(3600)
    refused = agent.call("poll", {"max": 1, "wait": 0})
    assert refused.status_code == 401
    assert "expired" in refused.json()["message"]
    offset = refused.json()["serverTime"] / 1000 - time.time()
    assert abs(offset - 3600) < 5
    agent.clock_offset = offset  # what an agent can learn from the refusal
    assert agent.call("poll", {"max": 1, "wait": 0}).status_code == 200


def test_a_hub_clock_behind_makes_local_tokens_come_from_the_future(hub, agent):
    hub.set_clock_offset(-120)
    refused = agent.call("poll", {"max": 1, "wait": 0})
    assert refused.status_code == 401
    assert "s in the future" in refused.json()["message"]
    hub.set_clock_offset(-50)  # within the 60 s leeway
    assert agent.call("poll", {"max": 1, "wait": 0}).status_code == 200


def test_the_date_header_follows_the_hub_clock(hub):
    hub.set_clock_offset(-7200)
    response = requests.get(hub.url("api/clock"), timeout=10)
    assert response.json()["offsetSeconds"] == -7200
    date = parsedate_to_datetime(response.headers["Date"]).timestamp()
    assert abs(date - (time.time() - 7200)) < 5
