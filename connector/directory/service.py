"""The directory service: find users, check passwords, resolve groups, search, change passwords.

This is what the channel, the web sign-in and the CLI call. It knows nothing of HTTP. Searches
run on a pool of service-account connections; password checks bind on a separate pool, so a
user's bind never changes the identity of a search connection. Policy (whether an expired
password or a required change still counts as a login) is decided in :meth:`Directory._policy`,
and only there.
"""

from __future__ import annotations

import calendar
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import ldap
from ldap.controls.ppolicy import PasswordPolicyControl
from ldap.filter import escape_filter_chars

from connector import errors
from connector.directory import ldaperrors, passwords
from connector.directory.connections import Connection, Pool, ServerSet, log_cleartext
from connector.directory.groups import STRATEGIES, GroupCache, GroupStrategy
from connector.directory.gssbind import KeytabBinder
from connector.directory.names import Lookup, NameResolver, parse, unescape
from connector.directory.search import Entry, ranged, schema_attribute_names, search
from connector.directory.sids import SidNames
from connector.kerberos.pac import LogonInfo
from connector.profiles import (
    PROFILE_ATTRIBUTES,
    decode_sid,
    entry_to_raw_profile,
    load_profile_mapper,
)
from connector.realms import dn_key as _dn_key
from connector.realms import realm_scopes
from connector.settings import Settings

log = logging.getLogger(__name__)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
AD_CAPABILITY_OID = "1.2.840.113556.1.4.800"
#: What a Kerberos sign-in checks, since no bind tells (operational ones are not in ``*``),
#: and what marks an account no password reset may touch.
STATE_ATTRS = [
    "userAccountControl",
    "msDS-User-Account-Control-Computed",
    "accountExpires",
    "lockoutTime",
    "pwdAccountLockedTime",
    "pwdPolicySubentry",
    "adminCount",
    "userPrincipalName",
    "sAMAccountName",
    *passwords.EXPIRY_ATTRS,
]
#: What the group strategies read on the user's entry.
GROUP_ATTRS = ["memberOf", "primaryGroupID", "objectGUID", "objectSid"]
MAX_USERNAME_LENGTH = 1024
MAX_PASSWORD_LENGTH = 4096
#: The entry a decoy bind names (see Directory._decoy_bind): nobody is called this.
DECOY_RDN = "cn=connector-decoy-no-such-user"


