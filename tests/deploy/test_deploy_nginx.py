"""The shipped nginx site in front of the connector, end to end, with a real nginx.

One module-scoped site: devhub (announcing Kerberos for ``127.0.0.1/32`` only), OpenLDAP, the
MIT KDC, the connector under gunicorn (``deploy/gunicorn.conf.py``) and nginx running
``deploy/nginx-connector.conf`` with only ports, listen addresses and certificate paths
changed (see ``nginx_site.py``).

Addresses, chosen so that every hop is visible:

* the test's clients connect from ``127.0.0.1`` (or, where said, from ``127.0.0.3``);
* nginx connects to gunicorn from ``127.0.0.3`` (``proxy_bind`` in the test's wrapper), and
  ``TRUSTED_PROXIES`` is ``127.0.0.3`` only.

So the connector seeing ``client=127.0.0.1`` through nginx means it read nginx's
``X-Forwarded-For``; Kerberos being offered through nginx means the policy used that address
(nginx's own, ``127.0.0.3``, is outside ``CLIENT_IP_RANGES``).
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
import spnego
from configs import mit_kerberos, openldap_config
from connector_proc import ConnectorProcess, setup_config
from hubs import DevHubProcess, start_devhub
from nginx_site import SITE_FILE, Nginx, adapt_site
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from servers import find_binary, free_port, make_ca

pytestmark = pytest.mark.slow  # nginx, a KDC and a connector per case

CLIENT = "127.0.0.1"
PROXY_SOURCE = "127.0.0.3"  # nginx -> gunicorn; the only trusted proxy
SPOOFED = "10.9.9.9"
NEGOTIATE_RANGE = ["127.0.0.1/32"]
FORM_REASON = "Automatic sign-in did not work ("
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Site:
    hub: DevHubProcess
    connector: ConnectorProcess
    nginx: Nginx
    ca_file: str
    krb5_conf: str
    ccache: str
    principal: str
    password: str
    http_port: int
    workdir: Path

    @property
    def https(self) -> str:
        """nginx's HTTPS base URL (the certificate has an IP SAN for 127.0.0.1)."""
        return f"https://127.0.0.1:{self.nginx.https_port}"

    @property
    def direct(self) -> str:
        """gunicorn itself, bypassing nginx."""
        return self.connector.url

    def session(self, source: str | None = None) -> requests.Session:
        """A client trusting the test CA, connecting from ``source`` if given."""
        s = requests.Session()
        s.trust_env = False  # REQUESTS_CA_BUNDLE would override verify; no proxies either
        s.verify = self.ca_file
        if source:
            s.mount("https://", _SourceAddressAdapter(source))
            s.mount("http://", _SourceAddressAdapter(source))
        return s


class _SourceAddressAdapter(HTTPAdapter):
    """Connections from a chosen local address (any 127.0.0.0/8 address works on lo)."""

    def __init__(self, source: str) -> None:
        self._source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self._source, 0)
        super().init_poolmanager(*args, **kwargs)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, slapd: Any, mit_kdc: Any) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("deploy-nginx")
    hub = start_devhub(tmp / "hub", lease_seconds=4, kerberos=True, ip_ranges=NEGOTIATE_RANGE)
    connector: ConnectorProcess | None = None
    nginx: Nginx | None = None
    try:
        state = tmp / "connector"
        setup_config(
            state,
            openldap_config(slapd),
            hub.ticket_url,
            POLL_WAIT_SECONDS=2,
            **mit_kerberos(mit_kdc),
        )
        config = json.loads((state / "config.json").read_text())
        assert config["KERBEROS_AUTH"] is True
        assert config["CLIENT_IP_RANGES"] == NEGOTIATE_RANGE
        rcache = tmp / "rcache"
        rcache.mkdir()
        env = {
            "KRB5_CONFIG": mit_kdc.krb5_conf,
            "KRB5RCACHEDIR": str(rcache),
            "TRUSTED_PROXIES": PROXY_SOURCE,
        }
        connector = ConnectorProcess(state, env=env).start()
        tls = make_ca(tmp / "tls", ips=("127.0.0.1", "::1"), dns_names=("localhost",))
        https_port, http_port = free_port(), free_port()
        text = adapt_site(
            SITE_FILE.read_text(),
            https_port=https_port,
            http_port=http_port,
            upstream_port=connector.port,
            cert_file=tls.cert_file,
            key_file=tls.key_file,
        )
        nginx = Nginx(tmp / "nginx", text, https_port=https_port, proxy_source=PROXY_SOURCE)
        nginx.start()
        ccache = tmp / "client.ccache"
        mit_kdc.kinit("dave", mit_kdc.users["dave"], ccache)
        yield Site(
            hub=hub,
            connector=connector,
            nginx=nginx,
            ca_file=tls.ca_file,
            krb5_conf=mit_kdc.krb5_conf,
            ccache=f"FILE:{ccache}",
            principal=mit_kdc.principal("dave"),
            password=mit_kdc.users["dave"],
            http_port=http_port,
            workdir=tmp,
        )
    finally:
        if nginx is not None:
            nginx.stop()
        if connector is not None:
            connector.stop()
        hub.stop()


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _params(wctx: str) -> dict[str, str]:
    return {"wtrealm": "urn:acme", "wctx": wctx}


