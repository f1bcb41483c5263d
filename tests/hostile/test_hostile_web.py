"""The sign-in endpoint against open redirects, CSRF, spoofed client addresses, header and
markup injection through its parameters.

* ``wreply`` must be *exactly* the realm's ``postTokenUrl`` or one of ``WREPLY_ALLOWED``:
  anything else (another host, ``//evil``, ``https:evil``, ``/\\evil``, encoded, a longer URL
  that starts like an allowed one, ``javascript:``) is a 400 before any password is checked.
* The form needs its CSRF token *and* the cookie it was made for.
* ``X-Forwarded-For`` from a peer that is not a trusted proxy is not read: not to offer
  Kerberos, not to reset the per-address throttle, not in the audit line.
* ``wctx``/``wreply``/``username`` come back HTML-escaped, and ``wctx`` URL-encoded in the
  redirect (no header splitting).

The admin console is asked without its password in ``test_hostile_console.py``; its CSRF,
non-loopback peers and import archives are tested in ``tests/console/``.
"""

from __future__ import annotations

import http.client
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from hostilekit import ALLOWED_WREPLY, REALM_URL, is_form, message

pytestmark = pytest.mark.slow  # hostile suite: its own hub, KDC and two connectors

REFUSED = "The return address of this sign-in request is not allowed."
EXPIRED = "Your session expired. Please sign in again."

OPEN_REDIRECTS = [
    "https://evil.example/steal",
    "http://evil.example",
    "//evil.example",
    "///evil.example",
    "////evil.example/",
    "https:evil.example",
    "https:/evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "/%2F%2Fevil.example",
    "%2F%2Fevil.example",
    "https%3A%2F%2Fevil.example",
    "javascript:alert(document.cookie)",
    "JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "https://app.example/after.evil.example",
    "https://app.example/after@evil.example",
    "https://app.example@evil.example/after",
    "https://app.example/after/../../evil",
    "https://app.example/after?next=https://evil.example",
    "https://app.example/after#@evil.example",
    "https://APP.EXAMPLE/after",
    "HTTPS://app.example/after",
    "https://app.example/after/",
    " https://app.example/after",
    "https://app.example/after\t",
    "https://app.example/after\r\nSet-Cookie: pwned=1",
    "https://app.example/after%0d%0aSet-Cookie:%20pwned=1",
    "https://app.\u0435xample/after",  # a Cyrillic e
    "https://xn--app-5cd.example/after",
    "http://app.example/after",
    "https://app.example:443/after",
    "https://app.example/After",
    "/tenants/acme/login/callback",
    "https://127.0.0.1/",
    "http://[::1]/",
]


@pytest.mark.parametrize(
    "wreply", OPEN_REDIRECTS, ids=[f"w{i}" for i in range(len(OPEN_REDIRECTS))]
)
def test_open_redirect_refused_before_the_password(hostile, wreply):
    page = requests.get(
        hostile.url(), params={"wtrealm": REALM_URL, "wctx": "c", "wreply": wreply}, timeout=30
    )
    assert page.status_code == 400 and message(page.text) == REFUSED, page.status_code
    assert "Location" not in page.headers
    # with a valid CSRF token and alice's password: still refused, and no login happens
    before = hostile.inside.log().count("login method=form user='alice' outcome=success")
    resp = hostile.submit("alice", hostile.slapd.users["alice"], wreply=wreply)
    assert resp.status_code == 400 and message(resp.text) == REFUSED
    assert "Location" not in resp.headers
    after = hostile.inside.log().count("login method=form user='alice' outcome=success")
    assert after == before


def test_allowed_return_urls_work_and_wctx_cannot_split_headers(hostile):
    wctx = 'x\r\nSet-Cookie: pwned=1\r\n\r\n<script>alert(1)</script>"'
    resp = hostile.submit("alice", hostile.slapd.users["alice"], wreply=ALLOWED_WREPLY, wctx=wctx)
    assert resp.status_code == 303, message(resp.text)
    location = resp.headers["Location"]
    assert location.startswith(ALLOWED_WREPLY + "?")
    assert (
        "\r" not in location
        and "\n" not in location
        and "pwned" not in resp.headers.get("Set-Cookie", "")
    )
    assert parse_qs(urlsplit(location).query)["wctx"] == [wctx]
    # the realm's own postTokenUrl, by default
    resp = hostile.submit("alice", hostile.slapd.users["alice"])
    assert resp.headers["Location"].startswith(hostile.hub.url("login/callback") + "?")


def test_parameters_come_back_escaped(hostile):
    markup = '"><script>alert(1)</script>'
    page = requests.get(
        hostile.url(hostile.outside),
        params={"wtrealm": REALM_URL, "wctx": markup, "wreply": ""},
        timeout=30,
    )
    assert page.status_code == 200 and is_form(page)
    assert "<script>alert(1)</script>" not in page.text
    other_realm = requests.get(
        hostile.url(), params={"wtrealm": markup, "wctx": markup}, timeout=30
    )
    assert other_realm.status_code == 400 and "<script>" not in other_realm.text


# --------------------------------------------------------------------------------------
# CSRF
# --------------------------------------------------------------------------------------


