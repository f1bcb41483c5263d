"""Fixtures: devhub child processes and registered test agents.

* ``hub``          one devhub per test session (default names, RS256, 30 s lease), reset
                   (certificates included) before each test: a clean hub without a start-up.
* ``hub_factory``  ``hub_factory(**options)`` starts a devhub of its own (options as
                   ``DevHubProcess``'s), stopped at the end of the test.
* ``agent``        a registered ``HubAgent`` on ``hub`` (sub ``test-host/w1``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hub_agent import HubAgent
from hubs import DevHubProcess, start_devhub


@pytest.fixture(scope="session")
def shared_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHubProcess]:
    hub = start_devhub(tmp_path_factory.mktemp("devhub"))
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture
def hub(shared_hub: DevHubProcess) -> DevHubProcess:
    assert shared_hub.proc is not None and shared_hub.proc.poll() is None, shared_hub.log_text()
    shared_hub.reset(certificates=True)
    return shared_hub


@pytest.fixture
def hub_factory(tmp_path: Path) -> Iterator[Callable[..., DevHubProcess]]:
    started: list[DevHubProcess] = []

    def factory(**options: Any) -> DevHubProcess:
        hub = start_devhub(tmp_path / f"devhub{len(started)}", **options)
        started.append(hub)
        return hub

    try:
        yield factory
    finally:
        for hub in started:
            hub.stop()


@pytest.fixture
def agent(hub: DevHubProcess) -> HubAgent:
    a = HubAgent(hub)
    a.register()
    return a
