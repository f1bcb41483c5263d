"""In-process timing of the shared login throttle (not part of the suite: run by hand).

``python3 tests/bench/throttle_bench.py [--repeats 7] [--signins 2000] [--procs 4]`` prints,
for each store, the best of ``--repeats`` runs (the minimum: the least disturbed by the other
processes on the machine) of: a successful sign-in's throttle work (three acquires, then the
address released and the name's and entry's counts reset), a throttled attempt (``acquire`` of
a blocked key) and ``blocked()``, and the same sign-ins from ``--procs`` processes at once on
one file, all from one address (so they contend for one record). Tables hold 5,000 other keys.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import secrets
import sqlite3
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from connector.web import guards

log = logging.getLogger(__name__)

#: connections a forked child inherited: never used, nor closed, after the fork (sqlite's rule)
FORKED: list[sqlite3.Connection] = []


class SqliteThrottle(guards.SharedThrottle):
    """:class:`~connector.web.guards.SharedThrottle`'s buckets in sqlite (WAL) instead of the
    hand-made table: the candidate measured against it (issue 18), kept here, not in the product."""

    SCHEMA = 1
    _COUNTS = struct.Struct(f"<{guards.SharedThrottle.BUCKETS + 1}I")

    def __init__(
        self,
        path: Path,
        limit: int,
        window: float,
        max_keys: int = 8192,
        clock: Callable[[], float] = time.time,
        synchronous: str = "NORMAL",
    ) -> None:
        self.path = Path(path)
        self.limit = limit
        self.window = window
        self.width = window / self.BUCKETS
        self.max_keys = max_keys
        self._clock = clock
        self._sync = synchronous
        self._local = threading.local()
        self._salt = self._prepare()

    def _db(self) -> sqlite3.Connection:
        held = getattr(self._local, "db", None)
        if held is not None and held[0] == os.getpid():
            return held[1]
        if held is not None:
            FORKED.append(held[1])  # the parent's: never used (nor closed) after a fork
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.close(fd)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._sync}")
        self._local.db = (os.getpid(), db)
        return db

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _prepare(self) -> bytes:
        with self._write() as db:
            db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value ANY) STRICT")
            got = dict(db.execute("SELECT name, value FROM meta"))
            if got.get("schema") == self.SCHEMA and got.get("window") == self.window:
                return bytes(got["salt"])
            salt = secrets.token_bytes(16)
            db.execute("DROP TABLE IF EXISTS hits")
            db.execute(
                "CREATE TABLE hits (digest BLOB PRIMARY KEY, newest INTEGER NOT NULL,"
                " until REAL NOT NULL, counts BLOB NOT NULL) STRICT, WITHOUT ROWID"
            )
            db.execute("CREATE INDEX hits_lru ON hits (newest)")
            db.execute(
                "CREATE TRIGGER hits_in AFTER INSERT ON hits BEGIN"
                " UPDATE meta SET value = value + 1 WHERE name = 'keys'; END"
            )
            db.execute(
                "CREATE TRIGGER hits_out AFTER DELETE ON hits BEGIN"
                " UPDATE meta SET value = value - 1 WHERE name = 'keys'; END"
            )
            db.execute("DELETE FROM meta")
            db.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [("schema", self.SCHEMA), ("window", self.window), ("salt", salt), ("keys", 0)],
            )
            return salt

    def _read(
        self, db: sqlite3.Connection, digest: bytes, now: int
    ) -> list[tuple[int, int]] | None:
        row = db.execute("SELECT newest, counts FROM hits WHERE digest = ?", (digest,)).fetchone()
        if row is None:
            return None
        return self._alive(row[0], self._COUNTS.unpack(row[1]), now)

    def blocked(self, key: str) -> float:
        now = int(self._clock() // self.width)
        alive = self._read(self._db(), self._digest(key), now)
        return self._wait(alive) if alive else 0.0

    def _insert(self, db: sqlite3.Connection, row: tuple[bytes, int, float, bytes]) -> bool:
        insert = (
            "INSERT INTO hits SELECT ?, ?, ?, ?"
            " WHERE (SELECT value FROM meta WHERE name = 'keys') < ?"
        )
        if db.execute(insert, (*row, self.max_keys)).rowcount:
            return True
        evict = (
            "DELETE FROM hits WHERE digest ="
            " (SELECT digest FROM hits WHERE until <= ? ORDER BY newest LIMIT 1)"
        )
        if not db.execute(evict, (self._clock(),)).rowcount:
            return False
        db.execute("INSERT INTO hits VALUES (?, ?, ?, ?)", row)
        return True

    def _store(
        self,
        db: sqlite3.Connection,
        digest: bytes,
        now: int,
        alive: list[tuple[int, int]] | None,
        add: int,
    ) -> bool:
        counts = [0] * (self.BUCKETS + 1)
        for bucket, n in alive or ():
            counts[bucket % len(counts)] = n
        slot = now % len(counts)
        if add < 0 and not counts[slot] and alive:
            slot = alive[-1][0] % len(counts)
        counts[slot] = max(0, min(counts[slot] + add, 0xFFFFFFFF))
        held = self._alive(now, tuple(counts), now)
        until = self._clock() + self._wait(held)
        row = (digest, now, until, self._COUNTS.pack(*counts))
        if alive is None:
            return self._insert(db, row)
        db.execute(
            "UPDATE hits SET newest = ?, until = ?, counts = ? WHERE digest = ?", (*row[1:], digest)
        )
        return True

    def failure(self, key: str) -> None:
        now = int(self._clock() // self.width)
        digest = self._digest(key)
        with self._write() as db:
            if not self._store(db, digest, now, self._read(db, digest, now), +1):
                log.warning("login throttle table full of blocked keys: a failure not counted")

    def acquire(self, key: str) -> float:
        now = int(self._clock() // self.width)
        digest = self._digest(key)
        with self._write() as db:
            alive = self._read(db, digest, now)
            wait = self._wait(alive) if alive else 0.0
            if wait:
                return wait
            if not self._store(db, digest, now, alive, +1):
                log.warning("login throttle table full of blocked keys: attempt refused")
                return self.window
            return 0.0

    def release(self, key: str) -> None:
        now = int(self._clock() // self.width)
        digest = self._digest(key)
        with self._write() as db:
            alive = self._read(db, digest, now)
            if alive:
                self._store(db, digest, now, alive, -1)

    def reset(self, key: str) -> None:
        self._db().execute("DELETE FROM hits WHERE digest = ?", (self._digest(key),))


STORES: dict[str, Callable[[Path, int, float], Any]] = {
    "file+flock": lambda p, lim, w: guards.SharedThrottle(p / "t.bin", lim, w),
    "sqlite OFF": lambda p, lim, w: SqliteThrottle(p / "off.db", lim, w, synchronous="OFF"),
    "sqlite NORMAL": lambda p, lim, w: SqliteThrottle(p / "normal.db", lim, w),
}


def _signins(t: Any, n: int, tag: str) -> None:
    for i in range(n):
        name, dn = f"name:user{i % 100}", f"dn:uid=user{i % 100},ou=people,{tag}"
        for key in ("10.0.0.1", name, dn):
            assert t.acquire(key) == 0.0
        t.release("10.0.0.1")
        t.reset(name)
        t.reset(dn)


def _best(fn: Callable[[], None], repeats: int, per: int) -> float:
    """Microseconds per operation, best of ``repeats``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) / per * 1e6


