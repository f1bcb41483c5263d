"""gunicorn's master seals a plain password in config.json once, before its workers fork; the
workers only read the file (loading settings never writes)."""

import json
import os
import signal
import time

import pytest
from configs import openldap_config
from connector_proc import ConnectorProcess, setup_config
from hubs import start_devhub

pytestmark = pytest.mark.slow  # gunicorn started and reloaded with three workers


def _sealed(path):
    return "LDAP_BIND_PASSWORD" not in json.loads(path.read_text())


def _seal_lines(proc):
    return proc.log().count("replaced by encrypted LDAP_BIND_CREDENTIALS")


def test_the_master_seals_once_before_the_workers_start(tmp_path, slapd):
    hub = start_devhub(tmp_path / "hub", lease_seconds=4)
    state = tmp_path / "c"
    try:
        path = setup_config(state, openldap_config(slapd), hub.ticket_url, POLL_WAIT_SECONDS=2)
        config = json.loads(path.read_text())
        assert "LDAP_BIND_PASSWORD" not in config  # setup sealed it
        # the administrator puts a new plain password in the file
        del config["LDAP_BIND_CREDENTIALS"]
        config["LDAP_BIND_PASSWORD"] = slapd.bind_pw
        path.write_text(json.dumps(config))

        proc = ConnectorProcess(state, workers=3, threads=2).start()
        try:
            stored = json.loads(path.read_text())
            assert "LDAP_BIND_PASSWORD" not in stored
            assert stored["LDAP_BIND_CREDENTIALS"].startswith("enc:v1:")
            assert slapd.bind_pw not in path.read_text()
            log = proc.log()
            assert log.count("LDAP_BIND_PASSWORD in ") == 1, log  # the master, once
            assert "replaced by encrypted LDAP_BIND_CREDENTIALS" in log

            # a plain password put there while it runs is sealed on SIGHUP, before the new
            # workers read the file
            config = json.loads(path.read_text())
            del config["LDAP_BIND_CREDENTIALS"]
            config["LDAP_BIND_PASSWORD"] = slapd.bind_pw
            path.write_text(json.dumps(config))
            os.kill(proc.pid, signal.SIGHUP)
            # the master writes the file, then logs: wait for both (the file alone left a
            # chance of reading the log between the two)
            deadline = time.monotonic() + 30
            while not (_sealed(path) and _seal_lines(proc) >= 2):
                assert time.monotonic() < deadline, proc.log()
                time.sleep(0.1)
            assert _seal_lines(proc) == 2, proc.log()
        finally:
            proc.stop()
    finally:
        hub.stop()
