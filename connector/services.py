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
from connector.settings import Settings

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
