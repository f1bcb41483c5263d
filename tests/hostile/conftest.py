"""The hostile-input suite's site: one devhub, OpenLDAP, an MIT KDC, two connectors.

* ``hostile``  (session) :class:`hostilekit.Site`: the hub announces Kerberos for
  ``127.0.0.0/8``; ``inside`` (2 workers) offers Negotiate to 127.0.0.1 and has its login
  throttles out of the way, so every hostile input reaches the code that must refuse it;
  ``outside`` (1 worker, same state directory) has 127.0.0.1 outside its Kerberos range
  (``10.1.2.0/24``), trusts no proxy, and throttles an address after 3 failures.

Every secret a test uses (passwords, Kerberos tokens, command JWTs, CSRF values) goes into
``site.secrets``; when the session ends, every connector log is searched for each of them, for
tracebacks and for 5xx answers, and the gunicorn masters and workers must be the ones that
started. That check runs after every hostile test that ran, in whatever order; it fails as an
error at the teardown of the last one. ``test_hostile_logs.py`` runs the same check on
traffic of its own, so it holds alone and in any order.
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


# --- the suite's table: hostile inputs tried and refused, by kind ---------------------------

_KINDS = {
    "test_hostile_ldap_injection.py": "LDAP injection (names, searches)",
    "test_hostile_credentials.py": "unicode / NUL / long names and passwords",
    "test_hostile_negotiate.py": "Negotiate headers (fuzzed, NTLM, replayed, huge)",
    "test_hostile_commands.py": "command JWTs (forged, expired, none, oversized)",
    "test_hostile_web.py": "redirects, CSRF, spoofed forwarding headers",
    "test_hostile_console.py": "console: no session, forged cookies, GET-only SSRF",
    "test_hostile_secrets_at_rest.py": "secrets at rest",
    "test_hostile_throttle.py": "throttle bypass (spellings, IPv6, bursts, floods)",
    "test_hostile_enumeration.py": "user enumeration: unknown name vs wrong password",
    "test_hostile_cleartext.py": "cleartext: https from SSL_PFX, loopback, LDAP w/o TLS",
    "test_hostile_limits.py": "header floods, /ready bursts, dependency CVE floors",
    "test_hostile_archive.py": "archives: scrypt cost bombs, old backups pruned",
    "test_hostile_kerberos_identity.py": "valid tickets: foreign realm, account state",
    "test_hostile_password_change.py": "change_password: resets, empty / NUL / long, own svc",
    "test_hostile_password_step.py": "sign-in change step: replayed, tampered, moved, late",
    "test_hostile_profiles.py": "password hashes in attributes nobody named",
    "test_hostile_hub_answers.py": "hub over http, tampered ticket info",
    "test_hostile_tenant_key.py": "tenant key: a public key passed off as a secret",
    "test_hostile_proxy_and_ticket.py": "ticket and proxy credentials in messages",
    "test_hostile_command_replay.py": "command replays, nbf, NaN times, short RSA keys",
    "test_hostile_client_cert.py": "client certificates: malformed, huge, chain loops",
    "test_hostile_logs.py": "logs: no secret, no traceback, no 5xx",
}
_TALLY: dict[str, list[int]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call" and not (report.when == "setup" and report.failed):
        return
    kind = _KINDS.get(Path(report.nodeid.split("::")[0]).name)
    if kind is None:
        return
    tally = _TALLY.setdefault(kind, [0, 0])
    tally[0 if report.passed else 1] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _TALLY:
        return
    terminalreporter.section("hostile input suite")
    terminalreporter.write_line(f"{'kind':<52} {'cases':>6} {'refused':>8} {'failed':>7}")
    for kind, (ok, bad) in _TALLY.items():
        terminalreporter.write_line(f"{kind:<52} {ok + bad:>6} {ok:>8} {bad:>7}")
    terminalreporter.write_line(
        "a case passes when the input is refused with a clear error (or finds nobody), the "
        "connector keeps serving, and nothing leaks into the logs; hypothesis cases count once."
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The whole hostile suite is ``slow`` (out of ``-m "not slow"``), whatever file it is in."""
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.slow)
