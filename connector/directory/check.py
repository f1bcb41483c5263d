"""The directory half of the troubleshooter: each server, step by step, with what to do."""

from __future__ import annotations

import dataclasses
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import ldap
from ldap.filter import escape_filter_chars

from connector.directory import ldaperrors
from connector.directory.connections import Connection, ServerSet, is_cleartext
from connector.directory.discovery import DcLocator, srv_names
from connector.directory.gssbind import KeytabBinder
from connector.directory.search import search
from connector.errors import DirectoryUnavailable
from connector.settings import TLS_VERIFYING, Settings


@dataclasses.dataclass(frozen=True)
class Check:
    """One step of a check: passed or not, what was seen, and on failure what to do."""

    name: str
    ok: bool
    detail: str
    hint: str = ""
    target: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        """The step as one line of text for a terminal."""
        mark = "PASS" if self.ok else "FAIL"
        where = f" [{self.target}]" if self.target else ""
        text = f"{mark} {self.name}{where}: {self.detail}"
        if not self.ok and self.hint:
            text += f"\n       -> {self.hint}"
        return text


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    default = 636 if parts.scheme.lower() == "ldaps" else 389
    return parts.hostname or "localhost", parts.port or default


def check_server(settings: Settings, url: str, sample_user: str | None = None) -> list[Check]:
    """Run every step against one server; stop at the first step that fails."""
    out: list[Check] = []

    def step(name: str, ok: bool, detail: str, hint: str = "", t0: float = 0.0) -> bool:
        out.append(Check(name, ok, detail, hint, url, time.monotonic() - t0 if t0 else 0.0))
        return ok

    if url.lower().startswith("ldapi://"):
        host, port = "", 0
    else:
        host, port = _host_port(url)
        t0 = time.monotonic()
        try:
            addrs = sorted(
                {str(a[4][0]) for a in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
            )
        except socket.gaierror as exc:
            step(
                "dns",
                False,
                f"{host} does not resolve ({exc.strerror})",
                "check the host name in LDAP_URL and the machine's DNS settings",
                t0,
            )
            return out
        step("dns", True, f"{host} -> {', '.join(addrs)}", t0=t0)
        t0 = time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=settings.ldap_connect_timeout):
                pass
        except OSError as exc:
            step(
                "tcp",
                False,
                f"cannot connect to {host}:{port} ({exc.strerror or exc})",
                "is the server running, and does a firewall allow this port?",
                t0,
            )
            return out
        step("tcp", True, f"connected to {host}:{port}", t0=t0)

    if is_cleartext(settings, url) and not settings.ldap_allow_cleartext:
        step(
            "tls",
            False,
            "not used: ldap:// without StartTLS, so binds are refused (passwords would travel "
            "in clear text)",
            "use ldaps:// or LDAP_STARTTLS=true with LDAP_CA_FILE; LDAP_ALLOW_CLEARTEXT=true "
            "accepts the risk",
        )
        return out
    servers = ServerSet(settings)
    t0 = time.monotonic()
    try:
        conn: Connection = servers.connect_to(url)
        conn.ldap.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["1.1"])
    except ldap.LDAPError as exc:
        tls = url.lower().startswith("ldaps://") or settings.ldap_starttls
        step(
            "tls" if tls else "ldap",
            False,
            ldaperrors.describe(exc),
            "check LDAP_CA_FILE (the CA that issued the server's certificate) and that the "
            "URL's host name is in the certificate"
            if tls
            else "the port answers but not as an LDAP server",
            t0,
        )
        return out
    if conn.tls:
        step(
            "tls",
            True,
            "TLS established and the certificate verified"
            if settings.ldap_tls_require_cert in TLS_VERIFYING
            else f"TLS established (certificate check: {settings.ldap_tls_require_cert})",
            t0=t0,
        )
    else:
        step(
            "tls",
            True,
            "WARNING, not used: LDAP_ALLOW_CLEARTEXT is set and passwords travel in clear "
            "text; use ldaps:// or LDAP_STARTTLS"
            if is_cleartext(settings, url)
            else "not used (a local socket)",
            t0=t0,
        )
    try:
        t0 = time.monotonic()
        if settings.ldap_bind_mech == "GSSAPI":
            conn.close()
            signed = _gssapi_bind(settings, servers, url, step, t0)
            if signed is None:
                return out
            conn = signed
        else:
            try:
                conn.ldap.simple_bind_s(settings.ldap_bind_user, settings.ldap_bind_password)
            except ldap.LDAPError as exc:
                code = ldaperrors.ad_subcode(exc)
                hint = "check LDAP_BIND_USER and its password" + (
                    f" (AD code {code})" if code else ""
                )
                if isinstance(exc, ldap.STRONG_AUTH_REQUIRED):
                    hint = (
                        "the DC requires signed binds (strongerAuthRequired): use TLS "
                        "(ldaps:// or LDAP_STARTTLS) or LDAP_BIND_MECH=GSSAPI with a keytab"
                    )
                step(
                    "bind",
                    False,
                    f"service account bind refused: {ldaperrors.describe(exc)}",
                    hint,
                    t0,
                )
                return out
            step("bind", True, f"simple bind as {settings.ldap_bind_user}", t0=t0)
        t0 = time.monotonic()
        try:
            found = search(
                conn,
                settings,
                settings.ldap_base,
                "(objectClass=*)",
                ["1.1"],
                scope=ldap.SCOPE_BASE,
            )
        except ldap.LDAPError as exc:
            step(
                "search",
                False,
                f"cannot read {settings.ldap_base}: {ldaperrors.describe(exc)}",
                "check LDAP_BASE and that the service account may read it",
                t0,
            )
            return out
        if not found:
            step(
                "search",
                False,
                f"{settings.ldap_base} is not visible",
                "check LDAP_BASE and the service account's read rights",
                t0,
            )
            return out
        step("search", True, f"base {settings.ldap_base} readable", t0=t0)
        if sample_user:
            t0 = time.monotonic()
            flt = settings.ldap_user_by_name.replace("{0}", escape_filter_chars(sample_user))
            try:
                users = search(conn, settings, settings.ldap_base, flt, ["1.1"], limit=2)
            except ldap.LDAPError as exc:
                step(
                    "user",
                    False,
                    f"LDAP_USER_BY_NAME failed: {ldaperrors.describe(exc)}",
                    "check the filter's syntax in LDAP_USER_BY_NAME",
                    t0,
                )
                return out
            if len(users) != 1:
                step(
                    "user",
                    False,
                    f"{flt} found {len(users)} entries (expected 1)",
                    "check LDAP_USER_BY_NAME (on OpenLDAP usually (uid={0}))",
                    t0,
                )
                return out
            step("user", True, f"{sample_user} -> {users[0].dn}", t0=t0)
    finally:
        conn.close()
    return out


