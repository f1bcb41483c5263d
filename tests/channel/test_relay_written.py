"""The relay's request written by the sign-in's own web thread (see :mod:`connector.channel.relay`),
against the devhub: a real ``HubClient`` with the agent key ``connector setup`` made, the relay
in this process, its thread running."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from configs import openldap_config
from connector_proc import setup_config
from hubs import DevHubProcess, start_devhub
from waits import until

from connector.channel import relay as relay_module
from connector.channel.client import HubClient
from connector.channel.identity import AgentIdentity
from connector.channel.relay import SignInRelay
from connector.settings import load_settings


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHubProcess]:
    h = start_devhub(tmp_path_factory.mktemp("written-hub"))
    yield h
    h.stop()


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, hub: DevHubProcess, slapd) -> Path:
    return setup_config(
        tmp_path_factory.mktemp("written") / "c", openldap_config(slapd), hub.ticket_url
    )


@pytest.fixture
def relay(config: Path, hub: DevHubProcess) -> Iterator[SignInRelay]:
    hub.clear_faults()
    settings = load_settings(config, environ={})
    identity = AgentIdentity.load(settings.state_dir, settings.secret_box)
    assert identity is not None
    client = HubClient(settings, identity, f"test/{secrets.token_hex(4)}")
    r = SignInRelay(client)
    r.start()
    yield r
    r.drain(10)
    client.close()
    hub.clear_faults()


def held(hub: DevHubProcess) -> set[str]:
    return {s["ref"] for s in hub.sessions()}


def sign_in(relay: SignInRelay, profile: dict | None = None) -> str:
    ref = secrets.token_urlsafe(24)
    relay.submit(ref, "ctx", profile or {"user_id": "alice", "groups": ["staff"]}, "form")
    return ref


def test_an_idle_relay_s_request_is_written_by_the_sign_in_s_thread(relay, hub):
    until(lambda: relay.ready, 10, "the relay thread prepared a request")
    ref = sign_in(relay)
    assert relay.written == 1  # written before submit returned, not by the relay thread
    until(lambda: relay.relayed == 1 and relay.pending == 0, 10, "the hub acknowledged it")
    assert ref in held(hub)
    # the relay thread prepares the next one (its connection kept, a new token): again
    until(lambda: relay.ready, 10, "the next request prepared")
    second = sign_in(relay)
    assert relay.written == 2
    until(lambda: relay.relayed == 2, 10, "the second acknowledged")
    assert second in held(hub)


def test_a_request_prepared_over_a_second_ago_is_left_to_the_relay_thread(relay, hub, monkeypatch):
    until(lambda: relay.ready, 10, "the relay thread prepared a request")
    monkeypatch.setattr(relay_module, "FRESH_SECONDS", 0.0)  # every prepared one too old
    assert not relay.ready
    ref = sign_in(relay)
    until(lambda: relay.relayed == 1, 10, "the relay thread sent it")
    assert relay.written == 0 and ref in held(hub)


def test_after_an_idle_spell_the_next_request_is_prepared_fresh_and_written_again(
    relay, hub, monkeypatch
):
    # a worker idle longer than FRESH_SECONDS: its prepared request goes stale and the next
    # sign-in is sent by the relay thread; after it, a fresh one is prepared (it was kept,
    # stale, for ever: no sign-in was written by its own thread again)
    monkeypatch.setattr(relay_module, "FRESH_SECONDS", 0.3)
    until(lambda: relay.ready, 10, "the relay thread prepared a request")
    until(lambda: not relay.ready, 10, "the prepared request went stale")
    first = sign_in(relay)
    until(lambda: relay.relayed == 1, 10, "the relay thread sent it")
    assert relay.written == 0
    until(lambda: relay.ready, 10, "a fresh request prepared after the stale one")
    second = sign_in(relay)
    assert relay.written == 1  # written by its own thread again
    until(lambda: relay.relayed == 2, 10, "the second acknowledged")
    assert {first, second} <= held(hub)


def test_sign_ins_further_apart_than_a_request_stays_fresh_open_no_connection_each(
    relay, hub, monkeypatch
):
    # one sign-in every FRESH_SECONDS or more: a request prepared after each would go stale
    # unused (a connection to the hub opened for nothing per sign-in); it is let go instead,
    # and preparing resumes once sign-ins come closer together
    monkeypatch.setattr(relay_module, "FRESH_SECONDS", 0.5)
    until(lambda: relay.ready, 10, "the relay thread prepared a request")
    first = sign_in(relay)
    assert relay.written == 1
    until(lambda: relay.relayed == 1 and relay.ready, 10, "acknowledged, the next one prepared")
    prepared = relay.prepared
    until(lambda: not relay.ready, 10, "the prepared request went stale")
    second = sign_in(relay)  # over FRESH_SECONDS after the first: the relay thread sends it
    until(lambda: relay.unused == 1, 10, "the stale request let go")
    assert relay.relayed == 2 and relay.written == 1
    assert relay.prepared == prepared and not relay.ready  # no new one made
    third = sign_in(relay)  # soon after the second: sent by the relay thread, then one prepared
    until(lambda: relay.relayed == 3 and relay.ready, 10, "a request prepared again")
    assert relay.prepared == prepared + 1
    fourth = sign_in(relay)
    assert relay.written == 2
    until(lambda: relay.relayed == 4, 10, "the fourth acknowledged")
    assert {first, second, third, fourth} <= held(hub)


def test_an_idle_relay_sleeps_once_its_prepared_request_is_stale(relay, hub, monkeypatch):
    # while a request is ready a web thread may write it without waking the relay thread, so
    # that thread looks every WAKE_SECONDS; once it is stale nobody can, and an idle worker's
    # relay thread sleeps until a sign-in wakes it (it looked 20 times a second for ever)
    monkeypatch.setattr(relay_module, "FRESH_SECONDS", 0.3)
    until(lambda: relay.ready, 10, "the relay thread prepared a request")
    until(lambda: not relay.ready, 10, "the prepared request went stale")
    settled = relay.wakeups + 1  # the one look that can be under way as it went stale
    time.sleep(10 * relay_module.WAKE_SECONDS)  # nothing to wait for: an idle spell
    assert relay.wakeups <= settled
    ref = sign_in(relay)  # finds the request stale: wakes the relay thread, which sends it
    until(lambda: relay.relayed == 1, 10, "the relay thread sent it")
    assert relay.written == 0 and ref in held(hub)


def test_a_profile_over_the_write_limit_is_sent_by_the_relay_thread(relay, hub):
    until(lambda: relay.ready, 10, "the relay thread prepared a request")
    groups = [f"group-{i:05d}-with-a-long-name" for i in range(400)]  # ~14 KB of JSON
    ref = sign_in(relay, {"user_id": "wide", "groups": groups})
    until(lambda: relay.relayed == 1, 10, "the relay thread sent it")
    assert relay.written == 0
    assert ref in held(hub)
    until(lambda: relay.ready, 10, "prepared again for the next one")


def test_a_write_on_a_dead_connection_leaves_the_sign_in_to_the_relay_thread(relay, hub):
    until(lambda: relay.ready, 10, "the relay thread prepared a request")
    assert relay.client.direct is not None
    assert relay.client.direct.cut() >= 1  # the prepared connection shut down under it
    ref = sign_in(relay)
    assert relay.written == 0  # the write failed at once
    until(lambda: relay.relayed == 1, 10, "the relay thread sent it on a new connection")
    assert ref in held(hub)


def test_a_written_request_the_hub_drops_is_sent_again_and_held_once(relay, hub):
    until(lambda: relay.ready, 10, "the relay thread prepared a request")
    before = hub.state()["events"]
    hub.add_fault(close=1, endpoint="signins")  # the connection closed, no answer
    ref = sign_in(relay)
    assert relay.written == 1
    until(lambda: relay.relayed == 1, 15, "sent again by the relay thread and acknowledged")
    assert not hub.faults(), "the written request met the fault"
    assert ref in held(hub)
    events = hub.state()["events"]
    assert events.get("signinsReceived", 0) - before.get("signinsReceived", 0) == 1
    assert events.get("signinsDuplicate", 0) == before.get("signinsDuplicate", 0)


def test_a_written_request_s_answer_is_read_once_its_thread_has_answered(relay, hub, monkeypatch):
    monkeypatch.setattr(relay_module, "WAKE_SECONDS", 60.0)  # no reading on its own meanwhile
    until(lambda: relay.ready, 10, "the relay thread prepared a request")
    ref = secrets.token_urlsafe(24)
    wake = relay.submit(ref, "ctx", {"user_id": "alice", "groups": ["staff"]}, "form")
    assert wake is not None and relay.written == 1
    until(lambda: ref in held(hub), 10, "the hub holds the written sign-in")
    # the hub has answered, but the relay thread leaves the answer until the web thread,
    # which would be answering its browser now, says it is done
    assert relay.pending == 1 and relay.relayed == 0
    wake()
    until(lambda: relay.relayed == 1 and relay.pending == 0, 10, "read once woken")


def test_a_sign_in_the_relay_thread_sends_gets_nothing_to_call(relay, hub, monkeypatch):
    until(lambda: relay.ready, 10, "the relay thread prepared a request")
    monkeypatch.setattr(relay_module, "FRESH_SECONDS", 0.0)  # every prepared one too old
    assert relay.submit(secrets.token_urlsafe(24), "ctx", {"user_id": "bob"}, "form") is None
    until(lambda: relay.relayed == 1, 10, "the relay thread sent it")


def test_a_relay_thread_that_looks_while_a_request_is_written_looks_again_unwoken(relay):
    """The relay thread may look (woken by its ``WAKE_SECONDS``) while a web thread writes a
    request: nothing wakes it after a write, so it must not then sleep until woken — the
    written request's answer would be read only when the web thread's wake comes, never
    if it does not."""
    until(lambda: relay.ready, 10, "the relay thread prepared a request")
    with relay._lock:  # the relay thread cannot act meanwhile
        ready, relay._ready, relay._writing = relay._ready, None, True  # a write under way
        try:
            assert relay._wait_for() == relay_module.WAKE_SECONDS
        finally:
            relay._ready, relay._writing = ready, False


def relays(hub: DevHubProcess) -> tuple[int, int]:
    """The hub's relay requests so far, and the most sign-ins one carried."""
    events = hub.state()["events"]
    return events.get("signinRelays", 0), events.get("largestSigninRelay", 0)


