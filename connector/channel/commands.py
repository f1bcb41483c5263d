"""Commands from the hub: verified (tenant-signed JWTs) before anything runs, then executed.

:class:`CommandVerifier` accepts only the algorithm stored with the tenant key, which must match
its kind (RS256 for a PEM public key, HS256 for a shared secret; never ``none``; see
:mod:`connector.tenantkey`) and checks expiry, audience
and that the token names the command it came with. :class:`Dispatcher` runs a verified command
against the directory and turns every outcome into a result object of the protocol.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import jwt

from connector import errors
from connector.directory import Directory
from connector.tenantkey import verifying_key

log = logging.getLogger(__name__)
audit = logging.getLogger("connector.audit")

LEEWAY = 60  # seconds
MAX_LIFETIME = 600
MAX_TOKEN_LENGTH = 64 * 1024
COMMAND_NAMES = ("authenticate_user", "search_users", "list_groups", "change_password", "ping")


class CommandRefused(Exception):
    """A command that must not run; the message says why (no secrets in it)."""


@dataclasses.dataclass(frozen=True)
class Command:
    """A verified command: id, name and payload (``pid`` is the hub's correlation id)."""

    id: str
    name: str
    payload: dict[str, Any] = dataclasses.field(repr=False)

    @property
    def pid(self) -> str:
        """The hub's correlation id, if any."""
        return str(self.payload.get("pid") or "")


class CommandVerifier:
    """Checks command tokens against the tenant key.

    Args:
        tenant_key: PEM public key (RS256) or shared secret (HS256).
        audience: the connection name.
        issuer: the hub (``adHub``); checked when given.
        clock: the hub's time in seconds.
        algorithm: ``TENANT_SIGNING_ALG``; the key must be of its kind (None: derived).

    Raises:
        TenantKeyError: the tenant key is not usable, or not of the kind ``algorithm`` says.
    """

    def __init__(
        self,
        tenant_key: str,
        audience: str,
        issuer: str | None = None,
        clock: Callable[[], float] = time.time,
        algorithm: str | None = None,
    ) -> None:
        self.algorithm, self._key = verifying_key(tenant_key, algorithm)
        self.audience = audience
        self.issuer = issuer
        self._clock = clock

    def verify(self, raw: Any) -> Command:
        """A :class:`Command` from one entry of a poll response.

        Raises:
            CommandRefused: the entry is malformed, or its token is not valid for us.
        """
        if not isinstance(raw, dict):
            raise CommandRefused("malformed command: not an object")
        cid, name, token = raw.get("id"), raw.get("name"), raw.get("jwt")
        if not isinstance(cid, str) or not cid or len(cid) > 200:
            raise CommandRefused("malformed command: no valid id")
        if not isinstance(name, str) or not isinstance(token, str) or not token:
            raise CommandRefused("malformed command: missing name or jwt")
        if len(token) > MAX_TOKEN_LENGTH:
            raise CommandRefused("command token too large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise CommandRefused("command token is not a JWT") from None
        if header.get("alg") != self.algorithm:
            raise CommandRefused(
                f"command signed with {header.get('alg')!r}; only {self.algorithm} is accepted"
            )
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY,
                # times are checked below on the hub's clock, not the local one
                options={
                    "require": ["exp", "iat", "jti", "aud"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidAudienceError:
            raise CommandRefused("command token is for another connection") from None
        except jwt.InvalidIssuerError:
            raise CommandRefused("command token from another issuer") from None
        except jwt.InvalidSignatureError:
            raise CommandRefused("command token signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise CommandRefused(f"command token invalid: {exc}") from None
        now = self._clock()
        if not isinstance(claims["exp"], int | float) or claims["exp"] + LEEWAY < now:
            raise CommandRefused("command token expired")
        if not isinstance(claims["iat"], int | float) or claims["iat"] - LEEWAY > now:
            raise CommandRefused("command token issued in the future")
        if claims["exp"] - claims["iat"] > MAX_LIFETIME:
            raise CommandRefused("command token lifetime too long")
        if claims.get("jti") != cid or claims.get("cmd") != name:
            raise CommandRefused("command token does not match the command it came with")
        if name not in COMMAND_NAMES:
            raise CommandRefused(f"unknown command {name[:40]!r}")
        payload = claims.get("payload", {})
        if not isinstance(payload, dict):
            raise CommandRefused("malformed payload: not an object")
        return Command(cid, name, payload)


def _text(payload: dict[str, Any], key: str, *, required: bool = True, limit: int = 4096) -> str:
    value = payload.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise CommandRefused(f"malformed payload: {key} must be text")
    return value


def _flag(payload: dict[str, Any], key: str) -> bool:
    value = payload.get(key, False)
    if not isinstance(value, bool):
        raise CommandRefused(f"malformed payload: {key} must be true or false")
    return value


class Dispatcher:
    """Runs verified commands against the directory; every outcome becomes a result."""

    def __init__(self, directory: Directory, write_back: bool) -> None:
        self.directory = directory
        self.write_back = write_back

    def run(self, command: Command) -> dict[str, Any]:
        """The result object for ``command`` (never raises)."""
        started = time.monotonic()
        username = command.payload.get("username")
        try:
            result = self._run(command)
            outcome = "success"
        except CommandRefused as exc:
            result = {"err": {"name": "Unexpected", "message": str(exc)}}
            outcome = "refused"
        except errors.ConnectorError as exc:
            result = {"err": exc.to_wire()}
            outcome = exc.wire_name
        except Exception:
            log.exception("command %s (%s) failed unexpectedly", command.id, command.name)
            result = {"err": {"name": "Unexpected", "message": "internal error in the connector"}}
            outcome = "Unexpected"
        elapsed = (time.monotonic() - started) * 1000
        log.info(
            "command id=%s name=%s pid=%s outcome=%s ms=%.1f",
            command.id,
            command.name,
            command.pid,
            outcome,
            elapsed,
        )
        if command.name == "authenticate_user":
            audit.info(
                "login method=hub user=%r outcome=%s correlation=%s",
                username if isinstance(username, str) else None,
                outcome,
                command.pid,
                extra={
                    "method": "hub",
                    "user": username if isinstance(username, str) else None,
                    "outcome": outcome,
                    "correlation_id": command.pid,
                },
            )
        return result

    def _run(self, command: Command) -> dict[str, Any]:
        p = command.payload
        if command.name == "ping":
            return {}
        if command.name == "authenticate_user":
            profile = self.directory.authenticate(
                _text(p, "username", limit=1024), _text(p, "password"), escaped=_flag(p, "escaped")
            )
            return {"profile": profile}
        if command.name == "search_users":
            limit = p.get("limit")
            if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
                raise CommandRefused("malformed payload: limit must be a whole number")
            users = self.directory.search_users(
                _text(p, "search", required=False, limit=1024), limit, escaped=_flag(p, "escaped")
            )
            return {"users": users}
        if command.name == "list_groups":
            return {"groups": self.directory.list_groups()}
        if command.name == "change_password":
            if not self.write_back:
                raise errors.InsufficientAccessRights(
                    "password changes are disabled (ENABLE_WRITE_BACK is off)"
                )
            old = p.get("oldPassword")
            if old is not None and not isinstance(old, str):
                raise CommandRefused("malformed payload: oldPassword must be text")
            profile = self.directory.change_password(
                _text(p, "username", limit=1024), _text(p, "password"), old_password=old
            )
            return {"profile": profile}
        raise CommandRefused(f"unknown command {command.name[:40]!r}")
