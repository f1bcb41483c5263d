"""Seamless Kerberos sign-in at ``/wsfed``, end to end, with real clients and real KDCs.

Each site is a devhub (the hub), a directory, a KDC and the connector under gunicorn
(``deploy/gunicorn.conf.py``), set up from the hub's ticket, which announces Kerberos and
the range ``127.0.0.0/8``:

* ``mit``: MIT KDC (realm EXAMPLE.TEST, keytab ``HTTP/localhost``) + OpenLDAP users;
* ``ad``: Samba AD's own KDC (realm AD.EXAMPLE.TEST, the exported ``HTTP/localhost``
  keytab) + the same AD's users over LDAP.

Per site, connectors share one state directory and differ by environment overrides:
``inside`` (the hub's range: 127.0.0.1 gets Negotiate), ``outside`` (``10.1.2.0/24``, no
trusted proxies: 127.0.0.1 gets the form, and its ``X-Forwarded-For`` is ignored) and, for
``mit``, ``proxied`` (the same range with ``TRUSTED_PROXIES=127.0.0.1``: the header is
believed). Clients: ``curl --negotiate``, pyspnego (password, no ccache), headless
Chromium (selenium + chromedriver). The SPN is ``HTTP/localhost``, so every URL uses
``http://localhost:PORT``.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import ldap
import pytest
import requests
from configs import ad_config, openldap_config
from connector_proc import ConnectorProcess, setup_config
from hubs import DevHubProcess, start_devhub
from kerberos_clients import (
    Chromium,
    curl_negotiate,
    kinit,
    ntlm_negotiate_token,
    spnego_finish,
    spnego_header,
)

from connector.kerberos import MAX_HEADER_LENGTH

pytestmark = pytest.mark.slow  # headless Chromium and curl against both KDCs

FAST = {"POLL_WAIT_SECONDS": 2}
IN_RANGE = ["127.0.0.0/8"]
OTHER_RANGE = "10.1.2.0/24"  # does not hold 127.0.0.1
OTHER_CLIENT = "10.1.2.3"  # in OTHER_RANGE
FORM_REASON = "Automatic sign-in did not work ("


@dataclass
class Site:
    """One hub + directory + KDC, and connectors in front of them."""

    name: str
    hub: DevHubProcess
    inside: ConnectorProcess
    outside: ConnectorProcess
    proxied: ConnectorProcess | None
    krb5_conf: str
    realm: str
    user: str
    password: str
    ccache: str  # FILE: ccache with the user's TGT
    groups: set[str]
    workdir: Path
    #: every Authorization / WWW-Authenticate value with a token sent so far (log checks)
    secrets: list[str] = field(default_factory=list)

    @property
    def principal(self) -> str:
        return f"{self.user}@{self.realm}"

    def url(self, proc: ConnectorProcess, wctx: str, **extra: str) -> str:
        query = urlencode({"wtrealm": "urn:acme", "wctx": wctx, **extra})
        return f"http://localhost:{proc.port}/wsfed?{query}"

    def client_env(self, ccache: str | None = None) -> dict[str, str]:
        return {"KRB5_CONFIG": self.krb5_conf, "KRB5CCNAME": ccache or self.ccache}

    def processes(self) -> list[ConnectorProcess]:
        return [p for p in (self.inside, self.outside, self.proxied) if p is not None]


def _start_site(
    name: str,
    workdir: Path,
    directory_cfg: dict[str, Any],
    *,
    keytab: str,
    krb5_conf: str,
    realm: str,
    user: str,
    password: str,
    groups: set[str],
    with_proxy: bool,
) -> Site:
    hub = start_devhub(workdir / "hub", lease_seconds=4, kerberos=True, ip_ranges=IN_RANGE)
    procs: list[ConnectorProcess] = []
    try:
        state = workdir / "connector"
        setup_config(
            state,
            directory_cfg,
            hub.ticket_url,
            **FAST,
            KERBEROS_KEYTAB=keytab,
            KERBEROS_REALMS=[realm],
            KERBEROS_SERVICE_PRINCIPAL="HTTP/localhost",
        )
        config = json.loads((state / "config.json").read_text())
        assert config["KERBEROS_AUTH"] is True and config["CLIENT_IP_RANGES"] == IN_RANGE
        rcache = workdir / "rcache"
        rcache.mkdir()
        server_env = {"KRB5_CONFIG": krb5_conf, "KRB5RCACHEDIR": str(rcache)}
        inside = ConnectorProcess(state, env={**server_env, "LOG_LEVEL": "debug"})
        procs.append(inside)
        outside = ConnectorProcess(
            state, env={**server_env, "CLIENT_IP_RANGES": OTHER_RANGE, "TRUSTED_PROXIES": ""}
        )
        procs.append(outside)
        proxied = None
        if with_proxy:
            proxied = ConnectorProcess(
                state,
                env={**server_env, "CLIENT_IP_RANGES": OTHER_RANGE, "TRUSTED_PROXIES": "127.0.0.1"},
            )
            procs.append(proxied)
        for proc in procs:
            proc.start(wait=False)
        with ThreadPoolExecutor(len(procs)) as pool:
            list(pool.map(lambda p: p.wait_ready(), procs))
        ccache = kinit(krb5_conf, f"{user}@{realm}", password, workdir / "client.ccache")
    except BaseException:
        for proc in procs:
            proc.stop()
        hub.stop()
        raise
    return Site(
        name=name,
        hub=hub,
        inside=inside,
        outside=outside,
        proxied=proxied,
        krb5_conf=krb5_conf,
        realm=realm,
        user=user,
        password=password,
        ccache=ccache,
        groups=groups,
        workdir=workdir,
    )


def _stop_site(site: Site) -> None:
    procs = site.processes()
    with ThreadPoolExecutor(len(procs)) as pool:  # each drains its poller: do it at once
        list(pool.map(lambda p: p.stop(), procs))
    site.hub.stop()


@pytest.fixture(scope="module")
def mit_site(tmp_path_factory: pytest.TempPathFactory, slapd: Any, mit_kdc: Any) -> Iterator[Site]:
    site = _start_site(
        "mit",
        tmp_path_factory.mktemp("krb-signin-mit"),
        openldap_config(slapd),
        keytab=mit_kdc.keytab,
        krb5_conf=mit_kdc.krb5_conf,
        realm=mit_kdc.realm,
        user="dave",
        password=slapd.users["dave"],
        groups={"team-core", "team-dev", "staff", "everyone"},
        with_proxy=True,
    )
    assert mit_kdc.users["dave"] == slapd.users["dave"]
    yield site
    _stop_site(site)


@pytest.fixture(scope="module")
def ad_site(tmp_path_factory: pytest.TempPathFactory, samba_ad: Any) -> Iterator[Site]:
    site = _start_site(
        "ad",
        tmp_path_factory.mktemp("krb-signin-ad"),
        ad_config(samba_ad),
        keytab=samba_ad.keytab,
        krb5_conf=samba_ad.krb5_conf,
        realm=samba_ad.realm,
        user="dave",
        password=samba_ad.users["dave"],
        groups={"Team-Core", "Team-Dev", "Staff", "Everyone"},
        with_proxy=False,
    )
    yield site
    _stop_site(site)


@pytest.fixture(scope="module", params=["mit", "ad"])
def site(request: pytest.FixtureRequest) -> Site:
    found: Site = request.getfixturevalue(f"{request.param}_site")
    return found


@pytest.fixture(scope="module")
def real_token(mit_site: Site) -> bytes:
    """A real SPNEGO/Kerberos token for HTTP/localhost (never sent as it is)."""
    _, header = spnego_header(mit_site.principal, mit_site.password, mit_site.krb5_conf)
    return base64.b64decode(header.split(" ", 1)[1])


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _wctx(request: pytest.FixtureRequest) -> str:
    return "ctx-" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:60]


def _mutual_header(www_authenticate: str | None) -> str:
    """``WWW-Authenticate`` of a success: ``Negotiate <base64 mutual token>`` (checked)."""
    scheme, _, token = (www_authenticate or "").partition(" ")
    assert scheme == "Negotiate" and token, f"no mutual token: {www_authenticate!r}"
    assert base64.b64decode(token, validate=True)
    return f"{scheme} {token}"


def _assert_try_page(site: Site, location: str, wctx: str, method: str) -> dict[str, Any]:
    """Follow the hand-off to the hub's Try page; the profile shown there."""
    assert location.startswith(site.hub.url("login/callback") + "?"), location
    query = parse_qs(urlsplit(location).query)
    assert query["wctx"] == [wctx] and query["ref"] and query["ref"][0]
    page = requests.get(location, timeout=10)
    assert page.status_code == 200, page.text
    shown_method = re.search(r'id="method">([^<]*)<', page.text)
    assert shown_method and shown_method.group(1) == method
    listed = re.search(r'<ul id="groups">(.*?)</ul>', page.text, re.S)
    assert listed, page.text
    assert set(map(html.unescape, re.findall(r"<li>(.*?)</li>", listed.group(1)))) == site.groups
    result = re.search(r'<pre id="result">(.*?)</pre>', page.text, re.S)
    assert result
    profile: dict[str, Any] = json.loads(html.unescape(result.group(1)))
    assert profile["nickname"] == site.user
    assert set(profile["groups"]) == site.groups
    return profile