def test_a_sign_in_while_another_is_checked_waits_for_it_one_request_carries_both(relay, hub):
    until(lambda: relay.ready, 10, "the relay thread prepared a request")
    before, _ = relays(hub)
    relay.checking()  # two web threads checking a sign-in each
    relay.checking()
    first = sign_in(relay)  # the other is still being checked: held for it, nothing written
    relay.checked()
    assert relay.written == 0 and relay.pending == 1
    second = sign_in(relay)  # the last one checked: its thread writes both
    relay.checked()
    assert relay.written == 1
    until(lambda: relay.relayed == 2 and relay.pending == 0, 10, "both acknowledged")
    assert {first, second} <= held(hub)
    count, largest = relays(hub)
    assert count - before == 1 and largest >= 2


def test_a_sign_in_alone_in_its_worker_is_written_at_once(relay, hub):
    until(lambda: relay.ready, 10, "the relay thread prepared a request")
    relay.checking()
    ref = sign_in(relay)
    relay.checked()
    assert relay.written == 1  # nobody else checked: no wait
    until(lambda: relay.relayed == 1, 10, "acknowledged")
    assert ref in held(hub)


def test_a_held_sign_in_goes_when_the_other_is_refused(relay, hub):
    until(lambda: relay.ready, 10, "the relay thread prepared a request")
    relay.checking()
    relay.checking()
    ref = sign_in(relay)
    relay.checked()
    assert relay.pending == 1 and relay.relayed == 0
    relay.checked()  # the other one refused (a wrong password): no sign-in of its own
    until(lambda: relay.relayed == 1, 10, "the relay thread sent the held one")
    assert relay.written == 0 and ref in held(hub)


