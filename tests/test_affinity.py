"""connector.affinity: which CPU each gunicorn worker gets, and the pinning itself."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from connector import affinity


def test_the_fewest_held_cpu_is_chosen_ties_round_from_start() -> None:
    assert affinity.choose([0, 1], []) == 0
    assert affinity.choose([0, 1], [0]) == 1
    assert affinity.choose([0, 1], [0, 1]) == 0
    assert affinity.choose([0, 1, 2, 3], [0, 1, 0, 2]) == 3
    assert affinity.choose([2, 5, 7], [2, 5, None]) == 7  # None: a worker not pinned
    assert affinity.choose([3, 1], [1, 3, 1]) == 3
    # CPUs outside the allowed set (a cpuset changed meanwhile) do not count against any
    assert affinity.choose([0, 1], [4, 4, 0]) == 1
    # ties go round from the start-th allowed CPU (another master's PID, another start)
    assert affinity.choose([0, 1, 2, 3], [], start=2) == 2
    assert affinity.choose([0, 1, 2, 3], [2], start=2) == 3
    assert affinity.choose([0, 1, 2, 3], [2, 3], start=2) == 0
    assert affinity.choose([0, 1, 2, 3], [0, 1, 2], start=6) == 3  # any int: taken round
    assert affinity.choose([4, 6], [], start=1) == 6


def test_one_cpu_allowed_means_nothing_to_choose() -> None:
    assert affinity.choose([3], []) is None
    assert affinity.choose([], [0]) is None


def test_workers_spread_and_a_replacement_takes_the_freed_cpu(monkeypatch) -> None:
    monkeypatch.setattr(affinity, "allowed_cpus", lambda: [0, 1, 2])
    live: list[SimpleNamespace] = []
    for _ in range(4):  # as the master forks them, one after another
        worker = SimpleNamespace()
        affinity.assign(worker, live, start=1)
        live.append(worker)
    assert [w.connector_cpu for w in live] == [1, 2, 0, 1]
    del live[1]  # the worker on CPU 2 dies
    replacement = SimpleNamespace()
    assert affinity.assign(replacement, live, start=1) == 2
    # a master's own PID picks where its ties start
    monkeypatch.setattr(affinity.os, "getpid", lambda: 302)  # 302 % 3 = 2
    assert affinity.assign(SimpleNamespace(), []) == 2


def _affinity_after_pin(cpu: int | None) -> set[int]:
    """A child process pins itself as a worker would; the CPUs it may then run on."""
    code = (
        "import os, sys, types; from connector import affinity; "
        f"affinity.pin(types.SimpleNamespace(connector_cpu={cpu!r})); "
        "print(sorted(os.sched_getaffinity(0)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(eval(out.stdout))  # noqa: S307 - a list of ints printed by the child above


def test_pin_runs_the_worker_on_its_cpu_only() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    assert _affinity_after_pin(allowed[-1]) == {allowed[-1]}
    assert _affinity_after_pin(None) == set(allowed)  # not chosen: left alone


def test_pin_to_a_cpu_not_allowed_fails_loudly() -> None:
    with pytest.raises(OSError):
        affinity.pin(SimpleNamespace(connector_cpu=(os.cpu_count() or 1) + 4096))


def test_a_worker_the_kernel_will_not_pin_says_why_and_goes_on(tmp_path) -> None:
    """gunicorn's post_fork with a CPU the kernel refuses (as under a seccomp filter without
    sched_setaffinity): a warning that says what to do, and the worker starts anyway."""
    (tmp_path / "config.json").write_text("{}")
    code = (
        "import types; from connector import gunicorn_config as g\n"
        "log = types.SimpleNamespace(warning=lambda m, *a: print('WARNING', m % a),\n"
        "                            info=lambda m, *a: print('INFO', m % a))\n"
        "g.post_fork(None, types.SimpleNamespace(connector_cpu=1 << 20, log=log))\n"
        "print('went on')\n"
    )
    env = {**os.environ, "CONNECTOR_CONFIG": str(tmp_path / "config.json")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1] == "went on"
    assert lines[0].startswith("WARNING worker ") and "not pinned to a CPU" in lines[0]
    assert "WEB_CPU_AFFINITY=false" in lines[0]
    assert not any(line.startswith("INFO") and "runs on CPU" in line for line in lines)
