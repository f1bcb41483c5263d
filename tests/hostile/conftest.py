"""The hostile-input suite's site: one devhub, OpenLDAP, an MIT KDC, two connectors.

* ``hostile``  (session) :class:`hostilekit.Site`: the hub announces Kerberos for
  ``127.0.0.0/8``; ``inside`` (2 workers) offers Negotiate to 127.0.0.1 and has its login
  throttles out of the way, so every hostile input reaches the code that must refuse it;
  ``outside`` (1 worker, same state directory) has 127.0.0.1 outside its Kerberos range
  (``10.1.2.0/24``), trusts no proxy, and throttles an address after 3 failures.

Every secret a test uses (passwords, Kerberos tokens, command JWTs, CSRF values) goes into
``site.secrets``; when the session ends, every connector log is searched for each of them, for
tracebacks and for 5xx answers, and the gunicorn masters and workers must be the ones that
started (``test_hostile_zz_logs.py`` does the same as the suite's last test, to fail it by
name).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # hostilekit, with any --import-mode
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "faults"))  # faultkit

from hostilekit import Site, start_site


@pytest.fixture(scope="session")
def hostile(tmp_path_factory, slapd, mit_kdc) -> Iterator[Site]:
    site = start_site(tmp_path_factory.mktemp("hostile"), slapd, mit_kdc)
    try:
        yield site
        site.check_logs()
    finally:
        site.stop()
