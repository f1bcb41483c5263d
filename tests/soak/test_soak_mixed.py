"""Load and soak: channel, form and Negotiate logins at a steady rate against a directory of
10,000 users in 300 nested groups, for ``SOAK_SECONDS`` (default 300). Zero errors, zero lost
commands, every browser sign-in relayed to the hub once with its user's profile (protocol §5),
flat memory per worker; prints latency p50/p99, the relay's tally and RSS at start and end."""

from __future__ import annotations

import os
import random
import re
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))

from bigdir import SOAK_PASSWORD, generate
from configs import openldap_config
from connector_proc import ConnectorProcess, setup_config
from hubs import start_devhub
from kerberos_clients import spnego_header

pytestmark = pytest.mark.slow  # a mixed load for minutes

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "300"))
WARM_UP = min(20.0, SOAK_SECONDS / 5)
RATES = {"channel": 6.0, "form": 3.0, "negotiate": 3.0}  # per second
KERBEROS_USERS = {"alice": "alicepw", "bob": "bobpw", "dave": "davepw"}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@pytest.fixture(scope="module")
def site(tmp_path_factory, mit_kdc):
    from servers import Slapd

    work = tmp_path_factory.mktemp("soak")
    slapd = Slapd(work / "slapd").start()
    started = time.monotonic()
    big = generate(slapd, users=10_000, groups=300)
    load_seconds = time.monotonic() - started
    hub = start_devhub(work / "hub", lease_seconds=10, kerberos=True, ip_ranges=["127.0.0.0/8"])
    state = work / "connector"
    setup_config(
        state,
        openldap_config(slapd, GROUPS_STRATEGY="memberof", LDAP_POOL_SIZE=4),
        hub.ticket_url,
        POLL_WAIT_SECONDS=2,
        KERBEROS_KEYTAB=mit_kdc.keytab,
        KERBEROS_REALMS=[mit_kdc.realm],
        KERBEROS_SERVICE_PRINCIPAL="HTTP/localhost",
        LOGIN_FAILURES_PER_ADDRESS=100000,
    )
    rcache = work / "rcache"
    rcache.mkdir()
    proc = ConnectorProcess(
        state,
        workers=2,
        threads=8,
        env={"KRB5_CONFIG": mit_kdc.krb5_conf, "KRB5RCACHEDIR": str(rcache)},
    ).start()
    yield {
        "slapd": slapd,
        "big": big,
        "hub": hub,
        "proc": proc,
        "kdc": mit_kdc,
        "load_seconds": load_seconds,
    }
    proc.stop()
    hub.stop()
    slapd.stop()


class Stream:
    """One kind of login issued at a fixed rate from its own thread."""

    def __init__(self, name: str, rate: float, action, until: float) -> None:
        self.name = name
        self.rate = rate
        self.action = action
        self.until = until
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.sent = 0
        self.thread = threading.Thread(target=self._run, name=f"soak-{name}", daemon=True)

    def _run(self) -> None:
        rng = random.Random(self.name)
        next_at = time.monotonic()
        while next_at < self.until:
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.sent += 1
            t0 = time.monotonic()
            try:
                self.action(rng)
                self.latencies.append(time.monotonic() - t0)
            except Exception as exc:  # every failure is counted and shown
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            next_at += 1.0 / self.rate