class Directory:
    """The organisation's directory, as the connector uses it.

    Args:
        settings: validated settings; the LDAP keys must be present.

    Raises:
        ConfigError: LDAP settings are missing, or the profile mapper cannot be loaded.
    """

    def __init__(self, settings: Settings) -> None:
        settings.require_directory()
        self.settings = settings
        try:
            self.mapper, declared = load_profile_mapper(settings.profile_mapper)
        except ValueError as exc:
            raise errors.ConfigError(
                [f"PROFILE_MAPPER: {exc}"], settings.config_path or ""
            ) from exc
        log_cleartext(settings)
        # an allow list, never "*": what reaches the mapper (and the hub) is what is named
        self.profile_attributes = _names(PROFILE_ATTRIBUTES, declared, settings.group_properties)
        self.user_attributes = list(_names(self.profile_attributes, GROUP_ATTRS, STATE_ATTRS))
        self._profile_lower = frozenset(
            a.partition(";")[0].lower() for a in self.profile_attributes
        )
        self._profile_names: dict[str, bool] = {}
        self.realm_scopes = realm_scopes(
            settings.kerberos_realm_directories, settings.kerberos_realms, settings.ldap_base
        )
        unmapped = [r for r in settings.kerberos_realms if r not in self.realm_scopes]
        if unmapped and settings.kerberos_auth:
            log.warning(
                "Kerberos realms %s sign nobody in: not in KERBEROS_REALM_DIRECTORIES",
                ", ".join(unmapped),
            )
        self._gss = (
            KeytabBinder(settings.ldap_bind_keytab, settings.ldap_bind_principal)
            if settings.ldap_bind_mech == "GSSAPI" and settings.ldap_bind_keytab
            else None
        )
        self.servers = ServerSet(settings)
        acquire = (
            settings.ldap_connect_timeout
            * (len(settings.ldap_urls) + (3 if settings.ldap_domain else 0))
            + settings.ldap_operation_timeout
        )
        self.search_pool = Pool(
            "search",
            self.servers,
            settings.ldap_pool_size,
            self._service_bind,
            acquire,
            signed=self._gss is not None,
        )
        self.bind_pool = Pool("bind", self.servers, settings.ldap_bind_pool_size, None, acquire)
        self.cache = GroupCache(settings.groups_cache_seconds, settings.groups_cache_max_entries)
        self.expiry = passwords.ExpiryReader(self)
        self.sids = SidNames(
            settings, list(dict.fromkeys([settings.group_property, *settings.group_properties]))
        )
        self._strategy: GroupStrategy | None = None
        self._is_ad: bool | None = None
        #: the root DSE's subschemaSubentry (read with the capabilities)
        self._subschema: str | None = None
        #: what a user search asks a server other than AD for (see _user_attrs)
        self._defined_user_attributes: list[str] | None = None
        self._lock = threading.Lock()
        self.names = NameResolver(
            settings,
            self.is_active_directory,
            lambda read: self._run(read, "read the forest's names"),
        )

    # --- plumbing ---------------------------------------------------------------------------

    def _service_bind(self, conn: Connection) -> None:
        if self._gss is not None:
            self._gss.bind(conn)
            return
        conn.ldap.simple_bind_s(self.settings.ldap_bind_user, self.settings.ldap_bind_password)

    def close(self) -> None:
        """Close every pooled connection."""
        self.search_pool.close()
        self.bind_pool.close()

    def is_active_directory(self) -> bool:
        """Whether the server is Active Directory (from its root DSE), asked once."""
        if self._is_ad is None:

            def read(conn: Connection) -> bool:
                entries = search(
                    conn,
                    self.settings,
                    "",
                    "(objectClass=*)",
                    ["supportedCapabilities", "subschemaSubentry"],
                    scope=ldap.SCOPE_BASE,
                )
                caps = entries[0].texts("supportedCapabilities") if entries else []
                self._subschema = entries[0].first("subschemaSubentry") if entries else None
                return AD_CAPABILITY_OID in caps

            self._is_ad = self._run(read, "read the root DSE")
        return self._is_ad

    @property
    def strategy(self) -> GroupStrategy:
        """The group strategy in force (``auto`` decided from the server on first use)."""
        if self._strategy is None:
            name = self.settings.groups_strategy
            if name == "auto":
                name = "ad" if self.is_active_directory() else "member"
            with self._lock:
                if self._strategy is None:
                    self._strategy = STRATEGIES[name](
                        self.settings, ranged_values=self.is_active_directory()
                    )
                    log.info("group strategy: %s", name)
        return self._strategy

    def group_queries(self) -> int:
        """LDAP searches sent for groups so far: the group strategy's and the PAC SIDs'."""
        strategy = self._strategy
        return self.sids.queries + (strategy.queries if strategy is not None else 0)

    def _run(self, operation: Any, what: str, **ctx: Any) -> Any:
        """Run a search-pool operation, translating what python-ldap raises.

        Raises:
            DirectoryUnavailable: no server could carry it out.
            DirectoryFailure: a server answered with an unexpected error.
        """
        try:
            return self.search_pool.run(operation)
        except ldap.LDAPError as exc:
            raise errors.DirectoryFailure(
                f"could not {what}: {ldaperrors.describe(exc)}", **ctx
            ) from exc

    def _read(
        self, dn: str, attrs: list[str], what: str, flt: str = "(objectClass=*)"
    ) -> list[Entry]:
        """The entry at ``dn`` (a base read on the search pool), if it matches ``flt``.

        Raises:
            DirectoryUnavailable: no server could carry it out.
            DirectoryFailure: the server refused (no such entry, no access).
        """

        def read(conn: Connection) -> list[Entry]:
            return search(conn, self.settings, dn, flt, attrs, scope=ldap.SCOPE_BASE)

        found: list[Entry] = self._run(read, what, dn=dn)
        return found

    def ping(self) -> None:
        """Check that a search connection works (reads the root DSE).

        Raises:
            DirectoryUnavailable: no server answered.
        """

        def read(conn: Connection) -> None:
            search(conn, self.settings, "", "(objectClass=*)", ["1.1"], scope=ldap.SCOPE_BASE)

        self._run(read, "read the root DSE")

    # --- users ------------------------------------------------------------------------------

    def user_filter(self, username: str, *, escaped: bool = False, by_upn: bool = False) -> str:
        """The filter that finds a user, the value escaped unless the caller already did."""
        value = username if escaped else escape_filter_chars(username)
        template = self.settings.ldap_user_by_upn if by_upn else self.settings.ldap_user_by_name
        return template.replace("{0}", value)

    def lookup(
        self, username: str, *, escaped: bool = False, by_upn: bool = False, typed: bool = True
    ) -> Lookup:
        """How ``username`` is found: a Kerberos UPN by ``LDAP_USER_BY_UPN``; a typed name by
        its form (``alice``, ``DOMAIN\\alice``, ``alice@suffix``, an e-mail: see
        :mod:`connector.directory.names`); a name mapped from a principal (``typed=False``)
        by ``LDAP_USER_BY_NAME`` alone.

        Raises:
            WrongUsername: the name can find nobody (a down-level domain the forest lacks).
            DirectoryUnavailable: the forest's names could not be read.
        """
        if by_upn or not typed:
            return Lookup(self.user_filter(username, escaped=escaped, by_upn=by_upn))
        name = parse(unescape(username) if escaped else username)
        if name.kind == "plain":  # as configured, the hub's escaping kept
            return Lookup(self.user_filter(username, escaped=escaped))
        found = self.names.lookup(name)
        if found is None:
            raise errors.WrongUsername("no such user", username=username)
        return found

    def find_user(
        self, username: str, *, escaped: bool = False, by_upn: bool = False, typed: bool = True
    ) -> Entry:
        """The one entry a login name finds (see :meth:`lookup`).

        Raises:
            WrongUsername: nobody (or more than one entry) matches, or the name is unusable.
            DirectoryUnavailable: the directory could not be asked.
        """
        if not username or len(username) > MAX_USERNAME_LENGTH or _CONTROL.search(username):
            # no login name holds control characters; some servers cut a value at NUL
            raise errors.WrongUsername("no such user", username=username[:64] or None)
        how = self.lookup(username, escaped=escaped, by_upn=by_upn, typed=typed)
        # a down-level name may match in several domains: enough to find the one in its own
        limit = 2 if how.within is None else 50
        attrs = self._user_attrs()

        def find(conn: Connection) -> list[Entry]:
            return search(
                conn,
                self.settings,
                self.settings.ldap_base,
                how.filter,
                attrs,
                limit=limit,
            )

        try:
            found = [e for e in self._run(find, "find the user", username=username) if how.holds(e)]
        except errors.DirectoryFailure as exc:
            if isinstance(exc.__cause__, ldap.FILTER_ERROR):
                log.info("user filter rejected for %r: treated as no such user", username)
                raise errors.WrongUsername("no such user", username=username) from None
            raise
        if not found:
            raise errors.WrongUsername("no such user", username=username)
        if len(found) > 1:
            log.warning("username %r matches several entries; refused", username)
            raise errors.WrongUsername("the username matches several users", username=username)
        entry: Entry = found[0]
        return entry

    def groups(self, user: Entry) -> list[Any]:
        """The user's groups, flattened, as the profile carries them (cached by DN)."""
        cached = self.cache.get(user.dn)
        if cached is not None:
            return list(cached)
        strategy = self.strategy
        found = self._run(lambda conn: strategy.resolve(conn, user), "resolve groups", dn=user.dn)
        names = self._group_names(found)
        self.cache.put(user.dn, tuple(names))
        return names

    def _group_names(self, found: list[Any]) -> list[Any]:
        """Groups as the profile carries them (``GROUP_PROPERTIES`` or ``GROUP_PROPERTY``)."""
        props = self.settings.group_properties
        if props:
            return [{p: g.first(p) for p in props if g.first(p) is not None} for g in found]
        return sorted(
            {n for g in found if (n := g.first(self.settings.group_property)) is not None},
            key=str.lower,
        )

    def pac_groups(self, user: Entry, info: LogonInfo) -> list[Any] | None:
        """The user's groups from their ticket's PAC, named through the SID cache; None when
        the PAC is of someone else than the entry found (the caller then asks LDAP).

        Raises:
            DirectoryUnavailable: SIDs not cached could not be looked up.
        """
        raw = user.first_bytes("objectSid")
        if raw is None or decode_sid(raw) != info.user_sid:
            log.warning(
                "PAC of %s does not name the entry found (dn=%r): groups from LDAP",
                info.user_sid,
                user.dn,
            )
            return None
        sids = [
            s
            for s in info.all_group_sids
            if self.settings.groups_include_primary or s != info.primary_group_sid
        ]
        found, unknown = self.sids.cached(sids)
        if unknown:
            found += self._run(
                lambda conn: self.sids.lookup(conn, unknown), "name PAC groups", dn=user.dn
            )
        return self._group_names(found)

    def profile(
        self, user: Entry, *, with_groups: bool = True, groups: list[Any] | None = None
    ) -> dict[str, Any]:
        """The profile sent to the hub for an entry (through the configured mapper); with
        ``groups`` given, those rather than the ones the group strategy finds."""
        if groups is None and with_groups:
            groups = self.groups(user)
        attrs = {name: values for name, values in user.attrs.items() if self._in_profile(name)}
        raw = entry_to_raw_profile(user.dn, attrs, groups=groups)
        profile = self.mapper(raw)
        expires_at = self.expiry.expires_at(user)
        if expires_at is not None and "password_expires_at" not in profile:
            profile["password_expires_at"] = expires_at
        return profile

    def _in_profile(self, name: str) -> bool:
        """Whether an attribute the server named (``sn``, ``jpegPhoto;binary``…) is one the
        profile carries; remembered per spelling (a directory uses a few dozen)."""
        known = self._profile_names.get(name)
        if known is None:
            known = name.partition(";")[0].lower() in self._profile_lower
            if len(self._profile_names) < 4096:
                self._profile_names[name] = known
        return known

    def get_profile(
        self, username: str, *, escaped: bool = False, by_upn: bool = False
    ) -> dict[str, Any]:
        """Look a user up and return their profile, without checking any password.

        Raises:
            WrongUsername: nobody matches.
            DirectoryUnavailable: the directory could not be asked.
        """
        return self.profile(self.find_user(username, escaped=escaped, by_upn=by_upn))

    def kerberos_profile(
        self,
        username: str,
        realm: str,
        *,
        by_upn: bool = False,
        logon_info: LogonInfo | None = None,
    ) -> dict[str, Any]:
        """The profile for a Kerberos sign-in of ``username`` (mapped from a principal of
        ``realm``): the entry found must lie in that realm's part of the directory
        (``KERBEROS_REALM_DIRECTORIES``), and its account must be usable now: no bind
        checks it, and a service ticket outlives a disabled or locked account by hours.
        With ``GROUPS_SOURCE=pac`` the groups come from ``logon_info`` (the ticket's PAC)
        when there is one for this entry, else from LDAP.

        Raises:
            KerberosRejected: the entry is not one the realm may sign in as (``realm_mismatch``).
            AccountDisabled, AccountLocked, AccountExpired: the account may not sign in now,
                whatever ticket the browser still holds (see :func:`account_state`).
            WrongUsername: nobody matches.
            DirectoryUnavailable: the directory could not be asked.
        """
        user = self.find_user(username, by_upn=by_upn, typed=False)
        self._check_realm(user, username, realm)
        state = account_state(user, time.time(), self._ppolicy_lockout_seconds(user))
        if state is not None:
            kind, message, code = state
            log.info(
                "kerberos sign-in refused username=%r dn=%r outcome=%s code=%s",
                username,
                user.dn,
                kind.wire_name,
                code,
            )
            raise kind(message, username=username, dn=user.dn, code=code)
        groups = None
        if self.settings.groups_source == "pac" and logon_info is not None:
            groups = self.pac_groups(user, logon_info)
        return self.profile(user, groups=groups)

    def _user_attrs(self) -> list[str]:
        """What a user search asks for: on Active Directory, memberOf by range (to the end);
        elsewhere the names the server's schema defines (see :meth:`_defined`)."""
        if self.is_active_directory():
            return ranged(self.user_attributes)
        if self._defined_user_attributes is None:
            self._defined_user_attributes = self._defined(self.user_attributes)
        return self._defined_user_attributes

    def _defined(self, names: list[str]) -> list[str]:
        """``names`` less the ones the server's schema does not define, read once: no entry
        can hold those, and each costs the server a lookup in every search (on OpenLDAP the
        twenty-odd AD names of the profile cost slapd about 13 us a user lookup). All of
        ``names`` when the schema cannot be read.

        Raises:
            DirectoryUnavailable: the directory could not be asked.
        """
        where = self._subschema
        if not where:
            return list(names)
        try:
            found = self._read(
                where, ["attributeTypes"], "read the schema", "(objectClass=subschema)"
            )
        except errors.DirectoryFailure as exc:
            log.info("schema at %r not read (%s): every user attribute asked for", where, exc)
            return list(names)
        defined = schema_attribute_names(found[0].values("attributeTypes")) if found else set()
        if not defined:
            return list(names)
        kept = [n for n in names if n.partition(";")[0].lower() in defined]
        log.debug(
            "user attributes not in the server's schema, not asked for: %s",
            ", ".join(n for n in names if n not in kept) or "none",
        )
        return kept

    def find_entries(self, flt: str) -> list[Entry]:
        """Up to two user entries under ``LDAP_BASE`` matching ``flt`` (values already escaped):
        enough to tell one from several.

        Raises:
            DirectoryUnavailable: the directory could not be asked.
            DirectoryFailure: the server refused the search.
        """

        def find(conn: Connection) -> list[Entry]:
            return search(
                conn, self.settings, self.settings.ldap_base, flt, self._user_attrs(), limit=2
            )

        found: list[Entry] = self._run(find, "find the user")
        return found

    def usable_profile(self, user: Entry, method: str) -> dict[str, Any]:
        """The profile of an entry signing in without a password (a client certificate):
        its account must be usable now, as for Kerberos (see :func:`account_state`).

        Raises:
            AccountDisabled, AccountLocked, AccountExpired: the account may not sign in now.
            DirectoryUnavailable: the directory could not be asked.
        """
        state = account_state(user, time.time(), self._ppolicy_lockout_seconds(user))
        if state is not None:
            kind, message, code = state
            log.info(
                "%s sign-in refused dn=%r outcome=%s code=%s", method, user.dn, kind.wire_name, code
            )
            raise kind(message, dn=user.dn, code=code)
        return self.profile(user)

    def _ppolicy_lockout_seconds(self, user: Entry) -> float | None:
        """The ``pwdLockoutDuration`` of a locked entry's own ppolicy (``pwdPolicySubentry``),
        or None: not locked, no policy of its own, or the policy cannot be read."""
        policy = user.first("pwdPolicySubentry")
        if not policy or not user.first("pwdAccountLockedTime"):
            return None
        try:
            found = self._read(policy, ["pwdLockoutDuration"], "read the password policy")
        except errors.DirectoryFailure:
            return None
        return float(_int(found[0].first("pwdLockoutDuration")) or 0) if found else None

    def _check_realm(self, user: Entry, username: str, realm: str) -> None:
        scopes = self.realm_scopes.get(realm, ())
        sid, upn = user.first_bytes("objectSid"), user.first("userPrincipalName")
        if any(scope.holds(user.dn, sid, upn) for scope in scopes):
            return
        where = " or ".join(str(s) for s in scopes) or "nowhere (not in KERBEROS_REALM_DIRECTORIES)"
        log.warning(
            "kerberos sign-in refused: username=%r dn=%r is not in realm %s's directory (%s)",
            username,
            user.dn,
            realm,
            where,
        )
        raise errors.KerberosRejected(
            f"your realm {realm} may not sign in as this directory's user {username}",
            "realm_mismatch",
        )

    # --- passwords --------------------------------------------------------------------------

    def _check_password(self, user: Entry, username: str, password: str) -> int | None:
        """Bind as the user on the bind pool; raise the classified outcome if refused.

        Returns the seconds before the password expires when the server said so on the bind
        (OpenLDAP ppolicy's ``timeBeforeExpiration``, sent within ``pwdExpireWarning``).
        """
        ctx = {"username": username, "dn": user.dn}

        def bind(conn: Connection) -> int | None:
            try:
                msgid = conn.ldap.simple_bind(
                    user.dn, password, serverctrls=[PasswordPolicyControl()]
                )
                _, _, _, ctrls = conn.ldap.result3(
                    msgid,
                    all=1,
                    timeout=self.settings.ldap_operation_timeout,
                    resp_ctrl_classes=ldaperrors.BIND_RESPONSE_CONTROLS,
                )
            except ldaperrors.CONNECTION_ERRORS:
                raise
            except ldap.LDAPError as exc:
                raise ldaperrors.bind_failure(exc, server=conn.url, **ctx) from None
            state = ldaperrors.bind_success_policy(ctrls, **ctx)
            if state is not None:
                raise state
            return ldaperrors.time_before_expiration(ctrls)

        seconds: int | None = self.bind_pool.run(bind)
        return seconds

    def _decoy_bind(self, username: str, password: str) -> None:
        """For a name that finds nobody, the bind a wrong password costs (against a DN that
        does not exist): the two take the same LDAP operations, so the same time."""
        base = self.settings.ldap_base
        decoy = Entry(f"{DECOY_RDN},{base}" if base else DECOY_RDN, {})
        try:
            self._check_password(decoy, username, password)
        except errors.ConnectorError:
            pass  # the expected refusal, or an outage the caller learns of soon enough

    def _policy(self, outcome: errors.AuthError) -> bool:
        """Whether an account state still counts as a successful login (the one policy place)."""
        if isinstance(outcome, errors.PasswordExpired):
            return self.settings.allow_password_expired
        if isinstance(outcome, errors.PasswordChangeRequired):
            return self.settings.allow_password_change_required
        return False

    def authenticate(
        self,
        username: str,
        password: str,
        *,
        escaped: bool = False,
        before_bind: Callable[[Entry], None] | None = None,
    ) -> dict[str, Any]:
        """Check a username and password; return the profile with its groups.

        ``before_bind`` sees the entry found before its password is tried, and may raise to
        stop there (the sign-in form's throttle, keyed on the entry, does).

        Raises:
            AuthError: the precise reason the login is refused (WrongPassword, AccountLocked…).
            DirectoryUnavailable: the directory could not be asked.
        """
        started = time.monotonic()
        if not password:
            log.info("login refused: empty password username=%r", username)
            raise errors.WrongPassword("an empty password is never accepted", username=username)
        if len(password) > MAX_PASSWORD_LENGTH:
            raise errors.WrongPassword("wrong username or password", username=username)
        try:
            user = self.find_user(username, escaped=escaped)
        except errors.WrongUsername:
            self._decoy_bind(username, password)
            raise
        if before_bind is not None:
            before_bind(user)
        expires_in = None
        try:
            expires_in = self._check_password(user, username, password)
        except errors.AuthError as outcome:
            if not self._policy(outcome):
                log.info(
                    "login refused username=%r dn=%r outcome=%s code=%s",
                    username,
                    user.dn,
                    outcome.wire_name,
                    outcome.context.get("code"),
                )
                raise
            log.info(
                "login allowed by policy username=%r dn=%r state=%s",
                username,
                user.dn,
                outcome.wire_name,
            )
        profile = self.profile(user)
        if expires_in is not None and "password_expires_at" not in profile:
            # the entry's policy could not tell (the server's default policy is not readable)
            profile["password_expires_at"] = passwords.iso_time(time.time() + expires_in)
        log.debug(
            "login ok username=%r dn=%r in %.1f ms",
            username,
            user.dn,
            (time.monotonic() - started) * 1000,
        )
        return profile

    def change_password(
        self, username: str, new_password: str, old_password: str | None = None
    ) -> dict[str, Any]:
        """Set a user's password (write-back) and return their profile.

        With ``old_password`` the change is made as the user; without it, as the service
        account: an administrative reset, only with ``ALLOW_ADMIN_PASSWORD_RESET``, and never
        of an account with ``adminCount=1``. The service account's own password is never
        changed (it would lock the connector out). Active Directory needs TLS for this.

        Raises:
            InsufficientAccessRights: write-back or resets are off, the account is protected,
                or the directory refused the write.
            PasswordComplexity: the new password is empty, holds NUL, is too long, or does not
                meet the policy.
            WrongUsername, WrongPassword: the user or the old password is wrong (an empty one,
                or one holding NUL, is wrong without any bind: an empty bind is anonymous).
            DirectoryUnavailable: the directory could not be asked.
        """
        self._check_change(username, new_password, old_password)
        user = self.find_user(username)
        ctx = {"username": username, "dn": user.dn}
        if self._is_service_account(user):
            raise errors.InsufficientAccessRights(
                "the service account's password is never changed through the connector", **ctx
            )
        if old_password is None and user.first("adminCount") == "1":
            raise errors.InsufficientAccessRights(
                "privileged accounts (adminCount=1) are never reset through the connector", **ctx
            )
        if old_password is not None:
            passwords.change_as_user(self, user, old_password, new_password, username)
            return self.profile(user)
        is_ad = self.is_active_directory()

        def reset(conn: Connection) -> None:
            if is_ad and not conn.tls:
                raise errors.InsufficientAccessRights(
                    "Active Directory accepts password changes only over TLS: use ldaps:// or "
                    "LDAP_STARTTLS",
                    **ctx,
                )
            try:
                if is_ad:
                    mods = [(ldap.MOD_REPLACE, "unicodePwd", [passwords.ad_password(new_password)])]
                    conn.ldap.modify_ext_s(user.dn, mods)
                else:
                    conn.ldap.passwd_s(user.dn, None, new_password)
            except ldaperrors.CONNECTION_ERRORS:
                raise
            except ldap.LDAPError as exc:
                raise ldaperrors.write_failure(exc, **ctx) from None

        self.search_pool.run(reset)
        log.info("password changed username=%r dn=%r by=service account", username, user.dn)
        self.cache.clear()
        return self.profile(user)

    def _check_change(self, username: str, new_password: str, old_password: str | None) -> None:
        """Refuse a password change that must not reach the directory at all."""
        passwords.require_write_back(self.settings.enable_write_back, username=username)
        if old_password is None and not self.settings.allow_admin_password_reset:
            raise errors.InsufficientAccessRights(
                "administrative password resets are disabled (ALLOW_ADMIN_PASSWORD_RESET is "
                "off): give the old password",
                username=username,
            )
        if old_password is not None and (
            not old_password or "\x00" in old_password or len(old_password) > MAX_PASSWORD_LENGTH
        ):
            raise errors.WrongPassword("the current password is wrong", username=username)
        if not new_password:
            raise errors.PasswordComplexity(
                "an empty password is never accepted", username=username
            )
        if "\x00" in new_password or len(new_password) > MAX_PASSWORD_LENGTH:
            raise errors.PasswordComplexity(
                f"a password holds no NUL and at most {MAX_PASSWORD_LENGTH} characters",
                username=username,
            )

    def _is_service_account(self, user: Entry) -> bool:
        """Whether ``user`` is ``LDAP_BIND_USER``'s entry (a DN, a UPN or DOMAIN\\name)."""
        bind = self.settings.ldap_bind_user.strip()
        try:
            if _dn_key(bind) == _dn_key(user.dn):
                return True
        except ValueError:
            pass
        upn, sam = user.first("userPrincipalName"), user.first("sAMAccountName")
        if "\\" in bind and sam:
            return bind.rpartition("\\")[2].lower() == sam.lower()
        return bool(upn) and bind.lower() == str(upn).lower()

    # --- listing ----------------------------------------------------------------------------

    def search_users(
        self, text: str, limit: int | None = None, *, escaped: bool = False
    ) -> list[dict[str, Any]]:
        """Users matching ``LDAP_SEARCH_QUERY`` (or all users for an empty text), up to a limit.

        Raises:
            DirectoryUnavailable: the directory could not be asked.
        """
        cap = self.settings.ldap_search_limit
        limit = min(limit, cap) if limit and limit > 0 else cap
        text = (text or "").strip()
        if _CONTROL.search(text):
            return []
        if not text or text == "*":
            flt = self.settings.ldap_search_all_query
        else:
            value = text if escaped else escape_filter_chars(text)
            flt = self.settings.ldap_search_query.replace("{0}", value)

        def find(conn: Connection) -> list[Entry]:
            return search(
                conn, self.settings, self.settings.ldap_base, flt, self._user_attrs(), limit=limit
            )

        try:
            found = self._run(find, "search users")
        except errors.DirectoryFailure as exc:
            if isinstance(exc.__cause__, ldap.FILTER_ERROR):
                return []
            raise
        return [self.profile(e, with_groups=False) for e in found]

    def list_groups(self) -> list[Any]:
        """Every group (``LDAP_SEARCH_LIST_GROUPS_QUERY``), named by ``GROUP_PROPERTY``.

        Raises:
            DirectoryUnavailable: the directory could not be asked.
        """
        props = list(dict.fromkeys([self.settings.group_property, *self.settings.group_properties]))

        def find(conn: Connection) -> list[Entry]:
            return search(
                conn,
                self.settings,
                self.settings.groups_base,
                self.settings.ldap_search_list_groups_query,
                props,
            )

        found = self._run(find, "list groups")
        if self.settings.group_properties:
            return [
                {p: e.first(p) for p in self.settings.group_properties if e.first(p) is not None}
                for e in found
            ]
        return sorted(
            {n for e in found if (n := e.first(self.settings.group_property))}, key=str.lower
        )