def _gssapi_bind(
    settings: Settings, servers: ServerSet, url: str, step: Any, t0: float
) -> Connection | None:
    """The service account's SASL GSSAPI bind (signed, no StartTLS), as a check step."""
    principal = settings.ldap_bind_principal or "the keytab's first principal"
    try:
        conn = servers.connect_to(url, signed=True)
        KeytabBinder(settings.ldap_bind_keytab or "", settings.ldap_bind_principal).bind(conn)
    except (ldap.LDAPError, DirectoryUnavailable) as exc:
        text = ldaperrors.describe(exc) if isinstance(exc, ldap.LDAPError) else str(exc)
        step(
            "bind",
            False,
            f"SASL GSSAPI bind as {principal} refused: {text}",
            "check LDAP_BIND_KEYTAB and LDAP_BIND_PRINCIPAL, the Kerberos configuration "
            "(KRB5_CONFIG) and the DC's ldap/ service principal for this host name",
            t0,
        )
        return None
    step(
        "bind",
        True,
        f"SASL GSSAPI bind with signing as {principal} (keys from {settings.ldap_bind_keytab})",
        t0=t0,
    )
    return conn


def check_directory(settings: Settings, sample_user: str | None = None) -> list[Check]:
    """Check every configured server, plus the settings the directory needs."""
    problems = settings.directory_problems()
    if problems:
        return [Check("settings", False, p, "add it to config.json") for p in problems]
    out: list[Check] = []
    urls = list(settings.ldap_urls)
    if settings.ldap_domain:
        found, dns_checks = check_dns(settings)
        out.extend(dns_checks)
        urls += [u for u in found if u not in urls]
    for url in urls:
        out.extend(check_server(settings, url, sample_user))
    return out


def check_dns(settings: Settings) -> tuple[tuple[str, ...], list[Check]]:
    """``LDAP_DOMAIN``: the SRV answers (the site's first), and the URLs they give."""
    t0 = time.monotonic()
    locator = DcLocator(settings)
    urls = locator.refresh()
    asked = ", ".join(name for name, _ in srv_names(locator.domain, locator.site))
    where = ", ".join(settings.dns_servers) or "the system's resolver"
    if locator.last_error or not urls:
        detail = f"{asked} via {where}: {locator.last_error or 'no DC'}"
        hint = "check LDAP_DOMAIN, DNS_SERVERS, and that the DCs register their SRV records"
        return urls, [Check("dns", False, detail, hint, settings.ldap_domain or "", 0.0)]
    answers = "; ".join(
        f"{a.host}:{a.port} priority {a.priority} weight {a.weight}"
        + (f" (site {locator.site})" if a.in_site else "")
        for a in locator.answers
    )
    site = f"site {locator.site} from {locator.site_source}" if locator.site else "no site known"
    detail = f"{answers} -> {', '.join(urls)} (via {where}; {site})"
    return urls, [Check("dns", True, detail, "", settings.ldap_domain or "", time.monotonic() - t0)]
