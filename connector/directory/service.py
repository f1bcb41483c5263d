"""The directory service: find users, check passwords, resolve groups, search, change passwords.

This is what the channel, the web sign-in and the CLI call. It knows nothing of HTTP. Searches
run on a pool of service-account connections; password checks bind on a separate pool, so a
user's bind never changes the identity of a search connection. Policy (whether an expired
password or a required change still counts as a login) is decided in :meth:`Directory._policy`,
and only there.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

import ldap
from ldap.controls.ppolicy import PasswordPolicyControl
from ldap.filter import escape_filter_chars

from connector import errors
from connector.directory import ldaperrors
from connector.directory.connections import Connection, Pool, ServerSet
from connector.directory.groups import STRATEGIES, GroupCache, GroupStrategy
from connector.directory.search import Entry, search
from connector.profiles import entry_to_raw_profile, load_mapper
from connector.settings import Settings

log = logging.getLogger(__name__)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
AD_CAPABILITY_OID = "1.2.840.113556.1.4.800"
USER_ATTRS = ["*", "memberOf", "primaryGroupID", "objectGUID", "objectSid"]
MAX_USERNAME_LENGTH = 1024
MAX_PASSWORD_LENGTH = 4096


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
            self.mapper = load_mapper(settings.profile_mapper)
        except ValueError as exc:
            raise errors.ConfigError(
                [f"PROFILE_MAPPER: {exc}"], settings.config_path or ""
            ) from exc
        self.servers = ServerSet(settings)
        acquire = (
            settings.ldap_connect_timeout * len(settings.ldap_urls)
            + settings.ldap_operation_timeout
        )
        self.search_pool = Pool(
            "search", self.servers, settings.ldap_pool_size, self._service_bind, acquire
        )
        self.bind_pool = Pool("bind", self.servers, settings.ldap_bind_pool_size, None, acquire)
        self.cache = GroupCache(settings.groups_cache_seconds, settings.groups_cache_max_entries)
        self._strategy: GroupStrategy | None = None
        self._is_ad: bool | None = None
        self._lock = threading.Lock()

    # --- plumbing ---------------------------------------------------------------------------

    def _service_bind(self, conn: Connection) -> None:
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
                    ["supportedCapabilities"],
                    scope=ldap.SCOPE_BASE,
                )
                caps = entries[0].texts("supportedCapabilities") if entries else []
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
                    self._strategy = STRATEGIES[name](self.settings)
                    log.info("group strategy: %s", name)
        return self._strategy

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

    def find_user(self, username: str, *, escaped: bool = False, by_upn: bool = False) -> Entry:
        """The one entry that ``LDAP_USER_BY_NAME`` finds for ``username``.

        Raises:
            WrongUsername: nobody (or more than one entry) matches, or the name is unusable.
            DirectoryUnavailable: the directory could not be asked.
        """
        if not username or len(username) > MAX_USERNAME_LENGTH or _CONTROL.search(username):
            # no login name holds control characters; some servers cut a value at NUL
            raise errors.WrongUsername("no such user", username=username[:64] or None)
        flt = self.user_filter(username, escaped=escaped, by_upn=by_upn)

        def find(conn: Connection) -> list[Entry]:
            return search(conn, self.settings, self.settings.ldap_base, flt, USER_ATTRS, limit=2)

        try:
            found = self._run(find, "find the user", username=username)
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
        props = self.settings.group_properties
        if props:
            names: list[Any] = [
                {p: g.first(p) for p in props if g.first(p) is not None} for g in found
            ]
        else:
            names = sorted(
                {n for g in found if (n := g.first(self.settings.group_property)) is not None},
                key=str.lower,
            )
        self.cache.put(user.dn, tuple(names))
        return names

    def profile(self, user: Entry, *, with_groups: bool = True) -> dict[str, Any]:
        """The profile sent to the hub for an entry (through the configured mapper)."""
        groups = self.groups(user) if with_groups else None
        raw = entry_to_raw_profile(user.dn, user.attrs, groups=groups)
        return self.mapper(raw)

    def get_profile(
        self, username: str, *, escaped: bool = False, by_upn: bool = False
    ) -> dict[str, Any]:
        """Look a user up and return their profile, without checking any password.

        Raises:
            WrongUsername: nobody matches.
            DirectoryUnavailable: the directory could not be asked.
        """
        return self.profile(self.find_user(username, escaped=escaped, by_upn=by_upn))

    # --- passwords --------------------------------------------------------------------------

    def _check_password(self, user: Entry, username: str, password: str) -> None:
        """Bind as the user on the bind pool; raise the classified outcome if refused."""
        ctx = {"username": username, "dn": user.dn}

        def bind(conn: Connection) -> None:
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

        self.bind_pool.run(bind)

    def _policy(self, outcome: errors.AuthError) -> bool:
        """Whether an account state still counts as a successful login (the one policy place)."""
        if isinstance(outcome, errors.PasswordExpired):
            return self.settings.allow_password_expired
        if isinstance(outcome, errors.PasswordChangeRequired):
            return self.settings.allow_password_change_required
        return False

    def authenticate(
        self, username: str, password: str, *, escaped: bool = False
    ) -> dict[str, Any]:
        """Check a username and password; return the profile with its groups.

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
        user = self.find_user(username, escaped=escaped)
        try:
            self._check_password(user, username, password)
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
        account (an administrative reset). Active Directory needs TLS for this.

        Raises:
            InsufficientAccessRights: write-back is off, or the directory refused the write.
            PasswordComplexity: the new password does not meet the policy.
            WrongUsername, WrongPassword: the user or the old password is wrong.
            DirectoryUnavailable: the directory could not be asked.
        """
        if not self.settings.enable_write_back:
            raise errors.InsufficientAccessRights(
                "password changes are disabled (ENABLE_WRITE_BACK is off)", username=username
            )
        if not new_password:
            raise errors.PasswordComplexity(
                "an empty password is never accepted", username=username
            )
        user = self.find_user(username)
        is_ad = self.is_active_directory()
        ctx = {"username": username, "dn": user.dn}

        def change(conn: Connection) -> None:
            if is_ad and not conn.tls:
                raise errors.InsufficientAccessRights(
                    "Active Directory accepts password changes only over TLS: use ldaps:// or "
                    "LDAP_STARTTLS",
                    **ctx,
                )
            try:
                if old_password is not None:
                    conn.ldap.simple_bind_s(user.dn, old_password)
                if is_ad:
                    new = _ad_password(new_password)
                    if old_password is None:
                        mods = [(ldap.MOD_REPLACE, "unicodePwd", [new])]
                    else:
                        mods = [
                            (ldap.MOD_DELETE, "unicodePwd", [_ad_password(old_password)]),
                            (ldap.MOD_ADD, "unicodePwd", [new]),
                        ]
                    conn.ldap.modify_ext_s(user.dn, mods)
                else:
                    conn.ldap.passwd_s(user.dn, old_password, new_password)
            except ldaperrors.CONNECTION_ERRORS:
                raise
            except ldap.LDAPError as exc:
                raise ldaperrors.write_failure(exc, **ctx) from None

        if old_password is None:
            self.search_pool.run(change)
        else:
            self.bind_pool.run(change)
        log.info(
            "password changed username=%r dn=%r by=%s",
            username,
            user.dn,
            "user" if old_password is not None else "service account",
        )
        self.cache.clear()
        return self.profile(user)

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
                conn, self.settings, self.settings.ldap_base, flt, USER_ATTRS, limit=limit
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


def _ad_password(password: str) -> bytes:
    """The ``unicodePwd`` encoding: the password in double quotes, UTF-16-LE."""
    return f'"{password}"'.encode("utf-16-le")
