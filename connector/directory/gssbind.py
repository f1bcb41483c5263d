"""The service account without a password: a SASL GSSAPI bind with keys from a keytab.

``LDAP_BIND_MECH=GSSAPI`` with ``LDAP_BIND_KEYTAB``: credentials are acquired from the keytab
with python-gssapi into a credential cache of this process alone (``MEMORY:``, named after the
process and this object: no ``kinit``, nothing shared with any other program), and acquired
again before they expire. The bind itself is Cyrus SASL's GSSAPI mechanism (python-ldap),
pointed at that cache for the calling thread only (``gss_krb5_ccache_name``). On ``ldap://``
it requires a SASL security layer (integrity at least: LDAP signing; no StartTLS, servers
refuse both); on ``ldaps://`` it asks for none, as Windows DCs require ("sign or seal are not
allowed if TLS is used"), which Samba accepts only with ``ldap server require strong auth =
allow_sasl_over_tls`` (its default refuses GSSAPI over TLS entirely: said so in the error).
User password checks stay simple binds over TLS.

Channel binding (TLS ``tls-server-end-point`` in the GSSAPI exchange) is libldap's
``LDAP_OPT_X_SASL_CBINDING``, which python-ldap 3.4 refuses as an unknown option: it is set,
process-wide, by libldap's own configuration only (``SASL_CBINDING`` in ``ldap.conf`` or the
``LDAPSASL_CBINDING`` environment variable), never here (docs/security.md).
"""

from __future__ import annotations

import logging
import os
import threading
import time

import gssapi
import ldap
import ldap.sasl
from gssapi.raw import ext_krb5
from gssapi.raw.misc import GSSError

from connector.directory.connections import Connection
from connector.errors import DirectoryUnavailable

log = logging.getLogger(__name__)

#: credentials with less than this left are acquired again before a bind
RENEW_BEFORE_SECONDS = 600


class KeytabBinder:
    """Binds service connections with SASL GSSAPI as a keytab's principal.

    Args:
        keytab: the keytab's path (``FILE:`` allowed).
        principal: the client principal in it (``svc@REALM``); None: the keytab's first.
    """

    def __init__(self, keytab: str, principal: str | None = None) -> None:
        self.keytab = keytab.removeprefix("FILE:")
        self.principal = principal
        self.ccache = f"MEMORY:connector-ldap-{os.getpid()}-{id(self)}"
        self._lock = threading.Lock()
        self._expires: float = 0.0
        self.acquired = 0  # how many times credentials were acquired (diagnostics)

    def __repr__(self) -> str:
        return f"KeytabBinder(keytab={self.keytab!r}, principal={self.principal!r})"

    def _ensure(self) -> None:
        """Acquire credentials from the keytab into the private cache when none are fresh."""
        with self._lock:
            if time.monotonic() < self._expires - RENEW_BEFORE_SECONDS:
                return
            name = (
                gssapi.Name(self.principal, gssapi.NameType.kerberos_principal)
                if self.principal
                else None
            )
            store: dict[bytes | str, bytes | str] = {
                b"client_keytab": self.keytab.encode(),
                b"ccache": self.ccache.encode(),
            }
            creds = gssapi.Credentials(name=name, usage="initiate", store=store)
            # MIT fetches the ticket lazily: a context towards ourselves would be needed to
            # force it; reading the lifetime makes the library get the initial ticket now
            lifetime = creds.lifetime or 0
            self._expires = time.monotonic() + lifetime
            self.acquired += 1
            log.info(
                "service account credentials from keytab %s for %s (%d s)",
                self.keytab,
                creds.name,
                lifetime,
            )

    def bind(self, conn: Connection) -> None:
        """Bind ``conn`` with SASL GSSAPI as the keytab's principal.

        Raises:
            ldap.LDAPError: the server refused the bind (callers translate it).
            DirectoryUnavailable: no credentials could be had from the keytab.
        """
        try:
            self._ensure()
        except GSSError as exc:
            raise DirectoryUnavailable(
                f"no Kerberos credentials from LDAP_BIND_KEYTAB {self.keytab} for "
                f"{self.principal or 'its first principal'}: {exc.gen_message()}"
            ) from exc
        lo = conn.ldap
        lo.set_option(ldap.OPT_X_SASL_NOCANON, 1)  # the URL's host names the service
        if conn.tls:
            # inside TLS (ldaps://) no SASL layer: Windows and Samba both refuse "sign or
            # seal" there ("not allowed if TLS is used"); TLS protects the connection
            lo.set_option(ldap.OPT_X_SASL_SSF_MAX, 0)
        else:
            # integrity at least (LDAP signing) on plain ldap://
            lo.set_option(ldap.OPT_X_SASL_SSF_MIN, 1)
        ext_krb5.krb5_ccache_name(self.ccache.encode())
        try:
            lo.sasl_interactive_bind_s("", ldap.sasl.gssapi())
        except ldap.STRONG_AUTH_REQUIRED as exc:
            if not conn.tls:
                raise
            # Samba's default "ldap server require strong auth = yes": a GSSAPI bind must
            # sign or seal, which it refuses inside TLS: no GSSAPI bind over ldaps:// at all
            info = exc.args[0].get("info", "") if exc.args else ""
            raise ldap.STRONG_AUTH_REQUIRED(
                {
                    "desc": "Strong(er) authentication required",
                    "info": f"{info} the DC wants a SASL layer (signing), which it refuses "
                    "inside TLS: use an ldap:// URL with LDAP_BIND_MECH=GSSAPI (the bind "
                    "is signed) or, on Samba, 'ldap server require strong auth = "
                    "allow_sasl_over_tls'".lstrip(),
                }
            ) from exc
        finally:
            # back to the default (None), not to the name the library returned: that is the
            # default resolved now, and pinning it would outlive a later KRB5CCNAME
            ext_krb5.krb5_ccache_name(None)
