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
    ref = "r" * 32
    assert state.relay_signins("a", [(ref, "w", {"user_id": "x"}, "form")]) == [ref]
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


def test_a_waiting_redeem_is_woken_by_the_relay_that_brings_its_ref():
    state = HubState(lease_seconds=30)
    ref = "w" * 32
    out: list[dict[str, object]] = []
    waiter = threading.Thread(target=lambda: out.append(state.redeem_session(ref, "x", "c", 30)))
    waiter.start()
    while not state.counters()["waiting"]:
        threading.Event().wait(0.01)  # the waiter registering (an observable state)
    state.relay_signins("a", [(ref, "x", {"user_id": "u"}, "kerberos")])
    waiter.join(5)
    assert not waiter.is_alive() and out[0]["profile"] == {"user_id": "u"}
    assert state.counters()["waiting"] == 0


def test_waits_are_bounded_per_client_and_in_all():
    state = HubState(lease_seconds=30, max_waiters_per_client=2, max_waiters=3)
    threads = [
        threading.Thread(target=_redeem_quietly, args=(state, f"{i}" * 32, client))
        for i, client in enumerate(["c1", "c1", "c2"])
    ]
    for t in threads:
        t.start()
    while state.counters()["waiting"] < 3:
        threading.Event().wait(0.01)
    for ref, client in (("4" * 32, "c1"), ("5" * 32, "c3")):
        with pytest.raises(SessionError) as busy:
            state.redeem_session(ref, "w", client, 30)
        assert busy.value.problem == "busy"
    # a busy answer leaves the ref unspent: it can still be relayed and redeemed
    state.relay_signins("a", [("4" * 32, "w", {}, "form")])
    assert state.redeem_session("4" * 32, "w", "c1", 0)["method"] == "form"
    state.close()
    for t in threads:
        t.join(5)


def _redeem_quietly(state: HubState, ref: str, client: str) -> None:
    with pytest.raises(SessionError):
        state.redeem_session(ref, "w", client, 30)


def test_relays_are_idempotent_by_ref_and_a_spent_ref_stays_spent(state):
    first, late = "f" * 32, "l" * 32
    state.relay_signins("a", [(first, "w", {"n": 1}, "form")])
    state.relay_signins("a", [(first, "w", {"n": 2}, "form")])
    assert state.redeem_session(first, "w")["profile"] == {"n": 1}
    with pytest.raises(SessionError) as unknown:
        state.redeem_session(late, "w")
    assert unknown.value.problem == "unknown"
    assert state.relay_signins("a", [(late, "w", {}, "form")]) == [late]
    with pytest.raises(SessionError) as again:
        state.redeem_session(late, "w")
    assert again.value.problem == "redeemed"
    events = state.counters()["events"]
    assert (events["signinRelays"], events["signinsReceived"]) == (3, 3)
    assert (events["signinsDuplicate"], events["signinsLate"]) == (1, 1)
