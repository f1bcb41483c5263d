"""In-process timing of the per-user group cache (not part of the suite: run by hand).

``python3 tests/bench/cache_bench.py [--repeats 7]`` prints, for the connector's
:class:`~connector.directory.groups.GroupCache` and for the same cache on
``cachetools.TTLCache`` (the kept TTL cache measured against it, issue 18; it needs
``pip install cachetools``), the best of ``--repeats`` runs of: lookups that hit, lookups that
miss, and inserts into a full cache (each evicting the least recently used), in operations per
second. Keys are DNs of 10,000 users in a cache of 5,000 entries.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from typing import Any

import cachetools

from connector.directory.groups import GroupCache


class TTLGroupCache:
    """:class:`GroupCache`'s lookups and inserts on ``cachetools.TTLCache`` under a lock (its
    ``ttl <= 0``, no-cache case left out: not measured)."""

    def __init__(self, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic):
        self._data: cachetools.TTLCache[str, Any] = cachetools.TTLCache(
            max_entries, ttl, timer=clock
        )
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, dn: str) -> Any | None:
        with self._lock:
            try:  # cheaper than .get(), which looks the key up twice
                value = self._data[dn.lower()]
            except KeyError:
                self.misses += 1
                return None
            self.hits += 1
            return value

    def put(self, dn: str, value: Any) -> None:
        with self._lock:
            self._data[dn.lower()] = value


def _rate(fn: Callable[[int], None], n: int, repeats: int) -> float:
    """Operations per second, best of ``repeats`` runs of ``n``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    dns = [f"uid=user{i},ou=People,dc=example,dc=test" for i in range(10_000)]
    print(f"{'cache':10} {'hit/s':>12} {'miss/s':>12} {'insert/s':>12}")
    for label, cls in (("GroupCache", GroupCache), ("TTLCache", TTLGroupCache)):
        cache: Any = cls(600.0, 5000)
        for dn in dns[:5000]:
            cache.put(dn, ("g1", "g2"))

        def hits(n: int, cache: Any = cache) -> None:
            for i in range(n):
                cache.get(dns[i % 5000])

        def misses(n: int, cache: Any = cache) -> None:
            for i in range(n):
                cache.get(dns[5000 + i % 5000])

        def inserts(n: int, cache: Any = cache) -> None:
            for i in range(n):
                cache.put(dns[i % 10_000], ("g1", "g2"))

        row = [_rate(f, 50_000, args.repeats) for f in (hits, misses, inserts)]
        print(f"{label:10} " + " ".join(f"{v:12,.0f}" for v in row))


if __name__ == "__main__":
    main()
