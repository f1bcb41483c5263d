"""Login throttling shared between processes (gunicorn workers) through the run directory."""

import multiprocessing
import os

import pytest

from connector.web.guards import SharedThrottle, Throttle


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _fail_in_child(path, key, times):
    throttle = SharedThrottle(path, 3, 60.0)
    for _ in range(times):
        throttle.failure(key)
    os._exit(0)


def _run(target, *args):
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=target, args=args)
    child.start()
    child.join(30)
    assert child.exitcode == 0


def test_failures_in_other_processes_count(tmp_path):
    path = tmp_path / "throttle.bin"
    here = SharedThrottle(path, 3, 60.0)
    here.failure("bob")
    _run(_fail_in_child, path, "bob", 1)
    assert here.blocked("bob") == 0.0  # two so far
    _run(_fail_in_child, path, "bob", 1)
    # the third, counted in another process (a window of 60 s, give or take a bucket)
    assert 59.0 < here.blocked("bob") <= 60.0 + 60.0 / SharedThrottle.BUCKETS
    assert here.blocked("alice") == 0.0
    # a process opening the table later sees the same counts
    assert SharedThrottle(path, 3, 60.0).blocked("bob") > 59.0


def test_a_forked_child_shares_its_parents_table(tmp_path):
    path = tmp_path / "throttle.bin"
    parent = SharedThrottle(path, 2, 60.0)

    def child():
        parent.failure("carol")  # the parent's object, used after the fork
        os._exit(0)

    _run(child)
    parent.failure("carol")
    assert parent.blocked("carol") > 0


def test_window_slides_and_reset_forgets(tmp_path):
    clock = Clock()
    t = SharedThrottle(tmp_path / "t.bin", 3, 60.0, clock=clock)
    width = 60.0 / SharedThrottle.BUCKETS
    for step in (0, 10, 20):
        clock.now += step
        t.failure("dave")
    # the first failure leaves the window 60 s after it, at most one bucket later
    assert 30.0 <= t.blocked("dave") <= 30.0 + width
    clock.now += 30.0 + width
    assert t.blocked("dave") == 0.0
    t.failure("dave")
    assert t.blocked("dave") > 0
    t.reset("dave")
    assert t.blocked("dave") == 0.0
    t.failure("dave")
    assert t.blocked("dave") == 0.0  # counting starts again after a success


def test_large_limits_cost_no_more_space(tmp_path):
    """The bench and the soak set limits of 10**6 to stay out of the way: the table stays
    small and counting stays exact."""
    clock = Clock()
    path = tmp_path / "t.bin"
    t = SharedThrottle(path, 1_000_000, 300.0, clock=clock)
    assert path.stat().st_size < 2_000_000
    for _ in range(1000):
        t.failure("10.0.0.1")
    assert t.blocked("10.0.0.1") == 0.0
    small = SharedThrottle(path, 1000, 300.0, clock=clock)  # same layout: counts carry over
    assert small.blocked("10.0.0.1") > 0


def test_no_key_is_written_to_disk(tmp_path):
    path = tmp_path / "t.bin"
    t = SharedThrottle(path, 3, 60.0)
    for key in ("frank.secret-user", "203.0.113.77"):
        t.failure(key)
    data = path.read_bytes()
    assert b"frank" not in data and b"203.0.113" not in data
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_full_neighbourhood_gives_up_its_stalest_key(tmp_path):
    clock = Clock()
    t = SharedThrottle(tmp_path / "t.bin", 2, 600.0, slots=1, clock=clock)
    keys = [f"user{i}" for i in range(SharedThrottle.PROBE + 1)]
    for key in keys:
        clock.now += 600.0 / SharedThrottle.BUCKETS + 1  # each in a later bucket
        t.failure(key)
        t.failure(key)
    # PROBE records: the first key (stalest) made room for the last one
    assert t.blocked(keys[0]) == 0.0
    assert all(t.blocked(k) > 0 for k in keys[1:])


def test_a_new_layout_replaces_the_table(tmp_path):
    path = tmp_path / "t.bin"
    SharedThrottle(path, 3, 60.0).failure("erin")
    other = SharedThrottle(path, 1, 120.0)  # another window: the file is laid out again
    assert other.blocked("erin") == 0.0
    other.failure("erin")
    assert other.blocked("erin") > 0


def test_in_process_throttle_still_available():
    clock = Clock()
    t = Throttle(2, 60.0, clock=clock)
    t.failure("x")
    t.failure("x")
    assert t.blocked("x") == pytest.approx(60.0)
