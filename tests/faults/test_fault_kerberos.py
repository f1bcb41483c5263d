"""Keytab faults: missing, or holding the wrong principal, when the connector starts; then put
right while it runs.

Kerberos sign-in falls back to the form with a reason, the log says why, the channel and the
form go on serving, and once the keytab is right Kerberos works again without a restart (the
connector tries the keytab again as soon as the file changes).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from configs import openldap_config
from faultkit import OPENLDAP_LOGINS, NegotiateStream, Stream, start_connector, wait_log
from waits import within

pytestmark = pytest.mark.slow  # fault suite: outages timed in seconds

UNAVAILABLE = "Kerberos sign-in is not available; use your password."


@pytest.mark.parametrize(
    ("case", "broken", "log_says"),
    [
        ("missing", None, "file does not exist"),
        ("wrong principal", "other", "does not hold HTTP/localhost (has: HTTP/otherhost@"),
    ],
    ids=["missing", "wrong-principal"],
)
def test_keytab_fault_then_put_right(
    tmp_path: Path, hub_factory, slapd, mit_kdc, fault_table, case, broken, log_says
):
    keytab = tmp_path / "keytab" / "http.keytab"
    keytab.parent.mkdir()
    if broken == "other":
        shutil.copy(mit_kdc.other_keytab, keytab)  # only HTTP/otherhost
    rcache = tmp_path / "rcache"
    rcache.mkdir()
    hub = hub_factory(lease_seconds=10, kerberos=True, ip_ranges=["127.0.0.0/8"])
    proc = start_connector(
        tmp_path / "c",
        hub,
        openldap_config(slapd),
        env={"KRB5_CONFIG": mit_kdc.krb5_conf, "KRB5RCACHEDIR": str(rcache)},
        KERBEROS_KEYTAB=str(keytab),
        KERBEROS_REALMS=[mit_kdc.realm],
        KERBEROS_SERVICE_PRINCIPAL="HTTP/localhost",
    )
    workers = proc.worker_pids()
    stream = Stream(hub, OPENLDAP_LOGINS, rate=2, prefix="krb").start()
    negotiate = NegotiateStream(proc.url, "alice@EXAMPLE.TEST", "alicepw", mit_kdc.krb5_conf)
    negotiate.start()
    try:
        stream.wait_flowing()
        disabled = wait_log(proc, r"Kerberos sign-in disabled \(until the keytab changes\): .*\n.*")
        tmp = keytab.with_suffix(".new")  # the administrator installs the right keytab
        shutil.copy(mit_kdc.keytab, tmp)
        # an outcome stamped before this was surely asked for with the wrong keytab in place
        replacing = time.time()
        tmp.replace(keytab)
        fixed = time.time()
        within(lambda: negotiate.first_after(fixed, 303) is not None, 10, interval=0.2)
        negotiate_ok = negotiate.first_after(fixed, 303)
        if negotiate_ok is not None:  # then sign-ins enough to reach every worker (below)
            settled = fixed + negotiate_ok + 0.6
            within(lambda: sum(at >= settled for at, _, _ in negotiate.outcomes) >= 4, 15)
    finally:
        negotiate.stop()
        stream.stop()
        alive = proc.proc.poll() is None and proc.worker_pids() == workers
        log = proc.log()
        proc.stop()
    before = [(s, m) for at, s, m in negotiate.outcomes if at < replacing]
    ok = negotiate.statuses()[303]
    row = stream.row(
        f"keytab {case} at start, then put right",
        recovery=negotiate_ok,
        limit=3,
        measured_from="right keytab in place (Kerberos)",
        signins=f"krb ok {ok}, form+reason {len(negotiate.outcomes) - ok}",
    )
    fault_table.append(row)
    assert alive
    row.check()
    assert before and all(s == 200 and m == UNAVAILABLE for s, m in before), before
    assert log_says in disabled.group(0), disabled.group(0)
    assert "Kerberos sign-in enabled again" in log
    assert negotiate_ok is not None, negotiate.outcomes[-5:]
    after = [(s, m) for at, s, m in negotiate.outcomes if at >= fixed + negotiate_ok + 0.6]
    assert after and all(s == 303 for s, _ in after), after  # in every worker
    for header in negotiate.headers_sent:
        assert header.split()[1][:40] not in log
