"""Request guards for the sign-in form: CSRF tokens and login throttling.

CSRF uses the double-submit pattern with a keyed MAC: the browser holds a random value in a
cookie, the form carries ``HMAC(key, value)``. The key is derived from the connector's secret
key file, so every worker (and every instance sharing that file) agrees, and no secret sits in
the source. Throttling counts failures per username and per client address in a sliding window
(per process: each gunicorn worker keeps its own counts).
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable

CSRF_COOKIE = "connector_csrf"


class Csrf:
    """Issue and check CSRF tokens bound to a cookie value."""

    def __init__(self, key: bytes) -> None:
        self._key = hashlib.sha256(b"connector-csrf-v1" + key).digest()

    @staticmethod
    def new_cookie() -> str:
        """A fresh random cookie value."""
        return secrets.token_urlsafe(24)

    def token(self, cookie: str) -> str:
        """The form token for a cookie value."""
        return hmac.new(self._key, cookie.encode("utf-8"), hashlib.sha256).hexdigest()

    def check(self, cookie: str | None, token: str | None) -> bool:
        """Whether the form token matches the cookie (constant-time)."""
        if not cookie or not token or len(cookie) > 200 or len(token) > 200:
            return False
        return hmac.compare_digest(self.token(cookie), token)


class Throttle:
    """Sliding-window failure counts per key, bounded in memory."""

    def __init__(
        self,
        limit: int,
        window: float,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._hits: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> collections.deque[float]:
        hits = self._hits.get(key)
        if hits is None:
            return collections.deque()
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        return hits

    def blocked(self, key: str) -> float:
        """Seconds until ``key`` may try again (0 when it is not throttled)."""
        now = self._clock()
        with self._lock:
            hits = self._recent(key, now)
            if len(hits) < self.limit:
                return 0.0
            return max(0.0, hits[0] + self.window - now)

    def failure(self, key: str) -> None:
        """Count one failure for ``key``."""
        now = self._clock()
        with self._lock:
            hits = self._hits.setdefault(key, collections.deque())
            self._recent(key, now)
            hits.append(now)
            self._hits.move_to_end(key)
            while len(hits) > self.limit:
                hits.popleft()
            while len(self._hits) > self.max_keys:
                self._hits.popitem(last=False)

    def reset(self, key: str) -> None:
        """Forget ``key``'s failures (after a success)."""
        with self._lock:
            self._hits.pop(key, None)
