"""Relayed sign-ins (protocol §5): refs minted by the agent, relayed in batches, redeemed once
at ``postTokenUrl`` within 120 s with their wctx; a ref not relayed yet is waited for."""

from __future__ import annotations

import secrets
import threading

import pytest
import requests

PROFILE = {
    "user_id": "carol",
    "email": "carol@example.test",
    "groups": ["team-dev", "staff", "everyone"],
}


def _relay(agent, wctx: str = "ctx-1", method: str = "kerberos", ref: str | None = None) -> str:
    ref = ref or secrets.token_urlsafe(24)
    body = {"signins": [{"ref": ref, "wctx": wctx, "profile": PROFILE, "method": method}]}
    response = agent.call("signins", body)
    assert response.status_code == 200, response.text
    assert response.json() == {"acked": [ref]}
    return ref


def _callback(hub, ref: str, wctx: str = "ctx-1", **kwargs) -> requests.Response:
    return requests.get(
        hub.url("login/callback"), params={"wctx": wctx, "ref": ref}, timeout=30, **kwargs
    )


def test_a_ref_is_redeemed_once_and_shows_the_profile(hub, agent):
    ref = _relay(agent)
    page = _callback(hub, ref)
    assert page.status_code == 200
    assert "carol@example.test" in page.text
    assert '<td id="method">kerberos</td>' in page.text
    for group in PROFILE["groups"]:
        assert f"<li>{group}</li>" in page.text

    again = _callback(hub, ref)
    assert again.status_code == 400
    assert "already used" in again.text
    assert "carol@example.test" not in again.text
    assert hub.state()["events"]["sessionsRedeemed"] == 1


def test_the_signed_in_page_escapes_what_the_connector_and_the_browser_sent(hub, agent):
    """The page is built without the template engine: every relayed value is escaped."""
    ref = secrets.token_urlsafe(24)
    profile = {"email": "<b>x</b>", "groups": ["<script>alert(1)</script>", "a&b"]}
    body = {"signins": [{"ref": ref, "wctx": "<i>w</i>", "profile": profile, "method": "form"}]}
    assert agent.call("signins", body).status_code == 200
    page = _callback(hub, ref, wctx="<i>w</i>")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "<script>" not in page.text and "<b>x" not in page.text and "<i>w" not in page.text
    assert "<li>&lt;script&gt;alert(1)&lt;/script&gt;</li><li>a&amp;b</li>" in page.text
    assert "<code>&lt;i&gt;w&lt;/i&gt;</code>" in page.text
    assert '<ul id="groups">' in page.text and '<pre id="result">' in page.text
    assert 'href="/tenants/acme/login"' in page.text and page.text.rstrip().endswith("</html>")


def test_a_batch_is_one_request_and_a_resent_one_is_acknowledged_and_ignored(hub, agent):
    refs = [secrets.token_urlsafe(24) for _ in range(50)]
    batch = [
        {"ref": r, "wctx": "w", "profile": {"n": i}, "method": "form"} for i, r in enumerate(refs)
    ]
    assert agent.call("signins", {"signins": batch}).json() == {"acked": refs}
    batch[0]["profile"] = {"n": "changed"}
    assert agent.call("signins", {"signins": batch[:1]}).json() == {"acked": refs[:1]}
    answer = _callback(hub, refs[0], "w", headers={"Accept": "application/json"})
    assert answer.json()["profile"] == {"n": 0}
    events = hub.state()["events"]
    assert (events["signinRelays"], events["signinsReceived"]) == (2, 51)
    assert events["signinsDuplicate"] == 1


def test_the_hub_waits_for_a_ref_relayed_after_the_browser_came(hub, agent):
    ref = secrets.token_urlsafe(24)
    pages: list[requests.Response] = []
    browser = threading.Thread(target=lambda: pages.append(_callback(hub, ref)))
    browser.start()
    while not hub.state()["waiting"]:  # the browser waits at the hub (an observable state)
        pass
    _relay(agent, ref=ref)
    browser.join(15)
    assert pages[0].status_code == 200 and "carol@example.test" in pages[0].text


def test_an_unknown_ref_is_a_clear_400_after_the_wait(hub_factory):
    hub = hub_factory(extra_args=["--signin-wait", "0.5"])
    page = _callback(hub, secrets.token_urlsafe(24))
    assert page.status_code == 400
    assert "Sign-in failed" in page.text
    assert "unknown: no connector relayed it within 0.5 s" in page.text


def test_a_malformed_ref_is_refused_without_a_wait(hub):
    page = _callback(hub, "no-such-ref")
    assert page.status_code == 400 and "unknown" in page.text
    assert "sessionWaits" not in hub.state()["events"]


