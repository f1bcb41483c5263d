"""User enumeration at the form (issue 13, finding 9): an unknown name and a wrong password
read the same and cost the directory the same operations (a decoy bind for the unknown
name); the audit line keeps the truth.
"""

from __future__ import annotations

import re

import pytest
import requests
from configs import openldap_config

pytestmark = pytest.mark.slow  # hostile suite

_MESSAGE = re.compile(r'<p class="message" id="message"[^>]*>(.*?)</p>', re.DOTALL)


def test_unknown_user_and_wrong_password_read_the_same(hostile):
    """Same status, same page (but the name typed and the form's values)."""
    hostile.secrets.append("Some-Guess-1")
    unknown = hostile.submit("nobody-by-this-name", "Some-Guess-1")
    wrong = hostile.submit("dave", "Some-Guess-1")
    assert unknown.status_code == wrong.status_code == 401
    said = _MESSAGE.search(unknown.text).group(1)
    assert said == _MESSAGE.search(wrong.text).group(1) == "The username or password is incorrect."

    def page(resp: requests.Response, username: str) -> str:
        return re.sub(r'value="[^"]*"', 'value=""', resp.text.replace(username, "NAME"))

    assert page(unknown, "nobody-by-this-name") == page(wrong, "dave")
    log = hostile.inside.log()
    assert "user='nobody-by-this-name' outcome=WrongUsername" in log
    assert "user='dave' outcome=WrongPassword" in log


def test_unknown_user_and_wrong_password_cost_the_same_ldap_operations(
    tmp_path, slapd, monkeypatch
):
    """Counted on python-ldap's own calls against the real OpenLDAP: without the decoy bind
    an unknown name costs a search, a wrong password a search and a bind."""
    import collections
    import json

    from ldap.ldapobject import SimpleLDAPObject

    from connector.settings import load_settings
    from connector.web import create_app

    path = tmp_path / "config.json"
    cfg = {**openldap_config(slapd), "WREPLY_ALLOWED": ["https://app.example/after"]}
    path.write_text(json.dumps(cfg))
    app = create_app(load_settings(path, environ={}), {"TESTING": True})
    calls = collections.Counter()
    for name in ("simple_bind", "simple_bind_s", "search_ext", "search_ext_s", "result3"):
        original = getattr(SimpleLDAPObject, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(SimpleLDAPObject, name, counted)
    client = app.test_client()
    query = {"wtrealm": "urn:acme", "wctx": "c", "wreply": "https://app.example/after"}
    page = client.get("/wsfed", query_string=query)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)

    def attempt(username):
        calls.clear()
        data = {**query, "username": username, "password": "Some-Guess-2", "csrf_token": token}
        resp = client.post("/wsfed", data=data)
        assert resp.status_code == 401
        return dict(calls)

    attempt("alice"), attempt("nobody-at-all-0")  # open the pools
    for i in range(3):
        unknown, wrong = attempt(f"nobody-at-all-{i + 1}"), attempt(("bob", "carol", "dave")[i])
        assert unknown == wrong, (unknown, wrong)
        assert unknown.get("simple_bind", 0) >= 1
