"""The per-process services the web app, the agent and the CLI share, built from settings.

Nothing here connects anywhere when built: the directory pools open on first use, and the
agent starts only when :meth:`Services.start_agent` is called (after gunicorn forks).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connector import __version__, metrics
from connector.channel.agent import Agent
from connector.channel.client import HubClient
from connector.channel.commands import CommandVerifier, Dispatcher
from connector.channel.identity import AgentIdentity
from connector.channel.provision import ensure_registered, pin_signing_alg
from connector.clientcert import CertificateVerifier
from connector.directory import Directory
from connector.errors import ConfigError
from connector.kerberos import KerberosAcceptor
from connector.netpolicy import Address, NegotiatePolicy, parse_networks
from connector.settings import Settings
from connector.web.guards import Csrf, SharedThrottle, Throttle

log = logging.getLogger(__name__)

#: How long an unusable keytab stays unused when its file does not change.
KERBEROS_RETRY_SECONDS = 60.0


def agent_id() -> str:
    """This worker's agent id: host name and process id."""
    return f"{socket.gethostname()}/{os.getpid()}"


def shared_throttle(
    settings: Settings, kind: str, limit: int, window: float
) -> Throttle | SharedThrottle:
    """Login failure counts shared by every worker (a table in the run directory); counts of
    this process alone if that directory cannot be written."""
    # per limit: instances sharing a state directory with other limits keep apart, and a
    # changed limit starts counting afresh
    path = settings.run_dir / f"throttle-{kind}-{limit}.bin"
    try:
        settings.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return SharedThrottle(path, limit, window)
    except OSError as exc:
        log.warning("login throttling per worker: cannot keep shared counts in %s (%s)", path, exc)
        return Throttle(limit, window)


