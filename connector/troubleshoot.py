"""The troubleshooter: every check ``connector check`` and the console's Troubleshoot page run.

:func:`run_checks` runs, in order:

* the directory, per server (:func:`connector.directory.check.check_directory`): DNS, TCP,
  TLS, service bind, base DN search, and the sample user when one is given; without a sample
  user, a sanity check that ``LDAP_USER_BY_NAME`` matches any user at all;
* the hub: DNS (unless a proxy resolves it), reachability through ``HTTPS_PROXY``, TLS trust,
  the agent's token accepted, and the clock offset to the hub (its HTTP ``Date``);
* the Kerberos keytab: readable, with the expected ``HTTP/`` principal;
* gunicorn's header limits, as the running workers report them (Kerberos tokens need 64 KB).

Each :class:`~connector.directory.check.Check` says pass or fail and, on failure, what to do.
What does not apply (no hub set up yet, Kerberos off, the server not running) is a note, not
a check.
"""

from __future__ import annotations

import dataclasses
import email.utils
import socket
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import ldap
import requests

from connector.channel.client import (
    PROTOCOL_VERSION,
    HubRejected,
    HubUnavailable,
    HubUntrusted,
    make_session,
    proxies_for,
    request_json,
)
from connector.channel.identity import AgentIdentity
from connector.directory import ldaperrors
from connector.directory.check import Check, check_directory
from connector.directory.connections import ServerSet
from connector.directory.search import search
from connector.errors import KeytabError
from connector.kerberos import MAX_HEADER_LENGTH, read_keytab_principals
from connector.metrics import read_statuses
from connector.secretbox import SecretError
from connector.settings import Settings
from connector.urls import without_userinfo

#: The smallest ``limit_request_field_size`` that lets a 64 KB Kerberos header reach the app.
MIN_HEADER_FIELD = MAX_HEADER_LENGTH
#: What ``connector.gunicorn_config`` sets.
SHIPPED_HEADER_FIELD = 131072


@dataclasses.dataclass(frozen=True)
class Report:
    """What the troubleshooter found: the checks, and notes on what did not apply."""

    checks: list[Check]
    notes: list[str]

    @property
    def failed(self) -> list[Check]:
        """The checks that failed."""
        return [c for c in self.checks if not c.ok]

    @property
    def ok(self) -> bool:
        """True when something was checked and nothing failed."""
        return bool(self.checks) and not self.failed


def run_checks(
    settings: Settings,
    sample_user: str | None = None,
    *,
    statuses: Sequence[dict[str, Any]] | None = None,
) -> Report:
    """Run every check (see the module docstring).

    Args:
        settings: the settings to check.
        sample_user: a user to look up with ``LDAP_USER_BY_NAME``.
        statuses: the workers' status reports (default: read from the run directory).
    """
    checks: list[Check] = []
    notes: list[str] = [
        f"config: {key} is in plain text in {settings.config_path}; `connector seal` encrypts "
        "it (so do setup and the service's start)"
        for key in settings.unsealed_keys
    ]
    if statuses is None:
        statuses = read_statuses(settings.run_dir)
    directory = check_directory(settings, sample_user)
    checks.extend(directory)
    if not sample_user:
        checks.extend(check_user_filter(settings, directory))
    hub_checks, hub_notes = check_hub(settings, statuses)
    checks.extend(hub_checks)
    notes.extend(hub_notes)
    keytab = check_keytab(settings)
    if keytab is None:
        notes.append("kerberos: Kerberos sign-in is off (KERBEROS_AUTH); no keytab to check")
    else:
        checks.extend(keytab)
    limits = check_header_limits(statuses)
    if limits is None:
        notes.append(
            "gunicorn: not running here (no worker status in "
            f"{settings.run_dir}); the shipped configuration allows {SHIPPED_HEADER_FIELD} "
            "byte header lines"
        )
    else:
        checks.append(limits)
    return Report(checks, notes)


# --- directory -------------------------------------------------------------------------------


