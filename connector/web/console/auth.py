"""Console sign-in: the password in force, signed sessions and the throttles (no Flask here).

The password is ``CONSOLE_PASSWORD`` when set, else the one ``connector console-password``
generated (only its hash is stored: :mod:`connector.consolepw`); with neither, nobody signs
in. A session is a signed cookie naming a random id and a fingerprint of the password in force,
valid :data:`SESSION_SECONDS`: changing the password ends every session. Wrong passwords are
throttled for every worker together, and so is "try a login", per session and in all.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from itsdangerous import BadSignature, URLSafeTimedSerializer

from connector import consolepw, errors
from connector.services import shared_throttle
from connector.settings import Settings
from connector.web.guards import Attempt, Csrf

CSRF_COOKIE = "connector_console_csrf"
SESSION_COOKIE = "connector_console"
SESSION_SECONDS = 8 * 3600
#: Longer session cookies are not even checked.
MAX_COOKIE_LENGTH = 500
#: Wrong console passwords allowed per window (every worker together).
LOGIN_FAILURES = 5
#: "Try a login" attempts allowed per window: per console session, and in all.
TRIES_PER_SESSION = 10
TRIES_IN_ALL = 30
THROTTLE_SECONDS = 300.0


class Credential:
    """The console password in force: ``CONSOLE_PASSWORD``, or the generated one's hash."""

    def __init__(self, kind: str, secret: str) -> None:
        self.kind = kind  # "setting" (secret: the password) or "generated" (secret: its record)
        self.secret = secret

    def __repr__(self) -> str:
        return f"Credential({self.kind!r})"

    @classmethod
    def in_force(cls, settings: Settings) -> Credential | None:
        """The one that applies now (the generated one is read afresh: a reset applies at once)."""
        if settings.console_password:
            return cls("setting", settings.console_password)
        record = consolepw.read_record(settings.state_dir)
        return cls("generated", record) if record else None

    def matches(self, given: str) -> bool:
        """Whether ``given`` is the password."""
        if self.kind == "generated":
            return consolepw.verify(self.secret, given)
        return hmac.compare_digest(
            hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest(),
            hashlib.sha256(self.secret.encode("utf-8", "surrogatepass")).digest(),
        )


def password_kind(settings: Settings) -> str:
    """Which console password applies: ``setting``, ``generated`` or ``none``."""
    credential = Credential.in_force(settings)
    return credential.kind if credential else "none"


class ConsoleKeys:
    """The console's CSRF checker, session signer and throttles (one per app)."""

    def __init__(self, s: Settings) -> None:
        material = s.secret_box.passphrase(create=True)
        self.csrf = Csrf(material + b"/console", max_age=SESSION_SECONDS)
        self._mac_key = hashlib.sha256(b"connector-console-session-v1" + material).digest()
        self.sessions = URLSafeTimedSerializer(self._mac_key, salt="connector-console")
        self.throttle = shared_throttle(s, "console-login", LOGIN_FAILURES, THROTTLE_SECONDS)
        self.tries_per_session = shared_throttle(
            s, "console-try-session", TRIES_PER_SESSION, THROTTLE_SECONDS
        )
        self.tries_in_all = shared_throttle(s, "console-try-all", TRIES_IN_ALL, THROTTLE_SECONDS)

    def fingerprint(self, credential: Credential) -> str:
        """Binds a session to the password in force: changing it ends every session."""
        material = f"{credential.kind}:{credential.secret}".encode()
        return hmac.new(self._mac_key, material, hashlib.sha256).hexdigest()[:32]

    def new_session(self, credential: Credential) -> str:
        """The value of a fresh session cookie for ``credential``."""
        return self.sessions.dumps(
            {"f": self.fingerprint(credential), "s": secrets.token_urlsafe(16)}
        )

    def session_id(self, credential: Credential | None, cookie: str | None) -> str | None:
        """The id of the signed-in session ``cookie`` carries (None: not signed in)."""
        if credential is None or not cookie or len(cookie) > MAX_COOKIE_LENGTH:
            return None
        try:
            data = self.sessions.loads(cookie, max_age=SESSION_SECONDS)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("s"), str):
            return None
        if not hmac.compare_digest(str(data.get("f", "")), self.fingerprint(credential)):
            return None
        return str(data["s"])

    def reserve_try(self, session: str) -> float:
        """Count one "try a login" (before the bind); seconds to wait instead, if over a limit."""
        attempt = Attempt()  # every try counts, success or not: the reservations are kept
        try:
            attempt.reserve(self.tries_per_session, f"session:{session}", forget=False)
            attempt.reserve(self.tries_in_all, "all", forget=False)
        except errors.LoginThrottled as exc:
            attempt.cancel()
            return exc.wait
        return 0.0


def after_sign_in(target: str, default: str) -> str:
    """Where to go once signed in: ``target`` if it is a console page, else ``default``."""
    if not target.startswith("/console/") or target.startswith("//"):
        return default
    return target
