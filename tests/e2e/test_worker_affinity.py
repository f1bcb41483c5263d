"""Each gunicorn worker runs on one CPU of its own (WEB_CPU_AFFINITY, on by default), a
replaced worker on the CPU its predecessor left; with the setting off, anywhere."""

import os
import signal

from configs import openldap_config
from connector_proc import ConnectorProcess, setup_config
from hubs import start_devhub
from waits import until


def _cpus(pid: int) -> set[int]:
    return set(os.sched_getaffinity(pid))


def _pinned(proc, pid: int) -> bool:
    """Whether worker ``pid`` said it is pinned (it logs once it is, or that nothing is)."""
    return f"worker {pid} runs on CPU" in proc.log()


def test_each_worker_on_a_cpu_of_its_own_and_a_replacement_on_the_freed_one(tmp_path, slapd):
    allowed = set(os.sched_getaffinity(0))
    hub = start_devhub(tmp_path / "hub", lease_seconds=4)
    try:
        setup_config(tmp_path / "c", openldap_config(slapd), hub.ticket_url, POLL_WAIT_SECONDS=2)
        proc = ConnectorProcess(tmp_path / "c", workers=2, threads=2).start()
        try:
            workers = until(lambda: len(w := proc.worker_pids()) == 2 and w, 30)
            if len(allowed) < 2:  # nothing to choose: left where the kernel puts them
                assert all(_cpus(pid) == allowed for pid in workers)
                assert "(WEB_CPU_AFFINITY)" not in proc.log()
                return
            # each worker pins itself first thing after its fork, then says so
            until(lambda: all(_pinned(proc, pid) for pid in workers), 30)
            placed = {pid: _cpus(pid) for pid in workers}
            assert all(len(cpus) == 1 and cpus <= allowed for cpus in placed.values()), placed
            assert len(set.union(*placed.values())) == 2, placed  # not the same CPU
            assert proc.log().count("(WEB_CPU_AFFINITY)") == 2

            victim = workers[0]
            os.kill(victim, signal.SIGKILL)
            replacement = until(
                lambda: (
                    [p for p in proc.worker_pids() if p not in workers]
                    if len(proc.worker_pids()) == 2
                    else None
                ),
                30,
            )
            until(lambda: _pinned(proc, replacement[0]), 30)
            assert _cpus(replacement[0]) == placed[victim]
            assert _cpus(workers[1]) == placed[workers[1]]  # the other stayed
        finally:
            proc.stop()

        off = ConnectorProcess(
            tmp_path / "c", workers=2, threads=2, env={"WEB_CPU_AFFINITY": "false"}
        ).start()
        try:
            workers = until(lambda: len(w := off.worker_pids()) == 2 and w, 30)
            assert all(_cpus(pid) == allowed for pid in workers)
            assert "(WEB_CPU_AFFINITY)" not in off.log()
        finally:
            off.stop()
    finally:
        hub.stop()