class Services:
    """Directory, agent and hub client of one process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.directory: Directory | None = None
        if not settings.directory_problems():
            self.directory = Directory(settings)
        self.agent: Agent | None = None
        self.hub: HubClient | None = None
        self._lock = threading.Lock()
        self.trusted_proxies = parse_networks(settings.trusted_proxies)
        self.negotiate_policy = NegotiatePolicy(
            settings.client_ip_ranges if settings.kerberos_auth else (),
            settings.negotiate_user_agents or None,
        )
        self.allowed_return_urls = frozenset(
            u for u in (settings.realm_post_token_url, *settings.wreply_allowed) if u
        )
        self.csrf = Csrf(settings.secret_box.passphrase(create=True))
        window = settings.login_throttle_seconds
        self.user_throttle = shared_throttle(
            settings, "user", settings.login_failures_per_user, window
        )
        self.address_throttle = shared_throttle(
            settings, "address", settings.login_failures_per_address, window
        )
        self._kerberos: KerberosAcceptor | None = None
        self._cert_verifier: CertificateVerifier | None = None
        # Operations (see start_reporter): set by the gunicorn hooks after the fork.
        self.server_info: dict[str, Any] | None = None
        self.reload_workers: Callable[[], None] | None = None
        self.started = time.time()
        self._reporter: threading.Thread | None = None
        self._reporter_stop = threading.Event()
        self._cache_counter = metrics.CacheCounter()
        self._ldap_probes: dict[str, dict[str, Any]] = {}
        self._ldap_probed = 0.0
        self._kerberos_failure: tuple[float, tuple[int, ...] | None, str] | None = None

    def require_directory(self) -> Directory:
        """The directory, or a clear error if its settings are incomplete.

        Raises:
            ConfigError: LDAP settings are missing.
        """
        if self.directory is None:
            self.settings.require_directory()
            self.directory = Directory(self.settings)
        return self.directory

    def offers_negotiate(self, addr: Address, user_agent: str | None) -> bool:
        """Whether this client is offered Kerberos."""
        return self.settings.kerberos_auth and self.negotiate_policy.offers_negotiate(
            addr, user_agent
        )

    @property
    def cert_verifier(self) -> CertificateVerifier:
        """The client-certificate verifier (``CLIENT_CERT_AUTH``), built on first use.

        Raises:
            ConfigError: the CA file or a CRL file cannot be read.
        """
        if self._cert_verifier is None:
            s = self.settings
            with self._lock:
                if self._cert_verifier is None:
                    self._cert_verifier = CertificateVerifier(
                        s.client_cert_ca_file or "", s.client_cert_crl
                    )
        return self._cert_verifier

    @property
    def kerberos(self) -> KerberosAcceptor | None:
        """The SPNEGO acceptor, built on first use (after the fork); None if unusable.

        An unusable keytab (missing, unreadable, without the service principal) is tried
        again as soon as the file changes, or after ``KERBEROS_RETRY_SECONDS``: installing
        the right keytab needs no restart.
        """
        if self._kerberos is None and self._kerberos_may_retry():
            with self._lock:
                if self._kerberos is None and self._kerberos_may_retry():
                    self._build_kerberos()
        return self._kerberos

    def _keytab_stamp(self) -> tuple[int, ...] | None:
        path = (self.settings.kerberos_keytab or "").removeprefix("FILE:")
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _kerberos_may_retry(self) -> bool:
        if self._kerberos_failure is None:
            return True
        failed_at, stamp, _ = self._kerberos_failure
        return (
            time.monotonic() - failed_at >= KERBEROS_RETRY_SECONDS or self._keytab_stamp() != stamp
        )

    def _build_kerberos(self) -> None:
        s = self.settings
        stamp = self._keytab_stamp()
        try:
            if not s.kerberos_keytab or not s.kerberos_realms:
                raise ValueError("KERBEROS_KEYTAB and KERBEROS_REALMS are required")
            self._kerberos = KerberosAcceptor(
                s.kerberos_keytab,
                s.kerberos_realms,
                principal_mapping=(
                    "upn" if s.kerberos_principal_mapping == "upn" else "strip_realm"
                ),
                service_principal=s.kerberos_service_principal,
                replay_cache=s.kerberos_replay_cache,
                read_pac=s.groups_source == "pac",
            )
        except (ValueError, ConfigError) as exc:
            previous = self._kerberos_failure
            if previous is None or previous[2] != str(exc):
                log.error("Kerberos sign-in disabled (until the keytab changes): %s", exc)
            self._kerberos_failure = (time.monotonic(), stamp, str(exc))
            return
        if self._kerberos_failure is not None:
            log.info("Kerberos sign-in enabled again: keytab %s is usable", s.kerberos_keytab)
        self._kerberos_failure = None

    def start_agent(self) -> Agent | None:
        """Start this process's poller (idempotent); None if the connector is not set up.

        A changed certificate is registered again by the poller before its first poll, retried
        with backoff while the hub cannot be reached (the worker serves meanwhile).
        """
        with self._lock:
            if self.agent is not None:
                return self.agent
            s = self.settings
            if not s.hub_configured:
                log.warning("no hub configured: run `connector setup --ticket URL`; not polling")
                return None
            if self.directory is None:
                log.warning(
                    "directory settings incomplete (%s); not polling",
                    "; ".join(s.directory_problems()),
                )
                return None
            identity = AgentIdentity.load(s.state_dir, s.secret_box)
            if identity is None:
                log.error("no agent key in %s: run `connector setup --ticket URL`", s.state_dir)
                return None
            self.hub = HubClient(s, identity, agent_id())
            pin_signing_alg(s)
            verifier = CommandVerifier(
                str(s.tenant_signing_key),
                audience=str(s.connection),
                issuer=s.ad_hub,
                clock=self.hub.clock.now,
                algorithm=s.tenant_signing_alg,
            )
            self.agent = Agent(
                self.hub,
                Dispatcher(self.directory, s.enable_write_back),
                verifier,
                concurrency=s.agent_concurrency,
                poll_wait=s.poll_wait_seconds,
                skew_warning=s.clock_skew_warning_seconds,
                prepare=functools.partial(ensure_registered, s, identity),
            )
            self.agent.start()
            return self.agent

    # --- operations: status, metrics ---------------------------------------------------------

    def ldap_health(self) -> dict[str, dict[str, Any]]:
        """Each LDAP server: up or not, and why, from the last probe and the real traffic."""
        out: dict[str, dict[str, Any]] = {}
        seen = self.directory.servers.health() if self.directory is not None else {}
        for url in self.settings.ldap_urls:
            probe = self._ldap_probes.get(url, {})
            used = seen.get(url, {})
            up = bool(probe.get("up", True)) and bool(used.get("up", True))
            error = used.get("last_error") if not used.get("up", True) else probe.get("error")
            out[url] = {"up": up, "error": error, "checked": probe.get("checked")}
        return out

    def probe_ldap(self, force: bool = False) -> None:
        """Probe every LDAP server if ``LDAP_HEALTH_SECONDS`` have passed (or ``force``)."""
        every = self.settings.ldap_health_seconds
        if self.directory is None or (
            not force and (not every or time.monotonic() - self._ldap_probed < every)
        ):
            return
        from connector.troubleshoot import probe_server

        self._ldap_probed = time.monotonic()
        for url in self.settings.ldap_urls:
            error = probe_server(self.settings, url)
            self._ldap_probes[url] = {"up": error is None, "error": error, "checked": time.time()}

    def status(self) -> dict[str, Any]:
        """This worker's status, as the console and ``connector check`` read it."""
        directory = self.directory
        return {
            "pid": os.getpid(),
            "started": self.started,
            "updated": time.time(),
            "version": __version__,
            "hub_configured": self.settings.hub_configured,
            "agent": self.agent.status() if self.agent is not None else None,
            "ldap": self.ldap_health(),
            "group_cache": (
                {
                    "hits": directory.cache.hits,
                    "misses": directory.cache.misses,
                    "entries": len(directory.cache),
                    "queries": directory.group_queries(),
                }
                if directory is not None
                else None
            ),
            "server": self.server_info,
        }

    def sync_metrics(self) -> None:
        """Bring this worker's gauges and cache counters up to date."""
        metrics.worker_alive()
        if self.directory is not None:
            self._cache_counter.sync(self.directory.cache.hits, self.directory.cache.misses)
        for url, health in self.ldap_health().items():
            metrics.ldap_server(url, bool(health["up"]))

    def write_status(self, run_dir: Path | None = None) -> None:
        """Write this worker's status file (errors are logged once, not raised)."""
        try:
            metrics.write_status(run_dir or self.settings.run_dir, self.status())
        except OSError as exc:
            if not getattr(self, "_status_warned", False):
                log.warning("cannot write the worker status in %s: %s", self.settings.run_dir, exc)
                self._status_warned = True

    def start_reporter(self, interval: float = 2.0) -> None:
        """Every ``interval`` seconds: probe LDAP when due, update metrics, write the status."""
        if self._reporter is not None:
            return

        def loop() -> None:
            while not self._reporter_stop.is_set():
                try:
                    self.probe_ldap()
                    self.sync_metrics()
                    self.write_status()
                except Exception:
                    log.exception("worker status report failed")
                self._reporter_stop.wait(interval)

        self._reporter = threading.Thread(target=loop, name="status-report", daemon=True)
        self._reporter.start()

    def stop_reporter(self) -> None:
        """Stop writing status and remove this worker's status file."""
        self._reporter_stop.set()
        if self._reporter is not None:
            self._reporter.join(5)
        metrics.remove_status(self.settings.run_dir, os.getpid())
        metrics.hub_state(False)

    def drain(self, timeout: float = 60.0) -> None:
        """Stop the agent gracefully and close the directory pools."""
        self.stop_reporter()
        if self.agent is not None:
            self.agent.drain(timeout)
        if self.directory is not None:
            self.directory.close()
