"""The connector's one exception tree: infrastructure failures apart from login outcomes.

::

    ConnectorError                       wire name "Unexpected" unless a subclass says otherwise
    ├── ConfigError                      settings missing or invalid (lists every problem)
    │   └── KeytabError                  the Kerberos keytab is unusable
    ├── SecretError                      a sealed value cannot be opened (key missing or wrong)
    ├── ProfileError (also ValueError)   a profile cannot be built: a malformed attribute, or
    │                                    a custom mapper that raised or returned no valid profile
    ├── KerberosRejected                 a Negotiate token was refused (``code`` says why)
    ├── CertificateRejected              a client certificate was refused (``code`` says why)
    ├── LoginThrottled                   too many recent failures (``wait`` seconds); form only
    ├── CommandRefused                   a hub command that must not run (bad token, payload…)
    ├── HubError                         a call to the hub failed
    │   ├── HubUnavailable               unreachable, timeout, 429 or 5xx: retry   -> Unavailable
    │   │   └── HubUntrusted             its TLS certificate is not trusted (HUB_CA_FILE)
    │   └── HubRejected                  any other 4xx: the hub refuses what was sent
    ├── DirectoryError                   infrastructure broke: not the user's fault
    │   ├── DirectoryUnavailable         no configured server answered in time   -> Unavailable
    │   └── DirectoryFailure             the server answered with an unexpected error -> Unexpected
    └── AuthError                        policy said no; ``name`` is the stable wire name
        ├── WrongUsername                no such user (also: an invalid filter from the input)
        ├── WrongPassword                wrong password, or an empty one
        ├── AccountDisabled              AD 533
        │   └── InvalidLogonHours        AD 530/531 (restrictions), reported as AccountDisabled
        ├── AccountLocked                AD 775, OpenLDAP ppolicy accountLocked
        ├── AccountExpired               AD 701
        ├── PasswordExpired              AD 532, OpenLDAP ppolicy passwordExpired
        ├── PasswordChangeRequired       AD 773, OpenLDAP ppolicy changeAfterReset
        ├── InsufficientAccessRights     the directory refused a write
        └── PasswordComplexity           the new password does not meet the policy

Defined next to the code they belong to (all ``ConnectorError``, wire name ``Unexpected``):
``SetupError`` (``channel.provision``), ``HubInfoRefused`` (``channel.hubinfo``),
``TenantKeyError`` (``tenantkey``), ``ArchiveError`` (``archive``), ``DemoError``
(``demo.procs``). ``HubError``, ``CommandRefused`` and ``SecretError`` are also importable
from ``connector.channel.client``, ``connector.channel.commands`` and ``connector.secretbox``.

Every error carries identifiers (username, dn, server, code) and never a password. ``wire_name``
is what goes over the channel; it is stable across versions. :data:`WIRE_NAMES` is derived from
the classes above.
"""

from __future__ import annotations

from typing import ClassVar


class ConnectorError(Exception):
    """Base of every error the connector raises on purpose."""

    wire_name: ClassVar[str] = "Unexpected"

    def __init__(self, message: str, **context: object) -> None:
        super().__init__(message)
        self.message = message
        self.context = {k: v for k, v in context.items() if v is not None}

    def __str__(self) -> str:
        if not self.context:
            return self.message
        details = ", ".join(f"{k}={v}" for k, v in self.context.items())
        return f"{self.message} ({details})"

    def to_wire(self) -> dict[str, str]:
        """The ``err`` object of a channel result."""
        return {"name": self.wire_name, "message": self.message}


class ConfigError(ConnectorError):
    """The settings are missing or invalid; ``problems`` lists every one of them."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} configuration problem(s){where}:\n{lines}")
        self.problems = problems


class DirectoryError(ConnectorError):
    """The directory could not answer: infrastructure, not the user's fault."""


class DirectoryUnavailable(DirectoryError):
    """No configured directory server could be reached (or answered) in time."""

    wire_name = "Unavailable"


class DirectoryFailure(DirectoryError):
    """A server answered, but with an error the connector does not expect."""

    wire_name = "Unexpected"


class AuthError(ConnectorError):
    """A login or write was refused by policy; ``wire_name`` says why."""


class WrongUsername(AuthError):
    """No user matches the name given."""

    wire_name = "WrongUsername"


class WrongPassword(AuthError):
    """The password does not match (or is empty)."""

    wire_name = "WrongPassword"


class AccountDisabled(AuthError):
    """The account is disabled."""

    wire_name = "AccountDisabled"


