"""Commands from the hub: verified (tenant-signed JWTs) before anything runs, then executed.

:class:`CommandVerifier` accepts only the algorithm stored with the tenant key, which must match
its kind (RS256 for a PEM public key, HS256 for a shared secret; never ``none``; see
:mod:`connector.tenantkey`) and checks expiry (and ``nbf``), audience
and that the token names the command it came with; its :class:`ReplayCache` keeps a command id
from running twice here (see protocol §3.1). :class:`Dispatcher` runs a verified command
against the directory and turns every outcome into a result object of the protocol.

Every command is verified, so the common token takes a short path (:class:`_PlainTokens`):
parsed once, its signature checked by PyJWT's own algorithm object with the key prepared
once. That path only ever *accepts*, and only tokens PyJWT's ``decode`` accepts with the
same claims; anything else (a refusal, or a token it does not take: padding, ``crit``,
``b64``, odd claim shapes) goes through PyJWT's ``decode``, so what is refused, and why, is
exactly PyJWT's answer.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import heapq
import json
import logging
import math
import re
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


_COMPACT = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")


def _segment(text: str) -> bytes | None:
    """An unpadded, canonical base64url segment's bytes (None when not, or odd)."""
    if len(text) % 4 == 1:
        return None
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    # unused low bits set: another text for the same bytes, which PyJWT refuses
    if base64.urlsafe_b64encode(data).rstrip(b"=") != text.encode("ascii"):
        return None
    return data


def _json_object(data: bytes) -> Any:
    """``json.loads(data)`` where that reads UTF-8 (else a ValueError): decoded first, the
    text parses without json's encoding detection. Text that parses so is text that
    detection reads as UTF-8 (a BOM, NULs, UTF-16 or 32 do not parse, or do not decode).

    Raises:
        ValueError: not UTF-8, or not JSON.
    """
    return json.loads(data.decode("utf-8"))


class _PlainTokens:
    """The short path for a plain compact JWT: claims when PyJWT's ``decode`` (with
    :class:`CommandVerifier`'s arguments) would return the same, else None (never raises).

    Taken: three canonical base64url segments without padding; a header object whose ``alg``
    is ours, without ``crit`` or ``b64``, ``kid`` text if present; a signature that verifies
    (PyJWT's algorithm object, key prepared once); a claims object with ``exp``, ``iat``,
    ``jti`` and ``aud`` not null, ``aud`` not empty and our audience (or a list of texts
    holding it), ``iss`` our issuer (when one is given), ``jti`` and ``sub`` (if present)
    text. PyJWT checks no more with these options (the caller checks the times, on the hub's
    clock); the tests compare both paths on edge and seeded random tokens.
    """

    def __init__(self, algorithm: str, key: Any, audience: str, issuer: str | None) -> None:
        self.algorithm = algorithm
        self.audience = audience
        self.issuer = issuer
        self._alg = jwt.get_algorithm_by_name(algorithm)
        self._header_taken = ""  # the last header text taken (see _plain_header)
        try:
            self._key: Any = self._alg.prepare_key(key)
        except jwt.PyJWTError:
            self._key = None  # PyJWT refuses this key: every token takes the long path

    def claims(self, token: str) -> dict[str, Any] | None:
        """The verified claims of ``token``, or None: let PyJWT decide."""
        match = _COMPACT.fullmatch(token)
        if match is None or self._key is None:
            return None
        header_text, payload_text, signature_text = match.groups()
        try:
            # a hub signs every command with the same header: checked once, then recognised
            if header_text != self._header_taken and not self._plain_header(header_text):
                return None
            payload_data, signature = _segment(payload_text), _segment(signature_text)
            if payload_data is None or signature is None:
                return None
            signing_input = token[: match.end(2)].encode("ascii")
            if not self._alg.verify(signing_input, self._key, signature):
                return None
            claims = _json_object(payload_data)
        except (ValueError, RecursionError, binascii.Error):  # UnicodeDecodeError is one
            return None
        if not isinstance(claims, dict) or not self._plain_claims(claims):
            return None
        return claims

    def _plain_header(self, text: str) -> bool:
        """Whether ``text`` is a header this path takes (remembered when it is).

        Raises:
            ValueError: not base64url, not UTF-8, or not JSON.
        """
        data = _segment(text)
        if data is None:
            return False
        header = _json_object(data)
        if (
            not isinstance(header, dict)
            or header.get("alg") != self.algorithm
            or "crit" in header
            or "b64" in header
            or not isinstance(header.get("kid", ""), str)
        ):
            return False
        self._header_taken = text
        return True

    def _plain_claims(self, claims: dict[str, Any]) -> bool:
        if any(claims.get(name) is None for name in ("exp", "iat", "jti", "aud")):
            return False
        aud = claims["aud"]
        if not aud or not (
            aud == self.audience if isinstance(aud, str) else _holds(aud, self.audience)
        ):
            return False
        if self.issuer is not None:
            iss = claims.get("iss")
            if not isinstance(iss, str) or iss != self.issuer:
                return False
        return isinstance(claims["jti"], str) and isinstance(claims.get("sub", ""), str)


def _holds(values: Any, wanted: str) -> bool:
    """Whether ``values`` is a list of texts holding ``wanted``."""
    return isinstance(values, list) and all(isinstance(v, str) for v in values) and wanted in values


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
        self._plain = _PlainTokens(self.algorithm, self._key, audience, issuer)
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
        claims = self._plain.claims(token)
        if claims is None:
            claims = self._decode(token)
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

    def _decode(self, token: str) -> dict[str, Any]:
        """The claims of ``token`` by PyJWT's ``decode`` (the long path: every refusal).

        Raises:
            CommandRefused: the token is not a JWT, not signed with our algorithm and key, or
                not for this connection and issuer.
        """
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
        return claims


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
        if command.name in ("authenticate_user", "change_password"):
            # one line per login and per password change, the audit line (never the
            # passwords), naming the command: the busiest commands log once, not twice
            event, method = "login", "hub"
            if command.name == "change_password":
                reset = command.payload.get("oldPassword") is None
                event, method = "password_change", "hub:reset" if reset else "hub:self"
            user = username if isinstance(username, str) else None
            audit.record(event, method, user, outcome, command.pid, command=command.id, ms=elapsed)
        else:
            log.info(
                "command id=%s name=%s pid=%s outcome=%s ms=%.1f",
                command.id,
                command.name,
                command.pid,
                outcome,
                elapsed,
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
            passwords.require_write_back(self.write_back)
            old = p.get("oldPassword")
            if old is not None and (not isinstance(old, str) or len(old) > 4096):
                raise CommandRefused("malformed payload: oldPassword must be text")
            profile = self.directory.change_password(
                _text(p, "username", limit=1024), _text(p, "password"), old_password=old
            )
            return {"profile": profile}
        raise CommandRefused(f"unknown command {command.name[:40]!r}")
