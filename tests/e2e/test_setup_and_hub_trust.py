"""Setup from a ticket against a real devhub: each failure is distinct and clear; proxies, CAs,
certificate rotation, clock skew, and the devhub's own login and status pages."""

import http.server
import json
import re
import threading
import urllib.request

import pytest
import requests
from configs import openldap_config
from connector_proc import ConnectorProcess, setup_config
from hubs import start_devhub
from servers import free_port, make_ca
from waits import until

from connector.channel.identity import AgentIdentity
from connector.channel.provision import SetupError, setup_from_ticket
from connector.settings import load_settings


@pytest.fixture
def hub(tmp_path):
    h = start_devhub(tmp_path / "hub", lease_seconds=4)
    yield h
    h.stop()


def write_cfg(path, **cfg):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg))
    return path


def test_setup_writes_the_connection(tmp_path, hub):
    cfg = write_cfg(tmp_path / "c" / "config.json")
    result = setup_from_ticket(cfg, hub.ticket_url, environ={})
    assert result.connection == "corp" and result.realm == "urn:acme"
    assert result.ad_hub == hub.ad_hub and result.created_identity
    s = load_settings(cfg, environ={}, require_directory=False)
    assert s.hub_configured and s.provisioning_ticket == hub.ticket_url
    assert s.realm_post_token_url == hub.url("login/callback")
    assert (cfg.stat().st_mode & 0o777) == 0o600
    assert ((tmp_path / "c" / "agent.key").stat().st_mode & 0o777) == 0o600
    assert len(hub.agents()["certificates"]) == 1
    # running it again keeps the same identity
    again = setup_from_ticket(cfg, hub.ticket_url, environ={})
    assert not again.created_identity and again.kid == result.kid


def test_wrong_ticket(tmp_path, hub):
    cfg = write_cfg(tmp_path / "c" / "config.json")
    with pytest.raises(SetupError) as info:
        setup_from_ticket(cfg, hub.ticket_url + "-wrong", environ={})
    assert info.value.reason == "ticket"
    assert "copy the ticket URL again" in str(info.value)


def test_unreachable_hub(tmp_path):
    cfg = write_cfg(tmp_path / "c" / "config.json")
    with pytest.raises(SetupError) as info:
        setup_from_ticket(cfg, f"http://127.0.0.1:{free_port()}/tickets/x", environ={})
    assert info.value.reason == "unreachable"
    assert "cannot reach the hub" in str(info.value)


def test_not_a_url(tmp_path):
    cfg = write_cfg(tmp_path / "c" / "config.json")
    with pytest.raises(SetupError, match="https:// URL"):
        setup_from_ticket(cfg, "ticket-123", environ={})


@pytest.fixture
def tls_hub(tmp_path):
    tls = make_ca(tmp_path / "hub-tls", ips=("127.0.0.1",), dns_names=("localhost",))
    h = start_devhub(
        tmp_path / "hub", tls_cert=tls.cert_file, tls_key=tls.key_file, ca_file=tls.ca_file
    )
    yield h, tls
    h.stop()


def test_untrusted_hub_certificate_then_trusted_with_hub_ca_file(tmp_path, tls_hub):
    hub, tls = tls_hub
    assert hub.ticket_url.startswith("https://")
    cfg = write_cfg(tmp_path / "c" / "config.json")
    with pytest.raises(SetupError) as info:
        setup_from_ticket(cfg, hub.ticket_url, environ={})
    assert info.value.reason == "untrusted"
    assert "HUB_CA_FILE" in str(info.value)
    write_cfg(cfg, HUB_CA_FILE=tls.ca_file)
    assert setup_from_ticket(cfg, hub.ticket_url, environ={}).connection == "corp"


def test_an_agent_set_up_from_an_https_hub_serves_over_https(tmp_path, tls_hub, slapd):
    """Every hub call goes over TLS (plain http is refused except to loopback): setup, the
    poll and the results of a real login, on the https devhub."""
    hub, tls = tls_hub
    state = tmp_path / "c"
    setup_config(
        state, openldap_config(slapd), hub.ticket_url, HUB_CA_FILE=tls.ca_file, POLL_WAIT_SECONDS=1
    )
    stored = load_settings(state / "config.json", environ={})
    assert stored.ad_hub.startswith("https://")
    assert stored.realm_post_token_url.startswith("https://")
    proc = ConnectorProcess(state).start()
    try:
        login = {"pid": "t", "username": "alice", "password": "alicepw"}
        done = hub.wait_done(hub.queue("authenticate_user", login), 30)
        assert done["result"]["profile"]["id"] == "alice"
    finally:
        proc.stop()


