"""Commands from the hub: verified (tenant-signed JWTs) before anything runs, then executed.

:class:`CommandVerifier` accepts only the algorithm stored with the tenant key, which must match
its kind (RS256 for a PEM public key, HS256 for a shared secret; never ``none``; see
:mod:`connector.tenantkey`) and checks expiry (and ``nbf``), audience
and that the token names the command it came with; its :class:`ReplayCache` keeps a command id
from running twice here (see protocol §3.1). :class:`Dispatcher` runs a verified command
against the directory and turns every outcome into a result object of the protocol.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import jwt

from connector import audit, errors
from connector.channel.vocabulary import COMMAND_NAMES as COMMAND_NAMES  # re-exported
from connector.directory import Directory, passwords
from connector.errors import CommandRefused as CommandRefused  # re-exported: its old home
from connector.tenantkey import verifying_key

log = logging.getLogger(__name__)

LEEWAY = 60  # seconds
MAX_LIFETIME = 600
MAX_TOKEN_LENGTH = 64 * 1024
MAX_REMEMBERED = 100_000  # command ids kept for replay checks, per worker


@dataclasses.dataclass(frozen=True)
class Command:
    """A verified command: id, name and payload (``pid`` is the hub's correlation id)."""

    id: str
    name: str
    payload: dict[str, Any] = dataclasses.field(repr=False)
    token_digest: str = dataclasses.field(default="", repr=False)  # SHA-256 of the JWT
    expires: float = 0.0  # exp + leeway, on the hub's clock: when replay checks may forget it

    @property
    def pid(self) -> str:
        """The hub's correlation id, if any."""
        return str(self.payload.get("pid") or "")


class ReplayCache:
    """The command ids this worker has accepted, until their tokens expire (protocol §3.1).

    The hub hands the same token out again when a lease lapses, or after an ``Unavailable``
    answer: that command runs again while no final answer of ours exists. Otherwise the same
    id is a replay: the same token already answered (finally) here, or another token under an
    id seen here. The agent itself skips a redelivery whose run or unposted result it holds.
    """

    def __init__(self, clock: Callable[[], float], max_entries: int = MAX_REMEMBERED) -> None:
        self._clock = clock
        self._max = max_entries
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[str, float, bool]] = {}  # id -> (digest, expires, final)
        self._expiry: list[tuple[float, str]] = []  # a heap: the first to forget on top
        self._full_warned = False

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, command: Command) -> str | None:
        """Record ``command`` as about to run; or why it must not (a replay).

        An entry is kept until the token's expiry (after which the verifier refuses the
        token anyway); when ``max_entries`` are kept the one closest to expiry goes first.
        """
        with self._lock:
            self._forget(self._clock())
            known = self._seen.get(command.id)
            if known is not None:
                digest, _, final = known
                if digest != command.token_digest:
                    return "command id already used by another token (a replay)"
                if final:
                    return "command already answered (a replay)"
                return None
            if len(self._seen) >= self._max:
                self._forget(math.inf, one=True)
                if not self._full_warned:
                    log.warning(
                        "%d command ids remembered for replay checks: forgetting the oldest early",
                        self._max,
                    )
                    self._full_warned = True
            self._seen[command.id] = (command.token_digest, command.expires, False)
            heapq.heappush(self._expiry, (command.expires, command.id))
            return None

    def answered(self, command_id: str, final: bool) -> None:
        """Note that ``command_id`` was answered; ``final`` unless the answer asks the hub to
        hand it out again (``Unavailable``)."""
        with self._lock:
            known = self._seen.get(command_id)
            if known is not None:
                self._seen[command_id] = (known[0], known[1], final)

    def _forget(self, now: float, one: bool = False) -> None:
        while self._expiry and (one or self._expiry[0][0] < now):
            expires, cid = heapq.heappop(self._expiry)
            known = self._seen.get(cid)
            if known is not None and known[1] == expires:
                del self._seen[cid]
                if one:
                    return


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    """A time claim as a finite number (None when absent and optional).

    Raises:
        CommandRefused: not a number, or NaN or infinite (which compare false with any time).
    """
    value = claims.get(name)
    if value is None and name == "nbf":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CommandRefused(f"command token {name} is not a finite number")
    return float(value)


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
        self.replays = ReplayCache(clock)

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
        exp, iat = _numeric_date(claims, "exp"), _numeric_date(claims, "iat")
        nbf = _numeric_date(claims, "nbf")
        assert exp is not None and iat is not None
        if exp + LEEWAY < now:
            raise CommandRefused("command token expired")
        if iat - LEEWAY > now:
            raise CommandRefused("command token issued in the future")
        if nbf is not None and nbf - LEEWAY > now:
            raise CommandRefused("command token not valid yet (nbf)")
        if exp - iat > MAX_LIFETIME:
            raise CommandRefused("command token lifetime too long")
        if claims.get("jti") != cid or claims.get("cmd") != name:
            raise CommandRefused("command token does not match the command it came with")
        if name not in COMMAND_NAMES:
            raise CommandRefused(f"unknown command {name[:40]!r}")
        payload = claims.get("payload", {})
        if not isinstance(payload, dict):
            raise CommandRefused("malformed payload: not an object")
        digest = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
        return Command(cid, name, payload, digest, exp + LEEWAY)


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
            result = {"err": exc.to_wire()}
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
        if command.name in ("authenticate_user", "change_password"):
            # one audit line per login and per password change (never the passwords)
            event, method = "login", "hub"
            if command.name == "change_password":
                reset = command.payload.get("oldPassword") is None
                event, method = "password_change", "hub:reset" if reset else "hub:self"
            user = username if isinstance(username, str) else None
            audit.record(event, method, user, outcome, command.pid)
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
            passwords.require_write_back(self.write_back)
            old = p.get("oldPassword")
            if old is not None and (not isinstance(old, str) or len(old) > 4096):
                raise CommandRefused("malformed payload: oldPassword must be text")
            profile = self.directory.change_password(
                _text(p, "username", limit=1024), _text(p, "password"), old_password=old
            )
            return {"profile": profile}
        raise CommandRefused(f"unknown command {command.name[:40]!r}")