def test_mixed_load_soak(site, capsys, monkeypatch):
    hub, proc, big, kdc = site["hub"], site["proc"], site["big"], site["kdc"]
    # The Negotiate stream's client sets these around each token; with them already set, it
    # only re-sets them (never removes them) while the other streams' HTTP clients read the
    # environment concurrently.
    monkeypatch.setenv("KRB5_CONFIG", kdc.krb5_conf)
    monkeypatch.setenv("KRB5CCNAME", "MEMORY:e2e-spnego")
    signin = proc.url + "/wsfed"
    queued: list[tuple[str, str]] = []
    queued_lock = threading.Lock()
    signed_in: list[tuple[str, str]] = []  # (ref, user) of every browser sign-in sent to the hub

    def sent_to_hub(resp, user: str) -> None:
        assert resp.status_code == 303, (resp.status_code, resp.text[:200])
        ref = parse_qs(urlsplit(resp.headers["Location"]).query)["ref"][0]
        with queued_lock:
            signed_in.append((ref, user))

    def channel(rng):
        uid = rng.choice(big.users)
        cid = hub.queue(
            "authenticate_user", {"pid": f"soak-{uid}", "username": uid, "password": SOAK_PASSWORD}
        )
        with queued_lock:
            queued.append((cid, uid))

    form_session = requests.Session()
    form_session.trust_env = False

    def form(rng):
        uid = rng.choice(big.users)
        page = form_session.get(signin, params={"wtrealm": "urn:acme", "wctx": "s"}, timeout=30)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token, page.status_code
        resp = form_session.post(
            signin,
            data={
                "wtrealm": "urn:acme",
                "wctx": "s",
                "wreply": "",
                "username": uid,
                "password": SOAK_PASSWORD,
                "csrf_token": token.group(1),
            },
            allow_redirects=False,
            timeout=30,
        )
        sent_to_hub(resp, uid)

    negotiate_session = requests.Session()
    negotiate_session.trust_env = False

    def negotiate(rng):
        user = rng.choice(sorted(KERBEROS_USERS))
        _, header = spnego_header(f"{user}@{kdc.realm}", KERBEROS_USERS[user], kdc.krb5_conf)
        resp = negotiate_session.get(
            signin,
            params={"wtrealm": "urn:acme", "wctx": "n"},
            headers={"Authorization": header},
            allow_redirects=False,
            timeout=30,
        )
        sent_to_hub(resp, user)

    # warm up, then take the starting memory of every worker
    warm_until = time.monotonic() + WARM_UP
    warm = [
        Stream(n, r, a, warm_until)
        for n, a, r in (
            ("channel", channel, RATES["channel"]),
            ("form", form, RATES["form"]),
            ("negotiate", negotiate, RATES["negotiate"]),
        )
    ]
    for s in warm:
        s.thread.start()
    for s in warm:
        s.thread.join()
    workers = proc.worker_pids()
    rss_start = {pid: rss_kb(pid) for pid in workers}

    until = time.monotonic() + SOAK_SECONDS
    streams = [
        Stream(n, RATES[n], a, until)
        for n, a in (("channel", channel), ("form", form), ("negotiate", negotiate))
    ]
    for s in streams:
        s.thread.start()
    for s in streams:
        s.thread.join()

    # every channel command ends in exactly one result, a success with the right groups
    deadline = time.monotonic() + 60
    views = {}
    for cid, uid in queued:
        view = hub.wait_done(cid, max(1.0, deadline - time.monotonic()))
        views[cid] = (view, uid)
    channel_latency = [(v["doneAt"] - v["createdAt"]) / 1000 for v, _ in views.values()]
    lost = sum(1 for v, _ in views.values() if v["state"] != "done")
    duplicated = sum(1 for v, _ in views.values() if v["resultCount"] > 1)
    failures = [(uid, v["result"]) for v, uid in views.values() if "profile" not in v["result"]]
    sample = list(views.values())[:: max(1, len(views) // 50)]
    wrong_groups = [
        uid
        for v, uid in sample
        if set(v["result"]["profile"]["groups"]) != big.expected_groups(uid)
    ]
    # every browser sign-in relayed to the hub, once, with its user's profile
    wanted = dict(signed_in)
    while True:
        relayed = [s for s in hub.sessions() if s["ref"] in wanted]
        if len(relayed) >= len(wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    landed = {s["ref"] for s in relayed}
    relay_lost = len(wanted) - len(landed)
    relay_duplicated = len(relayed) - len(landed) + len(signed_in) - len(wanted)
    wrong_profiles = [s["ref"] for s in relayed if s["profile"].get("id") != wanted[s["ref"]]]
    relay_requests = hub.state()["events"].get("signinRelays", 0)
    rss_end = {pid: rss_kb(pid) for pid in workers}
    assert proc.worker_pids() == workers, "a worker was replaced during the soak"

    lines = [
        "",
        f"soak: {SOAK_SECONDS:.0f} s after {WARM_UP:.0f} s warm-up; directory 10,000 users in "
        f"300 groups (loaded in {site['load_seconds']:.1f} s); 2 gunicorn workers",
        f"{'stream':<10} {'rate/s':>7} {'sent':>6} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8}",
    ]
    for s in streams:
        lat = channel_latency if s.name == "channel" else s.latencies
        lines.append(
            f"{s.name:<10} {s.rate:>7.1f} {s.sent:>6} {len(s.errors):>7} "
            f"{pct(lat, 0.5) * 1000:>8.1f} {pct(lat, 0.99) * 1000:>8.1f}"
        )
    lines.append(f"channel: lost {lost}, duplicated {duplicated}, failed {len(failures)}")
    lines.append(
        f"relay: sent {len(signed_in)}, landed {len(landed)}, lost {relay_lost}, "
        f"duplicated {relay_duplicated}, wrong profile {len(wrong_profiles)}; "
        f"{relay_requests} relay requests in all"
    )
    for pid in workers:
        lines.append(
            f"worker {pid}: RSS {rss_start[pid] / 1024:.1f} MB at start, "
            f"{rss_end[pid] / 1024:.1f} MB at end"
        )
    with capsys.disabled():
        print("\n".join(lines))

    for s in streams:
        assert s.errors == [], (s.name, s.errors[:5])
        assert s.sent >= 0.9 * s.rate * SOAK_SECONDS, (s.name, s.sent)
    assert lost == 0 and duplicated == 0 and failures == [], failures[:5]
    assert wrong_groups == []
    assert relay_lost == 0 and relay_duplicated == 0 and wrong_profiles == [], wrong_profiles[:5]
    assert statistics.mean(channel_latency) < 2.0
    for pid in workers:  # flat: no more than 15 % (+8 MB slack for allocator noise) of growth
        assert rss_end[pid] <= rss_start[pid] * 1.15 + 8 * 1024, (pid, rss_start, rss_end)
