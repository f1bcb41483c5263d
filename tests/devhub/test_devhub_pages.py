"""The browser pages: index, login -> Try page (with a test agent answering), status."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest
import requests
from hub_agent import AnsweringAgent, HubAgent
from waits import until

PASSWORD = "c0rrect-Horse-battery"
PROFILE = {"user_id": "alice", "email": "alice@example.test", "groups": ["staff", "everyone"]}


def _directory(name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """What a connector would answer, for one user alice with PASSWORD."""
    if name != "authenticate_user":
        return {"err": {"name": "Unexpected", "message": f"unknown command {name}"}}
    if payload["username"] != "alice":
        return {"err": {"name": "WrongUsername", "message": "no such user"}}
    if payload["password"] != PASSWORD:
        return {"err": {"name": "WrongPassword", "message": "invalid credentials for alice"}}
    return {"profile": PROFILE}


@pytest.fixture
def answering(agent):
    worker = AnsweringAgent(agent, _directory, wait=1)
    worker.start()
    yield worker
    worker.stop()


def _login(hub, username: str, password: str) -> tuple[requests.Session, requests.Response]:
    browser = requests.Session()
    form = browser.get(hub.url("login"), timeout=10)
    assert form.status_code == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf, form.text
    response = browser.post(
        hub.url("login"),
        data={"csrf": csrf.group(1), "username": username, "password": password},
        allow_redirects=False,
        timeout=30,
    )
    return browser, response


def test_index_links_the_pages_and_shows_the_ticket_url(hub):
    page = requests.get(hub.base + "/", timeout=10)  # / redirects to the tenant's index
    assert page.status_code == 200
    assert hub.ticket_url in page.text
    assert 'href="/tenants/acme/login"' in page.text
    assert 'href="/tenants/acme/status"' in page.text
    assert "No connector has registered a sign-in endpoint" in page.text


def test_index_links_the_registered_sign_in_endpoint_with_a_wctx(hub):
    HubAgent(hub).register(sign_in_endpoint="https://connector.test:8443/signin")
    page = requests.get(hub.url(""), timeout=10)
    assert re.search(r'href="https://connector.test:8443/signin\?wctx=[\w-]+"', page.text)


def test_login_shows_the_profile_on_the_try_page(hub, answering):
    browser, response = _login(hub, "alice", PASSWORD)
    assert response.status_code == 303
    match = re.fullmatch(r"/tenants/acme/try/(c-[\w-]+)", response.headers["Location"])
    assert match, response.headers["Location"]
    page = browser.get(hub.base + response.headers["Location"], timeout=10)
    assert page.status_code == 200
    assert '<td id="state">done</td>' in page.text
    assert "alice@example.test" in page.text
    assert "<li>staff</li>" in page.text and "<li>everyone</li>" in page.text
    assert 'http-equiv="refresh"' not in page.text
    view = hub.command(match.group(1))
    assert view["name"] == "authenticate_user"
    assert view["payload"]["username"] == "alice"
    assert view["payload"]["pid"].startswith("p-")


def test_login_shows_the_precise_error(hub, answering):
    browser, response = _login(hub, "alice", "wrong-" + PASSWORD)
    page = browser.get(hub.base + response.headers["Location"], timeout=10)
    assert '<span id="error-name">WrongPassword</span>' in page.text
    assert "invalid credentials for alice" in page.text


def test_the_password_appears_nowhere_but_in_the_command(hub, answering):
    browser, response = _login(hub, "alice", PASSWORD)
    pages = [
        browser.get(hub.base + response.headers["Location"], timeout=10).text,
        browser.get(hub.url("status"), timeout=10).text,
        requests.get(hub.url("api/commands"), timeout=10).text,
        requests.get(hub.url("api/state"), timeout=10).text,
    ]
    for text in [*pages, hub.log_text()]:
        assert PASSWORD not in text


def test_login_without_the_csrf_token_is_refused(hub):
    browser = requests.Session()
    browser.get(hub.url("login"), timeout=10)
    for csrf in ("", "forged"):
        response = browser.post(
            hub.url("login"),
            data={"csrf": csrf, "username": "alice", "password": "x"},
            allow_redirects=False,
            timeout=10,
        )
        assert response.status_code == 400
        assert "CSRF" in response.text
    assert hub.commands() == []


def test_login_needs_a_username(hub):
    _, response = _login(hub, "  ", "x")
    assert response.status_code == 400
    assert "Enter a username" in response.text
    assert hub.commands() == []


def test_login_without_an_agent_ends_on_a_waiting_page(hub_factory):
    hub = hub_factory(login_wait=0.5)
    start = time.monotonic()
    browser, response = _login(hub, "alice", PASSWORD)
    assert response.status_code == 303
    assert 0.4 <= time.monotonic() - start < 3
    page = browser.get(hub.base + response.headers["Location"], timeout=10)
    assert 'id="waiting"' in page.text
    assert '<meta http-equiv="refresh" content="1">' in page.text


def test_a_try_page_for_an_unknown_command_is_404(hub):
    assert requests.get(hub.url("try/c-nope"), timeout=10).status_code == 404


def test_an_unknown_tenant_is_404(hub):
    assert requests.get(f"{hub.base}/tenants/other/status", timeout=10).status_code == 404


def test_status_shows_the_agent_its_certificate_and_the_queue(hub, agent):
    agent.poll(wait=0)
    hub.queue("ping", {"pid": "p-1"})
    page = requests.get(hub.url("status"), timeout=10).text
    row = re.search(r"<tr>\s*<td><span class=\"dot (\w+)\".*?</tr>", page, re.S)
    assert row and row.group(1) == "green", page
    assert f"<code>{agent.sub}</code>" in row.group(0)
    assert f"<code>{agent.kid}</code>" in page
    assert re.search(r"<th>queued</th><td>1</td>", page)
    [listed] = hub.agents()["agents"]
    assert listed["connected"] is True
    assert listed["polls"] == 1
    assert 0 <= listed["secondsAgo"] < 5


@pytest.mark.slow
def test_status_turns_red_when_an_agent_stops_polling(hub, agent):
    # taken before the poll: the hub notes the poll later, so it may not go red before this + 5
    polled = time.monotonic()
    agent.poll(wait=0)  # connected while polled within 2 x wait + 5 = 5 s
    until(lambda: hub.agents()["agents"][0]["connected"] is False, 15, "the agent seen as gone")
    assert time.monotonic() - polled >= 5  # not before its time
    page = requests.get(hub.url("status"), timeout=10).text
    assert 'class="dot red"' in page


def test_status_marks_an_agent_inside_a_long_poll(hub, agent):
    poller = threading.Thread(target=agent.poll, kwargs={"wait": 2})
    poller.start()
    [listed] = until(lambda: [a for a in hub.agents()["agents"] if a["polling"]], 2, "polling")
    poller.join()
    assert listed["polling"] is True and listed["lastWait"] == 2
