"""Request guards for the sign-in form and the console: CSRF, framing, login throttling.

CSRF uses the double-submit pattern with a keyed MAC: the browser holds a random value in a
cookie (minted and MACed by us, with its time: a value the client chose is never adopted;
``__Host-`` and ``Secure`` over https), the form carries ``HMAC(key, value)``. The key is
derived from the connector's secret key file, so every worker (and every instance sharing that
file) agrees, and no secret sits in the source. Pages with forms are never framed.

Throttling counts failures per username and per client address in a sliding window; under
gunicorn the counts live in a table under the run directory that every worker shares
(:class:`SharedThrottle`), so the limits hold whatever the number of workers.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import hmac
import ipaddress
import itertools
import logging
import os
import secrets
import struct
import threading
import time
import unicodedata
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from connector import errors

CSRF_COOKIE = "connector_csrf"
#: How long a CSRF cookie (and the forms made for it) stays valid.
CSRF_SECONDS = 3600

log = logging.getLogger(__name__)


class Csrf:
    """Issue and check CSRF cookies and the form tokens bound to them.

    A cookie is ``random.issued.mac``: only a value this key minted, less than ``max_age``
    seconds ago, is ever used, so a value the client chose (set by a sibling site, say) is
    replaced, never adopted, and its forms are refused.
    """

    def __init__(
        self, key: bytes, max_age: float = CSRF_SECONDS, clock: Callable[[], float] = time.time
    ) -> None:
        self._key = hashlib.sha256(b"connector-csrf-v1" + key).digest()
        self._cookie_key = hashlib.sha256(b"connector-csrf-cookie-v1" + key).digest()
        self.max_age = max_age
        self._clock = clock

    def _cookie_mac(self, body: str) -> str:
        return hmac.new(self._cookie_key, body.encode("ascii"), hashlib.sha256).hexdigest()[:32]

    def new_cookie(self) -> str:
        """A fresh cookie value, minted now."""
        body = f"{secrets.token_urlsafe(24)}.{int(self._clock())}"
        return f"{body}.{self._cookie_mac(body)}"

    def _age(self, cookie: str | None) -> float | None:
        """Seconds since this key minted ``cookie``; None if it did not (or it is malformed)."""
        if not cookie or len(cookie) > 200 or not cookie.isascii():
            return None
        body, _, mac = cookie.rpartition(".")
        issued = body.rpartition(".")[2]
        if not issued.isdigit() or not hmac.compare_digest(self._cookie_mac(body), mac):
            return None
        age = self._clock() - int(issued)
        return age if -60 <= age < self.max_age else None

    def reuse(self, cookie: str | None) -> str | None:
        """``cookie`` when a new form may use it (ours, and in the first half of its life)."""
        age = self._age(cookie)
        return cookie if age is not None and age < self.max_age / 2 else None

    def token(self, cookie: str) -> str:
        """The form token for a cookie value."""
        return hmac.new(self._key, cookie.encode("utf-8"), hashlib.sha256).hexdigest()

    def check(self, cookie: str | None, token: str | None) -> bool:
        """Whether the cookie is one we minted, unexpired, and the token is its (constant-time)."""
        if self._age(cookie) is None or not token or len(token) > 200:
            return False
        assert cookie is not None
        return hmac.compare_digest(self.token(cookie), token)


def user_key(username: str) -> str:
    """The throttle key of a typed username: NFKC-normalised and case-folded, so that forms a
    directory matches as one name (fullwidth ``alice``, ``ALICE``, ``alice``) share a count."""
    return "name:" + unicodedata.normalize("NFKC", username).casefold().strip()


def entry_key(dn: str) -> str:
    """The throttle key of the directory entry a name led to (whatever was typed)."""
    return "dn:" + unicodedata.normalize("NFKC", dn).casefold()


def address_key(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The throttle key of a client address: IPv4 per address, IPv6 per /64 (one host
    usually holds a whole /64), an IPv4-mapped IPv6 address as its IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def csrf_cookie_name(base: str, secure: bool) -> str:
    """Over https the cookie is ``__Host-`` prefixed: only this host, over TLS, may set it."""
    return f"__Host-{base}" if secure else base


def set_csrf_cookie(
    resp: Any, base: str, value: str, *, secure: bool, samesite: str, max_age: float
) -> None:
    """Send a CSRF cookie: ``HttpOnly``, an expiry; over https ``Secure``, ``__Host-``, ``/``."""
    resp.set_cookie(
        csrf_cookie_name(base, secure),
        value,
        max_age=int(max_age),
        httponly=True,
        secure=secure,
        samesite=samesite,
        path="/",
    )


def no_framing(resp: Any) -> Any:
    """Forbid framing the page (added to a CSP already set, else one of its own)."""
    resp.headers["X-Frame-Options"] = "DENY"
    csp = resp.headers.get("Content-Security-Policy")
    if not csp:
        resp.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
    elif "frame-ancestors" not in csp:
        resp.headers["Content-Security-Policy"] = f"{csp}; frame-ancestors 'none'"
    return resp


class Throttle:
    """Sliding-window failure counts per key, bounded in memory.

    A key that is blocked is never evicted to make room for another: when every key held is
    blocked, a new key is refused (blocked for the window) rather than let a flood of junk
    keys wash a victim's count out.
    """

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

    def _wait(self, hits: collections.deque[float], now: float) -> float:
        if len(hits) < self.limit:
            return 0.0
        return max(0.0, hits[0] + self.window - now)

    def blocked(self, key: str) -> float:
        """Seconds until ``key`` may try again (0 when it is not throttled)."""
        now = self._clock()
        with self._lock:
            return self._wait(self._recent(key, now), now)

    def _make_room(self, now: float) -> bool:
        """Evict the stalest keys that are not blocked until there is room; False if none."""
        for old in list(self._hits):
            if len(self._hits) < self.max_keys:
                return True
            if not self._wait(self._recent(old, now), now):
                del self._hits[old]
        return len(self._hits) < self.max_keys

    def _count(self, key: str, now: float) -> bool:
        if key not in self._hits and not self._make_room(now):
            return False
        hits = self._hits.setdefault(key, collections.deque())
        self._recent(key, now)
        hits.append(now)
        self._hits.move_to_end(key)
        while len(hits) > self.limit:
            hits.popleft()
        return True

    def failure(self, key: str) -> None:
        """Count one failure for ``key``."""
        now = self._clock()
        with self._lock:
            self._count(key, now)

    def acquire(self, key: str) -> float:
        """Reserve one attempt for ``key``: 0 if it was free (and is now counted), else the
        seconds to wait. Check and count are one step, so parallel attempts cannot all pass a
        check that only one of them should have passed."""
        now = self._clock()
        with self._lock:
            wait = self._wait(self._recent(key, now), now)
            if wait:
                return wait
            return 0.0 if self._count(key, now) else self.window

    def release(self, key: str) -> None:
        """Give back the attempt :meth:`acquire` counted (it turned out not to be a failure)."""
        with self._lock:
            hits = self._hits.get(key)
            if hits:
                hits.pop()

    def reset(self, key: str) -> None:
        """Forget ``key``'s failures (after a success)."""
        with self._lock:
            self._hits.pop(key, None)

    def reserve(self, key: str) -> tuple[float, None]:
        """:meth:`acquire`, as :meth:`SharedThrottle.reserve` answers it (no hint here)."""
        return self.acquire(key), None

    def settle(self, keys: Iterable[tuple[str, bool]]) -> None:
        """For each ``(key, forget)``: :meth:`reset` ``key`` if ``forget``, else
        :meth:`release` it."""
        for key, forget in keys:
            if forget:
                self.reset(key)
            else:
                self.release(key)

    def settle_held(self, held: Iterable[tuple[str, bool, Any]]) -> None:
        """:meth:`settle` of ``(key, forget, hint)`` (the hint of :meth:`reserve`, unused)."""
        self.settle((key, forget) for key, forget, _hint in held)