def _wait_for_log(proc: ConnectorProcess, pattern: str, timeout: float = 5.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(pattern, proc.log())
        if found or time.monotonic() > deadline:
            assert found, f"{pattern!r} not in the connector log:\n{proc.log()[-3000:]}"
            return found
        time.sleep(0.05)


def _assert_form(resp: requests.Response, status: int) -> None:
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert 'id="signin"' in resp.text and 'name="password"' in resp.text, resp.text[:500]
    assert CSRF.search(resp.text)


def _message(resp: requests.Response) -> str:
    found = re.search(r'id="message" role="alert">([^<]*)<', resp.text)
    assert found, resp.text[:1000]
    return html.unescape(found.group(1))


def _form_attempt(
    session: requests.Session, base: str, username: str, password: str, **headers: str
) -> tuple[requests.Response, requests.Response]:
    """GET the form, POST the credentials; (the form page, the answer to the POST)."""
    params = _params(f"ctx-{username}")
    page = session.get(base + "/wsfed", params=params, headers=headers, timeout=10)
    assert page.status_code in (200, 401), (page.status_code, page.text[:500])
    token = CSRF.search(page.text)
    assert token, page.text[:500]
    data = {**params, "username": username, "password": password, "csrf_token": token.group(1)}
    answer = session.post(
        base + "/wsfed", data=data, headers=headers, allow_redirects=False, timeout=30
    )
    return page, answer


def _audited_client(site: Site, username: str) -> str:
    """The client address in the audit line of the form attempt for ``username``."""
    found = _wait_for_log(site.connector, rf"login method=form user='{username}' \S+ client=(\S+) ")
    return found.group(1)


def _assert_try_page(site: Site, location: str, wctx: str, method: str) -> None:
    """Follow the hand-off to the hub: the right method and dave's nested groups."""
    assert location.startswith(site.hub.url("login/callback") + "?"), location
    query = parse_qs(urlsplit(location).query)
    assert query["wctx"] == [wctx] and query["ref"][0]
    page = requests.get(location, timeout=10)
    assert page.status_code == 200, page.text[:500]
    shown = re.search(r'id="method">([^<]*)<', page.text)
    assert shown and shown.group(1) == method, page.text[:1000]
    for group in ("team-core", "team-dev", "staff", "everyone"):
        assert f"<li>{group}</li>" in page.text, page.text[:2000]


def _curl_negotiate(site: Site, url: str) -> tuple[list[tuple[int, CaseInsensitiveDict[str]]], str]:
    """``curl --negotiate --anyauth`` through nginx to ``https://localhost`` (SPN HTTP/localhost),
    forced onto 127.0.0.1; every response's status and headers, and curl's stderr.

    ``--anyauth`` makes curl ask without credentials first, so the 401 challenge is part of the
    exchange (with ``--negotiate`` alone curl sends its token at once)."""
    curl = find_binary("curl", "curl")
    headers_file = site.workdir / "curl.headers"
    argv = [
        curl, "-sS", "-v", "--negotiate", "--anyauth", "-u", ":", "--max-time", "30",
        "--cacert", site.ca_file,
        "--resolve", f"localhost:{site.nginx.https_port}:127.0.0.1",
        "-D", str(headers_file), "-o", os.devnull, url,
    ]  # fmt: skip
    result = subprocess.run(
        argv,
        env={**os.environ, "KRB5_CONFIG": site.krb5_conf, "KRB5CCNAME": site.ccache},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    blocks = []
    for block in re.split(r"\r?\n\r?\n", headers_file.read_text()):
        lines = [ln for ln in block.splitlines() if ln.strip()]
        if lines and lines[0].startswith("HTTP/"):
            fields: CaseInsensitiveDict[str] = CaseInsensitiveDict()
            for line in lines[1:]:
                name, _, value = line.partition(":")
                fields[name.strip()] = value.strip()
            blocks.append((int(lines[0].split()[1]), fields))
    return blocks, result.stderr


# --------------------------------------------------------------------------------------
# (a) the form through nginx
# --------------------------------------------------------------------------------------


def test_form_sign_in_through_nginx_lands_on_the_hub(site: Site) -> None:
    s = site.session()
    page, answer = _form_attempt(s, site.https, "dave", "davepw")
    # the client (127.0.0.1, seen through nginx) is in range: challenge + form in one answer
    _assert_form(page, 401)
    assert page.headers["WWW-Authenticate"] == "Negotiate"
    # X-Forwarded-Proto reached gunicorn from a trusted proxy: the cookie is Secure
    cookie = page.headers["Set-Cookie"]
    assert "; Secure" in cookie and "HttpOnly" in cookie, cookie
    assert page.headers["Strict-Transport-Security"].startswith("max-age=")
    assert answer.status_code == 303, answer.text[:500]
    _assert_try_page(site, answer.headers["Location"], "ctx-dave", "form")
    assert _audited_client(site, "dave") == CLIENT
    # the request reached gunicorn from nginx's address, as a POST to /wsfed (gunicorn writes
    # its access line after the answer has left: wait for it)
    _wait_for_log(site.connector, rf'(?m)^{re.escape(PROXY_SOURCE)} "POST /wsfed')


def test_plain_http_is_redirected_to_https(site: Site) -> None:
    resp = requests.get(
        f"http://127.0.0.1:{site.http_port}/wsfed",
        params=_params("ctx-http"),
        allow_redirects=False,
        timeout=10,
    )
    assert resp.status_code == 301
    assert resp.headers["Location"] == "https://127.0.0.1/wsfed?" + urlencode(_params("ctx-http"))


def test_the_ipv6_listener_serves_too(site: Site) -> None:
    resp = site.session().get(f"https://[::1]:{site.nginx.https_port}/health", timeout=10)
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}


# --------------------------------------------------------------------------------------
# (b) Negotiate through nginx: the challenge, the token and the mutual token pass
# --------------------------------------------------------------------------------------


def test_curl_negotiate_through_nginx(site: Site) -> None:
    wctx = "ctx-curl"
    url = f"https://localhost:{site.nginx.https_port}/wsfed?{urlencode(_params(wctx))}"
    responses, stderr = _curl_negotiate(site, url)
    assert [status for status, _ in responses] == [401, 303], stderr[-3000:]
    challenge, final = responses[0][1], responses[1][1]
    assert challenge["WWW-Authenticate"] == "Negotiate"
    assert re.search(r"^> Authorization: Negotiate YII", stderr, re.M | re.I), "no token sent"
    scheme, _, mutual = final["WWW-Authenticate"].partition(" ")
    assert scheme == "Negotiate" and base64.b64decode(mutual, validate=True)
    _assert_try_page(site, final["Location"], wctx, "kerberos")
    found = _wait_for_log(
        site.connector, r"login method=kerberos user='dave' outcome=success client=(\S+) "
    )
    assert found.group(1) == CLIENT


def test_pyspnego_mutual_token_survives_nginx(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRB5_CONFIG", site.krb5_conf)
    monkeypatch.setenv("KRB5CCNAME", "MEMORY:deploy-nginx")
    ctx = spnego.client(
        site.principal, site.password, hostname="localhost", service="HTTP", protocol="negotiate"
    )
    token = ctx.step()
    resp = site.session().get(
        site.https + "/wsfed",
        params=_params("ctx-pyspnego"),
        headers={"Authorization": "Negotiate " + base64.b64encode(token).decode()},
        allow_redirects=False,
        timeout=30,
    )
    assert resp.status_code == 303, resp.text[:500]
    scheme, _, mutual = resp.headers["WWW-Authenticate"].partition(" ")
    assert scheme == "Negotiate"
    ctx.step(base64.b64decode(mutual))
    assert ctx.complete  # the server proved it holds the key: the token arrived intact


def test_negotiate_is_offered_by_the_address_nginx_reports(site: Site) -> None:
    # 127.0.0.1 is in CLIENT_IP_RANGES, 127.0.0.3 is not; nginx itself is 127.0.0.3 to gunicorn
    inside = site.session().get(site.https + "/wsfed", params=_params("x"), timeout=10)
    outside = site.session(PROXY_SOURCE).get(site.https + "/wsfed", params=_params("x"), timeout=10)
    _assert_form(inside, 401)
    assert inside.headers["WWW-Authenticate"] == "Negotiate"
    _assert_form(outside, 200)
    assert "WWW-Authenticate" not in outside.headers


# --------------------------------------------------------------------------------------
# (c) who the client is: nginx overwrites X-Forwarded-For; only the trusted proxy is believed
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "source", "expected"),
    [
        # the real client, seen through the trusted hop; the spoofed entry is gone
        ("nginx", CLIENT, CLIENT),
        # a client on the trusted address itself: appending would leave 10.9.9.9 as the
        # first untrusted entry; nginx overwrites, so the connector sees the client
        ("nginx", PROXY_SOURCE, PROXY_SOURCE),
        # straight to gunicorn from an untrusted peer: the header is not read
        ("direct", CLIENT, CLIENT),
        # control: straight from the trusted address, the header is believed (the trust
        # list is live, so the rows above prove something)
        ("direct", PROXY_SOURCE, SPOOFED),
    ],
)
def test_forwarded_for_is_believed_only_from_the_trusted_proxy(
    site: Site, route: str, source: str, expected: str
) -> None:
    username = f"probe-{route}-{source.replace('.', '-')}"
    base = site.https if route == "nginx" else site.direct
    _, answer = _form_attempt(
        site.session(source), base, username, "not-the-password", **{"X-Forwarded-For": SPOOFED}
    )
    assert answer.status_code == 401 and "username or password is incorrect" in answer.text
    assert _audited_client(site, username) == expected


