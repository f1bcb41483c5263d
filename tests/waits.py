"""Waiting for a state rather than sleeping: ``until(predicate)`` polls until it holds.

Plain Python, imported by name (``from waits import until``) like ``servers`` and ``hubs``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(
    predicate: Callable[[], T], timeout: float = 10.0, what: str = "", interval: float = 0.05
) -> T:
    """The first true value ``predicate`` returns, polled every ``interval`` seconds.

    Raises:
        AssertionError: it was still false after ``timeout`` seconds (naming ``what``).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not reached in {timeout} s: {what or predicate}; last {value!r}")
        time.sleep(interval)


def within(predicate: Callable[[], T], timeout: float, interval: float = 0.05) -> T | None:
    """The first true value ``predicate`` returns within ``timeout`` seconds, else None.

    For a state that may rightly never come (an answer from a process the test killed): the
    wait is bounded, and the caller looks at what it has either way.
    """
    try:
        return until(predicate, timeout, interval=interval)
    except AssertionError:
        return None
