"""Run the connector the documented way in tests: gunicorn with deploy/gunicorn.conf.py.

``ConnectorProcess`` writes nothing itself: give it a directory holding a ``config.json``
(after ``connector setup``). It starts gunicorn with ``CONNECTOR_CONFIG`` pointing there, waits
for ``/health``, and stops exactly the PID it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
from servers import free_port

ROOT = Path(__file__).resolve().parent.parent


def setup_config(state_dir: Path, directory_cfg: dict[str, Any], ticket: str, **extra: Any) -> Path:
    """Write the directory part of config.json, then run ``connector setup --ticket``."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "config.json"
    path.write_text(json.dumps({**directory_cfg, **extra}))
    out = subprocess.run(
        [sys.executable, "-m", "connector.cli", "--config", str(path), "setup", "--ticket", ticket],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        raise RuntimeError(f"connector setup failed: {out.stdout}\n{out.stderr}")
    return path


class ConnectorProcess:
    """gunicorn serving the connector (and polling the hub) from one state directory."""

    def __init__(
        self,
        state_dir: Path,
        *,
        workers: int = 1,
        threads: int = 4,
        env: dict[str, str] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.verify: bool | str = True  # the CA file, for a connector serving https itself
        self.workers = workers
        self.threads = threads
        # the admin console's listener (default: the sign-in port + 1) on a port of its own,
        # so that connectors started side by side never collide
        self.extra_env = {"CONSOLE_BIND": f"127.0.0.1:{free_port()}", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.state_dir / f"gunicorn-{self.port}.log"

    def command(self) -> list[str]:
        """The command line started (gunicorn the documented way; subclasses may wrap it)."""
        return [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
                "wsgi:app"]  # fmt: skip

    def start(self, wait: bool = True) -> ConnectorProcess:
        env = {
            **os.environ,
            "CONNECTOR_CONFIG": str(self.state_dir / "config.json"),
            "BIND": f"127.0.0.1:{self.port}",
            "WEB_WORKERS": str(self.workers),
            "WEB_THREADS": str(self.threads),
            **self.extra_env,
        }
        log = open(self.log_path, "ab")
        self._log = log
        self.proc = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited {self.proc.returncode}:\n{self.log()}")
            try:
                answer = requests.get(self.url + "/health", timeout=1, verify=self.verify)
                if answer.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"connector not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        """PIDs of the gunicorn workers (children of the master)."""
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.pid)], capture_output=True, text=True
        )
        return [int(x) for x in out.stdout.split()]

    def terminate(self, timeout: float = 90.0) -> int:
        """SIGTERM (graceful: workers drain), then wait; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        workers = self.worker_pids()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        for pid in workers:  # only the PIDs this master started
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()
