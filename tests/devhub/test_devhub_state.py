"""HubState on its own, with clocks the test moves: leases, jtis, sessions, faults."""

from __future__ import annotations

import threading

import pytest

from connector.devhub.state import Fault, HubState, SessionError


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(clock: Clock) -> HubState:
    return HubState(lease_seconds=30, wall=clock, monotonic=clock)


def test_a_lapsed_lease_goes_back_to_the_front_of_the_queue(state, clock):
    state.queue("c-1", "ping", "jwt-1", {})
    state.queue("c-2", "ping", "jwt-2", {})
    assert [c["id"] for c in state.take("a", 1, 0)] == ["c-1"]
    clock.t += 30
    assert [c["id"] for c in state.take("b", 10, 0)] == ["c-1", "c-2"]
    assert state.command("c-1")["deliveries"] == 2


def test_a_lease_still_running_is_not_handed_out(state, clock):
    state.queue("c-1", "ping", "jwt-1", {})
    state.take("a", 1, 0)
    clock.t += 29.9
    assert state.take("b", 1, 0) == []


def test_a_jti_is_remembered_until_its_exp(state, clock):
    assert state.use_jti("j", exp=clock.t + 10)
    assert not state.use_jti("j", exp=clock.t + 10)
    clock.t += 11
    assert state.use_jti("j", exp=clock.t + 10)


def test_the_clock_offset_moves_the_hub_clock_only(state, clock):
    state.set_clock_offset(-30)
    assert state.now() == clock.t - 30


def test_a_session_is_spent_by_any_attempt(state):
    ref = state.create_session("a", "w", {"user_id": "x"}, "form")
    with pytest.raises(SessionError) as wrong:
        state.redeem_session(ref, "other")
    assert wrong.value.problem == "wctx"
    with pytest.raises(SessionError) as again:
        state.redeem_session(ref, "w")
    assert again.value.problem == "redeemed"


def test_faults_match_their_endpoint_and_run_out(state):
    state.add_fault(Fault("status", 2, status=500, endpoint="results"))
    assert state.next_fault("poll") is None
    assert state.next_fault("results").status == 500
    assert state.next_fault("results").remaining == 0
    assert state.next_fault("results") is None


def test_close_wakes_waiting_polls():
    state = HubState(lease_seconds=30)
    out: list[object] = []
    poller = threading.Thread(target=lambda: out.append(state.take("a", 1, 60)))
    poller.start()
    state.close()
    poller.join(5)
    assert out == [[]]
