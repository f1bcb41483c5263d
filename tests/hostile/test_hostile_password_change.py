"""``change_password`` commands that must change nothing: administrative resets nobody allowed,
empty, NUL-holding and over-long passwords, the service account's own password.

A connector of its own (behind a hub of its own, so no other agent takes the commands) with
write-back on and resets off (the default), whose service account is erin (a plain user, so
that the service account can be named by a command). Every answer is the precise error kind;
afterwards carol's and erin's passwords are still the old ones, and every command left one
audit line without a password.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from configs import openldap_config
from connector_proc import ConnectorProcess
from faultkit import start_connector
from hostilekit import Site
from hubs import DevHubProcess, start_devhub

MARK = "Hostile-New-pw7"  # in every new password: never in a log


def _cases(carol: str, erin: str) -> dict[str, tuple[dict[str, Any], str]]:
    """id -> (payload, the error name answered)."""
    return {
        "reset-not-allowed": ({"username": "carol", "password": MARK}, "InsufficientAccessRights"),
        "old-empty": ({"username": "carol", "password": MARK, "oldPassword": ""}, "WrongPassword"),
        "old-nul-after": (
            {"username": "carol", "password": MARK, "oldPassword": carol + "\x00"},
            "WrongPassword",
        ),
        "old-nul-before": (
            {"username": "carol", "password": MARK, "oldPassword": "\x00" + carol},
            "WrongPassword",
        ),
        "old-nul-only": (
            {"username": "carol", "password": MARK, "oldPassword": "\x00"},
            "WrongPassword",
        ),
        "old-too-long": (
            {"username": "carol", "password": MARK, "oldPassword": carol * 1000},
            "Unexpected",
        ),
        "new-nul": (
            {"username": "carol", "password": MARK + "\x00x", "oldPassword": carol},
            "PasswordComplexity",
        ),
        "new-empty": (
            {"username": "carol", "password": "", "oldPassword": carol},
            "PasswordComplexity",
        ),
        "service-account-own": (
            {"username": "erin", "password": MARK, "oldPassword": erin},
            "InsufficientAccessRights",
        ),
    }


CASE_IDS = list(_cases("x", "y"))


@pytest.fixture(scope="module")
def writer(
    hostile: Site, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DevHubProcess, ConnectorProcess]]:
    slapd = hostile.slapd
    tmp = tmp_path_factory.mktemp("hostile-write-back")
    hub = start_devhub(tmp / "hub", lease_seconds=10)
    cfg = openldap_config(
        slapd,
        ENABLE_WRITE_BACK=True,
        LDAP_BIND_USER=slapd.user_dn("erin"),
        LDAP_BIND_PASSWORD=slapd.users["erin"],
    )
    proc = start_connector(tmp / "c", hub, cfg)
    hostile.extra.append(proc)  # its log is checked with the others at the end
    hostile.secrets.append(MARK)
    try:
        yield hub, proc
    finally:
        hub.stop()


@pytest.mark.parametrize("case", CASE_IDS)
def test_change_password_changes_nothing(hostile, writer, case):
    slapd = hostile.slapd
    hub, _ = writer
    payload, name = _cases(slapd.users["carol"], slapd.users["erin"])[case]
    cid = hub.queue("change_password", {"pid": f"cp-{case}", **payload})
    done = hub.wait_done(cid, 60)
    assert done["resultCount"] == 1, done
    result = done["result"]
    assert "profile" not in result, result
    assert result["err"]["name"] == name, result
    for user in ("carol", "erin"):
        cid = hub.queue("authenticate_user", {"username": user, "password": slapd.users[user]})
        assert "profile" in hub.wait_done(cid, 60)["result"], f"{user}'s password changed"


def test_every_change_is_audited(hostile, writer):
    _, proc = writer
    for case in CASE_IDS:
        assert f"correlation=cp-{case}" in proc.log(), case
    assert proc.log().count("password_change method=hub:") >= len(CASE_IDS)
    assert "password_change method=hub:reset user='carol' outcome=InsufficientAccessRights" in (
        proc.log()
    )
