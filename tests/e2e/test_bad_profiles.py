"""A profile that cannot be built (a custom mapper that raises or returns no valid profile) is
a clear answer everywhere, never a 500: the sign-in form, the console and the channel, end to
end under gunicorn with OpenLDAP and devhub."""

import re
import sys
from pathlib import Path

import pytest
import requests
from configs import openldap_config
from connector_proc import setup_config
from hubs import start_devhub

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "console"))
from consolekit import CSRF, ConsoleConnector

# alice's profile raises in the mapper, bob's is not a dict, frank's has no id; carol's works
MAPPER = """
def map_profile(raw, default):
    if raw["uid"] == "alice":
        raise KeyError("costCenter")
    if raw["uid"] == "bob":
        return ["not", "a", "profile"]
    if raw["uid"] == "frank":
        return {"id": ""}
    return default(raw)
"""
BAD = {
    "alice": "map_profile raised KeyError",
    "bob": "must return a dict",
    "frank": "must have a non-empty string",
}
PASSWORDS = {"alice": "alicepw", "bob": "bobpw", "frank": "frankpw"}
FORM_MESSAGE = "Something went wrong while signing you in."


@pytest.fixture(scope="module")
def env(tmp_path_factory, slapd):
    tmp = tmp_path_factory.mktemp("bad-profiles")
    mapper = tmp / "mapper.py"
    mapper.write_text(MAPPER)
    hub = start_devhub(tmp / "hub", lease_seconds=4)
    state = tmp / "connector"
    setup_config(
        state,
        openldap_config(slapd, PROFILE_MAPPER=str(mapper)),
        hub.ticket_url,
        POLL_WAIT_SECONDS=2,
    )
    proc = ConsoleConnector(state)
    proc.start()
    yield hub, proc
    proc.stop()
    hub.stop()


def _form_post(proc, username):
    s = requests.Session()
    query = {"wtrealm": "urn:acme", "wctx": "ctx-1"}
    page = s.get(proc.url + "/wsfed", params=query, timeout=10)
    token = CSRF.search(page.text).group(1)
    data = {**query, "username": username, "password": PASSWORDS[username], "csrf_token": token}
    return s.post(proc.url + "/wsfed", data=data, allow_redirects=False, timeout=30)


@pytest.mark.parametrize("username", sorted(BAD))
def test_the_sign_in_form_says_something_went_wrong(env, username):
    _, proc = env
    resp = _form_post(proc, username)
    assert resp.status_code == 503, resp.text
    assert FORM_MESSAGE in resp.text
    assert 'name="password"' in resp.text  # the form again, not an error page


def test_a_good_profile_still_signs_in(env):
    _, proc = env
    s = requests.Session()
    query = {"wtrealm": "urn:acme", "wctx": "ctx-1"}
    token = CSRF.search(s.get(proc.url + "/wsfed", params=query, timeout=10).text).group(1)
    data = {**query, "username": "carol", "password": "carolpw", "csrf_token": token}
    resp = s.post(proc.url + "/wsfed", data=data, allow_redirects=False, timeout=30)
    assert resp.status_code == 303, resp.text


@pytest.mark.parametrize("username", sorted(BAD))
def test_the_console_names_the_problem(env, username):
    _, proc = env
    s = proc.session()
    lookup = s.get(proc.console + "/users", params={"lookup": username}, timeout=30)
    assert lookup.status_code == 200, lookup.text
    assert re.search(r'id="error">Unexpected: [^<]*' + re.escape(BAD[username]), lookup.text)

    mapper = s.get(proc.console + "/mapper", params={"user": username}, timeout=30)
    assert mapper.status_code == 200, mapper.text
    assert re.search(r'id="mapper-error">[^<]*' + re.escape(BAD[username]), mapper.text)

    page = s.get(proc.console + "/users", timeout=10)
    token = CSRF.search(page.text).group(1)
    tried = s.post(
        proc.console + "/users/try",
        data={"csrf_token": token, "username": username, "password": PASSWORDS[username]},
        timeout=30,
    )
    assert tried.status_code == 200, tried.text
    assert re.search(r"<strong>Unexpected</strong>: [^<]*" + re.escape(BAD[username]), tried.text)


@pytest.mark.parametrize("username", sorted(BAD))
def test_the_channel_answers_unexpected(env, username):
    hub, _ = env
    cid = hub.queue("authenticate_user", {"username": username, "password": PASSWORDS[username]})
    done = hub.wait_done(cid, 60)
    assert done["result"]["err"]["name"] == "Unexpected", done
    assert BAD[username] in done["result"]["err"]["message"]
