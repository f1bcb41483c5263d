"""The sign-in form's throttle against the ways around it that a review found (issue 13, 4).

* other names of one entry: fullwidth letters (NFKC-folded into the name's key) and other
  attributes the user filter matches (uid or mail here; sAMAccountName or UPN on AD) reach
  the same entry, so the entry itself is counted, not only the name typed;
* IPv6: one host holds a whole /64, so addresses count per /64;
* parallel requests: check and count are one step, so a burst cannot slip past the limit;
* a flood of junk names cannot evict a blocked name from the shared table.

The connector here throttles a name (and an entry) after 3 failures and an address after 3,
believes ``X-Forwarded-For`` from 127.0.0.1, and runs 2 workers of 8 threads. Each test sends
its attempts from addresses of its own so that the tests do not throttle one another.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from configs import openldap_config
from connector_proc import ConnectorProcess, setup_config
from hubs import start_devhub

from connector.web.guards import SharedThrottle, user_key

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _wide(name: str, where: slice = slice(None)) -> str:
    """``name`` with the letters in ``where`` turned fullwidth (U+FF41 for ``a``, ...)."""
    chars = list(name)
    for i in range(len(chars))[where]:
        chars[i] = chr(ord(chars[i]) + 0xFEE0)
    return "".join(chars)


_ADDRESSES = (f"10.77.{i // 250}.{i % 250 + 1}" for i in itertools.count())


@pytest.fixture(scope="module")
def site(tmp_path_factory, slapd) -> Iterator[ConnectorProcess]:
    tmp = tmp_path_factory.mktemp("throttle")
    hub = start_devhub(tmp / "hub")
    state = tmp / "connector"
    setup_config(
        state,
        openldap_config(slapd, LDAP_USER_BY_NAME="(|(uid={0})(mail={0}))"),
        hub.ticket_url,
        POLL_WAIT_SECONDS=2,
        LOGIN_FAILURES_PER_USER=3,
        LOGIN_FAILURES_PER_ADDRESS=3,
        TRUSTED_PROXIES=["127.0.0.1/32"],
    )
    proc = ConnectorProcess(state, workers=2, threads=8).start()
    try:
        yield proc
    finally:
        proc.stop()
        hub.stop()


def _submit(proc: ConnectorProcess, username: str, password: str, client: str) -> int:
    """One form sign-in from ``client`` (as the trusted proxy reports it); the status."""
    s = requests.Session()
    query = {"wtrealm": "urn:acme", "wctx": "ctx-throttle"}
    headers = {"X-Forwarded-For": client}
    page = s.get(proc.url + "/wsfed", params=query, headers=headers, timeout=10)
    token = _CSRF.search(page.text)
    assert token, page.text[:300]
    data = {**query, "username": username, "password": password, "csrf_token": token.group(1)}
    resp = s.post(
        proc.url + "/wsfed", data=data, headers=headers, allow_redirects=False, timeout=30
    )
    return resp.status_code


def _outcomes(proc: ConnectorProcess, client_prefix: str) -> list[str]:
    """The audit outcomes of form sign-ins from clients starting with ``client_prefix``."""
    audit = re.compile(r"login method=form user=.* outcome=(\S+) client=(\S+)")
    return [o for o, c in audit.findall(proc.log()) if c.startswith(client_prefix)]


def test_other_names_of_one_entry_share_its_count(site):
    """The filter here finds a user by uid or by mail: three names of one entry, each
    failing once, use up the entry's attempts, whatever name comes next."""
    spellings = ["frank", "frank@example.test", "FRANK@example.TEST "]
    for name in spellings[:2]:  # two failures under two names, each found by the directory
        assert _submit(site, name, "Wrong-Frank-1", next(_ADDRESSES)) == 401
    log = site.log()
    for name in spellings[:2]:
        assert f"user={name!r} outcome=WrongPassword" in log, name
    assert _submit(site, "Frank@Example.Test", "Wrong-Frank-1", next(_ADDRESSES)) == 401
    # the right password under a name not used yet: the entry has used up its attempts
    assert _submit(site, _wide("frank"), "frankpw", next(_ADDRESSES)) == 429
    assert _outcomes(site, "10.77.")[-1] == "throttled"


def test_fullwidth_spellings_share_the_names_count(site):
    """Fullwidth letters (which the directory matches as plain ones) fold into one key."""
    assert user_key(_wide("dave")) == user_key("DAVE") == user_key("dave")
    for name in (
        _wide("dave", slice(0, 1)),
        _wide("dave", slice(1, 2)),
        _wide("dave", slice(2, 3)),
    ):
        assert _submit(site, name, "Wrong-Dave-1", next(_ADDRESSES)) == 401
    assert (
        f"user={_wide('dave', slice(0, 1))!r} outcome=WrongPassword" in site.log()
    )  # the directory found dave
    assert _submit(site, _wide("dave", slice(3, 4)), "davepw", next(_ADDRESSES)) == 429


def test_ipv6_addresses_count_per_64(site):
    """Three failures from three addresses of one /64: the fourth address of that /64 is
    throttled; an address of the next /64 is not."""
    for host in (1, 2, 3):
        assert _submit(site, f"nobody-v6-{host}", "x", f"2001:db8:77:1::{host}") == 401
    assert _submit(site, "nobody-v6-4", "x", "2001:db8:77:1:ffff::9") == 429
    assert _submit(site, "nobody-v6-5", "x", "2001:db8:77:2::1") == 401
    assert _outcomes(site, "2001:db8:77:1:") == ["WrongUsername"] * 3 + ["throttled"]


def test_a_parallel_burst_cannot_pass_the_limit(site):
    """Sixteen wrong attempts for one name at once (two workers, eight threads each): at
    most three reach the directory; every other one is throttled."""
    clients = [f"10.78.0.{i + 1}" for i in range(16)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda c: _submit(site, "carol", "Wrong-Carol-1", c), clients))
    outcomes = _outcomes(site, "10.78.0.")
    tried = [o for o in outcomes if o != "throttled"]
    assert len(outcomes) == 16, outcomes
    assert 1 <= len(tried) <= 3, outcomes
    assert statuses.count(429) == 16 - len(tried), statuses


def test_a_flood_of_junk_names_does_not_evict_a_blocked_name(tmp_path: Path):
    """The shared table is fixed in size; a blocked key keeps its record until its window
    ends, whatever number of other keys fail meanwhile."""
    table = SharedThrottle(tmp_path / "t.bin", 3, 300.0)
    victim = user_key("alice")
    for _ in range(3):
        assert table.acquire(victim) == 0.0
    assert table.blocked(victim) > 0
    for i in range(20_000):  # 2.4 junk keys per slot: every neighbourhood overflows
        table.acquire(user_key(f"junk-{i}"))
    assert table.blocked(victim) > 290.0
