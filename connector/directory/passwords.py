"""A person's own password: changing it as the user, and when it expires.

The change is a *change*, never a reset: the directory checks the old password itself.

* Active Directory: ``unicodePwd`` delete-old / add-new, over TLS only (AD refuses it in clear).
  Made on a connection bound as the user when the user can bind; a user whose password has
  expired or must change (bind sub-codes 532 / 773) cannot bind, so then it is made on the
  service account's connection, where AD grants the *Change Password* right to everyone: the
  old password in the delete is what authorises it, exactly as for the user.
* OpenLDAP: the Password Modify extended operation (RFC 3062) bound as the user. ppolicy lets a
  user with ``pwdReset`` bind for this one operation; an expired password binds only while the
  policy grants grace sign-ins (``pwdGraceAuthNLimit``). Without grace, nobody but an
  administrator can change it: :data:`NO_GRACE` says so.

Expiry: Active Directory computes ``msDS-UserPasswordExpiryTimeComputed``; OpenLDAP gives
``pwdChangedTime`` on the entry and ``pwdMaxAge`` on the user's policy (``pwdPolicySubentry``;
the server's default policy is not readable over LDAP, so without a policy of its own the
expiry is unknown and left out).
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import ldap
from ldap.controls.ppolicy import PasswordPolicyControl

from connector import errors
from connector.directory import ldaperrors
from connector.directory.connections import Connection
from connector.directory.search import Entry, search

if TYPE_CHECKING:
    from connector.directory.service import Directory

log = logging.getLogger(__name__)

#: operational attributes the expiry is computed from (never in ``*``: asked for by name)
EXPIRY_ATTRS = ["msDS-UserPasswordExpiryTimeComputed", "pwdChangedTime", "msDS-ResultantPSO"]
#: the error code of an OpenLDAP bind refused because the password expired without grace
NO_GRACE = "ppolicy:0"
_UF_DONT_EXPIRE_PASSWD = 0x10000
_FILETIME_EPOCH = 11644473600
_FILETIME_NEVER = 0x7FFFFFFFFFFFFFFF
_POLICY_SECONDS = 60.0  # how long a policy's numbers are remembered
#: ppolicy entries; AD password settings objects (readable by few) and the domain's defaults
_POLICY_NUMBERS = ("pwdMaxAge", "pwdMinLength", "msDS-MinimumPasswordLength", "minPwdLength")


def require_write_back(enabled: bool, **context: Any) -> None:
    """The one check that password changes are on (``ENABLE_WRITE_BACK``), for every caller.

    Raises:
        InsufficientAccessRights: they are off (``context``: the username, when known).
    """
    if not enabled:
        raise errors.InsufficientAccessRights(
            "password changes are disabled (ENABLE_WRITE_BACK is off)", **context
        )


def can_change_at_sign_in(outcome: errors.AuthError) -> bool:
    """Whether a refused bind proves the old password right *and* the user may change it.

    AD answers 532 / 773 and OpenLDAP ``passwordExpired`` / ``changeAfterReset`` only for the
    right password; an OpenLDAP expiry without grace sign-ins leaves the user no bind to
    change it with.
    """
    if not isinstance(outcome, errors.PasswordExpired | errors.PasswordChangeRequired):
        return False
    return bool(outcome.context.get("dn")) and outcome.context.get("code") != NO_GRACE


def change_as_user(directory: Directory, user: Entry, old: str, new: str, username: str) -> None:
    """Change ``user``'s password from ``old`` to ``new``, as the user.

    Raises:
        WrongPassword: the old password is wrong.
        PasswordComplexity: the policy refused the new one (``context["reason"]``:
            ``too_short``, ``too_simple``, ``in_history``, ``too_young`` or ``policy``).
        InsufficientAccessRights: Active Directory without TLS, or the directory refused.
        DirectoryUnavailable: the directory could not be asked.
    """
    ctx = {"username": username, "dn": user.dn}
    is_ad = directory.is_active_directory()
    timeout = directory.settings.ldap_operation_timeout
    # what can be judged here is refused before any bind (on OpenLDAP each bind of an expired
    # password spends a grace sign-in; AD's refusal does not say which rule the password broke)
    if not is_ad and new == old:
        raise errors.PasswordComplexity(
            "the new password is the current one", reason="in_history", **ctx
        )
    shortest = directory.expiry.ad_min_length(user) if is_ad else directory.expiry.min_length(user)
    if shortest and len(new) < shortest:
        raise errors.PasswordComplexity(
            f"the new password is shorter than the policy's {shortest} characters",
            reason="too_short",
            **ctx,
        )

    def need_tls(conn: Connection) -> None:
        if is_ad and not conn.tls:
            raise errors.InsufficientAccessRights(
                "Active Directory accepts password changes only over TLS: use ldaps:// or "
                "LDAP_STARTTLS",
                **ctx,
            )

    def bind(conn: Connection) -> errors.AuthError | None:
        """Bind as the user; the account state the bind reported, None if it was clean."""
        try:
            msgid = conn.ldap.simple_bind(user.dn, old, serverctrls=[PasswordPolicyControl()])
            _, _, _, ctrls = conn.ldap.result3(
                msgid,
                all=1,
                timeout=timeout,
                resp_ctrl_classes=ldaperrors.BIND_RESPONSE_CONTROLS,
            )
        except ldaperrors.CONNECTION_ERRORS:
            raise
        except ldap.LDAPError as exc:
            refused = ldaperrors.bind_failure(exc, server=conn.url, **ctx)
            if isinstance(refused, errors.AuthError):
                return refused
            raise refused from None
        return ldaperrors.bind_success_policy(ctrls, **ctx)

    def modify(conn: Connection) -> None:
        try:
            if is_ad:
                mods = [
                    (ldap.MOD_DELETE, "unicodePwd", [ad_password(old)]),
                    (ldap.MOD_ADD, "unicodePwd", [ad_password(new)]),
                ]
                conn.ldap.modify_ext_s(user.dn, mods)
            else:
                conn.ldap.passwd_s(user.dn, old, new, serverctrls=[PasswordPolicyControl()])
        except ldaperrors.CONNECTION_ERRORS:
            raise
        except ldap.LDAPError as exc:
            raise ldaperrors.write_failure(exc, **ctx) from None

    def as_user(conn: Connection) -> bool:
        """Change on a connection bound as the user; False: AD would not let the user bind."""
        need_tls(conn)
        state = bind(conn)
        if state is not None and not isinstance(
            state, errors.PasswordExpired | errors.PasswordChangeRequired
        ):
            raise state
        if state is not None and not can_change_at_sign_in(state):
            raise state  # OpenLDAP, expired without grace: no bind to change it with
        if isinstance(state, errors.PasswordExpired | errors.PasswordChangeRequired) and is_ad:
            return False
        modify(conn)
        return True

    if not directory.bind_pool.run(as_user):

        def on_service(conn: Connection) -> None:
            need_tls(conn)
            modify(conn)

        directory.search_pool.run(on_service)
    log.info("password changed by the user username=%r dn=%r", username, user.dn)
    directory.cache.clear()


def ad_password(password: str) -> bytes:
    """The ``unicodePwd`` encoding: the password in double quotes, UTF-16-LE."""
    return f'"{password}"'.encode("utf-16-le")


def user_by_dn(directory: Directory, dn: str) -> Entry:
    """The entry at ``dn``, with the attributes a profile needs (on Active Directory its
    memberOf asked for by range and read to the end, as by every other user read).

    Raises:
        WrongUsername: there is no entry at ``dn`` (any more).
        DirectoryUnavailable: the directory could not be asked.
    """

    def read(conn: Connection) -> list[Entry]:
        return search(
            conn,
            directory.settings,
            dn,
            "(objectClass=*)",
            directory._user_attrs(),  # on AD, memberOf by range, as every user read
            scope=ldap.SCOPE_BASE,
        )

    try:
        found = directory._run(read, "read the user", dn=dn)
    except errors.DirectoryFailure as exc:
        if isinstance(exc.__cause__, ldap.NO_SUCH_OBJECT):
            raise errors.WrongUsername("the user is gone", dn=dn) from None
        raise
    if not found:
        raise errors.WrongUsername("the user is gone", dn=dn)
    entry: Entry = found[0]
    return entry


def iso_time(epoch: float) -> str:
    """An epoch time as ISO 8601 UTC, to the second (``2026-12-05T16:53:00Z``)."""
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ExpiryReader:
    """When a user's password expires, from their entry (and, on OpenLDAP, their policy)."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self._policies: dict[str, tuple[float, dict[str, int | None]]] = {}
        self._default_nc: tuple[float, str | None] | None = None
        self._lock = threading.Lock()

    def expires_at(self, user: Entry) -> str | None:
        """ISO 8601 UTC time the password expires, or None: never, or not known."""
        uac = _int(user.first("userAccountControl")) or 0
        if uac & _UF_DONT_EXPIRE_PASSWD:
            return None
        computed = _int(user.first("msDS-UserPasswordExpiryTimeComputed"))
        if computed is not None:
            if computed in (0, _FILETIME_NEVER):
                return None  # 0: must change at next logon (no date); max: never
            return iso_time(computed / 10_000_000 - _FILETIME_EPOCH)
        changed = user.first("pwdChangedTime")
        policy = user.first("pwdPolicySubentry")
        if not changed or not policy:
            return None
        max_age = self._policy_max_age(policy, time.monotonic())
        changed_at = _generalized_time(changed)
        if not max_age or changed_at is None:
            return None
        return iso_time(changed_at + max_age)

    def min_length(self, user: Entry) -> int | None:
        """The ``pwdMinLength`` of an OpenLDAP user's own policy, if it can be read."""
        policy = user.first("pwdPolicySubentry")
        return self._policy(policy, time.monotonic()).get("pwdMinLength") if policy else None

    def ad_min_length(self, user: Entry) -> int | None:
        """The shortest password Active Directory takes for ``user``: its password settings
        object's (``msDS-ResultantPSO``) when readable, else the domain's ``minPwdLength`` when
        no PSO applies; None when unknown (a PSO the service account may not read)."""
        now = time.monotonic()
        pso = user.first("msDS-ResultantPSO")
        if pso:
            return self._policy(pso, now).get("msDS-MinimumPasswordLength")
        domain = self._domain(now)
        return self._policy(domain, now).get("minPwdLength") if domain else None

    def _domain(self, now: float) -> str | None:
        """The domain's DN (the root DSE's ``defaultNamingContext``)."""
        if self._default_nc is None or now - self._default_nc[0] >= _POLICY_SECONDS:

            def read(conn: Connection) -> list[Entry]:
                return search(
                    conn,
                    self.directory.settings,
                    "",
                    "(objectClass=*)",
                    ["defaultNamingContext"],
                    scope=ldap.SCOPE_BASE,
                )

            try:
                found = self.directory._run(read, "read the root DSE")
            except errors.DirectoryFailure:
                return None
            self._default_nc = (now, found[0].first("defaultNamingContext") if found else None)
        return self._default_nc[1]

    def _policy_max_age(self, policy: str, now: float) -> int | None:
        return self._policy(policy, now).get("pwdMaxAge")

    def _policy(self, policy: str, now: float) -> dict[str, int | None]:
        """The numbers of a ppolicy entry this module uses (remembered a minute)."""
        with self._lock:
            cached = self._policies.get(policy)
        if cached is not None and now - cached[0] < _POLICY_SECONDS:
            return cached[1]

        def read(conn: Connection) -> list[Entry]:
            return search(
                conn,
                self.directory.settings,
                policy,
                "(objectClass=*)",
                list(_POLICY_NUMBERS),
                scope=ldap.SCOPE_BASE,
            )

        try:
            found = self.directory._run(read, "read the password policy", dn=policy)
        except errors.DirectoryFailure as exc:
            log.info("password policy %r not read: %s", policy, exc)
            return {}
        values = {n: _int(found[0].first(n)) if found else None for n in _POLICY_NUMBERS}
        with self._lock:
            self._policies[policy] = (now, values)
        return values


def days_left(expires_at: str | None, now: float | None = None) -> float | None:
    """Days until an ISO 8601 UTC time (negative once past), or None."""
    if not expires_at:
        return None
    try:
        when = datetime.datetime.strptime(expires_at, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    epoch = when.replace(tzinfo=datetime.UTC).timestamp()
    return (epoch - (time.time() if now is None else now)) / 86400


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _generalized_time(text: str) -> float | None:
    try:
        when = datetime.datetime.strptime(text[:14], "%Y%m%d%H%M%S")
    except ValueError:
        return None
    return when.replace(tzinfo=datetime.UTC).timestamp()
