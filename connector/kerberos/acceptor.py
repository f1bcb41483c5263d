"""The acceptor: HTTP Negotiate (SPNEGO/Kerberos) tokens accepted with python-gssapi and a keytab.

:class:`KerberosAcceptor` takes the value of an ``Authorization`` header, runs one GSSAPI
accept step against the connector's keytab and returns an :class:`AcceptResult`: the client
principal, the directory username it maps to, and the mutual-authentication token for
``WWW-Authenticate: Negotiate <token>``. Every way a token can fail -- not Negotiate, bad
base64, too large, NTLM, replayed, for another service, from a realm that is not configured
-- raises one :class:`KerberosRejected` with a short reason and a stable ``code``; the web
layer answers 401 and never 500.

Why python-gssapi, and only its public API
------------------------------------------
The accept is one call, ``gssapi.raw.accept_sec_context(token, credential)``, with MIT's own
SPNEGO mechanism unwrapping the Negotiate token (C, not Python). pyspnego is not used here:

* its public ``spnego.server()`` cannot be given an acceptor credential on Linux ("only when
  running on Windows", its docstring says), so it cannot name a keytab per acceptor nor a
  replay cache; doing so took private keyword arguments (``_gssapi_credential``,
  ``_negotiate_contexts``) and ``spnego._context.GSSMech``;
* its SPNEGO layer is Python (``NegotiateProxy.step``): 0.6 ms of a 0.7 ms accept, where MIT's
  SPNEGO in C costs next to nothing on top of the ticket's decryption;
* behind it, python-gssapi's high-level ``SecurityContext`` *defers* an acceptor error that
  comes with an error token (it returns the token and keeps the error in the private
  ``_last_err``); the raw call raises it at once, a ``GSSError`` carrying ``maj_code``,
  ``min_code`` and ``token``, all public.

Everything used is python-gssapi's documented API: ``gssapi.raw.acquire_cred_from`` (the
credential store extension), ``set_neg_mechs`` (RFC 4178), ``accept_sec_context``,
``display_name``, ``ext_rfc6680.get_name_attribute`` (the PAC, see :mod:`.pac`) and
the ``GSSError`` attributes. ``tests/test_public_apis.py`` fails if any module reaches into a
private name of ``gssapi`` or ``spnego``; so no exact version pin is needed, only the lower
bound where those calls exist (setup.cfg). pyspnego stays a test dependency: the tests' clients.

How the keytab is selected
--------------------------
The acceptor credential is acquired with the GSSAPI *credential store* extension
(``gss_acquire_cred_from`` with ``{"keytab": path, "rcache": …}``, MIT krb5 >= 1.11), so each
acceptor names its own keytab and replay cache and the process environment is not touched:
``KRB5_KTNAME`` is neither read nor set. Without that extension (Heimdal) the acceptor falls
back to setting ``KRB5_KTNAME`` for the whole process once, at construction; a second
acceptor with another keytab is then refused.

The credential is for SPNEGO and Kerberos (both OIDs: some clients send a bare Kerberos
token under ``Negotiate``, some frame it with Microsoft's OID); SPNEGO may negotiate only
Kerberos with it (``set_neg_mechs``), so no NTLM acceptor exists even where gss-ntlmssp is
installed, and NTLM tokens are refused before the library sees them anyway. It is acquired
lazily, once per thread and process (gunicorn ``gthread`` workers; after ``fork`` the child
acquires its own): no GSS object exists before gunicorn forks, and the ~0.1 ms an
acquisition costs is not paid per token. When ``service_principal`` is given, the credential
is for that principal only, so a ticket for any other key in the keytab is refused.

How failures are told apart
---------------------------
MIT's SPNEGO remaps a Kerberos minor status into a number of its own, allocated per process
in the order errors first occur, so ``min_code`` cannot say "replay" or "clock skew". The
error token can: for a failed AP-REQ it holds a KRB-ERROR whose ``error-code`` is the
protocol's own number (34 replay, 37 skew; RFC 4120 §7.5.9), read by
:func:`connector.kerberos.tokens.krb_error_code`. A bare Kerberos token's errors keep MIT's
``krb5`` minor codes, mapped as well; then the GSS major status (defective token, bad
mechanism); anything else is ``rejected``.

The rest of the Kerberos environment is the process's: ``KRB5_CONFIG`` (``rdns = false``,
``dns_canonicalize_hostname = false``) and the default replay cache (``KRB5RCACHEDIR``).
They are the deployment's business, set before the workers start.

Secrets: tokens, keys and keytab contents are never logged.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

import gssapi
import gssapi.raw
import gssapi.raw.exceptions
from gssapi.raw.misc import GSSError

from connector.errors import KerberosRejected, KeytabError
from connector.kerberos.keytab import read_keytab_principals
from connector.kerberos.negotiate import (
    PrincipalMapping,
    decode_negotiate_header,
    map_principal,
    split_principal,
)
from connector.kerberos.pac import LogonInfo, logon_info_of
from connector.kerberos.tokens import der_length_ok, is_ntlm_token, krb_error_code, spnego_init_ok

log = logging.getLogger(__name__)

_SPNEGO = gssapi.OID.from_int_seq("1.3.6.1.5.5.2")
_KRB5 = gssapi.OID.from_int_seq("1.2.840.113554.1.2.2")
_KRB5_MS = gssapi.OID.from_int_seq("1.2.840.48018.1.2.2")  # Microsoft's alias of _KRB5

_WRONG_SERVICE = "ticket is for another service (no matching key in keytab)"
_KVNO = "ticket key version not in keytab (keytab outdated?)"
_UNDECRYPTABLE = "ticket could not be decrypted (wrong or outdated service key)"

#: KRB-ERROR ``error-code`` (RFC 4120 §7.5.9) -> (code, reason)
_KRB_ERRORS: dict[int, tuple[str, str]] = {
    31: ("bad_key", _UNDECRYPTABLE),  # KRB_AP_ERR_BAD_INTEGRITY
    32: ("expired", "ticket expired"),  # KRB_AP_ERR_TKT_EXPIRED
    33: ("not_yet_valid", "ticket not yet valid (clock skew?)"),  # KRB_AP_ERR_TKT_NYV
    34: ("replay", "token was already used (replay)"),  # KRB_AP_ERR_REPEAT
    35: ("wrong_service", _WRONG_SERVICE),  # KRB_AP_ERR_NOT_US
    36: ("wrong_service", "ticket and authenticator do not match"),  # KRB_AP_ERR_BADMATCH
    37: ("clock_skew", "clock skew too great between client and server"),  # KRB_AP_ERR_SKEW
    41: ("bad_key", _UNDECRYPTABLE),  # KRB_AP_ERR_MODIFIED
    44: ("wrong_service", _KVNO),  # KRB_AP_ERR_BADKEYVER
    45: ("wrong_service", _WRONG_SERVICE),  # KRB_AP_ERR_NOKEY
}
# MIT krb5 minor status codes (krb5.h, ERROR_TABLE_BASE_krb5 = -1765328384): a bare Kerberos
# token's errors. The protocol errors are the table's first 128 entries; two more from the
# keytab table (KRB5_KT_NOTFOUND, KRB5_KT_KVNONOTFOUND).
_BASE = -1765328384
_MINOR_REASONS: dict[int, tuple[str, str]] = {
    **{_BASE + number: outcome for number, outcome in _KRB_ERRORS.items()},
    _BASE + 181: ("wrong_service", _WRONG_SERVICE),
    _BASE + 230: ("wrong_service", _KVNO),
}
_GSS_S_DEFECTIVE_TOKEN = 9 << 16


@dataclasses.dataclass(frozen=True)
class AcceptResult:
    """A completed Negotiate exchange.

    Attributes:
        principal: the client principal as Kerberos gives it (``alice@EXAMPLE.TEST``).
        username: the name to look up in the directory (see ``principal_mapping``).
        realm: the client's realm (one of the configured realms).
        mutual_token: base64 token for ``WWW-Authenticate: Negotiate <token>``, or None.
        logon_info: the SIDs of the ticket's PAC (verified by the GSS library), when the
            acceptor was asked to read it and the ticket has one (see :mod:`.pac`).
    """

    principal: str
    username: str
    realm: str
    mutual_token: str | None
    logon_info: LogonInfo | None = dataclasses.field(default=None, repr=False)

    @property
    def www_authenticate(self) -> str:
        """The ``WWW-Authenticate`` value for the successful response."""
        return f"Negotiate {self.mutual_token}" if self.mutual_token else "Negotiate"


# --------------------------------------------------------------------------------------
# the acceptor
# --------------------------------------------------------------------------------------


def _cred_store_available() -> bool:
    return hasattr(gssapi.raw, "acquire_cred_from")


_ENV_LOCK = threading.Lock()


class KerberosAcceptor:
    """Accepts SPNEGO tokens against one keytab. Thread-safe; see the module docstring.

    Args:
        keytab: path of the keytab (``FILE:`` prefix allowed). It should hold only this
            service's principals: without ``service_principal`` any key in it is accepted.
        realms: accepted client realms, compared case-sensitively (Kerberos realms are).
        principal_mapping: ``strip_realm`` (``alice@REALM`` -> ``alice``) or ``upn``.
        service_principal: e.g. ``HTTP/localhost`` or ``HTTP/sso.corp.example@CORP``; the
            keytab must hold it, and only tickets for it are accepted.
        replay_cache: replay cache name (``file2:/var/lib/connector/krb5.rcache2``); default:
            libkrb5's (``KRB5RCACHEDIR``, else ``/var/tmp``). Share it between workers.
        read_pac: read the ticket's PAC logon info into :attr:`AcceptResult.logon_info`.

    Raises:
        KeytabError: the keytab is unusable (see :meth:`check_keytab`).
        ValueError: ``realms`` is empty or ``principal_mapping`` is unknown.
    """

    def __init__(
        self,
        keytab: str,
        realms: Sequence[str],
        principal_mapping: PrincipalMapping = "strip_realm",
        service_principal: str | None = None,
        replay_cache: str | None = None,
        *,
        read_pac: bool = False,
    ) -> None:
        self.read_pac = read_pac
        if isinstance(realms, str):
            realms = [realms]
        self.realms: frozenset[str] = frozenset(r.strip() for r in realms if r and r.strip())
        if not self.realms:
            raise ValueError("at least one Kerberos realm must be configured")
        if principal_mapping not in get_args(PrincipalMapping):
            raise ValueError(
                f"principal_mapping must be one of {get_args(PrincipalMapping)}, "
                f"not {principal_mapping!r}"
            )
        self.principal_mapping: PrincipalMapping = principal_mapping
        path = keytab.removeprefix("FILE:")
        self.keytab = str(Path(path).resolve()) if path else path
        self.service_principal = service_principal
        self.replay_cache = replay_cache
        self._acceptor_name: str | None = None
        self._local = threading.local()
        self.check_keytab()
        if not _cred_store_available():
            self._claim_process_keytab()

    def __repr__(self) -> str:
        return (
            f"KerberosAcceptor(keytab={self.keytab!r}, realms={sorted(self.realms)!r}, "
            f"principal_mapping={self.principal_mapping!r}, "
            f"service_principal={self.service_principal!r})"
        )

    # ---- keytab --------------------------------------------------------------------
    def check_keytab(self) -> list[str]:
        """The principals in the keytab; checks it is usable for this acceptor.

        Raises:
            KeytabError: missing, unreadable, empty, no ``HTTP/`` principal, or (when
                ``service_principal`` is set) that principal is absent.
        """
        principals = read_keytab_principals(self.keytab)
        if not any(p.startswith("HTTP/") for p in principals):
            raise KeytabError(
                self.keytab,
                f"no HTTP/ service principal in it (has: {', '.join(principals)})",
            )
        if self.service_principal:
            wanted = self.service_principal
            if "@" in wanted:
                matches = [p for p in principals if p == wanted]
            else:
                matches = [p for p in principals if p.rsplit("@", 1)[0] == wanted]
            if not matches:
                raise KeytabError(
                    self.keytab,
                    f"does not hold {wanted} (has: {', '.join(principals)})",
                )
            # one match: the credential is bound to it; several realms: any of them
            self._acceptor_name = matches[0] if len(matches) == 1 else None
        return principals

    def _claim_process_keytab(self) -> None:
        """Fallback without the credential store: KRB5_KTNAME, once, for the process."""
        wanted = f"FILE:{self.keytab}"
        with _ENV_LOCK:
            current = os.environ.get("KRB5_KTNAME")
            if current and current != wanted:
                raise KeytabError(
                    self.keytab,
                    "this GSSAPI has no credential store, and KRB5_KTNAME already names "
                    f"{current}: one keytab per process",
                )
            os.environ["KRB5_KTNAME"] = wanted

    def _acquire(self) -> Any:
        """A raw acceptor credential for SPNEGO and Kerberos from this keytab."""
        name = None
        if self._acceptor_name:
            name = gssapi.raw.import_name(
                self._acceptor_name.encode(), gssapi.NameType.kerberos_principal
            )
        mechs = [_SPNEGO, _KRB5, _KRB5_MS]
        if _cred_store_available():
            # bytes, never str: python-gssapi 1.12 encodes str keys/values to temporaries
            # whose buffers are gone when libgssapi reads them (GIL released), so under
            # concurrency the store is silently ignored and /etc/krb5.keytab is used
            store: dict[bytes | str, bytes | str] = {b"keytab": f"FILE:{self.keytab}".encode()}
            if self.replay_cache:
                store[b"rcache"] = self.replay_cache.encode()
            creds = gssapi.raw.acquire_cred_from(store, name=name, usage="accept", mechs=mechs)
        else:
            creds = gssapi.raw.acquire_cred(name, usage="accept", mechs=mechs)
        if hasattr(gssapi.raw, "set_neg_mechs"):  # RFC 4178 extension (MIT, Heimdal)
            gssapi.raw.set_neg_mechs(creds.creds, [_KRB5])
        return creds.creds

    def _credentials(self) -> Any:
        """This thread's acceptor credential, acquired on first use (and after fork)."""
        local = self._local
        pid = os.getpid()
        if getattr(local, "pid", None) != pid:
            try:
                local.cred = self._acquire()
            except GSSError as e:
                log.error(
                    "kerberos: cannot acquire acceptor credentials from %s: %s",
                    self.keytab,
                    type(e).__name__,
                    extra={"keytab": self.keytab, "error": str(e)},
                )
                raise KerberosRejected(
                    "the server cannot use its Kerberos keytab", "server"
                ) from None
            local.pid = pid
        return local.cred

    # ---- accept --------------------------------------------------------------------
    def accept(self, authorization: str | None) -> AcceptResult:
        """Accept one ``Authorization: Negotiate <token>`` value.

        Raises:
            KerberosRejected: for every failure, with a short ``reason`` and a ``code``.
        """
        try:
            result = self._accept(authorization)
        except KerberosRejected as e:
            log.info(
                "kerberos: rejected (%s): %s",
                e.code,
                e.reason,
                extra={"code": e.code},
            )
            raise
        # DEBUG: the sign-in's audit line (connector.web.signin) records who signed in
        log.debug(
            "kerberos: accepted %s as %s",
            result.principal,
            result.username,
            extra={"principal": result.principal, "username": result.username},
        )
        return result

    def _accept(self, authorization: str | None) -> AcceptResult:
        token = decode_negotiate_header(authorization)
        if is_ntlm_token(token):
            raise KerberosRejected("NTLM is not supported; a Kerberos ticket is required", "ntlm")
        if not der_length_ok(token):
            raise KerberosRejected("Negotiate token is truncated or malformed", "malformed")
        if not spnego_init_ok(token):
            raise KerberosRejected("Negotiate token is malformed", "malformed")
        cred = self._credentials()
        try:
            accepted = gssapi.raw.accept_sec_context(token, cred)
        except GSSError as e:
            raise _rejection(e) from None
        if accepted.more_steps:
            raise KerberosRejected(
                "Negotiate needs more than one round trip (not supported)", "multi_leg"
            )
        name = accepted.initiator_name
        try:
            principal = gssapi.raw.display_name(name, name_type=False).name.decode("utf-8")
        except (GSSError, UnicodeDecodeError):
            raise KerberosRejected(
                "no readable client principal in the token", "no_principal"
            ) from None
        if not principal:
            raise KerberosRejected("no client principal in the token", "no_principal")
        info = logon_info_of(name) if self.read_pac else None
        return self._result(principal, accepted.token, info)

    def _result(
        self, principal: str, out: bytes | None, info: LogonInfo | None = None
    ) -> AcceptResult:
        name, realm = split_principal(principal)
        if realm is None or realm not in self.realms:
            raise KerberosRejected(f"realm {realm or '(none)'} is not accepted here", "realm")
        if not name:
            raise KerberosRejected("empty client name", "no_principal")
        return AcceptResult(
            principal=principal,
            username=map_principal(principal, self.principal_mapping),
            realm=realm,
            mutual_token=base64.b64encode(out).decode("ascii") if out else None,
            logon_info=info,
        )


def _rejection(error: Exception) -> KerberosRejected:
    """Translate a failed accept into one KerberosRejected (see the module docstring)."""
    number = krb_error_code(getattr(error, "token", None))
    if number in _KRB_ERRORS:
        return KerberosRejected(_KRB_ERRORS[number][1], _KRB_ERRORS[number][0])
    minor = getattr(error, "min_code", None)
    if isinstance(minor, int):
        signed = minor - (1 << 32) if minor >= 1 << 31 else minor
        if signed in _MINOR_REASONS:
            code, reason = _MINOR_REASONS[signed]
            return KerberosRejected(reason, code)
    if isinstance(error, gssapi.raw.exceptions.BadMechanismError):
        return KerberosRejected("no Kerberos mechanism offered in the token", "no_mechanism")
    if getattr(error, "maj_code", None) == _GSS_S_DEFECTIVE_TOKEN:
        return KerberosRejected("Negotiate token is malformed", "malformed")
    log.debug(
        "kerberos: unclassified accept failure: %s (krb error %s)", type(error).__name__, number
    )
    return KerberosRejected("Kerberos token rejected", "rejected")