def test_a_ref_relayed_after_it_was_turned_away_stays_spent(hub_factory):
    from hub_agent import HubAgent

    hub = hub_factory(extra_args=["--signin-wait", "0.2"])
    agent = HubAgent(hub)
    agent.register()
    ref = secrets.token_urlsafe(24)
    assert "unknown" in _callback(hub, ref).text
    _relay(agent, ref=ref)
    assert "already used" in _callback(hub, ref).text
    assert hub.state()["events"]["signinsLate"] == 1


def test_another_wctx_is_refused_and_spends_the_ref(hub, agent):
    ref = _relay(agent)
    page = _callback(hub, ref, wctx="ctx-other")
    assert page.status_code == 400
    assert "wctx does not match" in page.text
    assert "already used" in _callback(hub, ref).text


def test_a_ref_expires_after_120_seconds_of_hub_time(hub, agent):
    ref = _relay(agent)
    hub.set_clock_offset(121)
    page = _callback(hub, ref)
    assert page.status_code == 400
    assert "expired" in page.text


def test_too_many_waits_from_one_address_get_429_at_once(hub_factory):
    hub = hub_factory(extra_args=["--max-waiters-per-client", "2"])
    waiting = [
        threading.Thread(target=_callback_until_stopped, args=(hub, secrets.token_urlsafe(24)))
        for _ in range(2)
    ]
    for t in waiting:
        t.start()
    while hub.state()["waiting"] < 2:
        pass
    ref = secrets.token_urlsafe(24)
    busy = _callback(hub, ref, headers={"Accept": "application/json"})
    assert busy.status_code == 429 and busy.headers["Retry-After"] == "1"
    assert busy.json()["error"] == "too_many_waiting"
    page = _callback(hub, secrets.token_urlsafe(24))
    assert page.status_code == 429 and "too many sign-ins are waiting" in page.text
    hub.stop()  # ends the waits
    for t in waiting:
        t.join(15)


def _callback_until_stopped(hub, ref: str) -> None:
    try:
        _callback(hub, ref)
    except requests.RequestException:
        pass  # the hub stopped while this browser waited (refused, reset, or its answer cut)


def test_the_callback_answers_json_when_asked(hub, agent):
    ref = _relay(agent, method="form")
    answer = _callback(hub, ref, headers={"Accept": "application/json"})
    assert answer.status_code == 200
    assert answer.json() == {
        "wctx": "ctx-1",
        "profile": PROFILE,
        "method": "form",
        "agent": agent.sub,
        "createdAt": answer.json()["createdAt"],
        "redeemed": True,
    }
    refused = _callback(hub, ref, headers={"Accept": "application/json"})
    assert refused.status_code == 400
    assert refused.json()["problem"] == "redeemed"


def test_a_certificate_sign_in_is_accepted_and_shown(hub, agent):
    ref = _relay(agent, wctx="ctx-cert", method="certificate")
    page = _callback(hub, ref, wctx="ctx-cert")
    assert page.status_code == 200
    assert '<td id="method">certificate</td>' in page.text


def test_sessions_are_listed_by_the_admin_api(hub, agent):
    ref = _relay(agent, wctx="ctx-9")
    [listed] = hub.sessions()
    assert (listed["ref"], listed["wctx"], listed["redeemed"]) == (ref, "ctx-9", False)


GOOD = {"ref": "r" * 32, "wctx": "c", "profile": PROFILE, "method": "form"}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"signins": []},
        {"signins": [GOOD] * 101},
        {"signins": ["x"]},
        {"signins": [{**GOOD, "ref": "short"}]},
        {"signins": [{**GOOD, "ref": "r" * 31 + "/"}]},
        {"signins": [{**GOOD, "wctx": None}]},
        {"signins": [{**GOOD, "wctx": "w" * 4097}]},
        {"signins": [{**GOOD, "profile": "carol"}]},
        {"signins": [{k: v for k, v in GOOD.items() if k != "profile"}]},
        {"signins": [{**GOOD, "method": "saml"}]},
        {"signins": [{**GOOD, "method": "Certificate"}]},
        {"signins": [GOOD, {**GOOD, "ref": 5}]},
    ],
)
def test_a_malformed_batch_is_refused_whole(hub, agent, body):
    response = agent.call("signins", body)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"
    assert not hub.sessions()


def test_the_old_sessions_endpoint_is_gone(agent):
    assert agent.call("sessions", {"wctx": "w", "profile": {}, "method": "form"}).status_code == 404
