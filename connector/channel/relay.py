"""Sign-ins relayed to the hub in batches (protocol §5.2).

The web threads of a worker :meth:`SignInRelay.submit` each successful browser sign-in (its
``ref`` already minted and the browser already on its way to the hub); one relay thread per
worker, started with the agent after the fork, sends them::

    web threads ── submit() ──▶ queue (≤ 1000, memory) ──▶ relay thread ── agent/signins ──▶ hub
                   (a lock, a dict insert; see below)          (≤ 100 a request)

The relay has a request out or none. When none is out, what is queued goes at once, up to
``MAX_BATCH`` (an idle relay adds no latency to a sign-in); while its request is out, new
sign-ins queue for the next one, so under load one request carries many (natural batching, no
timer). The relay thread waits only while the queue is empty, so only a sign-in that finds it
empty wakes it (a thread switch per request, not per sign-in).

One exception to "at once": the web threads say when they begin and end checking a sign-in
(:meth:`SignInRelay.checking`, :meth:`SignInRelay.checked`); a sign-in that finds the relay
idle while another is being checked is *held* for it, and the thread that completes the
batch writes one request for all (at 4 clients on two workers, half the requests: a request
costs the worker about 0.2 ms of CPU, the hub one more request). The hold ends when the last
sign-in checked is done, with the first one submitted ``LINGER_SECONDS`` or more after it began,
or when the relay thread next looks (``WAKE_SECONDS``) — whichever comes first.

That sign-in's web thread writes the request itself when the relay thread has one ready
(:meth:`HubClient.prepare_signins`: the relay's own kept connection, used less than
``FRESH_SECONDS`` ago, and headers with an agent token signed ahead, while the relay thread
was idle) and its body is small (``WRITE_LIMIT``): it writes it, hands it over and goes on,
never waiting for the hub's answer, which the relay thread reads once that web thread has
answered its browser (it says so when its response is closed; the relay thread reads anyway
after ``WAKE_SECONDS``), not while it answers. So the request leaves before
the browser's redirect, and the profile is usually at the hub before the browser; otherwise
the relay thread, woken, would wait for the GIL until the web thread had written its response
and would send after it. When nothing is ready (behind a proxy, after a quiet second, after a
failure), or the write fails, the relay thread sends as before, and prepares the next request
after it if sign-ins come less than ``FRESH_SECONDS`` apart (one gone stale is replaced; when
they come further apart, none is: it would go stale unused); a request written but not
answered leaves its sign-in queued for the relay thread to send again (the hub acknowledges a
``ref`` it already holds and ignores it). A sign-in leaves the queue only when the hub
acknowledges its ``ref``; a
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
from collections.abc import Callable
from typing import Any

from connector import metrics
from connector.channel.backoff import Backoff
from connector.channel.client import HubClient, HubError, HubUnavailable, PreparedSignins

log = logging.getLogger(__name__)

MAX_BATCH = 100  # sign-ins per request (protocol §5.2)
MAX_PENDING = 1000  # sign-ins per worker not yet acknowledged (protocol §5.1)
MAX_AGE_SECONDS = 120.0  # the hub's ref lifetime: an older sign-in cannot be redeemed
#: A prepared request older than this is not written by a web thread (the relay thread sends):
#: its connection may have idled long enough for the hub to close it.
FRESH_SECONDS = 1.0
#: The largest body a web thread writes itself (it fits the socket's buffer: no wait).
WRITE_LIMIT = 8192
#: How long the relay thread leaves the hub's answer to a request a web thread wrote unread
#: when that thread never says its own answer is out (see :meth:`SignInRelay.submit`); also
#: how often an idle relay thread looks for such a request while a fresh one is ready.
WAKE_SECONDS = 0.05
#: How long an idle relay holds a sign-in for another being checked in the worker meanwhile,
#: so that one request carries both: at most this, and ``WAKE_SECONDS`` while that one is slow.
LINGER_SECONDS = 0.005


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


def _usable(ready: PreparedSignins | None, now: float) -> bool:
    """Whether a web thread may write the next request on ``ready``: an unspent token (signed
    after the connection's last use) and a connection used less than ``FRESH_SECONDS`` ago."""
    return (
        ready is not None
        and bool(ready.headers)
        and now - ready.at < FRESH_SECONDS
        and ready.conn.sock is not None
    )


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
        self._ready: PreparedSignins | None = None  # for a web thread to write the next request
        self._writing = False  # a web thread is writing on the relay's connection
        self._written: tuple[PreparedSignins, list[_SignIn], float] | None = None  # to answer
        self._checking = 0  # sign-ins web threads are checking now (see checking())
        self._held: float | None = None  # an idle relay's queue held since (monotonic)
        self._woken = False  # the web thread that wrote it has answered its browser
        self._healthy = True  # the last request was answered: worth preparing the next one
        self._last_minted: float | None = None  # the last sign-in submitted (monotonic)
        self._gap: float | None = None  # the time between the last two sign-ins submitted
        self.relayed = 0
        self.dropped = 0
        self.written = 0  # requests web threads wrote (diagnostics, tests)
        self.prepared = 0  # requests the relay thread made ready (diagnostics, tests)
        self.unused = 0  # prepared requests that went stale unused and were let go
        self.wakeups = 0  # times the relay thread woke to look (diagnostics, tests)

    # --- the web threads' side -------------------------------------------------------------

    def submit(
        self, ref: str, wctx: str, profile: dict[str, Any], method: str
    ) -> Callable[[], None] | None:
        """Queue one sign-in for the hub; if the relay is idle and has a request ready, write
        it (never waiting for the hub's answer; see the module's docstring).

        Returns, when this thread wrote the request, a function to call once its own answer
        is out (the browser's redirect): the relay thread then reads the hub's answer, not
        before, so that it does not take the interpreter from this thread while it answers;
        if it is never called, the relay thread reads after ``WAKE_SECONDS``. None otherwise.

        Raises:
            RelayFull: ``limit`` sign-ins wait already, or the relay has stopped.
        """
        signin = _SignIn(ref, wctx, profile, method, time.monotonic())
        with self._lock:
            if self._halt.is_set():
                raise RelayFull("the connector is stopping")
            if len(self._queue) >= self.limit:
                raise RelayFull(
                    f"{len(self._queue)} sign-ins are waiting to be relayed to the hub already"
                )
            if self._last_minted is not None:
                self._gap = signin.minted - self._last_minted
            self._last_minted = signin.minted
            idle = not self._queue
            held = self._held
            self._queue[ref] = signin
            if not idle and held is None:  # the relay thread is busy: it takes this one next
                return None
            ready = self._ready
            if not _usable(ready, signin.minted):
                self._held = None
                self._arrived.notify()
                return None
            since = signin.minted if held is None else held
            if self._checking > 1 and signin.minted - since < LINGER_SECONDS:
                # another sign-in is being checked here: its thread writes for both
                if held is None:
                    self._held = signin.minted
                return None
            assert ready is not None
            self._held = None
            self._ready = None
            self._writing = True
            batch = list(itertools.islice(self._queue.values(), MAX_BATCH))
        return self._wake if self._write(ready, batch) else None

    def checking(self) -> None:
        """A web thread begins to check a sign-in (then :meth:`checked`, whatever the outcome):
        while one is checked, an idle relay holds a sign-in submitted meanwhile for it."""
        with self._lock:
            self._checking += 1

    def checked(self) -> None:
        """The sign-in :meth:`checking` announced is done (submitted or refused); the last one
        done sends what is held, by the relay thread, if its own sign-in did not."""
        with self._lock:
            self._checking -= 1
            if self._held is not None and self._checking <= 0:
                self._held = None
                self._arrived.notify()

    def _wake(self) -> None:
        """The web thread that wrote the request has answered its browser."""
        with self._lock:
            self._woken = True
            self._arrived.notify()

    def _write(self, ready: PreparedSignins, batch: list[_SignIn]) -> bool:
        """Write the request of an idle relay for ``batch`` (a web thread), then hand it to
        the relay thread: to read its answer (once woken), or, if it was not written, to send
        it (woken now). Whether it was written."""
        written = False
        try:
            body = self.client.signins_body([signin.wire() for signin in batch])
            if len(body) <= WRITE_LIMIT:
                self.client.write_signins(ready, body)
                written = True
        except HubError as exc:  # the relay thread sends it, and reports a failure if any
            log.debug("sign-in request not written here (%s); the relay thread sends it", exc)
        except Exception:
            log.exception("unexpected error writing a sign-in request; the relay thread sends it")
        finally:
            with self._lock:
                self._writing = False
                if written:
                    self._written = (ready, batch, time.monotonic())
                    self._woken = False
                    self.written += 1
                else:
                    if ready.conn.sock is not None:
                        self._ready = ready  # its token unused: still good for the next one
                    self._arrived.notify()
        return written

    @property
    def ready(self) -> bool:
        """Whether the next sign-in's web thread would write the request itself (now)."""
        with self._lock:
            return _usable(self._ready, time.monotonic())

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
        with self._lock:
            ready, self._ready = self._ready, None
        if ready is not None:
            ready.conn.close()
        if left:
            log.warning("relay stopped with %d sign-ins the hub never acknowledged", left)
        return left == 0

    # --- the relay thread ---------------------------------------------------------------------

    def _settle(self, batch: list[_SignIn], acked: set[str]) -> None:
        """Under the lock: the acknowledged sign-ins of ``batch`` leave the queue."""
        for signin in batch:
            if signin.ref in acked and self._queue.pop(signin.ref, None) is not None:
                self.relayed += 1
        if not self._queue:
            self._emptied.notify_all()

    def _prepare(self) -> None:
        """While idle and healthy: make the next request ready for a web thread to write (a
        fresh token; the connection kept if it was last used less than ``FRESH_SECONDS``
        ago, else a new one). One ready already is kept while it is fresh. One gone stale
        meanwhile (web threads no longer write it) is replaced while sign-ins come less than
        ``FRESH_SECONDS`` apart, so that the next one is written by its own thread again;
        when they come further apart, a new one would go stale unused as well (a connection
        opened for nothing at each sign-in): it is let go, and the relay thread sends on its
        own kept connection until sign-ins come closer together again."""
        now = time.monotonic()
        with self._lock:
            ready = self._ready
            if self._queue or not self._healthy:
                return  # busy or failing
            if ready is not None and ready.headers and now - ready.at < FRESH_SECONDS:
                return  # one is ready
            self._ready = None  # being replaced or let go: no web thread takes it meanwhile
            # sign-ins too far apart for a new one to be used while fresh: none is made
            wanted = self._gap is None or self._gap < FRESH_SECONDS
            if not wanted and ready is not None and ready.headers:
                self.unused += 1
        conn = None
        if ready is not None:
            if wanted and now - ready.at < FRESH_SECONDS:
                conn = ready.conn
            else:  # let go, or idle for a while: the hub may have closed it
                ready.conn.close()
        if not wanted:
            return
        try:
            made = self.client.prepare_signins(conn)
        except HubError as exc:
            log.debug("no sign-in request prepared: %s", exc)
            made = None
        except Exception:
            log.exception("unexpected error preparing a sign-in request")
            made = None
        if made is not None and ready is not None and made.conn is ready.conn:
            made = made._replace(at=ready.at)  # the connection's last use, not now
        with self._lock:
            self._ready = made
            if made is not None:
                self.prepared += 1

    def _due(self) -> bool:
        """Under the lock: whether the relay thread has work now: sign-ins queued and no web
        thread writing, not held (or held ``LINGER_SECONDS`` already), and a written
        request's thread has answered its browser (or it has had ``WAKE_SECONDS`` to)."""
        if not self._queue or self._writing:
            return False
        if self._held is not None and time.monotonic() - self._held < LINGER_SECONDS:
            return False
        written = self._written
        return written is None or self._woken or time.monotonic() - written[2] >= WAKE_SECONDS

    def _wait_for(self) -> float | None:
        """Under the lock: how long the relay thread may sleep before it looks again: until a
        written request is due, or ``WAKE_SECONDS`` while a web thread may write one without
        waking it (a request is ready and fresh, or one is being written: a written request
        wakes nobody), else until woken (an idle worker's relay thread sleeps once its
        prepared request is stale: a sign-in that finds it so wakes the thread)."""
        written = self._written
        if written is not None and self._queue:
            return max(0.0, written[2] + WAKE_SECONDS - time.monotonic())
        if self._held is not None:
            return max(0.0, self._held + LINGER_SECONDS - time.monotonic())
        if self._writing or _usable(self._ready, time.monotonic()):
            return WAKE_SECONDS
        return None

    def _answer(self, written: tuple[PreparedSignins, list[_SignIn], float]) -> bool:
        """Read the hub's answer to a request a web thread wrote, and settle its sign-ins;
        False if there was none (the relay thread then sends them itself, at once)."""
        ready, batch, started = written
        try:
            acked = self.client.signins_answer(ready)
        except HubError as exc:
            log.info("a sign-in request written by a web thread got no answer (%s); resending", exc)
            return False
        except Exception:
            log.exception("unexpected error reading the hub's answer to sign-ins; resending")
            ready.conn.close()
            return False
        metrics.hub_request("signins", time.monotonic() - started)
        with self._lock:
            self._settle(batch, acked)
            if ready.conn.sock is not None and self._ready is None:
                # its token is spent: only the connection is kept, for _prepare to reuse
                self._ready = ready._replace(headers={}, at=time.monotonic())
        return all(signin.ref in acked for signin in batch)

    def _next_batch(self) -> list[_SignIn] | None:
        """The sign-ins to send next, at once (no request is out); None to stop."""
        while True:
            self._prepare()
            with self._lock:
                while not self._halt.is_set() and not self._due():
                    self._arrived.wait(self._wait_for())
                    self.wakeups += 1
                if self._halt.is_set():
                    return None
                written, self._written = self._written, None
                self._held = None
            if written is None or not self._answer(written):
                break
        with self._lock:
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
                self._healthy = False
                self._halt.wait(delay)
                continue
            except Exception:
                metrics.hub_error("signins")
                log.exception("unexpected error while relaying sign-ins")
                self._healthy = False
                self._halt.wait(backoff.next_delay())
                continue
            metrics.hub_request("signins", time.monotonic() - started)
            backoff.reset()
            self._healthy = True
            with self._lock:
                self._settle(batch, acked)
            missing = sum(1 for signin in batch if signin.ref not in acked)
            if missing:
                log.warning("the hub did not acknowledge %d sign-ins; resending", missing)
                self._halt.wait(backoff.next_delay())
