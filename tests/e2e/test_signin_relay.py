"""Protocol v2's relay end to end: gunicorn connector + devhub + OpenLDAP.

A sign-in answers ``303`` at once with a ref the connector minted; the worker's agent relays
the profile in batches; the hub's ``postTokenUrl`` waits for it. (Kerberos sign-ins through the
relay: ``test_signin_kerberos.py`` follows each one to the profile at the hub.)
"""

from __future__ import annotations

import re
import secrets
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from configs import openldap_config
from connector_proc import ConnectorProcess, setup_config
from hubs import DevHubProcess, start_devhub
from waits import until, within

pytestmark = pytest.mark.slow  # hub outages, 200 concurrent sign-ins, SIGTERM drains

FAST = {"POLL_WAIT_SECONDS": 2}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    h = start_devhub(tmp_path_factory.mktemp("relay-hub"))
    yield h
    h.stop()


@pytest.fixture(scope="module")
def proc(tmp_path_factory, hub, slapd):
    state = tmp_path_factory.mktemp("relay-connector") / "c"
    # up to 64 sign-ins in flight from one address, 16 per user: each holds one of its
    # address's and its user's attempts until it succeeds (the throttle reserves before the
    # bind), so the default limits (20 and 5) are raised
    setup_config(
        state,
        openldap_config(slapd),
        hub.ticket_url,
        **FAST,
        LOGIN_FAILURES_PER_ADDRESS=1000,
        LOGIN_FAILURES_PER_USER=1000,
    )
    p = ConnectorProcess(state, workers=2, threads=16).start()
    yield p
    p.stop()


@pytest.fixture(autouse=True)
def _no_faults_left(hub):
    yield
    hub.clear_faults()


class Browser:
    """A browser with a CSRF cookie and token for the connector's form."""

    def __init__(self, proc: ConnectorProcess) -> None:
        self.proc = proc
        self.http = requests.Session()
        page = self.http.get(proc.url + "/wsfed", params={"wtrealm": "urn:acme"}, timeout=10)
        self.token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)

    def sign_in(self, username: str, password: str, wctx: str) -> str:
        """The form; the Location the connector sends the browser to (asserting a 303)."""
        data = {"wtrealm": "urn:acme", "wctx": wctx, "username": username,
                "password": password, "csrf_token": self.token}  # fmt: skip
        resp = self.http.post(
            self.proc.url + "/wsfed", data=data, allow_redirects=False, timeout=30
        )
        assert resp.status_code == 303, resp.text
        return resp.headers["Location"]

    def follow(self, location: str, **params: str) -> requests.Response:
        """Go to the hub as the 303 says (``params`` override its query)."""
        parts = urlsplit(location)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()} | params
        return requests.get(parts._replace(query="").geturl(), params=query, timeout=30)


def ref_of(location: str) -> str:
    return parse_qs(urlsplit(location).query)["ref"][0]


def relayed(hub: DevHubProcess, refs: set[str], timeout: float = 15.0) -> bool:
    """Wait until the hub holds every one of ``refs``."""
    return bool(within(lambda: refs <= {s["ref"] for s in hub.sessions()}, timeout))


def test_a_form_sign_in_lands_with_its_profile_through_the_relay(hub, proc):
    before = hub.state()["events"].get("signinRelays", 0)
    browser = Browser(proc)
    location = browser.sign_in("dave", "davepw", "ctx-form")
    assert location.startswith(hub.url("login/callback"))
    ref = ref_of(location)
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", ref)  # 192 bits, minted by the connector
    page = browser.follow(location)
    assert page.status_code == 200, page.text
    assert '<td id="method">form</td>' in page.text
    for group in ("team-core", "team-dev", "staff", "everyone"):
        assert f"<li>{group}</li>" in page.text
    assert hub.state()["events"]["signinRelays"] > before


def test_a_replayed_ref_gets_the_hubs_clear_page(hub, proc):
    browser = Browser(proc)
    location = browser.sign_in("alice", "alicepw", "ctx-replay")
    assert browser.follow(location).status_code == 200
    again = browser.follow(location)
    assert again.status_code == 400
    assert "Sign-in failed" in again.text and "already used" in again.text


def test_a_ref_with_another_wctx_gets_the_clear_page_and_is_used_up(hub, proc):
    browser = Browser(proc)
    location = browser.sign_in("alice", "alicepw", "ctx-mine")
    page = browser.follow(location, wctx="ctx-someone-else")
    assert page.status_code == 400 and "wctx does not match" in page.text
    assert "already used" in browser.follow(location).text