class CountingProxy(http.server.ThreadingHTTPServer):
    """A forward HTTP proxy that counts the requests it relays."""

    def __init__(self):
        self.seen = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _relay(self):
                proxy.seen.append(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                req = urllib.request.Request(self.path, data=body, method=self.command)
                for k, v in self.headers.items():
                    if k.lower() not in ("host", "proxy-connection", "connection"):
                        req.add_header(k, v)
                try:
                    with urllib.request.urlopen(req, timeout=60) as up:
                        status, headers, data = up.status, up.headers, up.read()
                except urllib.error.HTTPError as err:
                    status, headers, data = err.code, err.headers, err.read()
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() not in ("transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _relay

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.shutdown()
        self.server_close()


@pytest.fixture
def proxy():
    p = CountingProxy()
    yield p
    p.close()


def test_https_proxy_is_used_and_no_proxy_bypasses_it(tmp_path, hub, proxy, slapd):
    cfg = write_cfg(tmp_path / "c" / "config.json", HTTPS_PROXY=proxy.url)
    setup_from_ticket(cfg, hub.ticket_url, environ={})
    assert any("/info" in p for p in proxy.seen)
    # the agent polls through the proxy too
    state = tmp_path / "c"
    data = json.loads(cfg.read_text())
    data.update(openldap_config(slapd), POLL_WAIT_SECONDS=1)
    cfg.write_text(json.dumps(data))
    proc = ConnectorProcess(state).start()
    try:
        done = hub.wait_done(hub.queue("ping", {"pid": "x"}), 30)
        assert done["resultCount"] == 1
        assert any(p.endswith("/agent/poll") for p in proxy.seen)
    finally:
        proc.stop()
    before = len(proxy.seen)
    bypass = write_cfg(tmp_path / "d" / "config.json", HTTPS_PROXY=proxy.url, NO_PROXY="127.0.0.1")
    setup_from_ticket(bypass, hub.ticket_url, environ={})
    assert len(proxy.seen) == before


@pytest.mark.slow
def test_certificate_change_is_registered_again(tmp_path, hub, slapd):
    """An RSA agent key made by an earlier version keeps working (RS256, no new registration);
    rotated to a new (P-256) key, the connector registers again and authenticates ES256."""
    state = tmp_path / "c"
    state.mkdir(parents=True)
    (state / "config.json").write_text("{}")
    settings = load_settings(state / "config.json", environ={}, require_directory=False)
    legacy = AgentIdentity.generate(alg="RS256")
    legacy.save(state, settings.secret_box)  # as an earlier version left it
    setup_config(state, openldap_config(slapd), hub.ticket_url, POLL_WAIT_SECONDS=1)
    settings = load_settings(state / "config.json", environ={})
    assert settings.agent_cert_thumbprint == legacy.kid
    proc = ConnectorProcess(state).start()
    try:
        assert hub.wait_done(hub.queue("ping", {"pid": "l"}), 30)["resultCount"] == 1
    finally:
        proc.stop()
    assert hub.state()["events"].get("authFailures", 0) == 0
    assert hub.state()["events"].get("registrations", 0) == 1
    rotated = AgentIdentity.generate()
    assert rotated.alg == "ES256"
    rotated.save(state, settings.secret_box)  # the administrator rotated the key
    proc = ConnectorProcess(state).start()
    try:
        assert hub.wait_done(hub.queue("ping", {"pid": "r"}), 30)["resultCount"] == 1
        kids = {c["kid"] if isinstance(c, dict) else c for c in hub.agents()["certificates"]}
        assert rotated.kid in json.dumps(hub.agents()["certificates"]) or rotated.kid in kids
        stored = load_settings(state / "config.json", environ={})
        assert stored.agent_cert_thumbprint == rotated.kid
    finally:
        proc.stop()


@pytest.mark.slow
def test_clock_skew_is_detected_and_survived(tmp_path, hub, slapd):
    state = tmp_path / "c"
    setup_config(state, openldap_config(slapd), hub.ticket_url, POLL_WAIT_SECONDS=1)
    hub.set_clock_offset(3600)  # the hub's clock is an hour ahead of ours
    proc = ConnectorProcess(state).start()
    try:
        done = hub.wait_done(
            hub.queue(
                "authenticate_user", {"pid": "s", "username": "alice", "password": "alicepw"}
            ),
            30,
        )
        assert done["result"]["profile"]["id"] == "alice"
        until(lambda: "clock differs from the hub's by" in proc.log(), 10, "the skew warning")
        said = re.search(r"clock differs from the hub's by (-?\d+\.\d) s", proc.log())
        assert said, proc.log()[-2000:]
        # estimated at the round trip's midpoint from the hub's millisecond time: about 3600
        assert abs(float(said.group(1)) - 3600) < 5, said.group(0)
        ready = requests.get(proc.url + "/ready", timeout=5)
        assert ready.status_code == 503
        assert ready.json()["checks"]["clock_offset_seconds"] > 3500
    finally:
        proc.stop()


def test_devhub_login_page_shows_profile_and_status_shows_agent(tmp_path, hub, slapd):
    """The issue's 'done when': setup, start, the agent is on the status page, and a login
    typed on the devhub's login page shows the profile with nested groups on the Try page."""
    state = tmp_path / "c"
    setup_config(state, openldap_config(slapd), hub.ticket_url, POLL_WAIT_SECONDS=1)
    proc = ConnectorProcess(state).start()
    try:
        s = requests.Session()
        page = s.get(hub.url("login"), timeout=10)
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        resp = s.post(
            hub.url("login"),
            data={"username": "dave", "password": "davepw", "csrf": token},
            timeout=30,
        )
        assert resp.status_code == 200
        assert "/try/" in resp.url
        for group in ("team-core", "team-dev", "staff", "everyone"):
            assert group in resp.text
        status = s.get(hub.url("status"), timeout=10).text
        assert "/" + str(proc.worker_pids()[0]) in status
    finally:
        proc.stop()
