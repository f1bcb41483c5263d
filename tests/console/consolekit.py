"""The console tests' helpers (plain Python, see ``conftest.py``): a connector under gunicorn
with the console on a loopback port of its own, and waiting for its workers to poll."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from connector_proc import ConnectorProcess
from hubs import DevHubProcess
from servers import free_port

FAST = {"POLL_WAIT_SECONDS": 2, "AGENT_CONCURRENCY": 4, "LDAP_HEALTH_SECONDS": 1}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class ConsoleConnector(ConnectorProcess):
    """gunicorn serving the connector, with the console on its own loopback port."""

    def __init__(self, state_dir: Path, **options: Any) -> None:
        self.console_port = free_port()
        env = {"CONSOLE_BIND": f"127.0.0.1:{self.console_port}", **options.pop("env", {})}
        super().__init__(state_dir, env=env, **options)
        self.console = f"http://127.0.0.1:{self.console_port}/console"

    def status(self) -> dict[str, Any]:
        """The console's status.json."""
        resp = requests.get(self.console + "/status.json", timeout=10)
        resp.raise_for_status()
        return dict(resp.json())

    def wait_status(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 40.0
    ) -> dict[str, Any]:
        """The status once ``predicate`` holds (workers restart after a save)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = self.status()
                if predicate(last):
                    return last
            except (requests.RequestException, ValueError) as exc:
                last = exc
            time.sleep(0.3)
        raise AssertionError(f"status not reached in {timeout} s: {last}\n{self.log()[-3000:]}")

    def run_files_text(self) -> str:
        """Everything in the run directory's log ring (the console's view of the logs)."""
        run = self.state_dir / "run" / "logs"
        return "".join(p.read_text(errors="replace") for p in sorted(run.glob("*.jsonl*")))


def wait_agents(hub: DevHubProcess, proc: ConnectorProcess, timeout: float = 30.0) -> None:
    """Wait until every worker of ``proc`` polls the hub."""
    deadline = time.monotonic() + timeout
    while True:
        pids = {str(p) for p in proc.worker_pids()}
        polling = {
            a["sub"].rsplit("/", 1)[-1]
            for a in hub.agents()["agents"]
            if a.get("connected") and a.get("polls")
        }
        if len(pids) == proc.workers and pids <= polling:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers {pids} not all polling (agents: {polling})")
        time.sleep(0.1)
