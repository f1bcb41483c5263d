"""Unicode, NUL, whitespace, wildcard and very long passwords (and names), by the channel and
the form: refused with a clear error, never a profile, never a 500, never in a log.

The target is ``frank``, a real user; OpenLDAP's password policy locks an account after three
failures, so the account is unlocked before each attempt (each answer is the password's own).
"""

from __future__ import annotations

import secrets

import pytest
from hostilekit import is_form, message

pytestmark = pytest.mark.slow  # hostile suite: its own hub, KDC and two connectors

WRONG = "The username or password is incorrect."
MAX_PASSWORD = 4096  # connector.directory.service.MAX_PASSWORD_LENGTH and the channel's limit


def _marked(text: str) -> str:
    """A distinctive password (so the log check cannot miss it or match by chance)."""
    return f"Pw{secrets.token_hex(4)}-{text}"


def hostile_passwords(real: str) -> list[tuple[str, str]]:
    """(id, password): none of them is frank's."""
    return [
        ("nul-after", real + "\x00"),
        ("nul-before", "\x00" + real),
        ("nul-inside", real[:3] + "\x00" + real[3:]),
        ("nul-only-marked", _marked("\x00\x00")),
        ("fullwidth", "".join(chr(ord(c) + 0xFEE0) for c in real)),
        ("uppercase", real.upper()),
        ("trailing-space", real + " "),
        ("leading-space", " " + real),
        ("rtl-override", real + "\u202e"),
        ("zero-width", real[:2] + "\u200b" + real[2:]),
        ("combining", real + "\u0301"),
        ("emoji", _marked("🔑" * 50)),
        ("wildcard", "*"),
        ("wildcard-marked", _marked("*")),
        ("filter", _marked("*)(userPassword=*")),
        ("sql", _marked("' OR '1'='1' --")),
        ("crlf", _marked("\r\nuid: admin")),
        ("max-length", _marked("q" * (MAX_PASSWORD - 20))),
        ("over-max", _marked("q" * (MAX_PASSWORD + 10))),
        ("latin1", _marked("ÿþ\xad\xa0")),
        ("surrogate-like", _marked("\U0001d4b6\U0010ffff")),
    ]


PASSWORD_IDS = [i for i, _ in hostile_passwords("frankpw")]


@pytest.fixture
def frank(hostile):
    hostile.slapd.unlock("frank")
    yield hostile.slapd.users["frank"]
    hostile.slapd.unlock("frank")


def _password(hostile, real: str, case: str) -> str:
    password = dict(hostile_passwords(real))[case]
    if len(password.strip("\x00 *")) >= 6:
        hostile.secrets.append(password)
    return password


@pytest.mark.parametrize("case", PASSWORD_IDS)
def test_hostile_password_through_the_channel(hostile, frank, case):
    password = _password(hostile, frank, case)
    result = hostile.result(
        "authenticate_user", {"pid": f"pw-{case}", "username": "frank", "password": password}
    )
    if len(password) > MAX_PASSWORD:
        assert result == {
            "err": {"name": "Unexpected", "message": "malformed payload: password must be text"}
        }
    else:
        assert result["err"]["name"] == "WrongPassword", result
        assert result["err"]["message"] == "wrong username or password"


@pytest.mark.parametrize("case", PASSWORD_IDS)
def test_hostile_password_through_the_form(hostile, frank, case):
    password = _password(hostile, frank, case)
    resp = hostile.submit("frank", password)
    assert resp.status_code == 401, (resp.status_code, message(resp.text))
    assert message(resp.text) == WRONG and is_form(resp)
    assert "Location" not in resp.headers


def test_empty_and_oversized_passwords(hostile, frank):
    # empty: never sent to the directory (an empty simple bind is an anonymous bind)
    result = hostile.result(
        "authenticate_user", {"pid": "empty", "username": "frank", "password": ""}
    )
    assert result["err"] == {
        "name": "WrongPassword",
        "message": "an empty password is never accepted",
    }
    resp = hostile.submit("frank", "")
    assert resp.status_code == 400 and message(resp.text) == "Enter your username and password."
    # a whole request over 64 KB: refused by the web layer before anything is parsed
    huge = _marked("q" * 100_000)
    hostile.secrets.append(huge)
    resp = hostile.submit("frank", huge)
    assert resp.status_code == 413, resp.status_code
    assert message(resp.text) == (
        "This sign-in request is larger than the connector accepts. Go back and sign in again."
    )
    # a password of the wrong type over the channel: malformed, not run
    result = hostile.result(
        "authenticate_user", {"pid": "typed", "username": "frank", "password": 12345}
    )
    assert result["err"] == {
        "name": "Unexpected",
        "message": "malformed payload: password must be text",
    }


def test_names_of_the_wrong_type_and_html_in_names(hostile, frank):
    for value in (None, 42, ["frank"], {"uid": "frank"}, True):
        result = hostile.result(
            "authenticate_user", {"pid": "typed", "username": value, "password": frank}
        )
        assert result["err"] == {
            "name": "Unexpected",
            "message": "malformed payload: username must be text",
        }, value
    # a name the form shows back: escaped, never markup
    resp = hostile.submit('"><script>alert(1)</script>', frank)
    assert resp.status_code == 401
    assert "<script>alert(1)</script>" not in resp.text
    assert "&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in resp.text


def test_the_account_still_works(hostile, frank):
    result = hostile.result(
        "authenticate_user", {"pid": "ok", "username": "frank", "password": frank}
    )
    assert result["profile"]["id"] == "frank"
    assert hostile.submit("frank", frank).status_code == 303
