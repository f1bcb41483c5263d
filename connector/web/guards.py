"""Request guards for the sign-in form: CSRF tokens and login throttling.

CSRF uses the double-submit pattern with a keyed MAC: the browser holds a random value in a
cookie, the form carries ``HMAC(key, value)``. The key is derived from the connector's secret
key file, so every worker (and every instance sharing that file) agrees, and no secret sits in
the source. Throttling counts failures per username and per client address in a sliding window;
under gunicorn the counts live in a table under the run directory that every worker shares
(:class:`SharedThrottle`), so the limits hold whatever the number of workers.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import hmac
import os
import secrets
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

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


class SharedThrottle:
    """:class:`Throttle`'s windows, shared by every process that opens the same file.

    The file holds a fixed table: a header (magic, salt, window, slots) and ``slots`` records,
    each a 16-byte keyed hash of the key (no username or address is written), the newest time
    bucket used and failure counts for the last ``BUCKETS + 1`` buckets of ``window /
    BUCKETS`` seconds. So a record's size does not depend on the limit, and a failure counts
    for at least ``window`` seconds and at most one bucket longer. A key lives in one of
    ``PROBE`` records from its hash's slot; when all are taken, the one used least recently
    gives way. Every read and update holds an exclusive ``flock`` on the file (microseconds).
    Times are wall-clock seconds: the table is meaningful across processes and restarts; a
    clock jump shifts windows, no more.
    """

    MAGIC = b"CTHR0002"
    BUCKETS = 32
    PROBE = 8
    _HEADER = struct.Struct("<8s16sdI")
    _RECORD = struct.Struct(f"<16sq{BUCKETS + 1}I")
    _NEWEST = struct.Struct("<q")
    _NO_COUNTS = bytes(4 * (BUCKETS + 1))

    def __init__(
        self,
        path: Path,
        limit: int,
        window: float,
        slots: int = 8192,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.limit = limit
        self.window = window
        self.width = window / self.BUCKETS
        self.slots = slots
        self._clock = clock
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._pid = os.getpid()
        self._salt = self._prepare()

    def _size(self) -> int:
        return self._HEADER.size + (self.slots + self.PROBE) * self._RECORD.size

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        if os.getpid() != self._pid:  # forked: same file, own descriptor (own lock)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            self._pid = os.getpid()
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield self._fd
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _prepare(self) -> bytes:
        """The table's salt; (re)create the table if it is new or laid out differently."""
        with self._locked() as fd:
            head = os.pread(fd, self._HEADER.size, 0)
            if len(head) == self._HEADER.size:
                magic, salt, window, slots = self._HEADER.unpack(head)
                same = (magic, window, slots) == (self.MAGIC, self.window, self.slots)
                if same and os.fstat(fd).st_size == self._size():
                    return bytes(salt)
            salt = secrets.token_bytes(16)
            os.ftruncate(fd, 0)
            os.ftruncate(fd, self._size())
            os.pwrite(fd, self._HEADER.pack(self.MAGIC, salt, self.window, self.slots), 0)
            return salt

    def _digest(self, key: str) -> bytes:
        data = key.encode("utf-8", "surrogatepass")
        return hashlib.blake2b(data, key=self._salt, digest_size=16).digest()

    def _alive(self, newest: int, counts: tuple[int, ...], now: int) -> list[tuple[int, int]]:
        """(bucket, failures) of the buckets still inside the window at bucket ``now``."""
        ring = self.BUCKETS + 1
        return [
            (b, counts[b % ring])
            for b in range(max(newest - ring + 1, now - self.BUCKETS), newest + 1)
            if counts[b % ring]
        ]

    @contextlib.contextmanager
    def _entry(self, key: str) -> Iterator[tuple[int, int, bytes, int, list[tuple[int, int]]]]:
        """Under the lock: (fd, record offset, digest, bucket now, live (bucket, count)).

        Only the matching record is unpacked whole; the others are told apart by their digest
        and, for the victim, their newest bucket and whether their counts are all zero.
        """
        now = int(self._clock() // self.width)
        digest = self._digest(key)
        size = self._RECORD.size
        with self._locked() as fd:
            first = int.from_bytes(digest[:4], "little") % self.slots
            offset = self._HEADER.size + first * size
            raw = os.pread(fd, self.PROBE * size, offset)
            victim, victim_newest, alive = offset, None, []
            for i in range(self.PROBE):
                at = i * size
                if raw[at : at + 16] == digest:
                    _, newest, *counts = self._RECORD.unpack_from(raw, at)
                    victim, alive = offset + at, self._alive(newest, tuple(counts), now)
                    break
                empty = raw[at + 24 : at + size] == self._NO_COUNTS
                newest = -1 if empty else self._NEWEST.unpack_from(raw, at + 16)[0]
                if victim_newest is None or empty or newest < victim_newest:
                    victim, victim_newest = offset + at, newest
            yield fd, victim, digest, now, alive

    def blocked(self, key: str) -> float:
        """Seconds until ``key`` may try again (0 when it is not throttled)."""
        with self._entry(key) as (_, _, _, _, alive):
            total = sum(n for _, n in alive)
            if total < self.limit:
                return 0.0
            for bucket, n in alive:  # oldest first: when enough have left the window
                total -= n
                if total < self.limit:
                    leaves = (bucket + self.BUCKETS + 1) * self.width
                    return max(0.0, leaves - self._clock())
            return 0.0

    def failure(self, key: str) -> None:
        """Count one failure for ``key``."""
        with self._entry(key) as (fd, at, digest, now, alive):
            counts = [0] * (self.BUCKETS + 1)
            for bucket, n in alive:
                counts[bucket % len(counts)] = n
            slot = now % len(counts)
            counts[slot] = min(counts[slot] + 1, 0xFFFFFFFF)
            os.pwrite(fd, self._RECORD.pack(digest, now, *counts), at)

    def reset(self, key: str) -> None:
        """Forget ``key``'s failures (after a success)."""
        with self._entry(key) as (fd, at, _, _, alive):
            if alive:
                os.pwrite(fd, self._RECORD.pack(b"\0" * 16, 0, *[0] * (self.BUCKETS + 1)), at)