def check_user_filter(settings: Settings, done: Sequence[Check]) -> list[Check]:
    """Whether ``LDAP_USER_BY_NAME`` finds any user at all (with ``*`` for the name).

    Runs against the first server whose search step passed; nothing if none did.
    """
    good = [c.target for c in done if c.name == "search" and c.ok]
    if not good:
        return []
    url = good[0]
    flt = settings.ldap_user_by_name.replace("{0}", "*")
    t0 = time.monotonic()

    def result(ok: bool, detail: str, hint: str = "") -> list[Check]:
        return [Check("user-filter", ok, detail, hint, url, time.monotonic() - t0)]

    servers = ServerSet(settings)
    try:
        conn = servers.connect_to(url)
    except ldap.LDAPError as exc:
        return result(False, f"cannot connect: {ldaperrors.describe(exc)}", "see the steps above")
    try:
        conn.ldap.simple_bind_s(settings.ldap_bind_user, settings.ldap_bind_password)
        found = search(conn, settings, settings.ldap_base, flt, ["1.1"], limit=1)
    except ldap.FILTER_ERROR as exc:
        return result(
            False,
            f"LDAP_USER_BY_NAME is not a valid filter: {ldaperrors.describe(exc)}",
            "fix its syntax; it must contain {0} where the login name goes",
        )
    except ldap.LDAPError as exc:
        return result(False, f"{flt} failed: {ldaperrors.describe(exc)}", "check LDAP_BASE")
    finally:
        conn.close()
    if not found:
        return result(
            False,
            f"{flt} matches no entry under {settings.ldap_base}",
            "LDAP_USER_BY_NAME names an attribute your users lack: Active Directory uses "
            "(sAMAccountName={0}), OpenLDAP usually (uid={0})",
        )
    return result(True, f"{settings.ldap_user_by_name} matches users (e.g. {found[0].dn})")


# --- hub -------------------------------------------------------------------------------------


def _offset_from_agents(statuses: Sequence[dict[str, Any]]) -> float | None:
    offsets = [
        float(s["agent"]["clock_offset_seconds"])
        for s in statuses
        if isinstance(s.get("agent"), dict) and s["agent"].get("connected")
    ]
    return offsets[0] if offsets else None


