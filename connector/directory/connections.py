"""Connections to the directory: failover across servers, TLS, timeouts, bounded pools.

A :class:`ServerSet` opens a connection to the first configured server that answers, skipping
for a while a server that just failed. A :class:`Pool` lends those connections out one at a
time; an operation that fails because its connection died is retried once on a fresh
connection, so a restarted or replaced server is used again without restarting the process.
Nothing here connects until first used (nothing happens at import or before a fork).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import ldap

from connector.directory import ldaperrors
from connector.directory.discovery import DcLocator
from connector.errors import ConnectorError, DirectoryUnavailable
from connector.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

_REQUIRE_CERT = {
    "demand": ldap.OPT_X_TLS_DEMAND,
    "hard": ldap.OPT_X_TLS_HARD,
    "try": ldap.OPT_X_TLS_TRY,
    "allow": ldap.OPT_X_TLS_ALLOW,
    "never": ldap.OPT_X_TLS_NEVER,
}

CLEARTEXT_REFUSED = (
    "refusing to bind over ldap:// without TLS (passwords would cross the network in clear "
    "text): use ldaps:// or LDAP_STARTTLS=true with LDAP_CA_FILE, or set "
    "LDAP_ALLOW_CLEARTEXT=true to accept the risk"
)


def is_cleartext(settings: Settings, url: str) -> bool:
    """Whether binds to ``url`` would send passwords unprotected over the network.

    ``ldapi://`` (a local socket) is not the network.
    """
    scheme = url.lower().split("://", 1)[0]
    return scheme == "ldap" and not settings.ldap_starttls


def cleartext_urls(settings: Settings) -> list[str]:
    """The configured servers that binds would reach in clear text."""
    return [u for u in settings.ldap_urls if is_cleartext(settings, u)]


def log_cleartext(settings: Settings) -> None:
    """Say loudly at start which servers get passwords in clear text, or are refused."""
    urls = cleartext_urls(settings)
    if not urls:
        return
    if settings.ldap_allow_cleartext:
        log.warning(
            "LDAP_ALLOW_CLEARTEXT is set: the service account's and users' passwords go to %s "
            "in clear text; use ldaps:// or LDAP_STARTTLS",
            ", ".join(urls),
        )
    else:
        log.error("LDAP server(s) %s: %s", ", ".join(urls), CLEARTEXT_REFUSED)


# Connections are recycled after this long (a connection to another server than the preferred
# one is not reused at all: after a failover, traffic returns to the preferred server once it
# is back).
MAX_CONNECTION_AGE = 300.0


@dataclasses.dataclass
class Connection:
    """One LDAP connection, the server it talks to and whether it is protected by TLS."""

    ldap: Any
    url: str
    tls: bool
    created: float
    generation: int = 0

    def close(self) -> None:
        """Unbind and drop the connection, ignoring errors (it may already be dead)."""
        with contextlib.suppress(Exception):
            self.ldap.unbind_ext_s()


class ServerSet:
    """The configured servers in order of preference; failover; a short memory of failures."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: with LDAP_DOMAIN, the DCs DNS names (after any LDAP_URL)
        self.locator = DcLocator(settings) if settings.ldap_domain else None
        self._down_until: dict[str, float] = {}
        self._last_error: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def urls(self) -> tuple[str, ...]:
        """The servers in order of preference: ``LDAP_URL``, then the DCs from DNS."""
        if self.locator is None:
            return self.settings.ldap_urls
        return tuple(dict.fromkeys((*self.settings.ldap_urls, *self.locator.urls())))

    def health(self) -> dict[str, dict[str, Any]]:
        """Each server's state as last seen: up, or down with the error and until when."""
        now = time.monotonic()
        with self._lock:
            return {
                url: {
                    "up": self._down_until.get(url, 0.0) <= now,
                    "last_error": self._last_error.get(url),
                }
                for url in self.urls
            }

    def _order(self) -> list[str]:
        """Servers not recently failed first, each group in configured order."""
        now = time.monotonic()
        with self._lock:
            up = [u for u in self.urls if self._down_until.get(u, 0.0) <= now]
            down = [u for u in self.urls if self._down_until.get(u, 0.0) > now]
        return up + down

    def preferred(self) -> str | None:
        """The server new connections try first: the first configured one not recently failed."""
        if not self._down_until:  # nothing failed (the usual case): the first one
            urls = self.urls
            return urls[0] if urls else None
        order = self._order()
        return order[0] if order else None

    def mark_down(self, url: str, reason: str) -> None:
        """Remember that ``url`` failed, so the next connections try the others first."""
        with self._lock:
            first = self._down_until.get(url, 0.0) <= time.monotonic()
            self._down_until[url] = time.monotonic() + self.settings.ldap_server_retry_seconds
            self._last_error[url] = reason
        if first:
            log.warning("LDAP server %s failed: %s", url, reason)

    def mark_up(self, url: str) -> None:
        """Forget an earlier failure of ``url``."""
        with self._lock:
            was_down = self._down_until.pop(url, None) is not None
            self._last_error.pop(url, None)
        if was_down:
            log.info("LDAP server %s is answering again", url)

    def connect_to(self, url: str, *, signed: bool = False) -> Connection:
        """Open (and, if configured, StartTLS) a connection to one server; ``signed``: one
        that a SASL security layer will protect instead (no StartTLS: servers refuse both).

        Raises:
            ldap.LDAPError: the server could not be reached or TLS failed; or
                ``CONFIDENTIALITY_REQUIRED`` without connecting: the URL is ``ldap://``
                without StartTLS and ``LDAP_ALLOW_CLEARTEXT`` is not set.
        """
        s = self.settings
        if is_cleartext(s, url) and not s.ldap_allow_cleartext and not signed:
            raise ldap.CONFIDENTIALITY_REQUIRED({"desc": "TLS required", "info": CLEARTEXT_REFUSED})
        conn = ldap.initialize(url)
        conn.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
        conn.set_option(ldap.OPT_REFERRALS, 1 if s.ldap_referrals else 0)
        conn.set_option(ldap.OPT_NETWORK_TIMEOUT, s.ldap_connect_timeout)
        conn.set_option(ldap.OPT_TIMEOUT, s.ldap_operation_timeout)
        if s.ldap_ca_file:
            conn.set_option(ldap.OPT_X_TLS_CACERTFILE, s.ldap_ca_file)
        conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, _REQUIRE_CERT[s.ldap_tls_require_cert])
        conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)  # must come last among the TLS options
        tls = url.lower().startswith("ldaps://")
        if s.ldap_starttls and url.lower().startswith("ldap://") and not signed:
            conn.start_tls_s()
            tls = True
        return Connection(ldap=conn, url=url, tls=tls, created=time.monotonic())

    def open(
        self, bind: Callable[[Connection], None] | None = None, *, signed: bool = False
    ) -> Connection:
        """A connection to the first server that answers, optionally bound.

        Raises:
            DirectoryUnavailable: no server could be reached (or the bind was refused by all).
        """
        problems: list[str] = []
        conn = self._first(self._order(), bind, problems, signed)
        if conn is None and self.locator is not None:
            # every DC failed: DNS may know others by now
            tried = set(self.urls)
            self.locator.refresh()
            conn = self._first([u for u in self.urls if u not in tried], bind, problems, signed)
        if conn is not None:
            return conn
        raise DirectoryUnavailable(
            "no LDAP server could be used: " + "; ".join(problems or ["none configured"])
        )

    def _first(
        self,
        urls: list[str],
        bind: Callable[[Connection], None] | None,
        problems: list[str],
        signed: bool = False,
    ) -> Connection | None:
        """A connection to the first of ``urls`` that answers (and binds), or None."""
        for url in urls:
            try:
                conn = self.connect_to(url, signed=signed)
            except ldap.LDAPError as exc:
                reason = _connect_reason(exc, self.settings)
                self.mark_down(url, reason)
                problems.append(f"{url}: {reason}")
                continue
            try:
                if bind is not None:
                    bind(conn)
            except ldap.INVALID_CREDENTIALS as exc:
                conn.close()
                reason = f"service account bind refused ({ldaperrors.describe(exc)})"
                self.mark_down(url, reason)
                problems.append(f"{url}: {reason}; check LDAP_BIND_USER and its password")
                continue
            except ldap.LDAPError as exc:
                conn.close()
                reason = _connect_reason(exc, self.settings)
                self.mark_down(url, reason)
                problems.append(f"{url}: {reason}")
                continue
            self.mark_up(url)
            return conn
        return None


