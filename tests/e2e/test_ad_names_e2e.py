"""The names people type, end to end on Active Directory: the sign-in form and the hub's
``authenticate_user``, gunicorn connector + devhub + Samba AD DC."""

import re
import time

import pytest
import requests
from configs import ad_config
from connector_proc import ConnectorProcess, setup_config
from hubs import start_devhub

NAMES = ["alice", "ADEX\\alice", "alice@ad.example.test", "Alice@AD.example.test"]


@pytest.fixture(scope="module")
def env(tmp_path_factory, samba_ad):
    tmp = tmp_path_factory.mktemp("ad-names")
    hub = start_devhub(tmp / "hub", lease_seconds=30)
    state = tmp / "connector"
    setup_config(state, ad_config(samba_ad), hub.ticket_url, POLL_WAIT_SECONDS=2)
    proc = ConnectorProcess(state).start()
    yield hub, proc
    proc.stop()
    hub.stop()


def form_profile(hub, proc, username, password):
    """Sign in through the form; the profile the hub received, or the page's status."""
    s = requests.Session()
    query = {"wtrealm": "urn:acme", "wctx": "ctx-names"}
    page = s.get(proc.url + "/wsfed", params=query, timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    data = {**query, "username": username, "password": password, "csrf_token": token}
    resp = s.post(proc.url + "/wsfed", data=data, allow_redirects=False, timeout=30)
    if resp.status_code != 303:
        return resp.status_code
    assert resp.headers["Location"].startswith(hub.url("login/callback"))
    got = s.get(resp.headers["Location"], headers={"Accept": "application/json"}, timeout=10)
    assert got.status_code == 200, got.text
    return got.json()["profile"]


def hub_result(hub, username, password):
    payload = {"pid": f"p-{time.monotonic_ns()}", "username": username, "password": password}
    done = hub.wait_done(hub.queue("authenticate_user", payload), 30)
    return done["result"]


@pytest.mark.slow
def test_every_name_is_the_same_person_at_the_form_and_the_hub(env, samba_ad):
    hub, proc = env
    pw = samba_ad.users["alice"]
    profiles = [form_profile(hub, proc, name, pw) for name in NAMES]
    profiles += [hub_result(hub, name, pw)["profile"] for name in NAMES]
    assert all(isinstance(p, dict) for p in profiles), profiles
    assert profiles[0]["sAMAccountName"] == "alice"
    assert all(p == profiles[0] for p in profiles)
    assert sorted(profiles[0]["groups"]) == sorted(samba_ad.expected_groups["alice"])


@pytest.mark.slow
def test_another_domain_signs_nobody_in(env, samba_ad):
    hub, proc = env
    pw = samba_ad.users["alice"]
    assert hub_result(hub, "OTHER\\alice", pw)["err"]["name"] == "WrongUsername"
    assert form_profile(hub, proc, "OTHER\\alice", pw) == 401