def _child(make: Callable[..., Any], where: Path, n: int, start: Any, done: Any) -> None:
    t = make(where, 10**6, 300.0)
    start.wait(30)
    _signins(t, n, f"pid{multiprocessing.current_process().pid}")
    done.put(time.perf_counter())


def _contended(make: Callable[..., Any], where: Path, procs: int, n: int) -> float:
    """Wall microseconds per sign-in with ``procs`` processes signing in at once."""
    ctx = multiprocessing.get_context("fork")
    start, done = ctx.Event(), ctx.Queue()
    children = [
        ctx.Process(target=_child, args=(make, where, n, start, done)) for _ in range(procs)
    ]
    for c in children:
        c.start()
    time.sleep(0.5)  # let every child open the table before the clock starts (a bench, not a test)
    began = time.perf_counter()
    start.set()
    ended = max(done.get(timeout=120) for _ in children)
    for c in children:
        c.join(30)
    return (ended - began) / (procs * n) * 1e6


def _measure(make: Callable[..., Any], where: Path, args: argparse.Namespace) -> list[float]:
    """[sign-in, throttled attempt, blocked(), contended sign-in], microseconds each."""
    t = make(where, 10**6, 300.0)
    for i in range(5000):
        t.failure(f"name:other{i}")
    signin = _best(lambda: _signins(t, args.signins, "x"), args.repeats, args.signins)
    blocker = make(where, 3, 300.0)  # same window: the same table
    for _ in range(3):
        blocker.acquire("10.9.9.9")
    n = 5000
    throttled = _best(lambda: [blocker.acquire("10.9.9.9") for _ in range(n)], args.repeats, n)
    check = _best(lambda: [blocker.blocked("10.9.9.9") for _ in range(n)], args.repeats, n)
    contended = min(_contended(make, where, args.procs, args.signins // 2) for _ in range(3))
    return [signin, throttled, check, contended]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--signins", type=int, default=2000)
    parser.add_argument("--procs", type=int, default=4)
    args = parser.parse_args()
    print(
        f"{'store':14} {'sign-in µs':>11} {'throttled µs':>13} {'blocked() µs':>13} "
        f"{f'{args.procs} procs µs/sign-in':>22}"
    )
    for label, make in STORES.items():
        with tempfile.TemporaryDirectory() as tmp:
            row = _measure(make, Path(tmp), args)
        print(
            f"{label:14} "
            + " ".join(f"{v:{w}.1f}" for v, w in zip(row, (11, 13, 13, 22), strict=True))
        )


if __name__ == "__main__":
    main()
