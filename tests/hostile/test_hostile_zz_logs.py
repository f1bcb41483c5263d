"""Last of the hostile suite: after everything above, nothing leaked and nothing crashed.

Every connector log (both workers of each gunicorn) is searched for every secret the suite
used: passwords (the real ones and the hostile ones), Kerberos tokens, command JWTs and their
signatures, CSRF values. No traceback, no 5xx in the access log, and the gunicorn masters and
workers are the ones that started (a crashed worker would have been replaced silently). The
session fixture runs the same check when it ends, so a partial run is checked too.
"""

from __future__ import annotations


def test_the_logs_hold_what_happened(hostile):
    """The search below is not vacuous: the hostile inputs were handled and logged."""
    logs = "".join(hostile.logs().values())
    for text in ("login method=form", "kerberos: rejected (", "login method=hub"):
        assert text in logs, text
    assert len(hostile.secrets) > 20, hostile.secrets
    if (hostile.inside.state_dir / "run" / "logs").is_dir():  # the workers' own log files
        assert any(".jsonl" in name for name in hostile.logs()), list(hostile.logs())


def test_no_secret_traceback_or_crash_in_any_log(hostile):
    hostile.check_logs()
