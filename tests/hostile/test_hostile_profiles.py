"""Password hashes in attributes nobody named must never reach the hub in a profile.

Some servers keep credentials in attributes no deny list knows (389-DS ``passwordHistory``,
``userPassword`` where the service account may read it). The connector asks only for the
attributes it names, so a hash planted in ``carLicense``, ``roomNumber``, ``employeeType``,
``departmentNumber`` or ``businessCategory`` of carol's entry reaches no profile: not through
``authenticate_user`` or ``search_users``, and not even through a
mapper that passes its whole raw profile on. A connector of its own (behind a hub of its own)
runs that mapper.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import ldap
import pytest
from configs import openldap_config
from faultkit import start_connector
from hostilekit import Site
from hubs import DevHubProcess, start_devhub

PLANTED = {
    "carLicense": "{SSHA}3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
    "roomNumber": "$6$rounds=5000$saltsalt$0123456789abcdefABCDEF",
    "employeeType": "{PBKDF2-SHA512}10000$c2FsdA$aGFzaA",
    "departmentNumber": "{CRYPT}$2b$12$abcdefghijklmnopqrstuv",
    "businessCategory": "{MD5}X03MO1qnZdYdgyfeuILPmQ==",
}
RAW_MAPPER = (
    "def map_profile(raw, default):\n"
    "    profile = default(raw)\n"
    "    profile['raw'] = raw\n"
    "    return profile\n"
)


@pytest.fixture(scope="module")
def hub(hostile: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHubProcess]:
    slapd = hostile.slapd
    dn = slapd.user_dn("carol")
    slapd.modify(dn, [(ldap.MOD_REPLACE, name, value) for name, value in PLANTED.items()])
    tmp = tmp_path_factory.mktemp("hostile-profiles")
    mapper = tmp / "mapper.py"
    mapper.write_text(RAW_MAPPER)
    hub = start_devhub(tmp / "hub", lease_seconds=10)
    try:
        proc = start_connector(tmp / "c", hub, openldap_config(slapd, PROFILE_MAPPER=str(mapper)))
        hostile.extra.append(proc)  # its log is checked with the others at the end
        yield hub
    finally:
        hub.stop()
        slapd.modify(dn, [(ldap.MOD_DELETE, name, None) for name in PLANTED])


def _result(hub: DevHubProcess, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    cid = hub.queue(name, payload)
    done = hub.wait_done(cid, 60)
    assert done["resultCount"] == 1, done
    result: dict[str, Any] = done["result"]
    return result


COMMANDS = {
    "authenticate_user": {"username": "carol", "password": "carolpw"},
    "search_users": {"search": "carol"},
    "search_users_all": {"search": ""},
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_no_planted_hash_in_any_profile(hostile, hub, command):
    payload = {"pid": f"prof-{command}", **COMMANDS[command]}
    result = _result(hub, command.removesuffix("_all"), payload)
    profiles = [result["profile"]] if "profile" in result else result["users"]
    carol = [p for p in profiles if p.get("raw", {}).get("uid") == "carol"]
    assert carol, result  # carol is there, raw profile and all
    text = json.dumps(result)
    for name, value in PLANTED.items():
        assert value not in text and f'"{name}"' not in text, name
