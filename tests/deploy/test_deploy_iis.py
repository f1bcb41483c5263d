"""``deploy/web.config``: well-formed XML holding what ``docs/deploy-iis.md`` describes.

There is no IIS here, so the rewrite rules are checked by playing them the way URL Rewrite
does (in order, each ``match url`` regex against the path without its leading slash, the
``{HTTPS}`` condition, ``stopProcessing``) over the paths that matter.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from connector.kerberos import MAX_HEADER_LENGTH

ROOT = Path(__file__).resolve().parents[2]
WEB_CONFIG = ROOT / "deploy" / "web.config"
GUIDE = ROOT / "docs" / "deploy-iis.md"
UPSTREAM = "http://127.0.0.1:4000/"


@pytest.fixture(scope="module")
def server() -> ET.Element:
    tree = ET.parse(WEB_CONFIG)  # noqa: S314 - our own shipped file, not untrusted input
    found = tree.getroot().find("system.webServer")
    assert found is not None
    return found


def _one(parent: ET.Element, path: str) -> ET.Element:
    found = parent.findall(path)
    assert len(found) == 1, f"{path}: {len(found)} elements"
    return found[0]


def _route(
    server: ET.Element, path: str, https: bool = True, headers: dict[str, str] | None = None
) -> tuple[str, str]:
    """What URL Rewrite does with ``path`` (no leading slash) and request ``headers``:
    (action type, url or status)."""
    variables = {"HTTPS": "on" if https else "off"}
    for name, value in (headers or {}).items():
        variables["HTTP_" + name.upper().replace("-", "_")] = value
    for rule in server.findall("rewrite/rules/rule"):
        match = _one(rule, "match")
        flags = re.IGNORECASE if match.get("ignoreCase", "true") == "true" else 0
        found = re.search(match.get("url", ""), path, flags)
        if bool(found) == (match.get("negate", "false") == "true"):
            continue
        conditions = rule.findall("conditions/add")
        any_of = (
            _one(rule, "conditions").get("logicalGrouping") == "MatchAny" if conditions else False
        )
        met = [
            bool(
                re.search(
                    c.get("pattern", ""), variables.get(c.get("input", "").strip("{}"), ""), re.I
                )
            )
            != (c.get("negate", "false") == "true")
            for c in conditions
        ]
        if not (any(met) if any_of else all(met)):
            continue
        action = _one(rule, "action")
        kind = action.get("type", "")
        if kind in ("Rewrite", "Redirect"):
            target = action.get("url", "")
            for index, group in enumerate(found.groups() if found else (), start=1):
                target = target.replace(f"{{R:{index}}}", group or "")
            return kind, target
        if kind == "CustomResponse":
            return kind, action.get("statusCode", "")
        assert rule.get("stopProcessing") != "true", f"unexpected action {kind}"
    return "none", ""


def test_authentication_is_left_to_the_connector(server: ET.Element) -> None:
    auth = "security/authentication/"
    assert _one(server, auth + "anonymousAuthentication").get("enabled") == "true"
    assert _one(server, auth + "windowsAuthentication").get("enabled") == "false"


@pytest.mark.parametrize("path", ["wsfed", "health"])
def test_sign_in_and_health_go_to_gunicorn(server: ET.Element, path: str) -> None:
    assert _route(server, path) == ("Rewrite", UPSTREAM + path)


@pytest.mark.parametrize(
    "path", ["admin", "admin/", "admin/settings", "Admin/x", "ready", "", "wsfed/x", "static/x"]
)
def test_everything_else_is_not_found(server: ET.Element, path: str) -> None:
    assert _route(server, path) == ("CustomResponse", "404")


def test_admin_has_its_own_rule_before_the_proxy(server: ET.Element) -> None:
    names = [rule.get("name", "") for rule in server.findall("rewrite/rules/rule")]
    admin = next(i for i, n in enumerate(names) if "admin" in n)
    proxy = next(
        i
        for i, rule in enumerate(server.findall("rewrite/rules/rule"))
        if _one(rule, "action").get("type") == "Rewrite"
    )
    assert admin < proxy  # stays blocked even if the proxy rule is widened to (.*)


def test_plain_http_is_redirected(server: ET.Element) -> None:
    assert _route(server, "wsfed", https=False) == ("Redirect", "https://{HTTP_HOST}/wsfed")


def test_forwarding_headers_are_set_from_what_iis_saw(server: ET.Element) -> None:
    rules = [
        r
        for r in server.findall("rewrite/rules/rule")
        if _one(r, "action").get("type") == "Rewrite"
    ]
    assert len(rules) == 1
    sets = {s.get("name"): s.get("value") for s in rules[0].findall("serverVariables/set")}
    assert sets == {"HTTP_X_FORWARDED_FOR": "{REMOTE_ADDR}", "HTTP_X_FORWARDED_PROTO": "https"}


def test_request_limits_are_raised_for_kerberos(server: ET.Element) -> None:
    limits = _one(server, "security/requestFiltering/requestLimits")
    assert int(limits.get("maxUrl", "4096")) >= 8192  # IIS default 4096
    assert int(limits.get("maxQueryString", "2048")) >= 8192  # IIS default 2048
    header = _one(limits, "headerLimits/add[@header='Authorization']")
    assert int(header.get("sizeLimit", "0")) >= MAX_HEADER_LENGTH


def test_the_guide_names_the_server_side_steps() -> None:
    guide = GUIDE.read_text()
    config = WEB_CONFIG.read_text()
    for needle in (
        "allowedServerVariables",
        "HTTP_X_FORWARDED_FOR",
        "HTTP_X_FORWARDED_PROTO",
        "MaxFieldLength",
        "MaxRequestBytes",
        "windowsAuthentication",
        "unlock config",
        "TRUSTED_PROXIES",
    ):
        assert needle in guide, f"the guide does not mention {needle}"
        assert needle in config, f"web.config's comment does not mention {needle}"


@pytest.mark.parametrize("header", ["X-ARR-ClientCert", "X-SSL-Client-Cert"])
def test_a_client_sent_certificate_header_is_refused(server: ET.Element, header: str) -> None:
    assert _route(server, "wsfed", headers={header: "MIIB..."}) == ("CustomResponse", "400")
    assert _route(server, "wsfed", headers={header: ""}) == ("Rewrite", UPSTREAM + "wsfed")


def test_the_client_certificate_variant_is_one_uncommented_line() -> None:
    """Uncommenting the ``access`` element gives valid XML that accepts certificates."""
    text = WEB_CONFIG.read_text()
    line = '<access sslFlags="Ssl, SslNegotiateCert" />'
    assert text.count(line) == 1
    start = text.index(line)
    opening = text.rindex("<!--", 0, start)
    closing = text.index("-->", start)
    variant = text[:opening] + line + text[closing + 3 :]
    tree = ET.fromstring(variant)  # noqa: S314 - our own shipped file
    access = tree.find("system.webServer/security/access")
    assert access is not None and "SslNegotiateCert" in access.get("sslFlags", "")
    assert "SslRequireCert" not in access.get("sslFlags", "")  # accept, never require
