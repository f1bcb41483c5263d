"""The devhub as the bench serves it, with the admin helpers of ``tests/hubs.py``:
:class:`LoopDevHub` (``hubserver.py``, the default since stop 21) or :class:`GunicornDevHub`
(gunicorn's gevent worker, ``hubapp.py``; ``run_bench.py --hub-server gevent``)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
from hubs import DevHubError, DevHubProcess
from servers import _RUNNING, _tail, free_port

HERE = Path(__file__).resolve().parent
#: How ``--hub-server gevent`` serves the hub: one process (its state is in memory), HTTP/1.1 keep-
#: alive for the agents' connections, no access log (gunicorn's default). The worker is gevent's own
#: WSGI server under gunicorn (``gevent_pywsgi``, lightened in ``hubworker.py``) when gevent is
#: installed: one greenlet per connection on an event loop, so the long polls and the browsers
#: waiting for a relay hold no thread and no request is handed to a pool thread and back (the
#: devhub's threading waits are gevent's after gunicorn's monkey-patching); else gthread with
#: threads enough for the waits.
HUB_THREADS = 64
HUB_CONNECTIONS = 1000
HUB_OPTIONS = ("--timeout", "120", "--keep-alive", "30")
HUB_WORKER = (
    "hubworker.HubPyWSGIWorker" if importlib.util.find_spec("gevent") is not None else "gthread"
)
GEVENT_MISSING = (
    "note: gevent is not installed (pip install gevent): the hub is served by gunicorn's "
    "gthread worker, which costs ≈ 0.3 ms more per browser sign-in"
)


def hub_config(hub: DevHubProcess, options: dict[str, Any]) -> dict[str, Any]:
    """``BENCH_HUB_CONFIG``: the devhub's settings of ``hub`` (and its ``options``)."""
    return {
        "tenant": hub.tenant,
        "connection": hub.connection,
        "realm": hub.realm,
        "alg": hub.alg,
        "lease_seconds": hub.lease_seconds,
        "ticket": hub.ticket,
        "kerberos": bool(options.get("kerberos", False)),
        "ip_ranges": list(options.get("ip_ranges", ())),
    }


def popen_gunicorn(
    app: str,
    port: int,
    workers: int,
    threads: int,
    log_file: Path,
    env: dict[str, str],
    *options: str,
    worker: str = "gthread",
) -> subprocess.Popen[bytes]:
    """``gunicorn app`` from this folder on loopback, its output in ``log_file``: ``worker``
    ``gthread`` with ``threads`` threads, or a gevent one with ``HUB_CONNECTIONS`` connections."""
    pool = (
        ("--threads", str(threads))
        if worker == "gthread"
        else ("--worker-connections", str(HUB_CONNECTIONS))
    )
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        worker,
        *pool,
        "--log-level",
        "warning",
        "--no-control-socket",
        *options,
        app,
    ]
    with open(log_file, "wb") as log:
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=HERE,
            env={**os.environ, **env},
        )  # fmt: skip


class GunicornDevHub(DevHubProcess):
    """A :class:`DevHubProcess` whose server is gunicorn (1 worker, ``HUB_WORKER``: gevent's
    WSGI server, or gthread with 64 threads); ``worker`` chooses another."""

    def __init__(
        self, workdir: str | os.PathLike[str], worker: str = HUB_WORKER, **options: Any
    ) -> None:
        super().__init__(workdir, **options)
        self._options = options
        self.worker = worker

    def start(self, timeout: float = 30.0) -> GunicornDevHub:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.worker == "gthread" and HUB_WORKER == "gthread":
            print(GEVENT_MISSING, flush=True)
        port = free_port()
        cfg = hub_config(self, self._options)
        self.proc = popen_gunicorn(
            "hubapp:app", port, 1, HUB_THREADS, self.log_file,
            {"BENCH_HUB_CONFIG": json.dumps(cfg), "PYTHONUNBUFFERED": "1"}, *HUB_OPTIONS,
            worker=self.worker,
        )  # fmt: skip
        _RUNNING.add(self)
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"devhub (gunicorn) exited:\n{_tail(self.log_file)}")
            try:
                self.state()
                return self
            except (requests.RequestException, DevHubError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"devhub (gunicorn) not ready in {timeout} s:\n{_tail(self.log_file)}")

    def stop(self) -> None:
        """SIGQUIT (quick shutdown: long polls are not waited for) to the master, then SIGKILL
        to the master and its worker by PID if they are still there after 10 s."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            worker = self.worker_pid
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if worker is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker, signal.SIGKILL)
        _RUNNING.discard(self)

    @property
    def worker_pid(self) -> int | None:
        """The one gunicorn worker (where the hub's CPU time goes)."""
        if self.proc is None:
            return None
        from loadgen import children

        found = children(self.proc.pid)
        return found[0] if found else None


class LoopDevHub(DevHubProcess):
    """A :class:`DevHubProcess` served by ``hubserver.py`` (one process: an event loop for the
    network and the requests that never wait, a thread pool for the others); ``floor``: its
    do-nothing app instead of the devhub (the admin helpers then do not apply)."""

    def __init__(
        self, workdir: str | os.PathLike[str], floor: bool = False, **options: Any
    ) -> None:
        super().__init__(workdir, **options)
        self._options = options
        self.floor = floor

    def launch(self) -> tuple[list[str], dict[str, str], Path]:
        """``hubserver.py`` (its first line is the devhub's own ``devhub: serving URL``)."""
        command = [sys.executable, str(HERE / "hubserver.py"), "--port", "0"]
        env = {"BENCH_HUB_CONFIG": json.dumps(hub_config(self, self._options))}
        return [*command, *(["--floor"] if self.floor else [])], env, HERE

    def answers(self) -> bool:
        return self.floor or super().answers()  # the floor app has no admin API

    @property
    def worker_pid(self) -> int | None:
        """The server's one process (where the hub's CPU time goes)."""
        return self.proc.pid if self.proc is not None else None