def check_hub(
    settings: Settings, statuses: Sequence[dict[str, Any]] = ()
) -> tuple[list[Check], list[str]]:
    """Reach the hub the way the agent does and measure the clock; (checks, notes)."""
    if not settings.hub_configured:
        return [], [
            "hub: not set up yet; run `connector setup --ticket URL` or use the console's "
            "Setup page"
        ]
    base = str(settings.ad_hub).rstrip("/")
    target = base
    parts = urlsplit(base)
    host = parts.hostname or ""
    proxy = proxies_for(base, settings).get("https")
    proxy = without_userinfo(proxy) if proxy else None  # shown below: never its credentials
    checks: list[Check] = []
    notes: list[str] = []

    t0 = time.monotonic()
    if proxy:
        checks.append(
            Check("hub-dns", True, f"{host} is resolved by the proxy {proxy}", target=target)
        )
    else:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addrs = sorted({str(a[4][0]) for a in socket.getaddrinfo(host, port)})
        except socket.gaierror as exc:
            checks.append(
                Check(
                    "hub-dns",
                    False,
                    f"{host} does not resolve ({exc.strerror})",
                    "check AD_HUB and this machine's DNS; behind a proxy, set HTTPS_PROXY",
                    target,
                    time.monotonic() - t0,
                )
            )
            return checks, notes
        checks.append(
            Check(
                "hub-dns", True, f"{host} -> {', '.join(addrs)}", "", target, time.monotonic() - t0
            )
        )

    # One authenticated call that changes nothing: results with an empty list. The hub
    # checks the agent token first (401 if refused), then the body (400 for an empty list).
    dates: list[float] = []

    def remember_date(resp: requests.Response, *args: Any, **kwargs: Any) -> None:
        value = resp.headers.get("Date")
        if value:
            try:
                dates.append(email.utils.parsedate_to_datetime(value).timestamp())
            except (TypeError, ValueError):
                pass

    headers: dict[str, str] = {}
    try:
        identity = AgentIdentity.load(settings.state_dir, settings.secret_box)
    except (ValueError, SecretError) as exc:
        identity = None
        notes.append(f"hub: the agent key cannot be opened ({exc})")
    if identity is not None:
        token = identity.token(
            issuer=str(settings.connection),
            audience=str(settings.realm),
            subject=f"{socket.gethostname()}/check",
            now=time.time(),
        )
        headers = {"Authorization": f"Bearer {token}", "X-Connector-Protocol": PROTOCOL_VERSION}
    session = make_session(settings)
    session.hooks["response"].append(remember_date)
    via = f" through the proxy {proxy}" if proxy else ""
    t0 = time.monotonic()
    sent = time.time()
    rejected: HubRejected | None = None
    unavailable: HubUnavailable | None = None
    try:
        request_json(
            session,
            settings,
            "POST",
            f"{base}/agent/results",
            json={"results": []},
            headers=headers,
            read_timeout=15,
        )
    except HubUntrusted as exc:
        checks.append(Check("hub-reach", True, f"connected{via}", "", target))
        checks.append(
            Check(
                "hub-tls",
                False,
                str(exc),
                "set HUB_CA_FILE to the PEM of the CA that issued the hub's certificate "
                "(a TLS-inspecting proxy's CA, if there is one)",
                target,
                time.monotonic() - t0,
            )
        )
        return checks, notes
    except HubUnavailable as exc:
        if not dates:
            checks.append(
                Check(
                    "hub-reach",
                    False,
                    f"{exc}{via}",
                    "check AD_HUB, HTTPS_PROXY / NO_PROXY and that the firewall lets this "
                    "machine make outbound HTTPS calls",
                    target,
                    time.monotonic() - t0,
                )
            )
            return checks, notes
        unavailable = exc
        checks.append(Check("hub-reach", True, f"answered{via} ({exc})", "", target))
    except HubRejected as exc:
        rejected = exc
        checks.append(Check("hub-reach", True, f"answered{via}", "", target, time.monotonic() - t0))
    else:
        checks.append(Check("hub-reach", True, f"answered{via}", "", target, time.monotonic() - t0))
    finally:
        session.close()
    received = time.time()
    if parts.scheme == "https":
        checks.append(Check("hub-tls", True, "certificate trusted", "", target))
    else:
        checks.append(
            Check("hub-tls", True, "not used: http:// (acceptable only for a test hub)", "", target)
        )
    if identity is not None and unavailable is not None:
        notes.append(f"hub-auth: not checked, the hub is not answering normally ({unavailable})")
    elif identity is not None:
        if rejected is not None and rejected.status == 401:
            checks.append(
                Check(
                    "hub-auth",
                    False,
                    f"the hub refused the agent's {identity.alg} token: {rejected}",
                    "this connector's certificate is not registered at the hub (run setup "
                    "again with the ticket), the hub does not take "
                    f"{identity.alg} agent tokens (protocol v2 requires ES256 and RS256), "
                    "or the clock is far off (see clock)",
                    target,
                )
            )
        else:
            checks.append(
                Check("hub-auth", True, f"agent token accepted ({identity.alg})", "", target)
            )

    limit = settings.clock_skew_warning_seconds
    agents = _offset_from_agents(statuses)
    if dates:
        offset = dates[-1] - (sent + received) / 2.0
        # the Date header has one-second resolution
        detail = f"hub clock {offset:+.1f} s from ours (HTTP Date)"
        if agents is not None:
            offset = agents
            detail = f"hub clock {offset:+.3f} s from ours (the agents' polls)"
        ok = abs(offset) <= max(limit, 2.0)
        checks.append(
            Check(
                "clock",
                ok,
                detail,
                ""
                if ok
                else "synchronise this machine's clock (chrony / systemd-timesyncd); "
                "Kerberos fails beyond 5 minutes and the hub refuses late tokens",
                target,
            )
        )
    else:
        notes.append("clock: the hub's answer carried no Date header; offset not measured")
    return checks, notes


# --- Kerberos --------------------------------------------------------------------------------


