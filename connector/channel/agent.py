"""The agent: long-poll the hub, verify and run commands, post results until acknowledged.

One agent runs per gunicorn worker (started after the fork). Two threads and a pool:

* the **poller** keeps a window of commands in hand: the running ones plus a short queue, so
  the pool never waits for a round trip to the hub. It polls again once half the window is
  free, asking for that many; verifies each command and hands the valid ones to the pool (a
  refused one gets an error result at once, without running). The queue is sized so that it
  empties well within the hub's lease at the current command time (slow directory: no queue),
  and a command that still waited longer than most of its lease is left to the hub to
  redeliver rather than run late (it may be running elsewhere already);
* the **pool** (``AGENT_CONCURRENCY`` threads) runs commands against the directory;
* the **poster** sends finished results in batches (lingering a few milliseconds while more
  are about to finish, longer while a backlog is in hand) and keeps each until the hub
  acknowledges it;
* the **relay** (:mod:`connector.channel.relay`) sends the sign-ins the worker's web threads
  queue, in batches, and keeps each until the hub acknowledges it (protocol §5).

The first poll after start-up or an outage does not wait, so readiness is known at once.

The window's state (running ids, unposted results) is under one lock; the poller, the poster
and a drain each wait on their own condition of it and are woken only when what they wait for
has come true (half the window free; a first result, or the end of a linger; every result
acknowledged), not at every command's end: a wake-up is a thread switch and a GIL hand-over.

Hub trouble (unreachable, 5xx, 429, resets) means exponential backoff with full jitter, never an
exit. :meth:`Agent.drain` (on SIGTERM) stops polling (cutting a poll that waits for work), relays
the sign-ins it holds, lets running commands finish and posts their results before returning.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from connector import metrics
from connector.channel.backoff import Backoff
from connector.channel.client import HubClient, HubError, HubRejected, HubUnavailable
from connector.channel.commands import Command, CommandRefused, CommandVerifier, Dispatcher
from connector.channel.relay import SignInRelay

log = logging.getLogger(__name__)

MAX_BATCH = 100
PREFETCH = 4  # window = AGENT_CONCURRENCY x this, at most, while commands are quick
LINGER_SECONDS = 0.005  # the poster's wait for more results while commands are running
BACKLOG_LINGER_SECONDS = 0.025  # the same while more commands wait here than run
STALE_FRACTION = 0.8  # of the lease: a command queued longer is left to the hub
DRAIN_GRACE_SECONDS = 0.3  # drain lets a returning poll land before cutting a waiting one


def _unavailable(result: dict[str, Any]) -> bool:
    """Whether a result says the directory could not be reached (the hub may retry it)."""
    err = result.get("err")
    return isinstance(err, dict) and err.get("name") == "Unavailable"


class _Pool:
    """``size`` threads running the agent's commands in the order they come.

    A ``ThreadPoolExecutor`` without futures: nothing waits for a command's future, and making
    one (a Condition and its RLock) cost a tenth of the agent's own CPU per command.
    """

    def __init__(self, size: int, run: Callable[[Command, float], None]) -> None:
        self._size = size
        self._run = run
        self._queue: queue.SimpleQueue[tuple[Command, float] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, command: Command, polled: float) -> None:
        """Run ``command`` on the next free thread (they start with the first command).

        Raises:
            RuntimeError: the pool is shut down.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("the agent's pool is shut down")
            while len(self._threads) < self._size:
                thread = threading.Thread(
                    target=self._work, name=f"agent-cmd_{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
            self._queue.put((command, polled))

    def shutdown(self) -> None:
        """Take no more commands; return once the queued and running ones are done."""
        with self._lock:
            self._closed = True
            for _ in self._threads:
                self._queue.put(None)
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self._run(*item)
            except Exception:
                log.exception("command %s failed in the agent", item[0].id)


class Agent:
    """Polls the hub and answers its commands; see the module docstring."""

    def __init__(
        self,
        client: HubClient,
        dispatcher: Dispatcher,
        verifier: CommandVerifier,
        *,
        concurrency: int = 8,
        poll_wait: float = 25.0,
        skew_warning: float = 30.0,
        prepare: Callable[[], object] | None = None,
    ) -> None:
        self.client = client
        self.dispatcher = dispatcher
        self.verifier = verifier
        self.concurrency = concurrency
        self.poll_wait = poll_wait
        self.skew_warning = skew_warning
        self._stop = threading.Event()
        # one lock for the window's state; each waiter has its own condition on it and is
        # woken only when what it waits for has come true (not at every command's end)
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # the poller: half the window free
        self._ready = threading.Condition(self._lock)  # the poster: results, or a linger's end
        self._settled = threading.Condition(self._lock)  # drain: every result acknowledged
        self._inflight: set[str] = set()
        self._outbox: dict[str, dict[str, Any]] = {}
        self._pool = _Pool(concurrency, self._execute)
        self.relay = SignInRelay(client)
        self._poller: threading.Thread | None = None
        self._poster: threading.Thread | None = None
        self._poster_stop = threading.Event()
        self.connected = False
        self.connected_since: float | None = None
        self.last_poll: float | None = None
        self.last_error: str | None = None
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.refused = 0
        self._skew_warned = False
        self._prepare = prepare  # run (and retried) in the poller before the first poll
        self._lease = 30.0  # the hub's lease, from its poll answers
        self._avg_seconds = 0.05  # running average of one command's time

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start polling and posting in background threads."""
        if self._poller is not None:
            return
        self._poller = threading.Thread(target=self._poll_loop, name="agent-poll", daemon=True)
        self._poster = threading.Thread(target=self._post_loop, name="agent-post", daemon=True)
        self._poster.start()
        self.relay.start()
        self._poller.start()
        log.info(
            "agent %s started: hub %s, %d concurrent commands",
            self.client.agent_id,
            self.client.base,
            self.concurrency,
        )

    def drain(self, timeout: float = 60.0) -> bool:
        """Stop polling, relay held sign-ins, finish running commands, post their results.
        True if nothing is left."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        with self._lock:
            self._room.notify_all()
        if self._poller is not None:
            # a poll answered with commands returns within moments; one still out after that
            # is an idle long poll: cut it rather than wait out its hold (POLL_WAIT_SECONDS)
            self._poller.join(DRAIN_GRACE_SECONDS)
            while self._poller.is_alive() and time.monotonic() < deadline:
                if self.client.cut_polls():
                    log.info("draining: cut the waiting poll")
                self._poller.join(0.5)
        # browsers wait at the hub for these (protocol §5.3): first
        relayed = self.relay.drain(max(0.0, deadline - time.monotonic()))
        self._pool.shutdown()
        with self._lock:
            self._ready.notify_all()  # no command runs now: a lingering poster sends at once
            while self._outbox and time.monotonic() < deadline:
                self._settled.wait(0.2)
            left = len(self._outbox)
        self._poster_stop.set()
        with self._lock:
            self._ready.notify_all()
        if self._poster is not None:
            self._poster.join(5)
        self.client.close()
        if left:
            log.warning(
                "agent stopped with %d unacknowledged results (the hub will redeliver)", left
            )
        else:
            log.info("agent drained: every result acknowledged")
        return left == 0 and relayed

    def status(self) -> dict[str, Any]:
        """What the console and /ready show."""
        with self._lock:
            inflight, pending = len(self._inflight), len(self._outbox)
        return {
            "agent_id": self.client.agent_id,
            "connected": self.connected,
            "connected_since": self.connected_since,
            "last_poll": self.last_poll,
            "last_error": self.last_error,
            "clock_offset_seconds": round(self.client.clock.offset, 3),
            "inflight": inflight,
            "unacknowledged": pending,
            "signins_pending": self.relay.pending,
            "signins_relayed": self.relay.relayed,
            "outcomes": dict(self.outcomes),
            "refused": self.refused,
        }

    # --- polling ----------------------------------------------------------------------------

    def window(self) -> int:
        """How many commands to hold at once: the running ones and a queue that empties well
        within the lease at the current average command time."""
        c = self.concurrency
        queued = int(c * (self._lease / (2 * max(self._avg_seconds, 1e-3)) - 1))
        return c + max(0, min(queued, (PREFETCH - 1) * c))

    def _free(self) -> int:
        """How many commands to ask for now: the free part of the window once it is at least
        half (0 before). Call with the lock held."""
        window = self.window()
        free = window - len(self._inflight)
        return min(free, MAX_BATCH) if free >= max(1, window // 2) else 0

    def _wait_for_room(self) -> int:
        """Block until half the window is free (or stopping); return how many to ask for."""
        with self._lock:
            while not self._stop.is_set():
                free = self._free()
                if free:
                    return free
                self._room.wait(0.5)  # woken by _settle once there is room (or by drain)
        return 0

    def _settle(self, cid: str) -> None:
        """``cid`` no longer runs: wake the poller if that made room. Call with the lock held."""
        self._inflight.discard(cid)
        if self._free():
            self._room.notify()

    def _poll_loop(self) -> None:
        backoff = Backoff()
        while not self._stop.is_set():
            if self._prepare is not None:
                try:
                    self._prepare()
                except Exception as exc:  # noqa: BLE001 - retried; the message says why
                    self._prepare_failed(exc, backoff)
                    continue
                self._prepare = None
                backoff.reset()
            wanted = self._wait_for_room()
            if wanted <= 0:
                break
            started = time.monotonic()
            try:
                # a zero wait until connected: readiness is known at once after start-up
                wait = self.poll_wait if self.connected else 0.0
                commands, lease = self.client.poll(wanted, wait)
            except HubError as exc:
                if self._stop.is_set():
                    break  # drain cut the poll
                metrics.hub_error("poll")
                self._hub_failed(exc, backoff)
                continue
            except Exception:
                metrics.hub_error("poll")
                log.exception("unexpected error while polling the hub")
                self._stop.wait(backoff.next_delay())
                continue
            metrics.hub_poll(time.monotonic() - started)
            backoff.reset()
            if lease is not None and lease > 0:
                self._lease = lease
            self._hub_ok()
            for raw in commands:
                self._accept(raw)

    def _prepare_failed(self, exc: Exception, backoff: Backoff) -> None:
        delay = backoff.next_delay(getattr(exc, "retry_after", None))
        message = f"cannot start polling: {exc}"
        if message != self.last_error:
            log.error("%s; retrying in %.1f s", message, delay)
        self.last_error = message
        metrics.hub_state(False)
        self._stop.wait(delay)

    def _hub_ok(self) -> None:
        now = time.time()
        if not self.connected:
            log.info("connected to the hub %s as %s", self.client.base, self.client.agent_id)
            self.connected_since = now
        self.connected = True
        self.last_poll = now
        self.last_error = None
        offset = self.client.clock.offset
        metrics.hub_state(True, offset)
        if abs(offset) > self.skew_warning and not self._skew_warned:
            log.warning(
                "this machine's clock differs from the hub's by %.1f s: agent tokens are timed "
                "on the hub's clock, but Kerberos fails beyond 5 minutes; fix the time sync",
                offset,
            )
            self._skew_warned = True
        elif abs(offset) <= self.skew_warning and self._skew_warned:
            log.info("clock offset to the hub back to %.1f s", offset)
            self._skew_warned = False

    def _hub_failed(self, exc: HubError, backoff: Backoff) -> None:
        delay = backoff.next_delay(exc.retry_after)
        message = str(exc)
        if self.connected or message != self.last_error:
            level = logging.ERROR if isinstance(exc, HubRejected) else logging.WARNING
            log.log(level, "hub poll failed: %s; retrying in %.1f s", message, delay)
        self.connected = False
        self.connected_since = None
        self.last_error = message
        metrics.hub_state(False)
        self._stop.wait(delay)

    def _accept(self, raw: Any) -> None:
        """Verify one polled command and start it, or answer it with a refusal."""
        try:
            command = self.verifier.verify(raw)
        except CommandRefused as exc:
            self._refuse(raw, str(exc))
            return
        with self._lock:
            if command.id in self._inflight:
                log.info("command %s redelivered while still running; not run twice", command.id)
                return
            pending = self._outbox.get(command.id)
            if pending is not None and not _unavailable(pending):
                log.info(
                    "command %s redelivered while its result waits to be posted; not run twice",
                    command.id,
                )
                return
            if pending is not None:
                # our Unavailable sent it back to the queue (protocol §4): the hub asks for
                # another try, possibly before we have read its acknowledgement
                del self._outbox[command.id]
            replay = self.verifier.replays.admit(command)
            if replay is None:
                self._inflight.add(command.id)
        if replay is not None:
            self._refuse(raw, replay)
            return
        try:
            self._pool.submit(command, time.monotonic())
        except RuntimeError:  # pool shut down: drain has begun
            with self._lock:
                self._settle(command.id)
            log.info("command %s not started: draining (the hub will redeliver)", command.id)

    def _refuse(self, raw: Any, reason: str) -> None:
        """Answer a command that must not run with an ``Unexpected`` refusal (logged)."""
        cid = raw.get("id") if isinstance(raw, dict) else None
        self.refused += 1
        metrics.command(raw.get("name") if isinstance(raw, dict) else None, "refused")
        log.warning(
            "command refused id=%.120r name=%.60r: %s",
            cid,
            raw.get("name") if isinstance(raw, dict) else None,
            reason,
        )
        if isinstance(cid, str) and cid and len(cid) <= 200:
            self._finish(cid, {"err": {"name": "Unexpected", "message": f"refused: {reason}"}})

    def _execute(self, command: Command, polled: float) -> None:
        started = time.monotonic()
        if started - polled > self._lease * STALE_FRACTION:
            with self._lock:
                self._settle(command.id)
                if not self._inflight:
                    self._ready.notify()  # a lingering poster waits for the last one
            log.warning(
                "command %s waited %.1f s here, most of its %.0f s lease: not run, the hub "
                "will hand it out again",
                command.id,
                started - polled,
                self._lease,
            )
            return
        result = self.dispatcher.run(command)
        err = result.get("err")
        outcome = err["name"] if isinstance(err, dict) else "success"
        self.outcomes[outcome] += 1
        elapsed = time.monotonic() - started
        # up at once (a slow directory shrinks the queue now), down gently
        if elapsed > self._avg_seconds:
            self._avg_seconds = elapsed
        else:
            self._avg_seconds += (elapsed - self._avg_seconds) * 0.2
        metrics.command(command.name, outcome, elapsed)
        if command.name == "authenticate_user":
            metrics.login("hub", outcome, elapsed)
        # answered: the same id again is a replay, unless we asked the hub to retry it
        self.verifier.replays.answered(command.id, final=not _unavailable(result))
        self._finish(command.id, result)

    def _finish(self, cid: str, result: dict[str, Any]) -> None:
        with self._lock:
            first = not self._outbox
            self._outbox[cid] = result
            self._settle(cid)
            # the poster waits for a first result, or lingers until none runs or a batch is full
            if first or not self._inflight or len(self._outbox) >= MAX_BATCH:
                self._ready.notify()

    # --- posting ----------------------------------------------------------------------------

    def _post_loop(self) -> None:
        backoff = Backoff()
        while True:
            with self._lock:
                while not self._outbox and not self._poster_stop.is_set():
                    self._ready.wait(1.0)
                if not self._outbox and self._poster_stop.is_set():
                    return
                # while commands run, more results are about to come: one post for them all;
                # with a backlog in hand they come steadily, and its queueing dwarfs the wait
                backlog = len(self._inflight) > self.concurrency
                linger = BACKLOG_LINGER_SECONDS if backlog else LINGER_SECONDS
                linger_until = time.monotonic() + linger
                while self._inflight and len(self._outbox) < MAX_BATCH:
                    left = linger_until - time.monotonic()
                    if left <= 0:
                        break
                    self._ready.wait(left)
                batch = [{"id": k, "result": v} for k, v in list(self._outbox.items())[:MAX_BATCH]]
            started = time.monotonic()
            try:
                acked = self.client.post_results(batch)
                metrics.hub_request("results", time.monotonic() - started)
            except HubUnavailable as exc:
                metrics.hub_error("results")
                delay = backoff.next_delay(exc.retry_after)
                log.warning(
                    "posting %d results failed: %s; retrying in %.1f s", len(batch), exc, delay
                )
                if self._poster_stop.wait(delay):
                    return
                continue
            except HubError as exc:
                metrics.hub_error("results")
                delay = backoff.next_delay()
                log.error(
                    "the hub refused %d results: %s; retrying in %.1f s", len(batch), exc, delay
                )
                if self._poster_stop.wait(delay):
                    return
                continue
            except Exception:
                log.exception("unexpected error while posting results")
                if self._poster_stop.wait(backoff.next_delay()):
                    return
                continue
            backoff.reset()
            with self._lock:
                for item in batch:
                    # only the result we posted: a newer one (a retried command) stays
                    if item["id"] in acked and self._outbox.get(item["id"]) is item["result"]:
                        del self._outbox[item["id"]]
                if not self._outbox:
                    self._settled.notify_all()
            missing = {item["id"] for item in batch} - acked
            if missing:
                log.warning("the hub did not acknowledge %d results; resending", len(missing))
                if self._poster_stop.wait(backoff.next_delay()):
                    return