def _connect_reason(exc: Exception, settings: Settings) -> str:
    """Why a connection failed, in words an administrator can act on."""
    text = ldaperrors.describe(exc)
    if isinstance(exc, ldap.CONNECT_ERROR) or "certificate" in text.lower():
        return f"TLS failed ({text}); check LDAP_CA_FILE and the server certificate's names"
    if isinstance(exc, ldap.TIMEOUT):
        return f"no answer within {settings.ldap_operation_timeout:g}s"
    return text


class Pool:
    """A bounded pool of connections opened by a :class:`ServerSet`, lent one at a time."""

    def __init__(
        self,
        name: str,
        servers: ServerSet,
        size: int,
        bind: Callable[[Connection], None] | None,
        acquire_timeout: float,
        *,
        signed: bool = False,
    ) -> None:
        self.name = name
        #: the bind sets up a SASL security layer (GSSAPI): no StartTLS on these connections
        self.signed = signed
        self.servers = servers
        self.size = size
        self._bind = bind
        self._acquire_timeout = acquire_timeout
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        #: connections that may still be lent (``size`` at most), guarded by ``_lock``
        self._free = size
        self._freed = threading.Condition(self._lock)
        self._generation = 0
        self.opened = 0

    def _take(self) -> Connection | None:
        """An idle connection, unless it is too old or talks to a server other than the
        preferred one (after a failover, the first server is tried again once it has been
        skipped for ``LDAP_SERVER_RETRY_SECONDS``: traffic goes back to it)."""
        now = time.monotonic()
        preferred = self.servers.preferred()
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if (
                    conn.generation == self._generation
                    and now - conn.created < MAX_CONNECTION_AGE
                    and conn.url == preferred
                ):
                    return conn
                conn.close()
        return None

    def _give_back(self, conn: Connection) -> None:
        with self._lock:
            if conn.generation == self._generation:
                self._idle.append(conn)
                return
        conn.close()

    def invalidate(self) -> None:
        """Drop every idle connection (called when one of them turned out dead)."""
        with self._lock:
            self._generation += 1
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        """Borrow one connection; it goes back to the pool unless an error escaped.

        Raises:
            DirectoryUnavailable: every connection stayed busy, or no server answered.
        """
        conn = self._borrow()
        try:
            yield conn
        except BaseException as exc:
            self._settle(conn, exc)
            raise
        self._settle(conn, None)

    def _borrow(self) -> Connection:
        """One of the ``size`` places and a connection for it: an idle one, else a new one.

        Raises:
            DirectoryUnavailable: every connection stayed busy, or no server answered.
        """
        self._lend()
        try:
            conn = self._take()
            if conn is None:
                conn = self.servers.open(self._bind, signed=self.signed)
                with self._lock:
                    conn.generation = self._generation
                self.opened += 1
        except BaseException:
            self._release()
            raise
        return conn

    def _settle(self, conn: Connection, exc: BaseException | None) -> None:
        """A borrowed connection back to the pool, or closed when ``exc`` may have left it
        unusable; its place freed either way. An outcome (wrong password, no such entry…)
        leaves the connection usable."""
        try:
            if exc is None or (
                isinstance(exc, (ConnectorError, ldap.LDAPError))
                and not isinstance(exc, (*ldaperrors.CONNECTION_ERRORS, DirectoryUnavailable))
            ):
                self._give_back(conn)
            else:
                conn.close()
        finally:
            self._release()

    def _release(self) -> None:
        with self._lock:
            self._free += 1
            self._freed.notify()

    def _lend(self) -> None:
        """Take one of the ``size`` places, waiting for one at most the acquire timeout (one
        lock round when a place is free: a semaphore costs a sign-in several times that).

        Raises:
            DirectoryUnavailable: every connection stayed busy.
        """
        with self._lock:
            if self._free <= 0 and not self._freed.wait_for(
                lambda: self._free > 0, self._acquire_timeout
            ):
                raise DirectoryUnavailable(
                    f"all {self.size} {self.name} connections stayed busy for "
                    f"{self._acquire_timeout:g}s"
                )
            self._free -= 1

    def run(self, operation: Callable[[Connection], T]) -> T:
        """Run ``operation`` on a pooled connection; retry once if the connection was dead.

        Raises:
            DirectoryUnavailable: no server could carry out the operation.
        """
        for attempt in (1, 2):
            conn = self._borrow()  # as connection() does, without a generator per operation
            try:
                result = operation(conn)
            except ldaperrors.CONNECTION_ERRORS as exc:
                self._settle(conn, exc)
                reason = ldaperrors.describe(exc)
                self.servers.mark_down(conn.url, reason)
                self.invalidate()
                if attempt == 2:
                    raise DirectoryUnavailable(
                        f"directory unavailable: {reason}", server=conn.url
                    ) from exc
                log.info("%s connection to %s lost (%s); retrying", self.name, conn.url, reason)
                continue
            except BaseException as exc:
                self._settle(conn, exc)
                raise
            self._settle(conn, None)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close every idle connection."""
        self.invalidate()