def keytab_principals(settings: Settings) -> tuple[list[str], str | None]:
    """The keytab's principals and the problem reading it (for the status page)."""
    if not settings.kerberos_keytab:
        return [], "KERBEROS_KEYTAB is not set"
    try:
        return read_keytab_principals(settings.kerberos_keytab.removeprefix("FILE:")), None
    except KeytabError as exc:
        return [], exc.problem


def check_keytab(settings: Settings) -> list[Check] | None:
    """The keytab is readable and holds the expected ``HTTP/`` principal (None: Kerberos off)."""
    if not settings.kerberos_auth and not settings.kerberos_keytab:
        return None
    path = settings.kerberos_keytab
    if not path:
        return [
            Check(
                "keytab",
                False,
                "KERBEROS_AUTH is on but KERBEROS_KEYTAB is not set",
                "export the HTTP/ service key to a keytab (ktpass on AD, kadmin ktadd on MIT) "
                "and set KERBEROS_KEYTAB to it",
            )
        ]
    principals, problem = keytab_principals(settings)
    if problem is not None:
        return [
            Check(
                "keytab",
                False,
                f"{path}: {problem}",
                "make it readable by the connector's user only (chown, chmod 0600) and export "
                "it again if it is damaged",
                path,
            )
        ]
    wanted = settings.kerberos_service_principal
    if wanted:
        if "@" in wanted:
            found = [p for p in principals if p == wanted]
        else:
            found = [p for p in principals if p.rsplit("@", 1)[0] == wanted]
    else:
        found = [p for p in principals if p.startswith("HTTP/")]
    checks: list[Check] = []
    if not found:
        checks.append(
            Check(
                "keytab",
                False,
                f"{path} lacks {wanted or 'any HTTP/ principal'} (has: {', '.join(principals)})",
                "export the key of HTTP/<the host name users type> into this keytab, or set "
                "KERBEROS_SERVICE_PRINCIPAL to the principal it holds",
                path,
            )
        )
    else:
        checks.append(Check("keytab", True, f"holds {', '.join(found)}", "", path))
    if settings.kerberos_auth and not settings.kerberos_realms:
        checks.append(
            Check(
                "kerberos-realms",
                False,
                "KERBEROS_REALMS is empty: every Kerberos sign-in would be refused",
                'set KERBEROS_REALMS to the users\' realm(s), e.g. ["CORP.EXAMPLE.COM"]',
            )
        )
    return checks


# --- gunicorn --------------------------------------------------------------------------------


def check_header_limits(statuses: Sequence[dict[str, Any]]) -> Check | None:
    """The running workers accept 64 KB header lines (None when no worker reported)."""
    sizes = [
        int(s["server"]["limit_request_field_size"])
        for s in statuses
        if isinstance(s.get("server"), dict)
        and isinstance(s["server"].get("limit_request_field_size"), int)
    ]
    if not sizes:
        return None
    smallest = 0 if 0 in sizes else min(sizes)
    ok = smallest == 0 or smallest >= MIN_HEADER_FIELD
    shown = "unlimited" if smallest == 0 else f"{smallest} bytes"
    return Check(
        "header-limits",
        ok,
        f"limit_request_field_size {shown} (Kerberos tokens need up to {MIN_HEADER_FIELD})",
        ""
        if ok
        else "raise limit_request_field_size to 131072 in the gunicorn configuration (and "
        "large_client_header_buffers in nginx): users in many groups send large tokens",
        "gunicorn",
    )


def probe_server(settings: Settings, url: str) -> str | None:
    """A quick health probe of one LDAP server: connect, service bind, read the root DSE.

    Returns None when it answered, else why not (for the status page and ``/metrics``).
    """
    conn = None
    try:
        conn = ServerSet(settings).connect_to(url)
        conn.ldap.simple_bind_s(settings.ldap_bind_user, settings.ldap_bind_password)
        search(conn, settings, "", "(objectClass=*)", ["1.1"], scope=ldap.SCOPE_BASE)
    except ldap.INVALID_CREDENTIALS as exc:
        return f"service account bind refused ({ldaperrors.describe(exc)})"
    except ldap.LDAPError as exc:
        return ldaperrors.describe(exc)
    finally:
        if conn is not None:
            conn.close()
    return None