def _names(*lists: Any) -> tuple[str, ...]:
    """Attribute names from several lists, each once (compared case-insensitively)."""
    out: dict[str, str] = {}
    for names in lists:
        for name in names:
            out.setdefault(name.lower(), name)
    return tuple(out.values())


# userAccountControl / msDS-User-Account-Control-Computed flags
_UF_ACCOUNTDISABLE = 0x2
_UF_LOCKOUT = 0x10
_AD_NEVER = (0, 0x7FFFFFFFFFFFFFFF)
_FILETIME_EPOCH = 11644473600  # seconds from 1601-01-01 to 1970-01-01
_PPOLICY_LOCKED_BY_ADMIN = "000001010000Z"


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _generalized_time(text: str) -> float | None:
    """Seconds since the epoch of an LDAP GeneralizedTime in UTC (``20261205160721Z``,
    fractions allowed), or None."""
    try:
        return calendar.timegm(time.strptime(text[:14], "%Y%m%d%H%M%S"))
    except ValueError:
        return None


def account_state(
    user: Entry, now: float, lockout_seconds: float | None = None
) -> tuple[type[errors.AuthError], str, str] | None:
    """Why an account may not sign in without a password check: (error kind, message, code),
    or None when nothing says so.

    Active Directory: ``userAccountControl`` disabled; locked by
    ``msDS-User-Account-Control-Computed`` (which knows when a lockout lapsed), else by a
    non-zero ``lockoutTime``; ``accountExpires`` in the past. OpenLDAP ppolicy: a
    ``pwdAccountLockedTime``; ``000001010000Z`` (locked by an administrator) for good, another
    time for ``lockout_seconds`` (the entry's own policy's ``pwdLockoutDuration``; 0 is for
    good). Without a policy of its own the lockout duration cannot be read over LDAP (the
    server's default policy is not published), so the lock counts until a bind clears it.
    """
    uac = _int(user.first("userAccountControl")) or 0
    if uac & _UF_ACCOUNTDISABLE:
        return errors.AccountDisabled, "the account is disabled", "uac:disabled"
    computed = _int(user.first("msDS-User-Account-Control-Computed"))
    if computed is not None:
        locked = bool((computed | uac) & _UF_LOCKOUT)
    else:
        locked = bool(uac & _UF_LOCKOUT) or (_int(user.first("lockoutTime")) or 0) > 0
    if locked:
        return errors.AccountLocked, "the account is locked", "uac:locked"
    expires = _int(user.first("accountExpires"))
    if expires is not None and expires not in _AD_NEVER:
        if expires / 10_000_000 - _FILETIME_EPOCH <= now:
            return errors.AccountExpired, "the account has expired", "accountExpires"
    locked_at = user.first("pwdAccountLockedTime")
    if locked_at:
        since = _generalized_time(locked_at) if locked_at != _PPOLICY_LOCKED_BY_ADMIN else None
        if lockout_seconds and since is not None and since + lockout_seconds <= now:
            return None  # the lockout has lapsed; the next bind removes the attribute
        return errors.AccountLocked, "the account is locked", "ppolicy:locked"
    return None
