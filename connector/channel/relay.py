"""Sign-ins relayed to the hub in batches (protocol §5.2).

The web threads of a worker :meth:`SignInRelay.submit` each successful browser sign-in (its
``ref`` already minted and the browser already on its way to the hub); one relay thread per
worker, started with the agent after the fork, sends them::

    web threads ── submit() ──▶ queue (≤ 1000, memory) ──▶ relay thread ── agent/signins ──▶ hub
                   (no I/O: a lock, a dict insert)             (≤ 100 a request, no linger)

The relay thread is the worker's only sender, so it has a request out or none. When none is
out it sends what is queued at once, up to ``MAX_BATCH`` (an idle relay adds no latency to a
sign-in); while its request is out, new sign-ins queue for the next one, so under load one
request carries many (natural batching, no timer). The relay thread waits only while the
queue is empty, so only a sign-in that finds it empty wakes it (a thread switch per request,
not per sign-in). A sign-in leaves the queue only when the hub acknowledges its ``ref``; a
failed request is retried with backoff (protocol §7), and a sign-in older than
``MAX_AGE_SECONDS`` (its ``ref`` can no longer be redeemed) is dropped with a warning. A full
queue refuses new sign-ins (:class:`RelayFull`: the person sees "try again"). :meth:`drain`
relays what is held before the worker exits.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import threading
import time
from typing import Any

from connector import metrics
from connector.channel.backoff import Backoff
from connector.channel.client import HubClient, HubError, HubUnavailable

log = logging.getLogger(__name__)

MAX_BATCH = 100  # sign-ins per request (protocol §5.2)
MAX_PENDING = 1000  # sign-ins per worker not yet acknowledged (protocol §5.1)
MAX_AGE_SECONDS = 120.0  # the hub's ref lifetime: an older sign-in cannot be redeemed


class RelayFull(HubUnavailable):
    """The relay queue is full (the hub has not taken sign-ins for a while), or stopped."""


@dataclasses.dataclass(frozen=True)
class _SignIn:
    ref: str = dataclasses.field(repr=False)
    wctx: str
    profile: dict[str, Any] = dataclasses.field(repr=False)
    method: str
    minted: float  # monotonic

    def wire(self) -> dict[str, Any]:
        return {"ref": self.ref, "wctx": self.wctx, "profile": self.profile, "method": self.method}


class SignInRelay:
    """A worker's queue of sign-ins for the hub and the thread that relays them."""

    def __init__(
        self,
        client: HubClient,
        *,
        limit: int = MAX_PENDING,
        max_age: float = MAX_AGE_SECONDS,
    ) -> None:
        self.client = client
        self.limit = limit
        self.max_age = max_age
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # the relay thread: a first sign-in
        self._emptied = threading.Condition(self._lock)  # a drain: nothing left to send
        self._queue: collections.OrderedDict[str, _SignIn] = collections.OrderedDict()
        self._halt = threading.Event()  # stop now, whatever is held
        self._thread: threading.Thread | None = None
        self.relayed = 0
        self.dropped = 0

    # --- the web threads' side -------------------------------------------------------------

    def submit(self, ref: str, wctx: str, profile: dict[str, Any], method: str) -> None:
        """Queue one sign-in for the hub (no I/O).

        Raises:
            RelayFull: ``limit`` sign-ins wait already, or the relay has stopped.
        """
        with self._lock:
            if self._halt.is_set():
                raise RelayFull("the connector is stopping")
            if len(self._queue) >= self.limit:
                raise RelayFull(
                    f"{len(self._queue)} sign-ins are waiting to be relayed to the hub already"
                )
            idle = not self._queue
            self._queue[ref] = _SignIn(ref, wctx, profile, method, time.monotonic())
            if idle:  # else the relay thread is busy with the queue: it takes this one next
                self._arrived.notify()

    @property
    def pending(self) -> int:
        """Sign-ins not acknowledged by the hub yet."""
        with self._lock:
            return len(self._queue)

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the relay thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="agent-relay", daemon=True)
            self._thread.start()

    def drain(self, timeout: float) -> bool:
        """Relay what is held (retrying), then stop; True if nothing is left."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._queue and self._thread is not None and time.monotonic() < deadline:
                self._emptied.wait(min(0.2, max(0.0, deadline - time.monotonic())))
            left = len(self._queue)
            self._halt.set()
            self._arrived.notify_all()
        if self._thread is not None:
            self._thread.join(5)
        if left:
            log.warning("relay stopped with %d sign-ins the hub never acknowledged", left)
        return left == 0

    # --- the relay thread ---------------------------------------------------------------------

    def _next_batch(self) -> list[_SignIn] | None:
        """The sign-ins to send next, at once (no request is out); None to stop."""
        with self._lock:
            while not self._queue and not self._halt.is_set():
                self._arrived.wait()
            if self._halt.is_set():
                return None
            too_old = time.monotonic() - self.max_age
            while self._queue and next(iter(self._queue.values())).minted < too_old:
                self._queue.popitem(last=False)
                self.dropped += 1
                log.warning(
                    "a sign-in waited %.0f s for the hub: dropped (its ref has expired)",
                    self.max_age,
                )
            if not self._queue:
                self._emptied.notify_all()
            return list(itertools.islice(self._queue.values(), MAX_BATCH))

    def _loop(self) -> None:
        backoff = Backoff()
        while (batch := self._next_batch()) is not None:
            if not batch:
                continue
            started = time.monotonic()
            try:
                acked = self.client.relay_signins([s.wire() for s in batch])
            except HubError as exc:
                metrics.hub_error("signins")
                delay = backoff.next_delay(exc.retry_after)
                log.warning(
                    "relaying %d sign-ins failed: %s; retrying in %.1f s", len(batch), exc, delay
                )
                self._halt.wait(delay)
                continue
            except Exception:
                metrics.hub_error("signins")
                log.exception("unexpected error while relaying sign-ins")
                self._halt.wait(backoff.next_delay())
                continue
            metrics.hub_request("signins", time.monotonic() - started)
            backoff.reset()
            with self._lock:
                for signin in batch:
                    if signin.ref in acked and self._queue.pop(signin.ref, None) is not None:
                        self.relayed += 1
                if not self._queue:
                    self._emptied.notify_all()
            missing = sum(1 for signin in batch if signin.ref not in acked)
            if missing:
                log.warning("the hub did not acknowledge %d sign-ins; resending", missing)
                self._halt.wait(backoff.next_delay())
