"""The hostile suite's logs: nothing leaked, nothing crashed.

Every connector log (both workers of each gunicorn) is searched for every secret the suite
used: passwords (the real ones and the hostile ones), Kerberos tokens, command JWTs and their
signatures, CSRF values. No traceback, no 5xx in the access log, and the gunicorn masters and
workers are the ones that started (a crashed worker would have been replaced silently).

These tests make their own traffic, so they hold in any order and alone; the whole run's logs
are checked once more when the session's ``hostile`` fixture ends (``conftest.py``), after
every hostile test that ran, whatever the order.
"""

from __future__ import annotations

import base64
import random

import pytest
import requests
from hostilekit import REALM_URL, is_form, message

pytestmark = pytest.mark.slow  # hostile suite: its own hub, KDC and two connectors

WRONG = "The username or password is incorrect."


def test_the_logs_hold_what_happened(hostile):
    """The search is not vacuous: a hostile form sign-in, Negotiate token and hub command are
    each logged here, and the check finds none of their secrets."""
    logs_before = {p.log_path.name: len(p.log()) for p in hostile.processes()}
    password = "Logs-Check-Pw-5e1c9a"  # distinctive: a match in a log cannot be chance
    token = base64.b64encode(random.Random(5).randbytes(300)).decode()
    hostile.secrets += [password, token]

    resp = hostile.submit("frank", password)
    assert resp.status_code == 401 and message(resp.text) == WRONG and is_form(resp)
    resp = requests.get(
        hostile.url(),
        params={"wtrealm": REALM_URL, "wctx": "ctx-logs"},
        headers={"Authorization": "Negotiate " + token},
        allow_redirects=False,
        timeout=30,
    )
    assert resp.status_code == 200 and is_form(resp), resp.status_code
    result = hostile.result(
        "authenticate_user", {"pid": "logs-check", "username": "frank", "password": password}
    )
    assert result["err"]["name"] == "WrongPassword", result

    new = "".join(p.log()[logs_before[p.log_path.name] :] for p in hostile.processes())
    for text in (
        "login method=form user='frank' outcome=WrongPassword",
        "kerberos: rejected (",
        "login method=hub user='frank' outcome=WrongPassword correlation=logs-check",
    ):
        assert text in new, (text, new[-3000:])
    if (hostile.inside.state_dir / "run" / "logs").is_dir():  # the workers' own log files
        assert any(".jsonl" in name for name in hostile.logs()), list(hostile.logs())
    hostile.check_logs()


def test_no_secret_traceback_or_crash_in_any_log(hostile):
    """What ran so far (all of the suite when run last; the session's end checks again)."""
    hostile.check_logs()
