"""The settings' schema: every key declared once, and plain values coerced and checked (no I/O).

Each setting is declared once, as a field of the frozen :class:`Settings` dataclass carrying
its config key, default, description and check (config-as-code). Key names and defaults follow
the Node AD/LDAP connector so that its ``config.json`` works unchanged. :func:`convert` turns
plain values (as JSON or the environment give them) into field values and lists every problem;
:func:`refine` and :func:`describe` serve the console and the docs. Nothing here reads or writes
a file or the environment: :mod:`connector.settings.loading` does, with
:mod:`connector.settings.files` and :mod:`connector.settings.sealing`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from connector.errors import ConfigError
from connector.netpolicy import is_loopback_host, split_host_port
from connector.realms import parse_realm_directories
from connector.secretbox import PREFIX, SecretBox
from connector.tenantkey import ALGORITHMS, TenantKeyError, verifying_key
from connector.urls import hub_url_problem, without_userinfo

# Keys the Node connector reads that this one does not need; accepted silently so an old
# config.json loads without noise.
NODE_KEYS_IGNORED = frozenset(
    {
        "LDAP_HEARTBEAT_SECONDS",
        "WSFED_ISSUER",
        "SESSION_SECRET",
        "AUTH_CERT",
        "AUTH_CERT_KEY",
        "LDAP_SEARCH_BY_UPN",
        "LDAP_SEARCH_USER_FIELDS",
        "ALLOW_KERBEROS_CLIENTS",
        "ANALYTICS",
        "CONNECTIONS_POOL_SIZE",
        "SSL_ENABLE_EMPTY_SUBJECT",
        "LDAP_AUTH_POOL_SIZE",
        "LDAP_SEARCH_POOL_SIZE",
        "CA_CERT",
        "ENABLE_ADLDAP_GLOBAL_CA",
    }
)

#: the choices of LDAP_TLS_REQUIRE_CERT, and those of them that verify the certificate
TLS_REQUIRE_CERT = ("demand", "hard", "allow", "try", "never")
TLS_VERIFYING = ("demand", "hard")
_GROUP_STRATEGIES = ("auto", "ad", "memberof", "member", "none")
_LOG_FORMATS = ("text", "json")


def _setting(
    key: str,
    default: Any,
    help: str,
    *,
    check: Callable[[Any], str | None] | None = None,
    secret: bool = False,
) -> Any:
    """Declare one setting: its config key, default, description and optional check."""
    meta = {"key": key, "help": help, "check": check}
    if isinstance(default, list | dict):
        raise TypeError("use tuples for sequence defaults")
    return dataclasses.field(default=default, metadata=meta, repr=not secret)


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _not_negative(value: Any) -> str | None:
    return None if value >= 0 else "must not be negative"


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _ldap_urls(value: Any) -> str | None:
    bad = [u for u in value if not u.lower().startswith(("ldap://", "ldaps://", "ldapi://"))]
    return f"not an LDAP URL: {', '.join(bad)}" if bad else None


def _realm_directories(value: Any) -> str | None:
    try:
        parse_realm_directories(value)
    except ValueError as exc:
        return str(exc)
    return None


def _hub_url(value: Any) -> str | None:
    return None if value is None else hub_url_problem(value)


def _hub_origins(value: Any) -> str | None:
    for item in value:
        problem = hub_url_problem(item)
        if problem:
            return f"{without_userinfo(item)!r} {problem}"
        parts = urlsplit(item)
        if parts.path.strip("/") or parts.query or parts.fragment or "@" in parts.netloc:
            return f"{without_userinfo(item)!r} must be an origin only: scheme://host[:port]"
    return None


def _ip_networks(value: Any) -> str | None:
    bad = []
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            bad.append(item)
    return f"not a CIDR range: {', '.join(bad)}" if bad else None


def _console_bind(value: Any) -> str | None:
    if value in ("", "off"):
        return None
    found = split_host_port(value)
    if found is None:
        return "must be host:port (e.g. 127.0.0.1:4001), or off"
    if not is_loopback_host(found[0]):
        return "the console listens on loopback only: use 127.0.0.1, [::1] or localhost"
    return None


def _filter_with_placeholder(value: Any) -> str | None:
    if value is None:
        return None
    if "{0}" not in value:
        return "must contain the placeholder {0}"
    if not (value.startswith("(") and value.endswith(")")):
        return "must be an LDAP filter in parentheses"
    return None


def _qualified_name_filter(value: Any) -> str | None:
    if value is None:
        return None
    if not any(p in value for p in ("{0}", "{1}", "{2}")):
        return "must contain a placeholder: {0} (the whole name), {1} (user) or {2} (domain)"
    if not (value.startswith("(") and value.endswith(")")):
        return "must be an LDAP filter in parentheses"
    return None


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting of the connector, validated; build it with :func:`load_settings`."""

    # --- directory: servers and credentials -------------------------------------------------
    ldap_urls: tuple[str, ...] = _setting(
        "LDAP_URL",
        (),
        "LDAP server URL, or several (a JSON list or space-separated) tried in order.",
        check=_ldap_urls,
    )
    ldap_domain: str | None = _setting(
        "LDAP_DOMAIN",
        None,
        "An AD domain whose DCs are found through DNS (_ldap._tcp.dc._msdcs.<domain> SRV "
        "records), after any LDAP_URL.",
    )
    ldap_site: str | None = _setting(
        "LDAP_SITE",
        None,
        "The AD site whose DCs are tried first (with LDAP_DOMAIN); default: the site the DCs "
        "name for this machine (a CLDAP netlogon ping).",
    )
    ldap_domain_scheme: str = _setting(
        "LDAP_DOMAIN_SCHEME",
        "ldap",
        "How DCs found through DNS are reached: ldap (the SRV port; with LDAP_STARTTLS) or "
        "ldaps (port 636).",
        check=_one_of("ldap", "ldaps"),
    )
    dns_servers: tuple[str, ...] = _setting(
        "DNS_SERVERS", (), "Name servers asked for LDAP_DOMAIN (default: the system's)."
    )
    ldap_dns_refresh_seconds: float = _setting(
        "LDAP_DNS_REFRESH_SECONDS",
        300.0,
        "How often the DCs are asked of DNS again (and whenever all of them failed).",
        check=_positive,
    )
    ldap_bind_mech: str = _setting(
        "LDAP_BIND_MECH",
        "simple",
        "How the service account binds: simple (LDAP_BIND_USER + password) or GSSAPI "
        "(Kerberos keys from LDAP_BIND_KEYTAB; no password).",
        check=_one_of("simple", "GSSAPI"),
    )
    ldap_bind_keytab: str | None = _setting(
        "LDAP_BIND_KEYTAB", None, "Keytab of the service account (LDAP_BIND_MECH=GSSAPI)."
    )
    ldap_bind_principal: str | None = _setting(
        "LDAP_BIND_PRINCIPAL",
        None,
        "The service account's principal in LDAP_BIND_KEYTAB (default: the keytab's first).",
    )
    ldap_base: str = _setting("LDAP_BASE", "", "Base DN under which users are searched.")
    ldap_bind_user: str = _setting("LDAP_BIND_USER", "", "DN (or UPN) of the service account.")
    ldap_bind_password: str = _setting(
        "LDAP_BIND_PASSWORD",
        "",
        "Service account password (stored encrypted as LDAP_BIND_CREDENTIALS).",
        secret=True,
    )
    ldap_ca_file: str | None = _setting(
        "LDAP_CA_FILE", None, "PEM file of the CA(s) that issued the LDAP servers' certificates."
    )
    ldap_starttls: bool = _setting("LDAP_STARTTLS", False, "Use StartTLS on ldap:// URLs.")
    ldap_allow_cleartext: bool = _setting(
        "LDAP_ALLOW_CLEARTEXT",
        False,
        "Allow binds (passwords) over ldap:// without StartTLS; refused unless set (logged).",
    )
    ldap_tls_require_cert: str = _setting(
        "LDAP_TLS_REQUIRE_CERT",
        "demand",
        "How strictly to check the server certificate (demand, allow, never).",
        check=_one_of(*TLS_REQUIRE_CERT),
    )
    ldap_connect_timeout: float = _setting(
        "LDAP_CONNECT_TIMEOUT", 5.0, "Seconds to wait for a TCP/TLS connection.", check=_positive
    )
    ldap_operation_timeout: float = _setting(
        "LDAP_OPERATION_TIMEOUT", 10.0, "Seconds to wait for one LDAP operation.", check=_positive
    )
    ldap_server_retry_seconds: float = _setting(
        "LDAP_SERVER_RETRY_SECONDS",
        5.0,
        "After a server fails, skip it for this long while another one answers.",
        check=_not_negative,
    )
    # 8 each, as many as a worker's agent runs commands at once (AGENT_CONCURRENCY) and as
    # its web threads: none of them waits for a connection (docs/benchmarks.md, stop 26)
    ldap_pool_size: int = _setting(
        "LDAP_POOL_SIZE", 8, "Service-account connections for searches.", check=_positive
    )
    ldap_bind_pool_size: int = _setting(
        "LDAP_BIND_POOL_SIZE", 8, "Connections used to check user passwords.", check=_positive
    )
    ldap_page_size: int = _setting(
        "LDAP_PAGE_SIZE",
        500,
        "Page size for paged searches (0 disables paging).",
        check=_not_negative,
    )
    ldap_referrals: bool = _setting("LDAP_REFERRALS", False, "Follow LDAP referrals.")

    # --- directory: queries -------------------------------------------------------------------
    ldap_user_by_name: str = _setting(
        "LDAP_USER_BY_NAME",
        "(sAMAccountName={0})",
        "Filter that finds a user by login name; {0} is the escaped name.",
        check=_filter_with_placeholder,
    )
    ldap_user_by_qualified_name: str | None = _setting(
        "LDAP_USER_BY_QUALIFIED_NAME",
        None,
        "Not Active Directory: filter that finds a user typed as user@domain; {0} is the "
        "whole escaped name, {1} the user part, {2} the domain (unset: LDAP_USER_BY_NAME).",
        check=_qualified_name_filter,
    )
    login_by_email: bool = _setting(
        "LOGIN_BY_EMAIL",
        False,
        "Let people sign in with their e-mail address (mail, or proxyAddresses on AD); "
        "an address that several entries carry signs nobody in.",
    )
    ldap_search_query: str = _setting(
        "LDAP_SEARCH_QUERY",
        "(&(objectCategory=person)(anr={0}))",
        "Filter for searching users; {0} is the escaped search text.",
        check=_filter_with_placeholder,
    )
    ldap_search_all_query: str = _setting(
        "LDAP_SEARCH_ALL_QUERY", "(objectCategory=person)", "Filter that lists all users."
    )
    ldap_search_limit: int = _setting(
        "LDAP_SEARCH_LIMIT", 100, "Most users a search returns.", check=_positive
    )
    ldap_search_groups: str = _setting(
        "LDAP_SEARCH_GROUPS",
        "(member:1.2.840.113556.1.4.1941:={0})",
        "Filter for a user's groups (Active Directory in-chain rule); {0} is the user's DN.",
        check=_filter_with_placeholder,
    )
    ldap_search_list_groups_query: str = _setting(
        "LDAP_SEARCH_LIST_GROUPS_QUERY", "(objectCategory=group)", "Filter that lists all groups."
    )
    ldap_base_groups: str = _setting(
        "LDAP_BASE_GROUPS", "", "Base DN for groups (defaults to LDAP_BASE)."
    )
    group_property: str = _setting(
        "GROUP_PROPERTY", "cn", "Group attribute that names a group in the profile."
    )
    group_properties: tuple[str, ...] = _setting(
        "GROUP_PROPERTIES", (), "If set, groups are objects with these attributes."
    )
    groups_strategy: str = _setting(
        "GROUPS_STRATEGY",
        "auto",
        "How nested groups are resolved: ad (in-chain rule), memberof (walk memberOf), "
        "member (walk member), none, or auto (ad for Active Directory, else member).",
        check=_one_of(*_GROUP_STRATEGIES),
    )
    groups_member_attribute: str = _setting(
        "GROUPS_MEMBER_ATTRIBUTE", "member", "Group attribute listing members (member walk)."
    )
    groups_include_primary: bool = _setting(
        "GROUPS_INCLUDE_PRIMARY", False, "Add the AD primary group (e.g. Domain Users)."
    )
    groups_cache_seconds: float = _setting(
        "GROUPS_CACHE_SECONDS",
        600.0,
        "How long a user's groups are cached (0: no cache).",
        check=_not_negative,
    )
    groups_cache_max_entries: int = _setting(
        "GROUPS_CACHE_MAX_ENTRIES",
        10000,
        "Most users kept in the groups cache.",
        check=_positive,
    )
    groups_source: str = _setting(
        "GROUPS_SOURCE",
        "ldap",
        "Where a Kerberos sign-in's groups come from: ldap (GROUPS_STRATEGY), or pac (the "
        "ticket's PAC, SIDs named through LDAP and cached; LDAP when a ticket has no PAC).",
        check=_one_of("ldap", "pac"),
    )
    sid_cache_seconds: float = _setting(
        "SID_CACHE_SECONDS",
        600.0,
        "How long a group SID's name (GROUP_PROPERTY) is cached for PAC groups.",
        check=_not_negative,
    )
    sid_cache_max_entries: int = _setting(
        "SID_CACHE_MAX_ENTRIES",
        50000,
        "Most group SIDs kept in the SID cache.",
        check=_positive,
    )

    # --- directory: policy --------------------------------------------------------------------
    allow_password_expired: bool = _setting(
        "ALLOW_PASSWORD_EXPIRED", False, "Let users with an expired password log in."
    )
    allow_password_change_required: bool = _setting(
        "ALLOW_PASSWORD_CHANGE_REQUIRED",
        False,
        "Let users who must change their password log in.",
    )
    enable_write_back: bool = _setting(
        "ENABLE_WRITE_BACK", False, "Allow password changes through the connector."
    )
    allow_admin_password_reset: bool = _setting(
        "ALLOW_ADMIN_PASSWORD_RESET",
        False,
        "Let the hub reset a password without the old one (as the service account); never "
        "the service account's own, nor an account with adminCount=1. Needs ENABLE_WRITE_BACK.",
    )
    password_expiry_warning_days: float = _setting(
        "PASSWORD_EXPIRY_WARNING_DAYS",
        14.0,
        "Days before a password expires from which the sign-in form offers to change it "
        "(skippable; 0: never). Needs ENABLE_WRITE_BACK, as does the change of an expired one.",
        check=_not_negative,
    )
    password_change_step_seconds: float = _setting(
        "PASSWORD_CHANGE_STEP_SECONDS",
        300.0,
        "How long the sign-in form's password change step stays usable.",
        check=_positive,
    )
    profile_mapper: str | None = _setting(
        "PROFILE_MAPPER", None, "Python file with map_profile(raw, default) to shape profiles."
    )

    # --- hub channel --------------------------------------------------------------------------
    provisioning_ticket: str | None = _setting(
        "PROVISIONING_TICKET",
        None,
        "Ticket URL given by the hub for setup (https://; http only to a loopback hub).",
        check=_hub_url,
        secret=True,
    )
    ad_hub: str | None = _setting(
        "AD_HUB",
        None,
        "Base URL of the hub's agent endpoints (https://; http only to a loopback hub).",
        check=_hub_url,
    )
    connection: str | None = _setting("CONNECTION", None, "Connection name at the hub.")
    realm: str | None = _setting("REALM", None, "Realm (audience) of the connection.")
    tenant_signing_key: str | None = _setting(
        "TENANT_SIGNING_KEY", None, "Key that verifies the hub's commands.", secret=True
    )
    tenant_signing_alg: str | None = _setting(
        "TENANT_SIGNING_ALG",
        None,
        "The one algorithm of the hub's commands (RS256 or HS256), stored at setup; the "
        "tenant signing key must be of its kind. Missing: derived from the key, then saved.",
        check=lambda v: None if v is None else _one_of(*ALGORITHMS)(v),
    )

    realm_post_token_url: str | None = _setting(
        "REALM_POST_TOKEN_URL",
        None,
        "Where browsers go back to the hub after signing in (https://; http only to loopback).",
        check=_hub_url,
    )
    hub_trusted_origins: tuple[str, ...] = _setting(
        "HUB_TRUSTED_ORIGINS",
        (),
        "Origins (scheme://host[:port]) besides the ticket's that setup accepts for adHub and "
        "postTokenUrl (`connector setup --allow-hub-origin`).",
        check=_hub_origins,
    )
    hub_allowed_ip_ranges: tuple[str, ...] = _setting(
        "HUB_ALLOWED_IP_RANGES",
        (),
        "Ranges (CIDR) outside the private ones that setup accepts in the hub's ipRanges "
        "(`connector setup --allow-ip-range`).",
        check=_ip_networks,
    )
    hub_ca_file: str | None = _setting(
        "HUB_CA_FILE", None, "PEM bundle of the CAs trusted for the hub (default: system CAs)."
    )
    https_proxy: str | None = _setting(
        "HTTPS_PROXY",
        None,
        "Proxy for calls to the hub (http://host:port, or http://user:password@host:port).",
        secret=True,
    )
    no_proxy: str | None = _setting(
        "NO_PROXY", None, "Comma-separated hosts reached without the proxy."
    )
    hub_connect_timeout: float = _setting(
        "HUB_CONNECT_TIMEOUT",
        10.0,
        "Seconds to wait for a connection to the hub.",
        check=_positive,
    )
    poll_wait_seconds: float = _setting(
        "POLL_WAIT_SECONDS", 25.0, "How long the hub may hold a poll open.", check=_not_negative
    )
    # 8: a drained backlog costs less CPU a command than with 4 (the connector's and the
    # directory's: fewer idle wake-ups), and a slow directory's latency is hidden better
    agent_concurrency: int = _setting(
        "AGENT_CONCURRENCY", 8, "Commands run at once per worker.", check=_positive
    )
    agent_cert_thumbprint: str | None = _setting(
        "AGENT_CERT_THUMBPRINT", None, "Thumbprint of the certificate registered at the hub."
    )
    clock_skew_warning_seconds: float = _setting(
        "CLOCK_SKEW_WARNING_SECONDS",
        30.0,
        "Warn when the hub's clock differs by more.",
        check=_positive,
    )

    # --- web ----------------------------------------------------------------------------------
    client_ip_ranges: tuple[str, ...] = _setting(
        "CLIENT_IP_RANGES", (), "Client address ranges (CIDR) offered Kerberos sign-in."
    )
    trusted_proxies: tuple[str, ...] = _setting(
        "TRUSTED_PROXIES", (), "Proxies (addresses or CIDRs) whose X-Forwarded-For is believed."
    )
    negotiate_user_agents: tuple[str, ...] = _setting(
        "NEGOTIATE_USER_AGENTS",
        (),
        "If set, only browsers whose User-Agent contains one of these are offered Kerberos.",
    )
    kerberos_keytab: str | None = _setting(
        "KERBEROS_KEYTAB", None, "Keytab holding this connector's HTTP/ service key."
    )
    kerberos_realms: tuple[str, ...] = _setting(
        "KERBEROS_REALMS", (), "Client realms accepted (e.g. CORP.EXAMPLE.COM)."
    )
    kerberos_realm_directories: tuple[str, ...] = _setting(
        "KERBEROS_REALM_DIRECTORIES",
        (),
        "Where each realm's users are: REALM=base:<DN>, REALM=sid:<domain SID> or "
        "REALM=upn:<suffix> (a JSON list in the environment); a ticket signs in only an entry "
        "there. The first of KERBEROS_REALMS maps to LDAP_BASE unless listed; other realms "
        "not listed sign nobody in.",
        check=_realm_directories,
    )
    kerberos_service_principal: str | None = _setting(
        "KERBEROS_SERVICE_PRINCIPAL", None, "The HTTP/ principal tickets must be for."
    )
    kerberos_principal_mapping: str = _setting(
        "KERBEROS_PRINCIPAL_MAPPING",
        "strip_realm",
        "strip_realm: alice@REALM -> alice looked up with LDAP_USER_BY_NAME; "
        "upn: looked up with LDAP_USER_BY_UPN.",
        check=_one_of("strip_realm", "upn"),
    )
    kerberos_replay_cache: str | None = _setting(
        "KERBEROS_REPLAY_CACHE", None, "Replay cache shared by the workers (file2:/path)."
    )
    ldap_user_by_upn: str = _setting(
        "LDAP_USER_BY_UPN",
        "(userPrincipalName={0})",
        "Filter that finds a user by UPN.",
        check=_filter_with_placeholder,
    )
    wreply_allowed: tuple[str, ...] = _setting(
        "WREPLY_ALLOWED", (), "Extra URLs a sign-in may return to (besides the realm's)."
    )
    login_failures_per_user: int = _setting(
        "LOGIN_FAILURES_PER_USER",
        5,
        "Form failures per username before throttling.",
        check=_positive,
    )
    login_failures_per_address: int = _setting(
        "LOGIN_FAILURES_PER_ADDRESS",
        20,
        "Form failures per client address before throttling.",
        check=_positive,
    )
    login_throttle_seconds: float = _setting(
        "LOGIN_THROTTLE_SECONDS", 300.0, "Window in which failures are counted.", check=_positive
    )
    kerberos_auth: bool = _setting("KERBEROS_AUTH", False, "Offer Kerberos (Negotiate) sign-in.")
    client_cert_auth: bool = _setting(
        "CLIENT_CERT_AUTH",
        False,
        "Sign in with a client certificate (smart card) when the browser presents one; "
        "see connector/clientcert.py.",
    )
    client_cert_ca_file: str | None = _setting(
        "CLIENT_CERT_CA_FILE",
        None,
        "PEM file of the certificate authorities client certificates must chain to "
        "(required with CLIENT_CERT_AUTH).",
    )
    client_cert_crl: tuple[str, ...] = _setting(
        "CLIENT_CERT_CRL",
        ("cdp",),
        "Where revocation is read: paths of CRL files (PEM or DER), and/or cdp (fetch the "
        "certificate's CRL distribution points, cached until their nextUpdate); off: no check.",
    )
    client_cert_mapping: tuple[str, ...] = _setting(
        "CLIENT_CERT_MAPPING",
        ("upn", "altsecid", "email"),
        "How a certificate names its person, tried in this order: upn (msUPN in the SAN, "
        "looked up with LDAP_USER_BY_UPN), altsecid (AD altSecurityIdentities strong mappings), "
        "email (SAN e-mail with CLIENT_CERT_EMAIL_FILTER), cn (subject CN with "
        "CLIENT_CERT_CN_FILTER).",
        check=lambda v: (
            None
            if v and all(m in ("upn", "altsecid", "email", "cn") for m in v)
            else "a non-empty list of upn, altsecid, email, cn"
        ),
    )
    client_cert_email_filter: str = _setting(
        "CLIENT_CERT_EMAIL_FILTER",
        "(mail={0})",
        "Filter that finds a user by the e-mail address in a certificate.",
        check=_filter_with_placeholder,
    )
    client_cert_cn_filter: str = _setting(
        "CLIENT_CERT_CN_FILTER",
        "(cn={0})",
        "Filter that finds a user by a certificate subject's CN (mapping cn).",
        check=_filter_with_placeholder,
    )
    client_cert_allow_weak_mapping: bool = _setting(
        "CLIENT_CERT_ALLOW_WEAK_MAPPING",
        False,
        "Also accept weak altSecurityIdentities forms (X509:<I>..<S>.., X509:<S>.., "
        "X509:<RFC822>..), which KB5014754 retired.",
    )
    client_cert_headers: tuple[str, ...] = _setting(
        "CLIENT_CERT_HEADERS",
        ("X-SSL-Client-Cert", "X-ARR-ClientCert"),
        "Request headers a TRUSTED_PROXIES proxy passes the client certificate in (nginx: "
        "$ssl_client_escaped_cert; IIS ARR: X-ARR-ClientCert).",
    )
    port: int = _setting("PORT", 4000, "Port of the sign-in endpoint.", check=_positive)
    server_url: str | None = _setting("SERVER_URL", None, "Public URL of the sign-in endpoint.")
    bind: str = _setting(
        "BIND",
        "",
        "Address:port gunicorn listens on (default 0.0.0.0:PORT with SSL_PFX, else "
        "127.0.0.1:PORT).",
    )
    ssl_pfx: str | None = _setting(
        "SSL_PFX",
        None,
        "TLS certificate and key of the sign-in endpoint: a PKCS#12 (.pfx) file's path, or "
        "its content in base64 (the Node connector's form); served by gunicorn over https.",
        secret=True,
    )
    ssl_key_password: str = _setting(
        "SSL_KEY_PASSWORD", "", "Password of the SSL_PFX file (if it has one).", secret=True
    )
    web_workers: int = _setting("WEB_WORKERS", 2, "gunicorn worker processes.", check=_positive)
    web_threads: int = _setting("WEB_THREADS", 8, "Threads per worker.", check=_positive)
    web_cpu_affinity: bool = _setting(
        "WEB_CPU_AFFINITY",
        True,
        "Pin each worker to one CPU, the one fewest workers hold (its threads then hand "
        "Python's lock over on one CPU: less CPU per sign-in); false lets the kernel move them.",
    )

    # --- admin console and operations ------------------------------------------------------
    console_bind: str = _setting(
        "CONSOLE_BIND",
        "",
        "Loopback address:port of the admin console (default 127.0.0.1 and the sign-in port "
        "+ 1, i.e. 127.0.0.1:4001); off disables it.",
        check=_console_bind,
    )
    console_password: str = _setting(
        "CONSOLE_PASSWORD",
        "",
        "Password of the admin console (stored encrypted as CONSOLE_CREDENTIALS); empty: the "
        "one `connector console-password` made (until then, nobody signs in).",
        secret=True,
    )
    run_dir_setting: str = _setting(
        "RUN_DIR",
        "",
        "Directory for the workers' shared runtime files (metrics, status, recent logs); "
        "default: run/ beside config.json.",
    )
    ldap_health_seconds: float = _setting(
        "LDAP_HEALTH_SECONDS",
        30.0,
        "Each worker probes every LDAP server this often for the status page and /metrics "
        "(0: only real traffic tells).",
        check=_not_negative,
    )

    # --- process ------------------------------------------------------------------------------
    log_level: str = _setting(
        "LOG_LEVEL", "info", "Logging level.", check=_one_of("debug", "info", "warning", "error")
    )
    log_format: str = _setting(
        "LOG_FORMAT",
        "text",
        "text (for people) or json (one object per line).",
        check=_one_of(*_LOG_FORMATS),
    )

    # --- where the settings came from (not config keys) -----------------------------------------
    config_path: str | None = dataclasses.field(default=None, metadata={"key": None})
    secret_key_file: str | None = dataclasses.field(default=None, metadata={"key": None})
    ignored_keys: tuple[str, ...] = dataclasses.field(default=(), metadata={"key": None})
    env_keys: tuple[str, ...] = dataclasses.field(default=(), metadata={"key": None})
    #: secrets the file holds in plain text (``seal_config_file`` would encrypt them)
    unsealed_keys: tuple[str, ...] = dataclasses.field(default=(), metadata={"key": None})

    @property
    def state_dir(self) -> Path:
        """The directory holding config.json, the agent's key and certificate, secret.key."""
        return Path(self.config_path or "config.json").absolute().parent

    @property
    def secret_box(self) -> SecretBox:
        """The box that seals this configuration's secrets."""
        return SecretBox(Path(self.secret_key_file or self.state_dir / "secret.key"))

    @property
    def hub_configured(self) -> bool:
        """Whether setup from a ticket has been done."""
        return bool(self.ad_hub and self.connection and self.realm and self.tenant_signing_key)

    @property
    def run_dir(self) -> Path:
        """Where the workers share metrics, status and recent log lines (see ``RUN_DIR``)."""
        return Path(self.run_dir_setting) if self.run_dir_setting else self.state_dir / "run"

    @property
    def main_bind(self) -> str:
        """The sign-in endpoint's listening address.

        ``BIND`` when set; else every address when a certificate is configured (``SSL_PFX``)
        and loopback only when not: plain http is for a TLS proxy on the same host.
        """
        if self.bind:
            return self.bind
        return f"0.0.0.0:{self.port}" if self.ssl_pfx else f"127.0.0.1:{self.port}"

    @property
    def console_address(self) -> tuple[str, int] | None:
        """(host, port) of the admin console's listener; None when it is off."""
        if self.console_bind == "off":
            return None
        if self.console_bind:
            return split_host_port(self.console_bind)
        main = split_host_port(self.main_bind)
        return "127.0.0.1", (main[1] if main else self.port) + 1

    @property
    def groups_base(self) -> str:
        """Base DN for group searches."""
        return self.ldap_base_groups or self.ldap_base

    def directory_problems(self) -> list[str]:
        """What is missing for the directory to be usable (empty when nothing is)."""
        problems = []
        if not self.ldap_urls and not self.ldap_domain:
            problems.append(
                "LDAP_URL: required (the URL of at least one LDAP server), or LDAP_DOMAIN"
            )
        if not self.ldap_base:
            problems.append("LDAP_BASE: required (the base DN, e.g. DC=corp,DC=example,DC=com)")
        if self.ldap_bind_mech == "GSSAPI":
            if not self.ldap_bind_keytab:
                problems.append("LDAP_BIND_KEYTAB: required with LDAP_BIND_MECH=GSSAPI")
            return problems
        if not self.ldap_bind_user:
            problems.append("LDAP_BIND_USER: required (the service account's DN or UPN)")
        if not self.ldap_bind_password:
            problems.append(
                "LDAP_BIND_PASSWORD / LDAP_BIND_CREDENTIALS: required (the service account's "
                "password)"
            )
        return problems

    def require_directory(self) -> None:
        """Raise one :class:`ConfigError` listing everything the directory still needs."""
        problems = self.directory_problems()
        if problems:
            raise ConfigError(problems, self.config_path or "")

    def conflicts(self) -> list[str]:
        """Problems between keys that are each valid alone (empty when there are none)."""
        problems = []
        console, main = self.console_address, split_host_port(self.main_bind)
        if console is not None and main is not None and console[1] == main[1]:
            problems.append(
                f"CONSOLE_BIND: port {console[1]} is the sign-in endpoint's; use another"
            )
        if self.client_cert_auth and not self.client_cert_ca_file:
            problems.append("CLIENT_CERT_CA_FILE: required with CLIENT_CERT_AUTH")
        return problems