def test_client_sent_scheme_headers_do_not_reach_gunicorn(site: Site) -> None:
    tricks = {"X-Forwarded-Ssl": "off", "X-Forwarded-Protocol": "http"}
    resp = site.session().get(
        site.https + "/wsfed", params=_params("x"), headers=tricks, timeout=10
    )
    _assert_form(resp, 401)
    assert "; Secure" in resp.headers["Set-Cookie"]
    # control: sent by the trusted peer next to X-Forwarded-Proto, gunicorn refuses them
    direct = site.session(PROXY_SOURCE).get(
        site.direct + "/wsfed",
        params=_params("x"),
        headers={"X-Forwarded-Proto": "https", **tricks},
        timeout=10,
    )
    assert direct.status_code == 400


# --------------------------------------------------------------------------------------
# (d) Kerberos-sized headers
# --------------------------------------------------------------------------------------


def test_40_kb_negotiate_header_passes_nginx(site: Site) -> None:
    value = "Negotiate " + base64.b64encode(b"\xa5" * 30_000).decode()  # 40,010 characters
    resp = site.session().get(
        site.https + "/wsfed",
        params=_params("ctx-40k"),
        headers={"Authorization": value},
        allow_redirects=False,
        timeout=10,
    )
    # the connector's form with its reason (not nginx's 400): the header got through whole
    _assert_form(resp, 200)
    assert "WWW-Authenticate" not in resp.headers
    assert _message(resp).startswith(FORM_REASON)


