"""The devhub under gevent's WSGI server, as the bench serves it (``tests/bench/fasthub.py``).

gunicorn's ``gevent_pywsgi`` worker monkey-patches the process before it loads the app: the
hub's ``threading`` waits (a long poll, a browser waiting for its relay) become greenlet waits,
and the long poll's peer-gone check reads the socket from ``environ['gunicorn.sock']``. The
waiting tests of ``test_devhub_poll.py`` and ``test_devhub_sessions.py`` run here again on
such a hub. gevent is an optional dependency of the bench only: without it, skipped.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_devhub_poll import (
    test_a_long_poll_returns_as_soon_as_a_command_is_queued as _long_poll_wakes,
)
from test_devhub_poll import test_a_poll_whose_agent_went_away_takes_nothing as _poll_gone
from test_devhub_poll import test_an_idle_long_poll_returns_after_wait as _long_poll_idles
from test_devhub_sessions import (
    test_the_hub_waits_for_a_ref_relayed_after_the_browser_came as _browser_waits,
)

pytest.importorskip("gevent", reason="gevent (optional, the bench's hub server) not installed")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from fasthub import GunicornDevHub


@pytest.fixture(scope="module")
def shared_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornDevHub]:
    """This module's hub (``conftest.py``'s ``hub`` and ``agent`` are built on it)."""
    hub = GunicornDevHub(tmp_path_factory.mktemp("gevent-hub"), "gevent_pywsgi")
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


def test_a_long_poll_wakes_when_a_command_is_queued(hub, agent):
    _long_poll_wakes(hub, agent)


def test_an_idle_long_poll_returns_after_its_wait(agent):
    _long_poll_idles(agent)


def test_a_poll_whose_agent_went_away_takes_nothing(hub, agent):
    _poll_gone(hub, agent)


def test_a_browser_waits_for_its_relay(hub, agent):
    _browser_waits(hub, agent)
