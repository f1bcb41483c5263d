"""The console's "try a login" says when the password expires and what the sign-in page would
do about it: offer the change step (expired, must change, soon to expire) or not (no grace)."""

from __future__ import annotations

import html
import time
from collections.abc import Iterator

import pytest
from configs import openldap_config
from connector_proc import setup_config
from consolekit import CSRF, FAST, ConsoleConnector, wait_agents
from servers import CHANGE_STEP_MAX_AGE


@pytest.fixture(scope="module")
def running(tmp_path_factory, hub, slapd) -> Iterator[ConsoleConnector]:
    state = tmp_path_factory.mktemp("console-expiry") / "c"
    setup_config(state, openldap_config(slapd), hub.ticket_url, ENABLE_WRITE_BACK=True, **FAST)
    proc = ConsoleConnector(state, workers=1, threads=4).start()
    try:
        wait_agents(hub, proc)
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def people(slapd) -> Iterator[None]:
    soon = time.strftime(
        "%Y%m%d%H%M%SZ", time.gmtime(time.time() - CHANGE_STEP_MAX_AGE + 5 * 86400)
    )
    added = [
        slapd.add_person("consolesoon1", "Console-Soon-pw1", changed=soon),
        slapd.add_person("consolemust1", "Console-Must-pw1", reset=True),
    ]
    yield
    for dn in added:
        slapd.delete(dn)


def tried(proc: ConsoleConnector, username: str, password: str) -> str:
    s = proc.session()
    token = CSRF.search(s.get(proc.console + "/users", timeout=10).text).group(1)
    page = s.post(
        proc.console + "/users/try",
        data={"csrf_token": token, "username": username, "password": password},
        timeout=30,
    )
    found = page.text.split('id="try-expiry">', 1)
    return html.unescape(found[1].split("</p>", 1)[0]) if len(found) == 2 else ""


def test_try_a_login_tells_the_expiry_and_the_change_step(running, people):
    soon = tried(running, "consolesoon1", "Console-Soon-pw1")
    assert "expires at 20" in soon and "(in 5 days)" in soon and "offer to change it now" in soon
    must = tried(running, "consolemust1", "Console-Must-pw1")
    assert "would ask this person for a new password" in must
    # the fixture's "expiry": expired under a policy without grace sign-ins
    assert "only an administrator can change it" in tried(running, "expiry", "expirypw")
    assert "not known" in tried(running, "alice", "alicepw")
    assert tried(running, "alice", "wrong-guess-1") == ""  # a wrong password tells nothing
