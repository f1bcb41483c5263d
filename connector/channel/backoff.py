"""Exponential backoff with full jitter, for every retried hub request (protocol §7)."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Exponential backoff with full jitter: 0.5 s doubling up to 30 s."""

    def __init__(
        self, base: float = 0.5, cap: float = 30.0, rng: Callable[[], float] | None = None
    ):
        self.base = base
        self.cap = cap
        self.failures = 0
        self._rng = rng or random.random

    def next_delay(self, retry_after: float | None = None) -> float:
        """How long to wait after one more failure."""
        self.failures += 1
        ceiling: float = min(self.cap, self.base * float(2 ** min(self.failures - 1, 16)))
        delay = self._rng() * ceiling
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.cap))
        return delay

    def reset(self) -> None:
        """Back to the first delay after a success."""
        self.failures = 0