def _one_count_at(slot: int, slots: int) -> bytes:
    """A :class:`SharedThrottle` record's ``slots`` counts: one failure at ``slot``."""
    return struct.pack(f"<{slots}I", *(int(i == slot) for i in range(slots)))


class SharedThrottle:
    """:class:`Throttle`'s windows, shared by every process that opens the same file.

    The file holds a fixed table: a header (magic, salt, window, slots) and ``slots`` records,
    each a 16-byte keyed hash of the key (no username or address is written), the newest time
    bucket used and failure counts for the last ``BUCKETS + 1`` buckets of ``window /
    BUCKETS`` seconds. So a record's size does not depend on the limit, and a failure counts
    for at least ``window`` seconds and at most one bucket longer. A key lives in one of
    ``PROBE`` records from its hash's slot; when all are taken, the one used least recently
    whose key is not blocked gives way (a blocked key keeps its record until its window ends;
    with none to give, the new key is refused). Every read and update holds an exclusive
    ``flock`` on the file (microseconds); a process forked with the table open takes its own
    descriptor (its own lock) at its next use.
    Times are wall-clock seconds: the table is meaningful across processes and restarts; a
    clock jump shifts windows, no more.
    """

    MAGIC = b"CTHR0002"
    BUCKETS = 32
    PROBE = 8
    _HEADER = struct.Struct("<8s16sdI")
    _RECORD = struct.Struct(f"<16sq{BUCKETS + 1}I")
    _NEWEST = struct.Struct("<q")
    _COUNTS = struct.Struct(f"<{BUCKETS + 1}I")
    _NEWEST_AT = 16  # in a record: the digest, then the newest bucket, then the counts
    _COUNTS_AT = _NEWEST_AT + _NEWEST.size
    _COUNT = struct.Struct("<I")
    _NO_COUNTS = bytes(4 * (BUCKETS + 1))
    _EMPTY = bytes(_RECORD.size)
    #: a record's counts with one failure in bucket slot i (a new key's first attempt)
    _FIRST = tuple(map(_one_count_at, range(BUCKETS + 1), itertools.repeat(BUCKETS + 1)))

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
        self._forked = False  # set in a child process (see _after_fork): reopen at next use
        _OPEN_TABLES.add(self)
        self._salt = self._prepare()

    def _size(self) -> int:
        return self._HEADER.size + (self.slots + self.PROBE) * self._RECORD.size

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        fd = self._lock()
        try:
            yield fd
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

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

    _SLOTS = range(BUCKETS + 1)

    def _alive(self, newest: int, counts: tuple[int, ...], now: int) -> list[tuple[int, int]]:
        """(bucket, failures) of the buckets still inside the window at bucket ``now``."""
        if not any(counts):
            return []
        ring = self.BUCKETS + 1
        low = max(newest - ring + 1, now - self.BUCKETS)
        # slot i holds bucket newest - ((newest - i) % ring): the only one of the ring's
        # last ``ring`` buckets that falls in it (only the slots holding a count visited)
        held = [
            (bucket, counts[i])
            for i in itertools.compress(self._SLOTS, counts)
            if (bucket := newest - (newest - i) % ring) >= low
        ]
        held.sort()
        return held

    def _wait(self, alive: list[tuple[int, int]]) -> float:
        """Seconds until enough of ``alive``'s failures leave the window (0: not blocked)."""
        total = sum(n for _, n in alive)
        if total < self.limit:
            return 0.0
        for bucket, n in alive:  # oldest first: when enough have left the window
            total -= n
            if total < self.limit:
                leaves = (bucket + self.BUCKETS + 1) * self.width
                return max(0.0, leaves - self._clock())
        return 0.0

    def _lock(self) -> int:
        """Take the table's exclusive lock; the descriptor to read and write (and unlock)."""
        if self._forked:  # the parent's descriptor shares its lock: same file, own descriptor
            inherited, self._fd = self._fd, os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            self._forked = False
            os.close(inherited)
        fd = self._fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def _find(self, fd: int, digest: bytes, now: int) -> tuple[int | None, list[tuple[int, int]]]:
        """Under the lock: the record offset for ``digest`` and its live (bucket, count).

        The offset is the key's own record, else an empty or expired one, else the least
        recently used record whose key is not blocked; ``None`` when every record the key may
        use holds a blocked key (a blocked key is never evicted before its window ends).
        Only a matching record is unpacked whole; empty ones are told apart by their bytes.
        """
        return self._choose(*self._probe(fd, digest), now)

    def _probe(self, fd: int, digest: bytes) -> tuple[int, bytes, int]:
        """Under the lock: the records ``digest`` may use (their offset and bytes) and where
        among them its own is (-1: none)."""
        size = self._RECORD.size
        first = int.from_bytes(digest[:4], "little") % self.slots
        offset = self._HEADER.size + first * size
        raw = os.pread(fd, self.PROBE * size, offset)
        at = raw.find(digest)
        while at > 0 and at % size:  # a digest is only ever at a record's start
            at = raw.find(digest, at + 1)
        return offset, raw, at

    def _choose(
        self, offset: int, raw: bytes, at: int, now: int
    ) -> tuple[int | None, list[tuple[int, int]]]:
        """:meth:`_find` of what :meth:`_probe` read."""
        size = self._RECORD.size
        if at >= 0:
            record = self._RECORD.unpack_from(raw, at)
            return offset + at, self._alive(record[1], record[2:], now)
        victim: int | None = None
        victim_newest: int | None = None
        for i in range(self.PROBE):
            at = i * size
            stamp = -1
            if raw[at + self._COUNTS_AT : at + size] != self._NO_COUNTS:
                record = self._RECORD.unpack_from(raw, at)
                newest = record[1]
                held = self._alive(newest, record[2:], now)
                if held and self._wait(held):
                    continue  # blocked: keeps its record until its window ends
                stamp = newest if held else -1
            if victim_newest is None or stamp < victim_newest:
                victim, victim_newest = offset + at, stamp
                if stamp == -1:
                    break  # free (empty or expired): nothing better to find
        return victim, []

    def _now(self) -> int:
        return int(self._clock() // self.width)

    def blocked(self, key: str) -> float:
        """Seconds until ``key`` may try again (0 when it is not throttled)."""
        digest, now = self._digest(key), self._now()
        fd = self._lock()
        try:
            return self._wait(self._find(fd, digest, now)[1])
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _write(
        self, fd: int, at: int, digest: bytes, now: int, alive: list[tuple[int, int]], add: int
    ) -> None:
        counts = [0] * (self.BUCKETS + 1)
        for bucket, n in alive:
            counts[bucket % len(counts)] = n
        slot = now % len(counts)
        if add < 0 and not counts[slot] and alive:  # give back from the newest bucket
            slot = alive[-1][0] % len(counts)
        counts[slot] = max(0, min(counts[slot] + add, 0xFFFFFFFF))
        os.pwrite(fd, self._RECORD.pack(digest, now, *counts), at)

    def failure(self, key: str) -> None:
        """Count one failure for ``key``."""
        digest, now = self._digest(key), self._now()
        fd = self._lock()
        try:
            at, alive = self._find(fd, digest, now)
            if at is None:
                log.warning("login throttle table full of blocked keys: a failure not counted")
                return
            self._write(fd, at, digest, now, alive, +1)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def acquire(self, key: str) -> float:
        """Reserve one attempt for ``key``: 0 if it was free (and is now counted), else the
        seconds to wait. Check and count happen under one lock, so parallel attempts (in any
        worker) cannot all pass a check that only some of them should have passed. When the
        table has no room that a blocked key does not hold, the attempt is refused."""
        return self.reserve(key)[0]

    def reserve(self, key: str) -> tuple[float, tuple[bytes, int] | None]:
        """:meth:`acquire`, and where the attempt was counted: a hint for :meth:`settle_held`
        (the key's digest and record), None when it was not counted."""
        digest, now = self._digest(key), self._now()
        fd = self._lock()
        try:
            offset, raw, found = self._probe(fd, digest)
            at = self._count_now(fd, digest, now, offset, raw, found)
            if at is not None:
                return 0.0, (digest, at)
            at, alive = self._choose(offset, raw, found, now)
            wait = self._wait(alive)
            if wait:
                return wait, None
            if at is None:
                log.warning("login throttle table full of blocked keys: attempt refused")
                return self.window, None
            self._write(fd, at, digest, now, alive, +1)
            return 0.0, (digest, at)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _count_now(
        self, fd: int, digest: bytes, now: int, offset: int, raw: bytes, found: int
    ) -> int | None:
        """Under the lock, the usual attempts counted in a few bytes: a key whose record is
        of this bucket and under the limit (every count in it is inside the window), or a new
        key whose first record is empty (the one :meth:`_choose` would give it). The record's
        offset, or None for the general way (the same bytes written, as :meth:`_write`)."""
        ring = self.BUCKETS + 1
        if found < 0:
            if raw[self._COUNTS_AT : self._RECORD.size] != self._NO_COUNTS:
                return None
            os.pwrite(fd, digest + self._NEWEST.pack(now) + self._FIRST[now % ring], offset)
            return offset
        if self._NEWEST.unpack_from(raw, found + self._NEWEST_AT)[0] != now:
            return None
        counts = self._COUNTS.unpack_from(raw, found + self._COUNTS_AT)
        slot = now % ring
        if sum(counts) >= self.limit or counts[slot] >= 0xFFFFFFFF:
            return None
        at = offset + found
        os.pwrite(fd, self._COUNT.pack(counts[slot] + 1), at + self._COUNTS_AT + 4 * slot)
        return at

    def _give_back_now(self, fd: int, at: int, fields: tuple[Any, ...], now: int) -> bool:
        """Under the lock, the usual attempt given back in a few bytes: one of this bucket's
        (the same bytes :meth:`_write` would write). Whether it was."""
        slot = now % (self.BUCKETS + 1)
        count = fields[2 + slot]
        if fields[1] != now or not count:
            return False
        os.pwrite(fd, self._COUNT.pack(count - 1), at + self._COUNTS_AT + 4 * slot)
        return True

    def release(self, key: str) -> None:
        """Give back the attempt :meth:`acquire` counted (it turned out not to be a failure)."""
        self.settle([(key, False)])

    def reset(self, key: str) -> None:
        """Forget ``key``'s failures (after a success)."""
        self.settle([(key, True)])

    def settle(self, keys: Iterable[tuple[str, bool]]) -> None:
        """For each ``(key, forget)``: :meth:`reset` ``key`` if ``forget``, else
        :meth:`release` it; all under one lock (one lock cycle for a sign-in's keys)."""
        self.settle_held((key, forget, None) for key, forget in keys)

    def settle_held(self, held: Iterable[tuple[str, bool, tuple[bytes, int] | None]]) -> None:
        """:meth:`settle` of ``(key, forget, hint)``: with the hint of :meth:`reserve`, the
        key's record is looked at where it was counted (the lookup again only if another key
        has taken that record since)."""
        now = self._now()
        wanted = [(hint or (self._digest(key), None), forget) for key, forget, hint in held]
        size = self._RECORD.size
        fd = self._lock()
        try:
            for (digest, where), forget in wanted:
                record = os.pread(fd, size, where) if where is not None else b""
                if where is None or record[: self._NEWEST_AT] != digest:
                    at, alive = self._find(fd, digest, now)
                elif forget:  # its own record, as counted: emptied whatever it holds
                    os.pwrite(fd, self._EMPTY, where)
                    continue
                else:
                    fields = self._RECORD.unpack(record)
                    if self._give_back_now(fd, where, fields, now):
                        continue
                    at, alive = where, self._alive(fields[1], fields[2:], now)
                if at is None or not alive:
                    continue
                if forget:
                    os.pwrite(fd, self._EMPTY, at)
                else:
                    self._write(fd, at, digest, now, alive, -1)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


#: Every table open in this process: a forked child takes its own descriptor (see _lock).
_OPEN_TABLES: weakref.WeakSet[SharedThrottle] = weakref.WeakSet()


def _after_fork() -> None:
    for table in list(_OPEN_TABLES):
        table._forked = True


os.register_at_fork(after_in_child=_after_fork)


class Attempt:
    """One sign-in attempt's reservations across throttles.

    :meth:`reserve` takes one attempt from a throttle for a key, or raises
    :class:`~connector.errors.LoginThrottled`; the outcome then settles them all: a failure
    keeps them counted; :meth:`cancel` (nothing was tried, or the directory broke) gives them
    back; :meth:`succeeded` gives back the address's and forgets the name's and the entry's.
    """

    def __init__(self) -> None:
        self._held: list[tuple[Throttle | SharedThrottle, str, bool, Any]] = []

    def reserve(self, throttle: Throttle | SharedThrottle, key: str, *, forget: bool) -> None:
        """Reserve an attempt for ``key``; ``forget``: reset its count on success.

        Raises:
            LoginThrottled: ``key`` has used up its attempts for now.
        """
        wait, hint = throttle.reserve(key)
        if wait:
            raise errors.LoginThrottled(wait)
        self._held.append((throttle, key, forget, hint))

    def cancel(self) -> None:
        """Give every reserved attempt back."""
        self._settle(lambda forget: False)

    def succeeded(self) -> None:
        """Settle a successful sign-in."""
        self._settle(lambda forget: forget)

    def _settle(self, forgets: Callable[[bool], bool]) -> None:
        """Settle the reservations, one call per throttle (one lock cycle per shared table):
        a key is reset when ``forgets(its forget flag)``, else its attempt given back."""
        by_throttle: dict[int, tuple[Throttle | SharedThrottle, list[tuple[str, bool, Any]]]] = {}
        for throttle, key, forget, hint in self._held:
            entry = (key, forgets(forget), hint)
            by_throttle.setdefault(id(throttle), (throttle, []))[1].append(entry)
        self._held.clear()
        for throttle, held in by_throttle.values():
            throttle.settle_held(held)