def test_an_unknown_ref_gets_the_clear_page_after_the_wait(hub, proc):
    page = requests.get(
        hub.url("login/callback"),
        params={"wctx": "w", "ref": secrets.token_urlsafe(24)},
        timeout=30,
    )
    assert page.status_code == 400
    assert "reference is unknown: no connector relayed it within 10 s" in page.text


def test_a_ref_past_its_time_gets_the_clear_page(hub, proc):
    browser = Browser(proc)
    location = browser.sign_in("bob", "bobpw", "ctx-late")
    assert relayed(hub, {ref_of(location)})
    hub.set_clock_offset(121)
    try:
        page = browser.follow(location)
    finally:
        hub.set_clock_offset(0)
    assert page.status_code == 400 and "expired" in page.text


def test_sign_ins_made_while_the_hub_refuses_land_within_the_wait(hub, proc):
    """The hub answers the relay 503 three times, then drops it twice: each browser, sent to
    the hub at once, gets its profile there once the relay gets through (backoff 0.5, 1, 2,
    4 s at most: under the hub's 10 s wait)."""
    hub.add_fault(status=503, count=2, endpoint="signins")
    hub.add_fault(close=1, endpoint="signins")
    pages: dict[tuple[str, int], requests.Response] = {}

    def one(i: int) -> None:
        browser = Browser(proc)
        user = ("alice", "bob", "carol")[i % 3]
        location = browser.sign_in(user, f"{user}pw", f"ctx-blip-{i}")
        pages[user, i] = browser.follow(location)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not hub.faults(), "the relay never met the faults"
    assert len(pages) == 6
    for (user, i), page in pages.items():
        assert page.status_code == 200, (user, i, page.text)
        assert f"<td>ctx-blip-{i}</td>" in page.text or f"ctx-blip-{i}" in page.text
        assert user in page.text


def test_200_concurrent_sign_ins_arrive_in_fewer_hub_requests(hub, proc):
    hub.reset()  # counters from zero (the certificates stay)
    browser = Browser(proc)
    users = ("alice", "bob", "carol", "dave")
    with ThreadPoolExecutor(64) as pool:
        locations = list(
            pool.map(
                lambda i: browser.sign_in(users[i % 4], f"{users[i % 4]}pw", f"ctx-many-{i}"),
                range(200),
            )
        )
    refs = {ref_of(location) for location in locations}
    assert len(refs) == 200
    assert relayed(hub, refs, timeout=30)
    events = hub.state()["events"]
    assert events["signinsReceived"] == 200
    assert events["signinRelays"] < 200, events
    assert events.get("signinsDuplicate", 0) == 0


def test_sequential_sign_ins_are_each_relayed_at_once_in_a_request_of_their_own(hub, proc):
    """At one client nothing can batch: an idle relay sends each sign-in at once (no linger),
    so the hub counts one relay request of one sign-in per sign-in, and each browser finds
    its profile there."""
    hub.reset()
    browser = Browser(proc)
    for i in range(5):
        page = browser.follow(browser.sign_in("alice", "alicepw", f"ctx-idle-{i}"))
        assert page.status_code == 200, page.text
    events = hub.state()["events"]
    assert events["signinsReceived"] == 5 and events["signinRelays"] == 5, events
    assert events["largestSigninRelay"] == 1, events


def test_sigterm_with_sign_ins_pending_relays_them_all(tmp_path, hub, slapd):
    """The hub refuses the relay until the connector has been told to stop: the draining
    worker keeps retrying, and every sign-in lands before it exits."""
    state = tmp_path / "c"
    setup_config(state, openldap_config(slapd), hub.ticket_url, **FAST)
    proc = ConnectorProcess(state, workers=1).start()
    try:
        hub.add_fault(status=503, count=1000, endpoint="signins")
        browser = Browser(proc)
        refs = {ref_of(browser.sign_in("carol", "carolpw", f"ctx-term-{i}")) for i in range(5)}
        assert not refs & {s["ref"] for s in hub.sessions()}  # all held by the worker
        proc.proc.send_signal(signal.SIGTERM)
        until(lambda: "Handling signal: term" in proc.log(), 15, "gunicorn took the signal")
        hub.clear_faults()
        assert proc.proc.wait(60) == 0, proc.log()[-3000:]
    finally:
        proc.stop()
    assert refs <= {s["ref"] for s in hub.sessions()}
