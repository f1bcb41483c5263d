"""Browser-flow profiles (protocol §5): refs redeemed once, within 120 s, with their wctx."""

from __future__ import annotations

import pytest
import requests

PROFILE = {
    "user_id": "carol",
    "email": "carol@example.test",
    "groups": ["team-dev", "staff", "everyone"],
}


def _session(agent, wctx: str = "ctx-1", method: str = "kerberos") -> str:
    response = agent.call("sessions", {"wctx": wctx, "profile": PROFILE, "method": method})
    assert response.status_code == 200, response.text
    return str(response.json()["ref"])


def _callback(hub, ref: str, wctx: str = "ctx-1", **kwargs) -> requests.Response:
    return requests.get(
        hub.url("login/callback"), params={"wctx": wctx, "ref": ref}, timeout=10, **kwargs
    )


def test_a_ref_is_redeemed_once_and_shows_the_profile(hub, agent):
    ref = _session(agent)
    assert len(ref) >= 32
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


def test_an_unknown_ref_is_a_clear_400(hub):
    page = _callback(hub, "no-such-ref")
    assert page.status_code == 400
    assert "Sign-in failed" in page.text
    assert "unknown" in page.text


def test_another_wctx_is_refused_and_spends_the_ref(hub, agent):
    ref = _session(agent)
    page = _callback(hub, ref, wctx="ctx-other")
    assert page.status_code == 400
    assert "wctx does not match" in page.text
    assert "already used" in _callback(hub, ref).text


def test_a_ref_expires_after_120_seconds_of_hub_time(hub, agent):
    ref = _session(agent)
    hub.set_clock_offset(121)
    page = _callback(hub, ref)
    assert page.status_code == 400
    assert "expired" in page.text


def test_the_callback_answers_json_when_asked(hub, agent):
    ref = _session(agent, method="form")
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


def test_sessions_are_listed_by_the_admin_api(hub, agent):
    ref = _session(agent, wctx="ctx-9")
    [listed] = hub.sessions()
    assert (listed["ref"], listed["wctx"], listed["redeemed"]) == (ref, "ctx-9", False)


@pytest.mark.parametrize(
    "body",
    [
        {"profile": PROFILE, "method": "form"},
        {"wctx": "", "profile": PROFILE, "method": "form"},
        {"wctx": "c", "profile": "carol", "method": "form"},
        {"wctx": "c", "method": "form"},
        {"wctx": "c", "profile": PROFILE, "method": "saml"},
    ],
)
def test_a_malformed_session_is_400(agent, body):
    response = agent.call("sessions", body)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"