def declared() -> list[tuple[dataclasses.Field[Any], str, type | Any]]:
    """Every config key with its field and declared type, in declaration order."""
    hints = typing.get_type_hints(Settings)
    return [
        (f, f.metadata["key"], hints[f.name])
        for f in dataclasses.fields(Settings)
        if f.metadata.get("key")
    ]


KNOWN_KEYS = frozenset(key for _, key, _ in declared()) | {
    "LDAP_URLS",
    "LDAP_BIND_CREDENTIALS",
    "CONSOLE_CREDENTIALS",
}

#: Plain secrets in config.json and the encrypted keys that replace them (see seal_config_file).
SEALED_KEYS = {
    "LDAP_BIND_PASSWORD": "LDAP_BIND_CREDENTIALS",
    "CONSOLE_PASSWORD": "CONSOLE_CREDENTIALS",
}

#: Keys whose values are never shown (the console, import reports).
SECRET_KEYS = frozenset(
    {
        *SEALED_KEYS,
        *SEALED_KEYS.values(),
        "TENANT_SIGNING_KEY",
        "PROVISIONING_TICKET",
        "SSL_PFX",
        "SSL_KEY_PASSWORD",
        "HTTPS_PROXY",
    }
)


# --- the pure steps of loading (connector.settings.loading does the reading) ---------------


