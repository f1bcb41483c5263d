"""Console passwords, sessions and "try a login" limits, without a Flask app."""

import pytest
from consolekit import settings_in
from tamper import with_signature_flipped

from connector import consolepw
from connector.web.console.auth import (
    MAX_COOKIE_LENGTH,
    TRIES_IN_ALL,
    TRIES_PER_SESSION,
    ConsoleKeys,
    Credential,
    after_sign_in,
    password_kind,
)


def test_no_password_no_credential(tmp_path):
    s = settings_in(tmp_path)
    assert Credential.in_force(s) is None
    assert password_kind(s) == "none"


def test_the_setting_wins_and_stays_out_of_repr(tmp_path):
    consolepw.create(tmp_path)
    s = settings_in(tmp_path, CONSOLE_PASSWORD="Console-Pw-1")
    credential = Credential.in_force(s)
    assert credential.kind == "setting" and password_kind(s) == "setting"
    assert "Console-Pw-1" not in repr(credential)
    assert credential.matches("Console-Pw-1")
    assert not credential.matches("Console-Pw-2") and not credential.matches("")


def test_the_generated_one_is_read_afresh(tmp_path):
    s = settings_in(tmp_path)
    first = consolepw.create(tmp_path)
    credential = Credential.in_force(s)
    assert credential.kind == "generated" and credential.matches(first)
    second = consolepw.create(tmp_path)  # a reset applies at once
    assert not Credential.in_force(s).matches(first)
    assert Credential.in_force(s).matches(second)


def test_a_session_is_bound_to_the_password_in_force(tmp_path):
    s = settings_in(tmp_path, CONSOLE_PASSWORD="Console-Pw-1")
    keys = ConsoleKeys(s)
    credential = Credential.in_force(s)
    cookie = keys.new_session(credential)
    session = keys.session_id(credential, cookie)
    assert session and keys.session_id(credential, keys.new_session(credential)) != session
    assert keys.session_id(Credential("setting", "Console-Pw-2"), cookie) is None
    assert keys.session_id(None, cookie) is None


@pytest.mark.parametrize(
    "bad",
    [
        None,
        "",
        "not-a-cookie",
        "x" * (MAX_COOKIE_LENGTH + 1),
    ],
)
def test_no_session_without_a_good_cookie(tmp_path, bad):
    s = settings_in(tmp_path, CONSOLE_PASSWORD="Console-Pw-1")
    assert ConsoleKeys(s).session_id(Credential.in_force(s), bad) is None


def test_a_cookie_signed_elsewhere_or_altered_is_refused(tmp_path):
    here = settings_in(tmp_path / "here", CONSOLE_PASSWORD="Console-Pw-1")
    there = settings_in(tmp_path / "there", CONSOLE_PASSWORD="Console-Pw-1")
    credential = Credential.in_force(here)
    cookie = ConsoleKeys(there).new_session(credential)  # another secret.key
    keys = ConsoleKeys(here)
    assert keys.session_id(credential, cookie) is None
    # many fresh cookies: the old change of the last character passed one time in 16 (a last
    # character A-D differs from its replacement in padding bits only)
    for _ in range(64):
        good = keys.new_session(credential)
        assert keys.session_id(credential, good) is not None
        assert keys.session_id(credential, with_signature_flipped(good)) is None
    # a well-signed object of the wrong shape is no session either
    assert keys.session_id(credential, keys.sessions.dumps({"f": "x"})) is None
    assert keys.session_id(credential, keys.sessions.dumps(["s", "f"])) is None


def test_tries_are_limited_per_session_and_in_all(tmp_path):
    keys = ConsoleKeys(settings_in(tmp_path, CONSOLE_PASSWORD="Console-Pw-1"))
    assert all(keys.reserve_try("one") == 0.0 for _ in range(TRIES_PER_SESSION))
    assert keys.reserve_try("one") > 0  # this session is over its limit
    used = TRIES_PER_SESSION
    sessions = iter(f"s{i}" for i in range(100))
    while used < TRIES_IN_ALL:
        name = next(sessions)
        for _ in range(min(TRIES_PER_SESSION, TRIES_IN_ALL - used)):
            assert keys.reserve_try(name) == 0.0
            used += 1
    assert keys.reserve_try(next(sessions)) > 0  # a fresh session, but over the limit in all


def test_a_refused_try_takes_nothing_from_the_other_limit(tmp_path):
    keys = ConsoleKeys(settings_in(tmp_path, CONSOLE_PASSWORD="Console-Pw-1"))
    for _ in range(TRIES_PER_SESSION):
        keys.reserve_try("one")
    for _ in range(5):
        assert keys.reserve_try("one") > 0  # refused per session: not counted in all
    left = TRIES_IN_ALL - TRIES_PER_SESSION
    tries = [keys.reserve_try(f"s{i // TRIES_PER_SESSION}") for i in range(left)]
    assert tries == [0.0] * left


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/console/users", "/console/users"),
        ("/console/", "/console/"),
        ("", "/console/"),
        ("/console", "/console/"),
        ("//evil.example/console/", "/console/"),
        ("https://evil.example/console/", "/console/"),
        ("/wsfed", "/console/"),
    ],
)
def test_after_sign_in_stays_in_the_console(target, expected):
    assert after_sign_in(target, "/console/") == expected
