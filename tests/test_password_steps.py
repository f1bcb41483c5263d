"""The change step's ticket store (``web/password_change.StepStore``) on a real SQLite file:
single use, its time, its key, its file mode, nothing in clear."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest

from connector.web.password_change import Step, StepStore

STEP = Step(
    dn="uid=stepper,ou=people,dc=example,dc=test",
    username="stepper",
    client="192.0.2.1",
    csrf="c" * 64,
    params={"wtrealm": "urn:acme", "wctx": "ctx", "wreply": ""},
    required=True,
    tries=0,
    old_password="Old-Secret-pw1",
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> StepStore:
    return StepStore(tmp_path / "run" / "steps.sqlite3", b"key material", 300, clock)


def test_a_ticket_gives_its_step_once(store):
    ticket = store.put(STEP)
    assert store.take(ticket) == STEP
    assert store.take(ticket) is None


def test_a_ticket_is_good_for_its_time_only(store, clock):
    early, late = store.put(STEP), store.put(dataclasses.replace(STEP, tries=1))
    clock.now += 299
    assert store.take(early) == STEP
    clock.now += 1
    assert store.take(late) is None


def test_unknown_tickets_and_other_keys_open_nothing(store, tmp_path, clock):
    ticket = store.put(STEP)
    other = StepStore(store.path, b"another key", 300, clock)
    assert other.take(ticket) is None  # taken (spent) but not opened
    assert store.take(ticket) is None
    assert store.take("") is None and store.take("x" * 500) is None
    assert store.take(store.put(STEP)[:-1]) is None


def test_the_file_is_private_and_holds_nothing_in_clear(store):
    tickets = [store.put(STEP) for _ in range(3)]
    store.take(tickets[0])
    raw = store.path.read_bytes()
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    for clear in (STEP.old_password, STEP.dn, STEP.username, *tickets):
        assert clear.encode() not in raw
    assert repr(STEP).count(STEP.old_password) == 0


def test_expired_steps_are_removed_when_the_next_one_is_kept(store, clock):
    store.put(STEP)
    clock.now += 301
    store.put(STEP)
    import sqlite3

    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT COUNT(*) FROM steps").fetchone() == (1,)