def overlay(data: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """``data`` (config.json's values) with every known key that ``environ`` sets over it."""
    merged = dict(data)
    for key in KNOWN_KEYS:
        if key in environ:
            merged[key] = environ[key]
    return merged


def settle_signing_alg(values: dict[str, Any]) -> str | None:
    """Check the tenant key of ``values`` against its algorithm, and fill in a missing one.

    The algorithm stored at setup must match the key's kind; missing, it is derived from the
    key by the same rules (the agent saves it when it starts, see ``provision.pin_signing_alg``).
    A key still sealed (it could not be opened, reported apart) is left alone.

    Returns:
        The problem found (``TENANT_SIGNING_KEY: …``), or None.
    """
    tenant_key = values.get("tenant_signing_key")
    if not isinstance(tenant_key, str) or tenant_key.startswith(PREFIX):
        return None
    try:
        values["tenant_signing_alg"], _ = verifying_key(
            tenant_key, values.get("tenant_signing_alg")
        )
    except TenantKeyError as exc:
        return f"TENANT_SIGNING_KEY: {exc}"
    return None


# --- coercion ------------------------------------------------------------------------------


class _Invalid(Exception):
    pass


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


def _coerce(value: Any, kind: Any) -> Any:
    """Turn a JSON or environment value into the declared type, or raise _Invalid."""
    optional = typing.get_origin(kind) in (typing.Union, types.UnionType)
    if optional:
        if value is None or value == "":
            return None
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise _Invalid(f"expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise _Invalid(f"expected a whole number, got {value!r}")
        try:
            return int(str(value).strip()) if not isinstance(value, int) else value
        except ValueError:
            raise _Invalid(f"expected a whole number, got {value!r}") from None
    if kind is float:
        if isinstance(value, bool):
            raise _Invalid(f"expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise _Invalid(f"expected a number, got {value!r}") from None
    if kind is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise _Invalid(f"expected text, got {type(value).__name__}")
    if typing.get_origin(kind) is tuple:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except ValueError:
                    raise _Invalid("expected a JSON list") from None
            else:
                value = text.replace(",", " ").split()
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise _Invalid("expected a list of text values")
        return tuple(v.strip() for v in value if v.strip())
    raise TypeError(f"unsupported setting type {kind!r}")  # a programming error


def convert(merged: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Coerce and check every known key present in ``merged``: (field values, problems)."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    for field, key, kind in declared():
        if key not in merged:
            continue
        try:
            value = _coerce(merged[key], kind)
        except _Invalid as exc:
            problems.append(f"{key}: {exc}")
            continue
        check = field.metadata.get("check")
        message = check(value) if check else None
        if message:
            problems.append(f"{key}: {message}")
            continue
        values[field.name] = value

    # LDAP_URLS (a list) is a synonym of LDAP_URL with several URLs.
    if "LDAP_URLS" in merged:
        try:
            urls = _coerce(merged["LDAP_URLS"], tuple[str, ...])
        except _Invalid as exc:
            problems.append(f"LDAP_URLS: {exc}")
        else:
            message = _ldap_urls(urls)
            if message:
                problems.append(f"LDAP_URLS: {message}")
            else:
                values["ldap_urls"] = tuple(dict.fromkeys((*values.get("ldap_urls", ()), *urls)))
    return values, problems


def refine(settings: Settings, changes: Mapping[str, Any]) -> Settings:
    """A copy of ``settings`` with some keys changed (plain values, as in config.json).

    Nothing is written: the console tests candidate settings with this before saving them.
    ``LDAP_URL`` / ``LDAP_URLS`` given replace the server list as a whole.

    Raises:
        ConfigError: a changed key is invalid (every problem listed).
    """
    values, problems = convert(changes)
    if problems:
        raise ConfigError(problems, "the values entered")
    return dataclasses.replace(settings, **values)


def describe() -> list[dict[str, Any]]:
    """Every config key with its default and description (for docs and the console)."""
    out = []
    for field, key, _ in declared():
        default = field.default
        out.append(
            {
                "key": key,
                "default": list(default) if isinstance(default, tuple) else default,
                "help": field.metadata["help"],
            }
        )
    return out
