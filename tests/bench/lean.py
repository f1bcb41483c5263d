"""The lean reference (``leanapp.py``, NOT the product) under gunicorn: started, waited for,
stopped by its PID (its workers by theirs if the master leaves them behind)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import requests
from fasthub import popen_gunicorn
from loadgen import children
from servers import _tail, _terminate, free_port


class LeanReference:
    """``gunicorn leanapp:app`` with ``workers`` x ``threads`` gthread, on loopback."""

    def __init__(self, workdir: Path, *, workers: int, threads: int, **config: Any) -> None:
        self.workdir = workdir
        self.workers = workers
        self.threads = threads
        self.config = {**config, "csrf_key": secrets.token_hex(16)}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "lean.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self, timeout: float = 30.0) -> LeanReference:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = popen_gunicorn(
            "leanapp:app", self.port, self.workers, self.threads, self.log,
            {"BENCH_LEAN_CONFIG": json.dumps(self.config)},
            "--config", str(Path(__file__).with_name("leanconf.py")),
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lean reference exited:\n{_tail(self.log)}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/wsfed", timeout=2).status_code == 200:
                    if len(children(self.proc.pid)) >= self.workers:
                        return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"lean reference not ready in {timeout} s:\n{_tail(self.log)}")

    def stop(self) -> None:
        if self.proc is None:
            return
        workers = children(self.proc.pid) if self.proc.poll() is None else []
        _terminate(self.proc, timeout=8)
        for pid in workers:  # left behind by a killed master (checked: still ours)
            with contextlib.suppress(OSError):
                if b"leanapp:app" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
