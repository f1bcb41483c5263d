"""Fixtures of the console tests: connectors under gunicorn with a console port, a browser
(the helpers the tests import live in ``consolekit.py``: a module named ``conftest`` is
whichever conftest.py was imported first, which depends on what else runs).

* ``console_connector(state, **opts)``  a started :class:`ConsoleConnector` (stopped at the end
  of the test); ``state`` may hold no config.json at all (first run).
* ``hub``                               a devhub for the module.
* ``browser``                           headless Chromium (tests/e2e/kerberos_clients.Chromium)
                                        that saves downloads in its work directory.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # servers, hubs, connector_proc, configs
sys.path.insert(0, str(HERE.parent / "e2e"))  # kerberos_clients.Chromium
sys.path.insert(0, str(HERE))  # consolekit: import it by that name, never "conftest"

from consolekit import ConsoleConnector  # noqa: E402
from hubs import DevHubProcess, start_devhub  # noqa: E402
from kerberos_clients import Chromium  # noqa: E402


@pytest.fixture
def console_connector() -> Iterator[Callable[..., ConsoleConnector]]:
    started: list[ConsoleConnector] = []

    def start(state: Path, **options: Any) -> ConsoleConnector:
        state.mkdir(parents=True, exist_ok=True)
        proc = ConsoleConnector(state, **options)
        started.append(proc)
        return proc.start()  # type: ignore[return-value]

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHubProcess]:
    h = start_devhub(tmp_path_factory.mktemp("console-hub"), lease_seconds=4)
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    workdir = tmp_path_factory.mktemp("chromium")
    with Chromium(workdir, env={}) as chromium:
        downloads = workdir / "downloads"
        downloads.mkdir()
        chromium.downloads = downloads  # type: ignore[attr-defined]
        chromium.driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        yield chromium
