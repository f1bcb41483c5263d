"""The devhub process: HTTPS, the command line, a clean stop, a log without secrets."""

from __future__ import annotations

import secrets
import signal

import pytest
import requests
from hub_agent import HubAgent
from servers import make_ca

from connector.devhub import server


def test_it_serves_https_with_the_given_certificate(hub_factory, tmp_path):
    tls = make_ca(tmp_path / "tls")
    hub = hub_factory(tls_cert=tls.cert_file, tls_key=tls.key_file, ca_file=tls.ca_file)
    assert hub.base.startswith("https://127.0.0.1:")
    assert hub.info()["adHub"] == hub.ad_hub
    agent = HubAgent(hub)
    agent.register()
    hub.queue("ping", {"pid": "p-1"})
    [command] = agent.poll()["commands"]
    agent.verify(command)
    hub.add_fault(close=1)
    with pytest.raises(requests.ConnectionError):
        agent.call("poll", {"max": 1, "wait": 0})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tls-cert", "cert.pem"], "--tls-cert and --tls-key go together"),
        (["--tenant", "a/b"], "tenant 'a/b'"),
        (["--lease-seconds", "0"], "lease_seconds"),
        (["--ip-ranges", "10.0.0.0/8,nonsense"], "'nonsense' is not a CIDR"),
        (["--alg", "none"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(capsys, argv, message):
    with pytest.raises(SystemExit) as exited:
        server.main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_it_stops_cleanly_on_sigterm(hub_factory):
    hub = hub_factory()
    hub.proc.send_signal(signal.SIGTERM)
    assert hub.proc.wait(10) == 0
    assert "devhub stopped" in hub.log_text()


def test_the_request_log_names_no_ticket_and_no_query(hub, agent):
    ref = secrets.token_urlsafe(24)
    signin = {"ref": ref, "wctx": "w", "profile": {}, "method": "form"}
    assert agent.call("signins", {"signins": [signin]}).json() == {"acked": [ref]}
    requests.get(hub.url("login/callback"), params={"wctx": "w", "ref": ref}, timeout=10)
    hub.info()
    banner, _, requests_log = hub.log_text().partition("lease 30 s\n")
    assert hub.ticket in banner  # printed once at start, on purpose
    assert hub.ticket not in requests_log
    assert ref not in requests_log
    assert "GET /tickets/<ticket>/info 200" in requests_log
    assert "POST /tickets/<ticket> 200" in requests_log
    assert "GET /tenants/acme/login/callback 200" in requests_log
