"""config.json contents pointing the connector at the real test servers."""

from __future__ import annotations

from typing import Any


def openldap_config(slapd: Any, **overrides: Any) -> dict[str, Any]:
    """The test OpenLDAP over StartTLS with its own CA; users found by uid."""
    cfg: dict[str, Any] = {
        "LDAP_URL": slapd.uri,
        "LDAP_CA_FILE": slapd.ca_file,
        "LDAP_STARTTLS": True,
        "LDAP_BASE": slapd.base,
        "LDAP_BIND_USER": slapd.bind_dn,
        "LDAP_BIND_PASSWORD": slapd.bind_pw,
        "LDAP_USER_BY_NAME": "(uid={0})",
        "LDAP_SEARCH_QUERY": "(&(objectClass=inetOrgPerson)(|(uid={0}*)(cn={0}*)))",
        "LDAP_SEARCH_ALL_QUERY": "(objectClass=inetOrgPerson)",
        "LDAP_SEARCH_LIST_GROUPS_QUERY": "(objectClass=groupOfNames)",
        "LDAP_CONNECT_TIMEOUT": 2,
        "LDAP_OPERATION_TIMEOUT": 5,
    }
    if "LDAP_URLS" in overrides:
        del cfg["LDAP_URL"]
    cfg.update(overrides)
    return cfg


def ad_config(ad: Any, **overrides: Any) -> dict[str, Any]:
    """The test Samba AD DC over StartTLS with its CA; the unprivileged svc-proxy account."""
    cfg: dict[str, Any] = {
        "LDAP_URL": ad.uri,
        "LDAP_CA_FILE": ad.ca_file,
        "LDAP_STARTTLS": True,
        "LDAP_BASE": ad.base,
        "LDAP_BIND_USER": ad.bind_dn,
        "LDAP_BIND_PASSWORD": ad.bind_pw,
        "LDAP_CONNECT_TIMEOUT": 2,
        "LDAP_OPERATION_TIMEOUT": 5,
    }
    if "LDAP_URLS" in overrides:
        del cfg["LDAP_URL"]
    cfg.update(overrides)
    return cfg


def mit_kerberos(kdc: Any) -> dict[str, Any]:
    """The settings of Kerberos sign-in against the MIT KDC fixture (``HTTP/localhost``)."""
    return {
        "KERBEROS_KEYTAB": kdc.keytab,
        "KERBEROS_REALMS": [kdc.realm],
        "KERBEROS_SERVICE_PRINCIPAL": "HTTP/localhost",
    }