def test_a_held_sign_in_waits_no_longer_than_the_linger_for_a_slow_one(relay, hub, monkeypatch):
    monkeypatch.setattr(relay_module, "WAKE_SECONDS", 0.02)  # the relay thread looks often
    until(lambda: relay.ready, 10, "the relay thread prepared a request")
    relay.checking()
    relay.checking()
    try:
        started = time.monotonic()
        ref = sign_in(relay)
        relay.checked()
        # the other one is still checked (a slow directory): the relay thread sends it alone
        until(lambda: relay.relayed == 1, 10, "the relay thread sent the held one")
        assert time.monotonic() - started >= relay_module.LINGER_SECONDS
        assert relay.written == 0 and ref in held(hub)
    finally:
        relay.checked()


def test_no_linger_means_no_wait_for_the_sign_ins_being_checked(relay, hub, monkeypatch):
    monkeypatch.setattr(relay_module, "LINGER_SECONDS", 0.0)
    until(lambda: relay.ready, 10, "the relay thread prepared a request")
    relay.checking()
    relay.checking()
    try:
        ref = sign_in(relay)
        assert relay.written == 1  # held for nobody: written at once
        until(lambda: relay.relayed == 1, 10, "acknowledged")
        assert ref in held(hub)
    finally:
        relay.checked()
        relay.checked()
