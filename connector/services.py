"""The per-process services the web app, the agent and the CLI share, built from settings.

Nothing here connects anywhere when built: the directory pools open on first use, and the
agent starts only when :meth:`Services.start_agent` is called (after gunicorn forks).
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from connector.channel.agent import Agent
from connector.channel.client import HubClient
from connector.channel.commands import CommandVerifier, Dispatcher
from connector.channel.identity import AgentIdentity
from connector.channel.provision import ensure_registered
from connector.directory import Directory
from connector.errors import ConfigError
from connector.kerberos import KerberosAcceptor
from connector.netpolicy import Address, NegotiatePolicy, parse_networks
from connector.settings import Settings
from connector.web.guards import Csrf, Throttle

log = logging.getLogger(__name__)


def agent_id() -> str:
    """This worker's agent id: host name and process id."""
    return f"{socket.gethostname()}/{os.getpid()}"


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
        self.user_throttle = Throttle(settings.login_failures_per_user, window)
        self.address_throttle = Throttle(settings.login_failures_per_address, window)
        self._kerberos: KerberosAcceptor | None = None
        self._kerberos_failed = False

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
    def kerberos(self) -> KerberosAcceptor | None:
        """The SPNEGO acceptor, built on first use (after the fork); None if unusable."""
        if self._kerberos is None and not self._kerberos_failed:
            with self._lock:
                if self._kerberos is None and not self._kerberos_failed:
                    s = self.settings
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
                        )
                    except (ValueError, ConfigError) as exc:
                        log.error("Kerberos sign-in disabled: %s", exc)
                        self._kerberos_failed = True
        return self._kerberos

    def start_agent(self) -> Agent | None:
        """Start this process's poller (idempotent); None if the connector is not set up.

        Raises:
            SetupError: the certificate changed and could not be registered again.
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
            ensure_registered(s, identity)
            self.hub = HubClient(s, identity, agent_id())
            verifier = CommandVerifier(
                str(s.tenant_signing_key),
                audience=str(s.connection),
                issuer=s.ad_hub,
                clock=self.hub.clock.now,
            )
            self.agent = Agent(
                self.hub,
                Dispatcher(self.directory, s.enable_write_back),
                verifier,
                concurrency=s.agent_concurrency,
                poll_wait=s.poll_wait_seconds,
                skew_warning=s.clock_skew_warning_seconds,
            )
            self.agent.start()
            return self.agent

    def drain(self, timeout: float = 60.0) -> None:
        """Stop the agent gracefully and close the directory pools."""
        if self.agent is not None:
            self.agent.drain(timeout)
        if self.directory is not None:
            self.directory.close()