def _assert_form(resp: requests.Response, status: int = 200, reason: str | None = None) -> None:
    """The sign-in form, with no new challenge and no redirect (no prompt loop)."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert "Location" not in resp.headers
    if status != 401:
        assert "WWW-Authenticate" not in resp.headers, resp.headers
    assert 'id="signin"' in resp.text and 'name="password"' in resp.text
    assert re.search(r'name="csrf_token" value="[^"]+"', resp.text)
    if reason is not None:
        message = re.search(r'id="message" role="alert">([^<]*)<', resp.text)
        assert message, resp.text
        text = html.unescape(message.group(1))
        assert text.startswith(FORM_REASON) and reason in text, text


def _assert_logs_clean(site: Site) -> None:
    """No token or Authorization text sent so far is in any log; no 500, no traceback."""
    logs = {proc.log_path.name: proc.log() for proc in site.processes()}
    logs["devhub.log"] = site.hub.log_text()
    values = [v for v in (s.partition(" ")[2].strip() for s in site.secrets) if v]
    for name, text in logs.items():
        assert "Traceback" not in text, name
        assert not re.search(r'"\S+ /wsfed\S* HTTP/1\.1" 5\d\d ', text), name
        assert "Negotiate YII" not in text and "NTLMSSP" not in text, name
        assert "TlRMTVNTUA" not in text, name  # base64 of "NTLMSSP"
        for value in values:
            for piece in {value[:24], value[len(value) // 2 :][:24], value[-24:]}:
                if len(set(piece)) > 4:  # a run like "AAAA…" proves nothing
                    assert piece not in text, (name, piece)


def _chromium(site: Site, tmp_path: Path, ccache: str | None = None) -> Chromium:
    return Chromium(tmp_path / "chromium", site.client_env(ccache))


def _chromium_try_page(site: Site, browser: Chromium, wctx: str, method: str) -> None:
    browser.wait_for("#groups")
    assert browser.url.startswith(site.hub.url("login/callback") + "?"), browser.url
    query = parse_qs(urlsplit(browser.url).query)
    assert query["wctx"] == [wctx] and query["ref"][0]
    assert browser.texts("#method") == [method]
    assert set(browser.texts("#groups li")) == site.groups
    profile = json.loads(browser.texts("#result")[0])
    assert profile["nickname"] == site.user


# --------------------------------------------------------------------------------------
# 1. in range, with a ticket: seamless
# --------------------------------------------------------------------------------------


def test_curl_negotiate_signs_in_seamlessly(site: Site, tmp_path: Path, request: Any) -> None:
    wctx = _wctx(request)
    result = curl_negotiate(
        site.url(site.inside, wctx), tmp_path, krb5_conf=site.krb5_conf, ccache=site.ccache
    )
    statuses = [status for status, _ in result.responses]
    # curl 7.88 sends the token at once; an older one first takes the 401 challenge
    assert statuses in ([303], [401, 303]), result.stderr[-3000:]
    if statuses[0] == 401:
        assert result.responses[0][1]["WWW-Authenticate"] == "Negotiate"
    assert len(result.sent_authorization) == 1
    assert result.sent_authorization[0].startswith("Negotiate YII")  # GSS-framed SPNEGO
    mutual = _mutual_header(result.headers.get("WWW-Authenticate"))
    site.secrets += [*result.sent_authorization, mutual]
    _assert_try_page(site, result.headers["Location"], wctx, "kerberos")
    assert f"login method=kerberos user='{site.user}' outcome=success" in site.inside.log()
    _assert_logs_clean(site)


def test_pyspnego_signs_in_with_mutual_authentication(
    site: Site, tmp_path: Path, request: Any
) -> None:
    wctx = _wctx(request)
    ctx, header = spnego_header(site.principal, site.password, site.krb5_conf)
    resp = requests.get(
        site.url(site.inside, wctx),
        headers={"Authorization": header},
        allow_redirects=False,
        timeout=30,
    )
    assert resp.status_code == 303, resp.text[:500]
    mutual = _mutual_header(resp.headers.get("WWW-Authenticate"))
    site.secrets += [header, mutual]
    # the server's token completes the client's context: it really holds HTTP/localhost
    assert spnego_finish(ctx, resp.headers["WWW-Authenticate"], site.krb5_conf)
    assert resp.headers["Cache-Control"] == "no-store"
    _assert_try_page(site, resp.headers["Location"], wctx, "kerberos")
    _assert_logs_clean(site)


def test_chromium_signs_in_seamlessly(site: Site, tmp_path: Path, request: Any) -> None:
    wctx = _wctx(request)
    with _chromium(site, tmp_path) as browser:
        browser.get(site.url(site.inside, wctx))
        _chromium_try_page(site, browser, wctx, "kerberos")
    log = site.inside.log()
    # the Negotiate round trip: challenge, then the ticket -> hand-off (no form, no POST)
    access = re.findall(rf'"GET /wsfed\?\S*wctx={wctx} HTTP/1\.1" (\d+) ', log)
    assert access == ["401", "303"], access
    assert f"login method=kerberos user='{site.user}' outcome=success client=127.0.0.1" in log


# --------------------------------------------------------------------------------------
# 2. outside the range: the form, in the same browser
# --------------------------------------------------------------------------------------


def test_chromium_outside_the_range_signs_in_with_the_form(
    site: Site, tmp_path: Path, request: Any
) -> None:
    wctx = _wctx(request)
    with _chromium(site, tmp_path) as browser:  # it holds a ticket, but is not offered Negotiate
        browser.get(site.url(site.outside, wctx))
        browser.wait_for("#signin")
        assert browser.driver.title == "Sign in"
        assert browser.url.startswith(f"http://localhost:{site.outside.port}/wsfed")
        browser.driver.find_element("id", "username").send_keys(site.user)
        browser.driver.find_element("id", "password").send_keys(site.password)
        browser.driver.find_element("id", "submit").click()
        _chromium_try_page(site, browser, wctx, "form")
    log = site.outside.log()
    assert f"login method=form user='{site.user}' outcome=success client=127.0.0.1" in log
    lines = [ln for ln in log.splitlines() if wctx in ln and "/wsfed" in ln]
    assert lines and not any('" 401 ' in ln for ln in lines), lines  # never challenged


# --------------------------------------------------------------------------------------
# 3. in range, no ticket: 401 Negotiate with the form as the body
# --------------------------------------------------------------------------------------


def test_no_ticket_gets_401_negotiate_with_the_form(mit_site: Site) -> None:
    resp = requests.get(mit_site.url(mit_site.inside, "ctx-noticket"), timeout=10)
    _assert_form(resp, status=401)
    assert resp.headers["WWW-Authenticate"] == "Negotiate"
    assert 'id="message"' not in resp.text  # nothing went wrong: just no ticket yet


def test_chromium_without_a_ticket_shows_the_form_and_can_use_it(
    mit_site: Site, tmp_path: Path, request: Any
) -> None:
    wctx = _wctx(request)
    no_ccache = f"FILE:{tmp_path / 'no-such-ccache'}"
    with _chromium(mit_site, tmp_path, ccache=no_ccache) as browser:
        browser.get(mit_site.url(mit_site.inside, wctx))
        browser.wait_for("#signin")  # the 401's body, rendered: no dialog, no error page
        assert browser.driver.title == "Sign in"
        assert browser.url.startswith(f"http://localhost:{mit_site.inside.port}/wsfed")
        browser.driver.find_element("id", "username").send_keys(mit_site.user)
        browser.driver.find_element("id", "password").send_keys(mit_site.password)
        browser.driver.find_element("id", "submit").click()
        _chromium_try_page(mit_site, browser, wctx, "form")
    lines = [ln for ln in mit_site.inside.log().splitlines() if wctx in ln]
    assert any('"GET /wsfed' in ln and '" 401 ' in ln for ln in lines), lines


# --------------------------------------------------------------------------------------
# 4. X-Forwarded-For is believed only from trusted proxies
# --------------------------------------------------------------------------------------


def test_spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing(mit_site: Site) -> None:
    url = mit_site.url(mit_site.outside, "ctx-spoof")
    _assert_form(requests.get(url, headers={"X-Forwarded-For": OTHER_CLIENT}, timeout=10))
    # even with a valid ticket: the peer is not offered Kerberos, the token is not used
    _, header = spnego_header(mit_site.principal, mit_site.password, mit_site.krb5_conf)
    mit_site.secrets.append(header)
    resp = requests.get(
        url,
        headers={"X-Forwarded-For": OTHER_CLIENT, "Authorization": header},
        allow_redirects=False,
        timeout=10,
    )
    _assert_form(resp)
    assert "login method=kerberos" not in mit_site.outside.log()
    _assert_logs_clean(mit_site)


def test_forwarded_for_from_a_trusted_proxy_is_believed(mit_site: Site, request: Any) -> None:
    proxied = mit_site.proxied
    assert proxied is not None
    url = mit_site.url(proxied, "ctx-proxy")
    # the proxy itself (127.0.0.1) is not in the range: the form
    _assert_form(requests.get(url, timeout=10))
    # what it reports is: Negotiate
    resp = requests.get(url, headers={"X-Forwarded-For": OTHER_CLIENT}, timeout=10)
    _assert_form(resp, status=401)
    assert resp.headers["WWW-Authenticate"] == "Negotiate"
    # and a Kerberos sign-in through it is audited with the forwarded address
    wctx = _wctx(request)
    _, header = spnego_header(mit_site.principal, mit_site.password, mit_site.krb5_conf)
    resp = requests.get(
        mit_site.url(proxied, wctx),
        headers={"X-Forwarded-For": f"203.0.113.9, {OTHER_CLIENT}", "Authorization": header},
        allow_redirects=False,
        timeout=30,
    )
    assert resp.status_code == 303, resp.text[:500]
    mit_site.secrets += [header, _mutual_header(resp.headers.get("WWW-Authenticate"))]
    _assert_try_page(mit_site, resp.headers["Location"], wctx, "kerberos")
    audit = f"login method=kerberos user='dave' outcome=success client={OTHER_CLIENT} "
    assert audit in proxied.log()
    _assert_logs_clean(mit_site)


# --------------------------------------------------------------------------------------
# 5./6. whatever comes instead of a good ticket: the form with a reason (never 500, no loop)
# --------------------------------------------------------------------------------------


def _bad_headers(real_token: bytes) -> dict[str, tuple[str, str]]:
    ntlm = base64.b64encode(ntlm_negotiate_token()).decode()
    half = base64.b64encode(real_token[: len(real_token) // 2]).decode()
    garbage = base64.b64encode(bytes(range(256)) * 4).decode()
    der = b"\x60\x82\x01\x00" + b"\x06\x06+\x06\x01\x05\x05\x02" + b"x" * 248
    der_garbage = base64.b64encode(der).decode()
    return {
        "ntlm-scheme": (f"NTLM {ntlm}", "NTLM is not supported"),
        "ntlm-in-negotiate": (f"Negotiate {ntlm}", "NTLM is not supported"),
        "bare-negotiate": ("Negotiate", "carries no token"),
        "not-base64": ("Negotiate !!not*base64!!", "not valid base64"),
        "truncated": (f"Negotiate {half}", "truncated or malformed"),
        "garbage": (f"Negotiate {garbage}", "Negotiate token is malformed"),
        "garbage-der": (f"Negotiate {der_garbage}", "Negotiate token is malformed"),
    }


BAD_HEADER_NAMES = [
    "ntlm-scheme",
    "ntlm-in-negotiate",
    "bare-negotiate",
    "not-base64",
    "truncated",
    "garbage",
    "garbage-der",
]


@pytest.mark.parametrize("kind", BAD_HEADER_NAMES)
def test_bad_authorization_falls_back_to_the_form(
    mit_site: Site, real_token: bytes, kind: str
) -> None:
    value, reason = _bad_headers(real_token)[kind]
    mit_site.secrets.append(value)
    resp = requests.get(
        mit_site.url(mit_site.inside, f"ctx-bad-{kind}"),
        headers={"Authorization": value},
        allow_redirects=False,
        timeout=10,
    )
    _assert_form(resp, reason=reason)
    assert "Sign in with your password." in resp.text
    _assert_logs_clean(mit_site)


def test_replayed_kerberos_token_falls_back_to_the_form(mit_site: Site, request: Any) -> None:
    wctx = _wctx(request)
    _, header = spnego_header(mit_site.principal, mit_site.password, mit_site.krb5_conf)
    mit_site.secrets.append(header)
    url = mit_site.url(mit_site.inside, wctx)
    first = requests.get(url, headers={"Authorization": header}, allow_redirects=False, timeout=30)
    assert first.status_code == 303, first.text[:500]
    mit_site.secrets.append(_mutual_header(first.headers.get("WWW-Authenticate")))
    again = requests.get(url, headers={"Authorization": header}, allow_redirects=False, timeout=30)
    _assert_form(again, reason="already used (replay)")
    assert "outcome=rejected:replay" in mit_site.inside.log()
    _assert_logs_clean(mit_site)


def test_40_kb_negotiate_header_reaches_the_app(mit_site: Site) -> None:
    token = b"\xa5" + (bytes(range(1, 256)) * 120)[:29_999]  # not DER-framed: to pyspnego
    value = "Negotiate " + base64.b64encode(token).decode()  # 40,010 characters
    assert 40_000 < len(value) < MAX_HEADER_LENGTH
    mit_site.secrets.append(value)
    resp = requests.get(
        mit_site.url(mit_site.inside, "ctx-40k"),
        headers={"Authorization": value},
        allow_redirects=False,
        timeout=10,
    )
    # the app's page, not gunicorn's bare 400/431
    _assert_form(resp, reason="Negotiate token is malformed")
    _assert_logs_clean(mit_site)


def test_over_64_kb_header_gets_the_too_large_page(mit_site: Site) -> None:
    value = "Negotiate " + "A" * (MAX_HEADER_LENGTH + 4)
    mit_site.secrets.append(value)
    resp = requests.get(
        mit_site.url(mit_site.inside, "ctx-big"),
        headers={"Authorization": value},
        allow_redirects=False,
        timeout=10,
    )
    _assert_form(resp, reason="Authorization header too large")
    assert f"({len(value)} > {MAX_HEADER_LENGTH})" in html.unescape(resp.text)
    _assert_logs_clean(mit_site)


# --------------------------------------------------------------------------------------
# 7. audit lines, and no token text in any log
# --------------------------------------------------------------------------------------


def test_audit_line_and_no_tokens_in_the_logs(site: Site) -> None:
    _, header = spnego_header(site.principal, site.password, site.krb5_conf)
    resp = requests.get(
        site.url(site.inside, "ctx-audit"),
        headers={"Authorization": header},
        allow_redirects=False,
        timeout=30,
    )
    assert resp.status_code == 303, resp.text[:500]
    site.secrets += [header, _mutual_header(resp.headers.get("WWW-Authenticate"))]
    log = site.inside.log()
    audit = f"login method=kerberos user='{site.user}' outcome=success client=127.0.0.1 "
    assert audit in log, log[-3000:]
    assert f"principal='{site.principal}'" in log.split(audit, 1)[1].splitlines()[0]
    assert len(site.secrets) >= 2
    _assert_logs_clean(site)


# --------------------------------------------------------------------------------------
# 5. a valid ticket of an account that may not sign in now
# --------------------------------------------------------------------------------------


def _form_message(resp: requests.Response) -> str:
    _assert_form(resp)
    found = re.search(r'id="message" role="alert">([^<]*)<', resp.text)
    assert found, resp.text[:500]
    return html.unescape(found.group(1))


def test_ad_account_disabled_after_its_ticket_was_issued(
    ad_site: Site, samba_ad: Any, tmp_path: Path, request: Any
) -> None:
    """The browser keeps its service ticket for hours: disabling the account must end SSO."""
    name, password = "sso-leaver", "Sso-Leaver-Passw0rd!"
    samba_ad.samba_tool("user", "create", name, password)
    try:
        ccache = kinit(ad_site.krb5_conf, f"{name}@{ad_site.realm}", password, tmp_path / "cc")
        url = ad_site.url(ad_site.inside, _wctx(request))
        first = curl_negotiate(url, tmp_path, krb5_conf=ad_site.krb5_conf, ccache=ccache)
        ad_site.secrets += first.sent_authorization
        assert first.responses[-1][0] == 303, first.stderr[-2000:]
        samba_ad.samba_tool("user", "disable", name)
        # the same ticket (cached in the ccache: no KDC is asked again)
        second = curl_negotiate(url, tmp_path, krb5_conf=ad_site.krb5_conf, ccache=ccache)
        ad_site.secrets += second.sent_authorization
        assert second.responses[-1][0] == 200, second.stderr[-2000:]
        assert "This account is disabled" in second.body
        audit = f"login method=kerberos user='{name}' outcome=AccountDisabled"
        assert audit in ad_site.inside.log()
    finally:
        samba_ad.samba_tool("user", "delete", name)
    _assert_logs_clean(ad_site)


def test_openldap_account_locked_by_ppolicy_gets_the_form(
    mit_site: Site, slapd: Any, mit_kdc: Any, request: Any
) -> None:
    slapd.modify(
        slapd.user_dn("bob"),
        [(ldap.MOD_REPLACE, "pwdAccountLockedTime", "000001010000Z")],
        relax=True,
    )
    try:
        _, header = spnego_header(f"bob@{mit_kdc.realm}", mit_kdc.users["bob"], mit_site.krb5_conf)
        mit_site.secrets.append(header)
        resp = requests.get(
            mit_site.url(mit_site.inside, _wctx(request)),
            headers={"Authorization": header},
            allow_redirects=False,
            timeout=30,
        )
        assert _form_message(resp).startswith("This account is locked")
        assert "login method=kerberos user='bob' outcome=AccountLocked" in mit_site.inside.log()
    finally:
        slapd.unlock("bob")
    _assert_logs_clean(mit_site)
