"""End to end over real sockets: devhub + the connector under gunicorn + OpenLDAP / Samba AD.

The connector is set up with ``connector setup --ticket`` and started the documented way
(gunicorn with deploy/gunicorn.conf.py); commands are queued at the devhub and their results
read back from it.
"""

import time

import jwt
import pytest
from configs import ad_config, openldap_config
from connector_proc import ConnectorProcess, setup_config
from cryptography.hazmat.primitives.asymmetric import rsa
from hubs import start_devhub
from slowproxy import SlowProxy
from waits import until

FAST = {"POLL_WAIT_SECONDS": 2, "AGENT_CONCURRENCY": 4}


#: Longer than the agent can spend retrying one result while the hub fails: four failures in
#: a row cost up to 0.5 + 1 + 2 + 4 s of jittered backoff, and a 4 s stall is 4 s. A shorter
#: lease could lapse meanwhile and the command be run (and answered) twice, now and then.
LEASE = 30


@pytest.fixture
def hub(request, tmp_path):
    """The devhub; ``@pytest.mark.parametrize("hub", [seconds], indirect=True)`` for a lease
    meant to lapse."""
    h = start_devhub(tmp_path / "hub", lease_seconds=getattr(request, "param", LEASE))
    yield h
    h.stop()


def start_connector(tmp_path, hub, directory_cfg, name="c1", **opts):
    state = tmp_path / name
    setup_config(state, directory_cfg, hub.ticket_url, **FAST)
    return ConnectorProcess(state, **opts).start()


@pytest.fixture
def connector(tmp_path, hub, slapd):
    proc = start_connector(tmp_path, hub, openldap_config(slapd))
    yield proc
    proc.stop()


def result_of(hub, name, timeout=30, **payload):
    done = hub.wait_done(hub.queue(name, {"pid": f"p-{time.monotonic_ns()}", **payload}), timeout)
    assert done["resultCount"] == 1
    return done["result"]


@pytest.mark.slow
def test_setup_stores_the_connection_and_the_agent_appears(tmp_path, hub, connector):
    cfg = (connector.state_dir / "config.json").read_text()
    assert hub.ad_hub in cfg and '"CONNECTION": "corp"' in cfg
    assert "BEGIN PRIVATE KEY" not in (connector.state_dir / "agent.key").read_text()
    # the agent polls: it shows on the hub's status page
    agents = until(lambda: hub.agents()["agents"], 15, "the agent polls", interval=0.2)
    assert len(agents) == 1
    status = hub.admin("GET", "agents")
    assert status["certificates"]


def test_authenticate_user_with_nested_groups(hub, connector):
    result = result_of(hub, "authenticate_user", username="dave", password="davepw")
    assert sorted(result["profile"]["groups"]) == ["everyone", "staff", "team-core", "team-dev"]


@pytest.mark.parametrize(
    ("username", "password", "kind"),
    [
        ("alice", "wrong", "WrongPassword"),
        ("nobody", "x", "WrongUsername"),
        ("alice", "", "WrongPassword"),
        ("expiry", "expirypw", "PasswordExpired"),
        ("mustchange", "mustchangepw", "PasswordChangeRequired"),
        ("*)(uid=*", "alicepw", "WrongUsername"),
    ],
)
@pytest.mark.slow
def test_error_kinds_openldap(hub, connector, username, password, kind):
    result = result_of(hub, "authenticate_user", username=username, password=password)
    assert result["err"]["name"] == kind


@pytest.mark.slow
def test_locked_account_openldap(hub, connector, slapd):
    slapd.unlock("locky")
    for _ in range(3):
        result_of(hub, "authenticate_user", username="locky", password="wrong")
    result = result_of(hub, "authenticate_user", username="locky", password="lockypw")
    assert result["err"]["name"] == "AccountLocked"
    slapd.unlock("locky")


@pytest.mark.slow
def test_search_list_and_ping(hub, connector):
    users = result_of(hub, "search_users", search="car")["users"]
    assert [u["id"] for u in users] == ["carol"]
    assert "team-dev" in result_of(hub, "list_groups")["groups"]
    assert result_of(hub, "ping") == {}


@pytest.mark.slow
def test_change_password_off(hub, connector):
    result = result_of(hub, "change_password", username="bob", password="New-bobpw1")
    assert result["err"]["name"] == "InsufficientAccessRights"


