"""SignInRelay on its own, with a scripted hub client: batching, acknowledgement, the bound,
the age limit, the drain (protocol §5.2)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from connector.channel.client import HubUnavailable
from connector.channel.relay import MAX_BATCH, RelayFull, SignInRelay


class ScriptedHub:
    """``relay_signins`` that records each batch; it fails while ``failing`` is positive and
    holds each call until ``gate`` is set."""

    def __init__(self, failing: int = 0) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.failing = failing
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # a request reached the hub
        self.called = threading.Condition()

    def relay_signins(self, signins: list[dict[str, Any]]) -> set[str]:
        self.entered.set()
        self.gate.wait(10)
        with self.called:
            self.batches.append(signins)
            self.called.notify_all()
            if self.failing > 0:
                self.failing -= 1
                raise HubUnavailable("the hub answered 503", retry_after=0.0)
        return {s["ref"] for s in signins}

    def prepare_signins(self, conn: Any) -> None:
        return None  # as behind a proxy: only the relay thread sends

    def wait_calls(self, n: int) -> None:
        with self.called:
            assert self.called.wait_for(lambda: len(self.batches) >= n, 10), self.batches


def relay_for(hub: ScriptedHub, **options: Any) -> SignInRelay:
    return SignInRelay(hub, **options)  # type: ignore[arg-type]


def test_sign_ins_queued_while_a_request_is_out_go_in_one_batch():
    hub = ScriptedHub()
    relay = relay_for(hub)
    relay.start()
    hub.gate.clear()  # the first request is held at the hub
    relay.submit("r0", "w", {"id": "u0"}, "form")
    assert hub.entered.wait(10)
    for i in range(1, 151):
        relay.submit(f"r{i}", "w", {"id": f"u{i}"}, "form")
    hub.gate.set()
    assert relay.drain(10)
    sizes = [len(b) for b in hub.batches]
    assert sizes == [1, MAX_BATCH, 50], sizes
    first = {"ref": "r0", "wctx": "w", "profile": {"id": "u0"}, "method": "form"}
    assert hub.batches[0] == [first]
    assert relay.relayed == 151 and relay.pending == 0


def test_only_a_sign_in_that_finds_the_queue_empty_wakes_the_relay_thread():
    """While a request is out the relay thread is busy, not waiting: the sign-ins queued
    meanwhile wake nobody (a wake-up per sign-in was 5 % of a form sign-in's CPU)."""
    hub = ScriptedHub()
    relay = relay_for(hub)
    wakes = []
    notify = relay._arrived.notify

    def counted(n: int = 1) -> None:
        wakes.append(n)
        notify(n)

    relay._arrived.notify = counted  # type: ignore[method-assign]
    relay.start()
    hub.gate.clear()  # the first request is held at the hub
    relay.submit("r0", "w", {}, "form")
    assert hub.entered.wait(10)
    for i in range(1, 40):
        relay.submit(f"r{i}", "w", {}, "form")
    assert wakes == [1]  # the first only
    hub.gate.set()
    hub.wait_calls(2)
    assert relay.drain(10) and relay.relayed == 40
    assert [len(b) for b in hub.batches] == [1, 39]


def test_an_idle_relay_sends_at_once_without_lingering():
    """No request is out: what is queued leaves at once; the relay never waits on a timer for
    more (it would wait on its condition with a timeout)."""
    relay = relay_for(ScriptedHub())  # not started: the test takes the relay thread's part
    relay.submit("r0", "w", {"id": "u0"}, "form")
    waits: list[float | None] = []

    def no_linger(timeout: float | None = None) -> bool:
        waits.append(timeout)
        raise AssertionError(f"the idle relay waited ({timeout!r} s) before sending")

    relay._arrived.wait = no_linger  # type: ignore[method-assign]
    batch = relay._next_batch()
    assert batch is not None and [s.ref for s in batch] == ["r0"]
    assert waits == []


def test_a_refused_batch_is_sent_again_until_acknowledged(monkeypatch):
    monkeypatch.setattr("connector.channel.backoff.random.random", lambda: 0.0)
    hub = ScriptedHub(failing=2)
    relay = relay_for(hub)
    relay.start()
    relay.submit("r1", "w", {}, "kerberos")
    hub.wait_calls(3)
    assert relay.drain(10)
    assert [[s["ref"] for s in b] for b in hub.batches] == [["r1"]] * 3


def test_a_full_queue_refuses_the_next_sign_in():
    relay = relay_for(ScriptedHub(), limit=2)  # not started: nothing leaves the queue
    relay.submit("a", "w", {}, "form")
    relay.submit("b", "w", {}, "form")
    with pytest.raises(RelayFull, match="2 sign-ins are waiting"):
        relay.submit("c", "w", {}, "form")


def test_a_sign_in_older_than_its_ref_is_dropped_not_sent():
    hub = ScriptedHub()
    relay = relay_for(hub, max_age=0.0)
    relay.submit("old", "w", {}, "form")
    relay.start()
    assert relay.drain(5)
    assert hub.batches == [] and relay.dropped == 1


def test_after_the_drain_a_sign_in_is_refused():
    relay = relay_for(ScriptedHub())
    relay.start()
    assert relay.drain(5)
    with pytest.raises(RelayFull, match="stopping"):
        relay.submit("late", "w", {}, "form")
