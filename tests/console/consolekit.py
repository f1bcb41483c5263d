"""The console tests' helpers (plain Python, imported by name: ``from consolekit import …``).

* ``sign_in(client, password)``         signs a Flask test client in to the console.
* ``sign_in_session(console, password)`` a requests session signed in to a console.
* :class:`ConsoleConnector`             a connector under gunicorn with a console listener.
* ``wait_agents(hub, proc)``            waits until every worker polls the hub.
* ``settings_in(state, **cfg)``         settings from a fresh ``state/config.json`` (no server).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # servers, hubs, connector_proc, configs

from connector_proc import ConnectorProcess  # noqa: E402
from hubs import DevHubProcess  # noqa: E402
from servers import free_port  # noqa: E402

from connector import consolepw  # noqa: E402
from connector.settings import Settings, load_settings  # noqa: E402

FAST = {"POLL_WAIT_SECONDS": 2, "AGENT_CONCURRENCY": 4, "LDAP_HEALTH_SECONDS": 1}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
CONSOLE_URL = "http://127.0.0.1:4001"  # the Flask test client's console (test_console_access)


def settings_in(state: Path, **cfg: Any) -> Settings:
    """Settings read from ``state/config.json``, written with ``cfg`` (no directory needed)."""
    state.mkdir(parents=True, exist_ok=True)
    path = state / "config.json"
    path.write_text(json.dumps({"BIND": "127.0.0.1:4000", **cfg}))
    return load_settings(path, environ={}, require_directory=False)


def sign_in(client: Any, password: str, base_url: str = CONSOLE_URL) -> Any:
    """Sign a Flask test client in to the console; the sign-in's answer."""
    page = client.get("/console/login", base_url=base_url)
    token = CSRF.search(page.text).group(1)
    resp = client.post(
        "/console/login", base_url=base_url, data={"csrf_token": token, "password": password}
    )
    assert resp.status_code == 303, resp.text
    return resp


def sign_in_session(console: str, password: str) -> requests.Session:
    """A requests session signed in to the console at ``console`` (…/console)."""
    s = requests.Session()
    s.trust_env = False
    page = s.get(console + "/login", timeout=10)
    token = CSRF.search(page.text).group(1)
    resp = s.post(
        console + "/login",
        data={"csrf_token": token, "password": password},
        allow_redirects=False,
        timeout=10,
    )
    assert resp.status_code == 303, resp.text
    return s


class ConsoleConnector(ConnectorProcess):
    """gunicorn serving the connector, with the console on its own loopback port."""

    def __init__(self, state_dir: Path, **options: Any) -> None:
        self.console_port = free_port()
        env = {"CONSOLE_BIND": f"127.0.0.1:{self.console_port}", **options.pop("env", {})}
        super().__init__(state_dir, env=env, **options)
        self.console = f"http://127.0.0.1:{self.console_port}/console"
        self.password = consolepw.create(self.state_dir)
        self._session: requests.Session | None = None

    def session(self) -> requests.Session:
        """A session signed in to the console (signed in again once it has ended)."""
        if self._session is None:
            self._session = sign_in_session(self.console, self.password)
        return self._session

    def status(self) -> dict[str, Any]:
        """The console's status.json (behind the console's sign-in)."""
        resp = self.session().get(self.console + "/status.json", allow_redirects=False, timeout=10)
        if resp.is_redirect:  # the session ended (workers with another secret key): again
            self._session = None
            resp = self.session().get(self.console + "/status.json", timeout=10)
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