@pytest.mark.slow
def test_change_password_on(tmp_path, hub, slapd):
    proc = start_connector(tmp_path, hub, openldap_config(slapd, ENABLE_WRITE_BACK=True))
    try:
        result = result_of(
            hub, "change_password", username="erin", password="New-erinpw1", oldPassword="erinpw"
        )
        assert result["profile"]["id"] == "erin"
        ok = result_of(hub, "authenticate_user", username="erin", password="New-erinpw1")
        assert ok["profile"]["id"] == "erin"
    finally:
        slapd.admin().passwd_s(slapd.user_dn("erin"), None, "erinpw")
        proc.stop()


@pytest.mark.slow
def test_forged_expired_and_wrong_audience_commands_are_refused(hub, connector):
    now = int(time.time())
    payload = {"pid": "p", "username": "alice", "password": "alicepw"}
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def claims(**over):
        c = {
            "iss": hub.ad_hub,
            "aud": "corp",
            "jti": over.pop("jti"),
            "cmd": "authenticate_user",
            "iat": now,
            "exp": now + 300,
            "payload": payload,
        }
        c.update(over)
        return c

    cases = {
        "forged": jwt.encode(claims(jti="forged-1"), forger, algorithm="RS256"),
        "expired": None,
        "audience": None,
        "none": jwt.encode(claims(jti="none-1"), None, algorithm="none"),
    }
    ids = {
        "forged": hub.queue_raw(cases["forged"], name="authenticate_user"),
        "none": hub.queue_raw(cases["none"], name="authenticate_user"),
        "expired": hub.queue(
            "authenticate_user", payload, claims={"iat": now - 1000, "exp": now - 700}
        ),
        "audience": hub.queue("authenticate_user", payload, claims={"aud": "someone-else"}),
    }
    for case, cid in ids.items():
        done = hub.wait_done(cid, 20)
        err = done["result"].get("err")
        assert err and err["name"] == "Unexpected", (case, done)
        assert "refused" in err["message"], (case, err)
    # and the connector still works
    ok = result_of(hub, "authenticate_user", username="alice", password="alicepw")
    assert ok["profile"]["id"] == "alice"
    assert "command refused" in connector.log()
    assert "alicepw" not in connector.log()


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 500, "count": 4},
        {"status": 503, "count": 2, "retry_after": 1},
        {"close": 3},
        {"delay": 4, "count": 2},
    ],
    ids=["500s", "503-retry-after", "connection-resets", "stalls"],
)
@pytest.mark.slow
def test_hub_faults_are_ridden_out(hub, connector, fault):
    result_of(hub, "ping")  # connected
    hub.add_fault(**fault)
    ids = [
        hub.queue("authenticate_user", {"pid": f"f{i}", "username": "bob", "password": "bobpw"})
        for i in range(5)
    ]
    for cid in ids:
        done = hub.wait_done(cid, 60)
        assert done["resultCount"] == 1
        assert done["result"]["profile"]["id"] == "bob"
    assert connector.proc.poll() is None


@pytest.mark.slow
def test_results_are_retried_until_acknowledged(hub, connector):
    result_of(hub, "ping")
    hub.add_fault(status=500, count=3, endpoint="results")
    done = hub.wait_done(hub.queue("ping", {"pid": "r"}), 60)
    assert done["resultCount"] == 1 and done["deliveries"] == 1


@pytest.fixture
def slow_slapd(slapd):
    proxy = SlowProxy("127.0.0.1", slapd.port, delay=0.4)
    yield proxy
    proxy.close()


@pytest.mark.parametrize("hub", [4], indirect=True)  # the lease the redelivery waits for
@pytest.mark.slow
def test_sigkilled_worker_loses_nothing(tmp_path, hub, slapd, slow_slapd):
    cfg = openldap_config(
        slapd,
        LDAP_URL=slow_slapd.url,
        LDAP_STARTTLS=False,
        LDAP_ALLOW_CLEARTEXT=True,  # about draining, not TLS: no handshake round trips
        GROUPS_CACHE_SECONDS=0,
    )
    proc = start_connector(tmp_path, hub, cfg)
    try:
        result_of(hub, "ping")
        ids = [
            hub.queue(
                "authenticate_user", {"pid": f"k{i}", "username": "dave", "password": "davepw"}
            )
            for i in range(4)
        ]
        # wait until the worker holds them, then kill it outright
        until(lambda: all(hub.command(c)["state"] == "leased" for c in ids), 10, "all leased")
        (worker,) = proc.worker_pids()
        import os
        import signal

        os.kill(worker, signal.SIGKILL)
        for cid in ids:
            done = hub.wait_done(cid, 60)
            assert done["resultCount"] == 1, done
            assert done["deliveries"] >= 2, done  # redelivered after the lease lapsed
            assert sorted(done["result"]["profile"]["groups"]) == [
                "everyone",
                "staff",
                "team-core",
                "team-dev",
            ]
    finally:
        proc.stop()


