"""The devhub's settings: one frozen object, validated once, passed to ``create_app``."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import secrets
from typing import Literal

Alg = Literal["RS256", "HS256"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def new_ticket() -> str:
    """A random ticket id (192 bits) that the ticket rule below always accepts: hex, so it
    never starts with the '-' or '_' a URL-safe token starts with one time in 32."""
    return secrets.token_hex(24)


@dataclasses.dataclass(frozen=True)
class DevHubConfig:
    """Everything the devhub needs to know; one tenant with one connection per process.

    Attributes:
        tenant: the tenant name, the last segment of ``adHub`` (``{base}/tenants/{tenant}``).
        connection: the connection name: agent tokens' ``iss``, commands' ``aud``.
        realm: the realm name: agent tokens' ``aud``.
        connection_domain: ``connectionDomain`` in the ticket's info.
        alg: the kind of tenant signing key: ``RS256`` (an RSA key pair generated at start,
            the public key handed out as PEM) or ``HS256`` (a random shared secret).
        lease_seconds: how long a command handed out stays leased to the polling agent.
        ticket: the ticket id (a bearer secret); random unless given.
        kerberos: ``kerberos`` in the ticket's info.
        ip_ranges: ``ipRanges`` in the ticket's info (CIDR strings).
        public_base_url: ``{base}`` for every URL the hub hands out; empty means the URL the
            request came in on (``request.host_url``).
        command_ttl: default ``exp - iat`` of command JWTs, in seconds.
        login_wait_seconds: how long the login page waits for the result before showing the
            "waiting" Try page.
        session_seconds: how long a relayed sign-in's ``ref`` can be redeemed.
        signin_wait_seconds: how long the ``postTokenUrl`` handler waits for a ``ref`` not
            relayed yet (protocol §5.3: at most 10 s).
        max_waiters_per_client: at most this many such waits per client address ...
        max_waiters: ... and this many in all; beyond either, ``429`` at once.
    """

    tenant: str = "acme"
    connection: str = "corp"
    realm: str = "urn:acme"
    connection_domain: str = "corp.example.com"
    alg: Alg = "RS256"
    lease_seconds: int = 30
    ticket: str = dataclasses.field(default_factory=new_ticket, repr=False)
    kerberos: bool = False
    ip_ranges: tuple[str, ...] = ()
    public_base_url: str = ""
    command_ttl: int = 300
    login_wait_seconds: float = 15.0
    session_seconds: int = 120
    signin_wait_seconds: float = 10.0
    max_waiters_per_client: int = 8
    max_waiters: int = 1000

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not _NAME.match(self.tenant):
            problems.append(f"tenant {self.tenant!r} must be letters, digits, '.', '_' or '-'")
        if not self.connection:
            problems.append("connection must not be empty")
        if not self.realm:
            problems.append("realm must not be empty")
        if self.alg not in ("RS256", "HS256"):
            problems.append(f"alg must be RS256 or HS256, not {self.alg!r}")
        if not 1 <= self.lease_seconds <= 3600:
            problems.append("lease_seconds must be in 1..3600")
        if not _NAME.match(self.ticket):
            problems.append("ticket must be URL-safe: letters, digits, '.', '_' or '-'")
        if not 1 <= self.command_ttl <= 600:
            problems.append("command_ttl must be in 1..600 (protocol: exp - iat <= 600 s)")
        if not 0 <= self.login_wait_seconds <= 60:
            problems.append("login_wait_seconds must be in 0..60")
        if self.session_seconds < 1:
            problems.append("session_seconds must be positive")
        if not 0 <= self.signin_wait_seconds <= 10:
            problems.append("signin_wait_seconds must be in 0..10 (protocol §5.3)")
        if self.max_waiters_per_client < 1 or self.max_waiters < 1:
            problems.append("max_waiters_per_client and max_waiters must be positive")
        if self.public_base_url and not re.match(r"^https?://[^/]+/?$", self.public_base_url):
            problems.append("public_base_url must look like http(s)://host[:port], no path")
        for cidr in self.ip_ranges:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                problems.append(f"ip range {cidr!r} is not a CIDR network")
        if problems:
            raise ValueError("invalid devhub configuration: " + "; ".join(problems))
