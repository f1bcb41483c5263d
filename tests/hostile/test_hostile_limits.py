"""Resource limits (issue 13, finding 13), on real gunicorn and a real OpenLDAP.

* a request head of 100 fields of 100 KB (10 MB) is refused after about 192 KB, not read
  whole (gunicorn alone reads up to 100 x 128 KB before answering); a 64 KB Negotiate header
  still reaches the app;
* a burst of unauthenticated ``/ready`` calls costs the directory at most one search (counted
  by slapd itself, ``cn=Monitor``);
* the dependency floors are past the known CVEs of gunicorn and PyJWT, and what is installed
  meets them.
"""

from __future__ import annotations

import base64
import configparser
import json
import os
import socket
from importlib import metadata
from pathlib import Path

import pytest
import requests
from configs import openldap_config
from connector_proc import ConnectorProcess
from packaging.requirements import Requirement
from servers import MonitoredSlapd, ldap_ops

from connector.headcap import MAX_REQUEST_HEAD

ROOT = Path(__file__).resolve().parent.parent.parent
FIELD = 100 * 1024
FIELDS = 100


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    server = MonitoredSlapd(tmp_path_factory.mktemp("slapd-monitor")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def connector(tmp_path_factory, monitored):
    state = tmp_path_factory.mktemp("limits")
    cfg = openldap_config(monitored, LDAP_HEALTH_SECONDS=0)  # only /ready asks the directory
    (state / "config.json").write_text(json.dumps(cfg))
    proc = ConnectorProcess(state, workers=1).start()
    try:
        yield proc
    finally:
        proc.stop()


def _flood(port: int) -> tuple[int, bytes]:
    """Send a head of FIELDS fields of FIELD bytes; (bytes sent before refusal, answer)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)  # little in flight
    sent = 0
    try:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for i in range(FIELDS):
            sock.sendall(b"X-Pad-%d: " % i + b"a" * FIELD + b"\r\n")
            sent += FIELD
        sock.sendall(b"\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    finally:
        sock.close()
    return sent, answer


def test_a_flood_of_large_header_fields_is_refused_early(connector):
    sent, answer = _flood(connector.port)
    # the worker stopped reading and closed: the sender was cut off long before 10 MB
    assert sent < FIELDS * FIELD // 2, sent
    if answer:  # the refusal may be lost in the reset; when it arrives it is a 431
        assert answer.split(b" ", 2)[1] in (b"431", b"400"), answer[:80]
    assert requests.get(connector.url + "/health", timeout=10).status_code == 200
    assert "Traceback" not in connector.log()


def test_a_large_negotiate_header_still_reaches_the_app(connector):
    token = base64.b64encode(os.urandom(48 * 1024)).decode()  # 64 KB of base64
    assert len(token) == 64 * 1024
    answer = requests.get(
        connector.url + "/wsfed",
        headers={"Authorization": f"Negotiate {token}", "Cookie": "c=" + "x" * 8000},
        timeout=30,
    )
    assert answer.status_code != 431 and answer.status_code < 500
    assert len(token) + 8000 < MAX_REQUEST_HEAD


def test_ready_bursts_cost_one_directory_search(connector, monitored):
    import ldap

    conn = ldap.initialize(monitored.ldapi_uri)
    conn.simple_bind_s(monitored.admin_dn, monitored.admin_pw)

    def searches() -> int:
        return ldap_ops(conn)["Search"]

    baseline = -searches() + searches()  # reading the counter is itself a search
    requests.get(connector.url + "/ready", timeout=10)  # the pool's connection is open
    before = searches()
    answers = [requests.get(connector.url + "/ready", timeout=10) for _ in range(25)]
    after = searches()
    assert {a.json()["checks"]["directory"] for a in answers} == {"ok"}
    assert after - before - baseline <= 1, after - before - baseline


def test_dependency_floors_are_past_known_cves():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    floors = {}
    for line in cfg["options"]["install_requires"].split("\n"):
        if line.strip():
            req = Requirement(line.strip())
            floors[req.name.lower()] = req.specifier
    vulnerable = {
        # CVE-2024-1135 (fixed in 22.0.0), CVE-2024-6827 (fixed in 23.0.0)
        "gunicorn": ["21.2.0", "22.0.0"],
        # CVE-2024-53861 (2.10.0, fixed in 2.10.1), CVE-2026-32597 (fixed in 2.12.0)
        "pyjwt": ["2.10.0", "2.10.1", "2.11.0"],
    }
    for name, versions in vulnerable.items():
        allowed = [v for v in versions if floors[name].contains(v)]
        assert not allowed, (name, str(floors[name]), allowed)
        assert floors[name].contains(metadata.version(name)), (name, metadata.version(name))