def test_over_64_kb_header_gets_the_connectors_explanation(site: Site) -> None:
    value = "Negotiate " + "A" * 70_000
    resp = site.session().get(
        site.https + "/wsfed",
        params=_params("ctx-70k"),
        headers={"Authorization": value},
        timeout=10,
    )
    _assert_form(resp, 200)
    assert "too large" in _message(resp)


def test_header_over_nginx_buffer_is_refused_by_nginx(site: Site) -> None:
    value = "Negotiate " + "A" * 140_000  # more than one 128k buffer
    resp = site.session().get(
        site.https + "/wsfed",
        params=_params("ctx-oversize"),
        headers={"Authorization": value},
        timeout=10,
    )
    assert resp.status_code == 400 and "Request Header Or Cookie Too Large" in resp.text
    assert "ctx-oversize" not in site.connector.log()


# --------------------------------------------------------------------------------------
# (e) only /wsfed and /health are exposed
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/admin", "/admin/", "/admin/settings", "/%61dmin/x", "/ready", "/", "/wsfed/x", "/static/x"],
)
def test_nothing_but_sign_in_and_health_is_exposed(site: Site, path: str) -> None:
    marker = "probe-" + re.sub(r"[^a-z0-9]+", "-", path)
    resp = site.session().get(f"{site.https}{path}?m={marker}", allow_redirects=False, timeout=10)
    assert resp.status_code == 404
    assert "nginx" in resp.text  # nginx's own page: the request never reached the connector
    assert f"m={marker}" not in site.connector.log()


def test_health_is_exposed(site: Site) -> None:
    resp = site.session().get(site.https + "/health", timeout=10)
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}