class AccountLocked(AuthError):
    """The account is locked out after too many failures."""

    wire_name = "AccountLocked"


class AccountExpired(AuthError):
    """The account itself has expired."""

    wire_name = "AccountExpired"


class PasswordExpired(AuthError):
    """The password has expired."""

    wire_name = "PasswordExpired"


class PasswordChangeRequired(AuthError):
    """The password must be changed before the next login."""

    wire_name = "PasswordChangeRequired"


class InvalidLogonHours(AccountDisabled):
    """Logon refused by time or workstation restrictions (AD 530, 531)."""


class InsufficientAccessRights(AuthError):
    """The directory refused a write for lack of rights."""

    wire_name = "InsufficientAccessRights"


class PasswordComplexity(AuthError):
    """The new password does not satisfy the directory's password policy."""

    wire_name = "PasswordComplexity"


class KerberosRejected(ConnectorError):
    """A Negotiate attempt failed; answer 401. ``reason`` is short and safe to show.

    ``code`` is stable for tests and logs: ``not_negotiate``, ``empty``, ``too_large``,
    ``bad_base64``, ``malformed``, ``ntlm``, ``replay``, ``wrong_service``, ``bad_key``,
    ``expired``, ``not_yet_valid``, ``clock_skew``, ``realm``, ``no_principal``,
    ``multi_leg``, ``no_mechanism``, ``server`` (the acceptor could not use its keytab),
    ``realm_mismatch`` (the directory entry is not one the ticket's realm may sign in as) or
    ``rejected`` (anything else).
    """

    wire_name = "Unexpected"

    def __init__(self, reason: str, code: str = "rejected") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code

    def __repr__(self) -> str:
        return f"KerberosRejected({self.reason!r}, code={self.code!r})"


class CertificateRejected(ConnectorError):
    """A client certificate did not sign anybody in; ``reason`` is plain words, safe to show.

    ``code`` is stable for tests and logs: ``malformed``, ``too_large``, ``expired``,
    ``not_yet_valid``, ``usage`` (no Client Authentication / Smart Card Logon EKU, or a key
    usage that forbids signatures), ``untrusted``, ``revoked``, ``revocation_unknown``,
    ``unmapped``, ``ambiguous`` (see :mod:`connector.clientcert`).
    """

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code

    def __repr__(self) -> str:
        return f"CertificateRejected({self.reason!r}, code={self.code!r})"


class LoginThrottled(ConnectorError):
    """Too many recent failed sign-ins for a name, an entry or an address; ``wait`` is the
    number of seconds until another attempt is allowed. Never sent over the channel."""

    def __init__(self, wait: float, **context: object) -> None:
        super().__init__("too many failed attempts", **context)
        self.wait = wait


class KeytabError(ConfigError):
    """The keytab is missing, unreadable, empty or lacks the service principal."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__([f"keytab {path}: {problem}"], source="Kerberos keytab")
        self.path = path
        self.problem = problem


class SecretError(ConnectorError):
    """A sealed value cannot be opened (wrong or missing key, damaged value)."""


class ProfileError(ConnectorError, ValueError):
    """A user's profile cannot be built: a malformed attribute (``objectGUID`` of the wrong
    length, …), or a custom mapper that raised or returned an invalid profile.

    Also a ``ValueError``, as the pure decoding functions' errors always were.
    """


class CommandRefused(ConnectorError):
    """A hub command that must not run; the message says why (no secrets in it)."""


class HubError(ConnectorError):
    """A call to the hub failed."""

    retry_after: float | None = None


class HubUnavailable(HubError):
    """The hub could not be reached or answered 429/5xx: try again later."""

    wire_name = "Unavailable"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class HubUntrusted(HubUnavailable):
    """The hub's TLS certificate is not trusted (set HUB_CA_FILE)."""


class HubRejected(HubError):
    """The hub answered 4xx: it refuses the request (its message says why)."""

    def __init__(
        self, message: str, status: int, code: str | None = None, server_date: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.server_date = server_date  # the hub's HTTP Date header, as epoch seconds


def _wire_names() -> tuple[str, ...]:
    """Every wire name of the classes of this module, each once, in definition order."""
    names: dict[str, None] = {}
    todo: list[type[ConnectorError]] = [ConnectorError]
    while todo:
        cls = todo.pop(0)
        if cls.__module__ == __name__:
            names[cls.wire_name] = None
        todo.extend(cls.__subclasses__())
    return tuple(names)


WIRE_NAMES: tuple[str, ...] = _wire_names()