def _post(session: requests.Session, hostile, token: str | None, **extra: str):
    data = {
        "wtrealm": REALM_URL,
        "wctx": "ctx-csrf",
        "username": "alice",
        "password": hostile.slapd.users["alice"],
        **extra,
    }
    if token is not None:
        data["csrf_token"] = token
    return session.post(hostile.url(), data=data, allow_redirects=False, timeout=30)


def test_csrf_missing_wrong_or_from_another_cookie(hostile):
    victim, attacker = requests.Session(), requests.Session()
    victim_token = hostile.form(victim)
    attacker_token = hostile.form(attacker)
    victim_cookie = victim.cookies["connector_csrf"]
    hostile.secrets.append(victim_cookie)
    # a different last hex digit, whatever it was (a fixed "0" is no change one time in 16)
    changed = victim_token[:-1] + ("1" if victim_token[-1] == "0" else "0")
    assert changed != victim_token and victim_token.upper() != victim_token
    cases = {
        "no token, no cookie": (requests.Session(), None),
        "no token": (victim, None),
        "empty token": (victim, ""),
        "token, no cookie": (requests.Session(), victim_token),
        "wrong token": (victim, "0" * 64),
        "another session's token": (victim, attacker_token),
        "token of a cookie the attacker set": (attacker, victim_token),
        "token with a character changed": (victim, changed),
        "token too long": (victim, victim_token + "0" * 300),
        "upper-case token": (victim, victim_token.upper()),
    }
    for case, (session, token) in cases.items():
        resp = _post(session, hostile, token)
        assert resp.status_code == 400, (case, resp.status_code)
        assert message(resp.text) == EXPIRED and is_form(resp), case
        assert "Location" not in resp.headers, case
    # an attacker-chosen cookie value (a fixation attempt) with the token the attacker can
    # compute? Not without the connector's secret key: the token is an HMAC of the cookie
    fixed = requests.Session()
    fixed.cookies.set("connector_csrf", "attacker-chosen-value")
    assert _post(fixed, hostile, "attacker-chosen-value").status_code == 400
    # and the real pair works
    assert _post(victim, hostile, victim_token).status_code == 303
    assert "sign-in form refused: missing or wrong CSRF token" in hostile.inside.log()


def test_csrf_cookie_attributes(hostile):
    resp = requests.get(hostile.url(), params={"wtrealm": REALM_URL, "wctx": "c"}, timeout=30)
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith("connector_csrf=")
    for attribute in ("HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=3600"):
        assert attribute in cookie, cookie
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]


# --------------------------------------------------------------------------------------
# spoofed client addresses
# --------------------------------------------------------------------------------------

SPOOFS = [
    "10.1.2.3",
    "10.1.2.3, 10.1.2.4",
    "10.1.2.3, 127.0.0.1",
    "127.0.0.1, 10.1.2.3",
    "10.1.2.3:443",
    "[::ffff:10.1.2.3]",
    "::ffff:10.1.2.3",
    "unknown, 10.1.2.3",
    "10.1.2.3" + ", 10.1.2.3" * 500,
    "garbage\t;;;",
]


def test_spoofed_forwarded_for_is_not_read(hostile):
    url = hostile.url(hostile.outside)
    for spoof in SPOOFS:
        for headers in (
            {"X-Forwarded-For": spoof},
            {"X-Real-IP": spoof.split(",")[0]},
            {"Forwarded": f'for="{spoof.split(",")[0]}"'},
            {"X-Forwarded-For": spoof, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil"},
        ):
            resp = requests.get(url, params={"wtrealm": REALM_URL, "wctx": "c"}, headers=headers,
                                timeout=30)  # fmt: skip
            assert resp.status_code == 200 and is_form(resp), (headers, resp.status_code)
            assert "WWW-Authenticate" not in resp.headers, headers
            assert "Secure" not in resp.headers["Set-Cookie"], headers  # proto not believed


def test_repeated_forwarded_for_headers(hostile):
    """Two X-Forwarded-For headers (joined by the server): still not read."""
    conn = http.client.HTTPConnection("127.0.0.1", hostile.outside.port, timeout=30)
    conn.putrequest("GET", f"/wsfed?wtrealm={REALM_URL}&wctx=c")
    conn.putheader("X-Forwarded-For", "10.1.2.3")
    conn.putheader("X-Forwarded-For", "10.1.2.4")
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read().decode()
    conn.close()
    assert resp.status == 200 and 'id="signin"' in body
    assert resp.getheader("WWW-Authenticate") is None


def test_spoofed_addresses_do_not_escape_the_address_throttle(hostile):
    """``outside`` throttles an address after 3 failures; new X-Forwarded-For values each
    time change nothing (its counts are its own: the inside connector, which shares the state
    directory, throttles at another limit and so keeps another table)."""
    audit = re.compile(r"login method=form user='(spoof-\d)' outcome=(\w+) client=(\S+)")
    statuses = []
    hostile.secrets.append("Spoof-Password-1")
    for i in range(5):
        resp = hostile.submit(
            f"spoof-{i}",
            "Spoof-Password-1",
            proc=hostile.outside,
            headers={"X-Forwarded-For": f"10.1.2.{10 + i}"},
        )
        statuses.append(resp.status_code)
    assert statuses == [401, 401, 401, 429, 429], statuses
    lines = audit.findall(hostile.outside.log())
    assert [o for _, o, _ in lines] == ["WrongUsername"] * 3 + ["throttled"] * 2, lines
    assert {c for _, _, c in lines} == {"127.0.0.1"}, lines
