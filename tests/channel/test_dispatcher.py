"""Running verified commands against the real OpenLDAP: every outcome is a protocol result."""

import json
import random
import re

import pytest
from configs import openldap_config

from connector.channel.agent import Backoff
from connector.channel.commands import Command, Dispatcher
from connector.directory import Directory
from connector.settings import load_settings


def directory_for(tmp_path, slapd, **over):
    cfg = openldap_config(slapd, LDAP_CONNECT_TIMEOUT=1, **over)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return Directory(load_settings(tmp_path / "config.json", environ={}))


@pytest.fixture
def dispatcher(tmp_path, slapd):
    d = directory_for(tmp_path, slapd)
    yield Dispatcher(d, write_back=False)
    d.close()


def run(dispatcher, name, **payload):
    return dispatcher.run(Command("c-1", name, {"pid": "p-1", **payload}))


def test_authenticate_user(dispatcher):
    result = run(dispatcher, "authenticate_user", username="dave", password="davepw")
    assert sorted(result["profile"]["groups"]) == ["everyone", "staff", "team-core", "team-dev"]


def test_authenticate_user_errors(dispatcher):
    assert (
        run(dispatcher, "authenticate_user", username="dave", password="x")["err"]["name"]
        == "WrongPassword"
    )
    assert (
        run(dispatcher, "authenticate_user", username="ghost", password="x")["err"]["name"]
        == "WrongUsername"
    )


def test_search_and_list(dispatcher):
    users = run(dispatcher, "search_users", search="caro", limit=5)["users"]
    assert [u["id"] for u in users] == ["carol"]
    assert "team-core" in run(dispatcher, "list_groups")["groups"]
    assert run(dispatcher, "ping") == {}


def test_change_password_off(dispatcher):
    result = run(dispatcher, "change_password", username="bob", password="newpw")
    assert result["err"]["name"] == "InsufficientAccessRights"


def test_every_password_change_is_audited_without_the_passwords(tmp_path, slapd, caplog):
    d = directory_for(tmp_path, slapd, ENABLE_WRITE_BACK=True)
    dispatcher = Dispatcher(d, write_back=True)
    try:
        caplog.set_level("INFO", logger="connector.audit")
        reset = run(dispatcher, "change_password", username="bob", password="Reset-bobpw9")
        assert reset["err"]["name"] == "InsufficientAccessRights"
        wrong = run(
            dispatcher, "change_password", username="bob", password="New-bobpw9", oldPassword=""
        )
        assert wrong["err"]["name"] == "WrongPassword"
    finally:
        d.close()
    lines = [
        re.sub(r" ms=[0-9.]+$", " ms=…", r.getMessage())
        for r in caplog.records
        if r.name == "connector.audit"
    ]
    assert lines == [
        "password_change method=hub:reset user='bob' outcome=InsufficientAccessRights "
        "correlation=p-1 command=c-1 ms=…",
        "password_change method=hub:self user='bob' outcome=WrongPassword correlation=p-1 "
        "command=c-1 ms=…",
    ]
    assert "bobpw9" not in caplog.text


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("authenticate_user", {"username": "alice"}),
        ("authenticate_user", {"username": ["alice"], "password": "x"}),
        ("authenticate_user", {"username": "alice", "password": "x", "escaped": "yes"}),
        ("search_users", {"search": "a", "limit": "ten"}),
        ("search_users", {"search": 5}),
    ],
)
def test_malformed_payloads_are_refused(dispatcher, name, payload):
    result = run(dispatcher, name, **payload)
    assert result["err"]["name"] == "Unexpected"
    assert "malformed payload" in result["err"]["message"]


def test_directory_down_is_unavailable(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    cfg = {
        "LDAP_URL": f"ldap://127.0.0.1:{port}",
        "LDAP_BASE": "dc=x",
        "LDAP_BIND_USER": "cn=x",
        "LDAP_BIND_PASSWORD": "x",
        "LDAP_ALLOW_CLEARTEXT": True,  # a server that is down, not one refused
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    d = Directory(load_settings(tmp_path / "config.json", environ={}))
    result = Dispatcher(d, write_back=False).run(
        Command("c-9", "authenticate_user", {"username": "alice", "password": "alicepw"})
    )
    assert result["err"]["name"] == "Unavailable"


def test_hub_login_audit_line_has_no_secret(dispatcher, caplog):
    caplog.set_level("INFO", logger="connector")
    run(dispatcher, "authenticate_user", username="alice", password="Top-Secret-Pw")
    run(dispatcher, "authenticate_user", username="alice", password="alicepw")
    run(dispatcher, "list_groups")
    audit = [r for r in caplog.records if r.name == "connector.audit"]
    assert [r.outcome for r in audit] == ["WrongPassword", "success"]
    assert all(r.correlation_id == "p-1" and r.method == "hub" for r in audit)
    assert all(r.command_id == "c-1" and r.ms >= 0 for r in audit)
    assert "Top-Secret-Pw" not in caplog.text and "alicepw" not in caplog.text
    # a login command's one line is its audit line; other commands keep the command line
    commands = [r.getMessage() for r in caplog.records if r.getMessage().startswith("command ")]
    assert len(commands) == 1 and "name=list_groups" in commands[0]


def test_backoff_grows_with_full_jitter_and_resets():
    b = Backoff(base=0.5, cap=30, rng=lambda: 1.0)
    assert [b.next_delay() for _ in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    b.reset()
    assert b.next_delay() == 0.5
    assert Backoff(rng=lambda: 0.0).next_delay(retry_after=7) == 7
    jittered = Backoff(base=1, cap=30, rng=random.Random(17).random)  # seeded: same every run
    delays = [jittered.next_delay() for _ in range(50)]
    assert all(0 <= d <= 30 for d in delays) and len(set(delays)) == 50, delays


def test_a_bad_profile_mapper_is_an_unexpected_result(tmp_path, slapd, caplog):
    mapper = tmp_path / "mapper.py"
    mapper.write_text("def map_profile(raw, default):\n    raise RuntimeError('mapper bug')\n")
    d = directory_for(tmp_path, slapd, PROFILE_MAPPER=str(mapper))
    try:
        result = run(
            Dispatcher(d, write_back=False), "authenticate_user", username="dave", password="davepw"
        )
    finally:
        d.close()
    assert result["err"]["name"] == "Unexpected"
    assert "map_profile raised RuntimeError: mapper bug" in result["err"]["message"]
    assert "failed unexpectedly" not in caplog.text  # an outcome, not a crash of the dispatcher
