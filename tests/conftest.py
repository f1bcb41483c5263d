"""Fixtures that start real directory servers (see tests/servers.py).

* ``slapd``          session-scoped OpenLDAP, started once, stopped at session end.
* ``samba_ad``       session-scoped Samba AD DC on a loopback alias (~15-20 s to start).
* ``slapd_factory``  function-scoped: ``slapd_factory()`` starts an extra, independent
                     slapd (for tests that kill/restart a server); stopped at test end.

Servers are never skipped: a missing binary is a RuntimeError (an error, not a skip).

Property tests (hypothesis) draw the same examples on every run, so a run cannot fail by
chance: profile ``fixed`` (derandomized, no deadline, no example database carried between runs).
``HYPOTHESIS_PROFILE=explore`` draws new examples, to look for bugs rather than to gate.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import hypothesis
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works with any --import-mode

from servers import SambaAD, Slapd

hypothesis.settings.register_profile("fixed", derandomize=True, database=None, deadline=None)
hypothesis.settings.register_profile("explore", derandomize=False)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fixed"))


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    server = Slapd(tmp_path_factory.mktemp("slapd"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def samba_ad(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaAD]:
    server = SambaAD(tmp_path_factory.mktemp("samba-ad"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def slapd_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Slapd]]:
    started: list[Slapd] = []

    def factory(port: int | None = None) -> Slapd:
        server = Slapd(tmp_path_factory.mktemp("slapd-extra"), port=port)
        started.append(server)  # registered before start: a half-started one is stopped too
        return server.start()

    try:
        yield factory
    finally:
        for server in started:
            server.stop()


from servers import MitKdc  # noqa: E402  (kept next to its fixture)


@pytest.fixture(scope="session")
def mit_kdc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MitKdc]:
    """Session-scoped MIT KDC, realm EXAMPLE.TEST (see servers.MitKdc)."""
    server = MitKdc(tmp_path_factory.mktemp("mit-kdc"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _clear_openldap_lockouts(request: pytest.FixtureRequest) -> Iterator[None]:
    """The default ppolicy locks any user after 3 failures: no test inherits another's."""
    yield
    if "slapd" in request.fixturenames:
        request.getfixturevalue("slapd").unlock_all()