@pytest.mark.slow
def test_sigterm_drains_held_commands(tmp_path, hub, slapd, slow_slapd):
    cfg = openldap_config(
        slapd,
        LDAP_URL=slow_slapd.url,
        LDAP_STARTTLS=False,
        LDAP_ALLOW_CLEARTEXT=True,  # about draining, not TLS: no handshake round trips
        GROUPS_CACHE_SECONDS=0,
    )
    proc = start_connector(tmp_path, hub, cfg)
    result_of(hub, "ping")
    ids = [
        hub.queue("authenticate_user", {"pid": f"t{i}", "username": "dave", "password": "davepw"})
        for i in range(4)
    ]
    until(lambda: all(hub.command(c)["state"] == "leased" for c in ids), 10, "all leased")
    code = proc.terminate()
    assert code == 0, proc.log()
    for cid in ids:
        done = hub.command(cid)
        assert done["state"] == "done", done
        assert done["resultCount"] == 1 and done["deliveries"] == 1, done
    assert "agent drained" in proc.log()


@pytest.mark.slow
def test_two_connectors_share_the_work(tmp_path, hub, slapd):
    a = start_connector(tmp_path, hub, openldap_config(slapd), name="a")
    b = start_connector(tmp_path, hub, openldap_config(slapd), name="b")
    try:
        # /health answers before the agents' first polls: wait until every worker of both polls
        # (else one connector could take all 40 before the other asks)
        def polling() -> bool:
            known = hub.agents()["agents"]
            subs = {x["sub"].rsplit("/", 1)[-1] for x in known if x["connected"] and x["polls"]}
            pids = a.worker_pids() + b.worker_pids()
            return len(pids) == a.workers + b.workers and {str(p) for p in pids} <= subs

        until(polling, 30, "every worker of both connectors polls", interval=0.1)
        ids = [
            hub.queue(
                "authenticate_user", {"pid": f"s{i}", "username": "alice", "password": "alicepw"}
            )
            for i in range(40)
        ]
        agents = {hub.wait_done(cid, 30)["agent"] for cid in ids}
        assert len(agents) == 2, agents
        assert len(hub.agents()["certificates"]) == 2
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize(
    ("user", "kind"),
    [
        ("disabled1", "AccountDisabled"),
        ("acctexp1", "AccountExpired"),
        ("expired1", "PasswordExpired"),
        ("mustchange1", "PasswordChangeRequired"),
    ],
)
@pytest.mark.slow
def test_error_kinds_active_directory(tmp_path, hub, samba_ad, user, kind):
    proc = start_connector(tmp_path, hub, ad_config(samba_ad))
    try:
        result = result_of(hub, "authenticate_user", username=user, password=samba_ad.users[user])
        assert result["err"]["name"] == kind
        ok = result_of(hub, "authenticate_user", username="dave", password=samba_ad.users["dave"])
        assert sorted(ok["profile"]["groups"]) == sorted(samba_ad.expected_groups["dave"])
    finally:
        proc.stop()


@pytest.mark.slow
def test_directory_down_gives_unavailable(tmp_path, hub, slapd_factory):
    server = slapd_factory()
    proc = start_connector(tmp_path, hub, openldap_config(server, LDAP_CONNECT_TIMEOUT=1))
    try:
        assert result_of(hub, "ping") == {}
        server.stop()
        cid = hub.queue(
            "authenticate_user", {"pid": "u", "username": "alice", "password": "alicepw"}
        )
        done = hub.wait_done(cid, 60)
        assert done["result"]["err"]["name"] == "Unavailable"
        server.start()
        ok = result_of(hub, "authenticate_user", username="alice", password="alicepw")
        assert ok["profile"]["id"] == "alice"
        assert proc.proc.poll() is None
    finally:
        proc.stop()
