"""One CPU per gunicorn worker (``WEB_CPU_AFFINITY``, on by default).

A worker runs Python on one thread at a time (the GIL), and its threads (the web threads, the
agent's command threads, the relay) hand the GIL over at every blocking call: each LDAP
operation is two (the request sent, the answer awaited), a sign-in about fifteen. When the
threads of a worker run on different CPUs, every hand-over wakes another CPU and the thread
that wanted the GIL waits on one CPU while the holder runs on the other; on one CPU a hand-over
is a plain switch there. The worker loses nothing it could have used: only one of its threads
runs Python at a time anyway, and the directory server, the hub and the other workers still go
wherever the kernel puts them.

The master chooses (``pre_fork``, one worker at a time, so two workers never race for a CPU)
the allowed CPU that the fewest live workers hold (ties go round from one its PID picks, so
that two connectors on one machine spread too); the worker pins itself first thing after the
fork (``post_fork``). A replaced worker's CPU goes to its replacement.
With one CPU allowed (``taskset``, a cpuset) there is nothing to choose and nothing is pinned.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable

#: the attribute of a gunicorn worker object that carries its CPU from the master to the worker
ATTRIBUTE = "connector_cpu"


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on, in order (none known where the system cannot say)."""
    if not hasattr(os, "sched_getaffinity"):  # not Linux: gunicorn's hooks pin nothing
        return []
    return sorted(os.sched_getaffinity(0))


def choose(allowed: Iterable[int], held: Iterable[int | None], start: int = 0) -> int | None:
    """The CPU of ``allowed`` that the fewest of ``held`` (the live workers' CPUs) are on; on
    a tie, the first from the ``start``-th allowed CPU on, round; None when fewer than two CPUs
    are allowed."""
    cpus = sorted(set(allowed))
    if len(cpus) < 2:
        return None
    load = Counter(cpu for cpu in held if cpu is not None)
    turn = {cpu: (i - start) % len(cpus) for i, cpu in enumerate(cpus)}
    return min(cpus, key=lambda cpu: (load[cpu], turn[cpu]))


def assign(worker: object, siblings: Iterable[object], start: int | None = None) -> int | None:
    """Master, before forking ``worker``: choose its CPU among those the live ``siblings``
    leave, and remember it on the worker object (the forked worker reads it there). Ties go
    round from the CPU the master's PID picks (``start``), so two connectors on one machine
    do not both begin on the first CPU."""
    cpus = allowed_cpus()
    first = os.getpid() if start is None else start
    cpu = choose(cpus, (getattr(w, ATTRIBUTE, None) for w in siblings), first)
    setattr(worker, ATTRIBUTE, cpu)
    return cpu


def pin(worker: object) -> int | None:
    """Worker, right after the fork: run on the CPU the master chose (None: not pinned).

    Raises:
        OSError: the kernel refused (the CPU went offline, or left the allowed set).
    """
    cpu: int | None = getattr(worker, ATTRIBUTE, None)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    return cpu
