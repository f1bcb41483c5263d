"""The devhub's in-memory, thread-safe model of one tenant's connection.

Everything the hub knows lives in one :class:`HubState`: registered agent certificates, the
``jti`` values seen, the commands (queued, leased, done), the agents and when they last polled,
browser-flow sign-ins relayed by the agents (``ref`` values, protocol §5), injected faults and the
clock offset. Every method takes the one lock; long-polls wait on its
:class:`threading.Condition`, which is notified when a command is queued or answered. A waiting
poll also wakes when the earliest lease lapses, so a lapsed command is handed out again without
any busy loop. A browser waiting for a ``ref`` not relayed yet waits on an event of its own,
outside the lock, set by the relay that brings it.

Two clocks: the *hub clock* (wall time plus the offset set through the admin API) for anything
that goes on the wire or is compared with JWT times (``serverTime``, command ``iat``/``exp``,
agent-token checks, ``jti`` retention, the age of a ``ref``); the monotonic clock for waits and
leases, so that moving the hub clock never stalls a poll or expires a lease.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, overload

from connector.devhub.tokens import AgentCert

#: How often a waiting poll checks that its agent is still connected.
GONE_CHECK_SECONDS = 1.0
#: At most this many agent certificates are kept per connection; the oldest go first.
MAX_CERTS = 20
#: A result ``Unavailable`` sends its command back to the queue at most this many times.
MAX_UNAVAILABLE_REQUEUES = 3
#: Relayed sign-ins and spent ``ref`` values are remembered this long, to tell "used" from
#: "unknown".
SESSION_MEMORY_SECONDS = 3600.0
#: What a ``ref`` looks like (protocol §5: at least 128 bits, base64url).
REF_PATTERN = re.compile(r"[A-Za-z0-9_-]{22,128}")

CommandState = Literal["queued", "leased", "done"]
FaultKind = Literal["status", "close", "delay"]
SessionProblem = Literal["unknown", "redeemed", "expired", "wctx", "busy"]

#: Payload keys never kept outside the signed command.
_SECRET_KEYS = frozenset({"password", "oldPassword"})


class UnknownCommand(KeyError):
    """No command has this id."""


class DuplicateCommand(ValueError):
    """A command with this id exists already."""


class SessionError(Exception):
    """A ``ref`` cannot be redeemed; ``problem`` says why (``busy``: too many browsers wait
    already, try again; every other problem spends the ``ref``)."""

    def __init__(self, problem: SessionProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem
        self.message = message


def redact(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload without its secrets (``password``, ``oldPassword``)."""
    return {k: v for k, v in payload.items() if k not in _SECRET_KEYS}


@dataclasses.dataclass
class _Command:
    id: str
    name: str
    jwt: str = dataclasses.field(repr=False)  # cleared once done: it may carry a password
    payload: dict[str, Any]  # redacted
    raw: bool
    created: float
    state: CommandState = "queued"
    deliveries: int = 0
    agent: str | None = None
    lease_deadline: float = 0.0
    result: dict[str, Any] | None = None
    last_result: dict[str, Any] | None = None  # the latest answer (a replay's, say)
    result_count: int = 0
    unavailable_requeues: int = 0
    done_at: float | None = None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "deliveries": self.deliveries,
            "result": self.result,
            "resultCount": self.result_count,
            "lastResult": self.last_result,
            "agent": self.agent,
            "payload": self.payload,
            "raw": self.raw,
            "unavailableRequeues": self.unavailable_requeues,
            "createdAt": int(self.created * 1000),
            "doneAt": None if self.done_at is None else int(self.done_at * 1000),
        }


@dataclasses.dataclass
class _Agent:
    sub: str
    first_seen: float
    last_poll: float | None = None  # hub clock
    last_poll_mono: float | None = None
    last_wait: float = 0.0
    polls: int = 0
    polling: int = 0
    commands_taken: int = 0
    results_posted: int = 0
    sessions: int = 0

    def view(self, mono: float) -> dict[str, Any]:
        ago = None if self.last_poll_mono is None else mono - self.last_poll_mono
        connected = self.polling > 0 or (ago is not None and ago <= 2 * self.last_wait + 5)
        return {
            "sub": self.sub,
            "firstSeen": int(self.first_seen * 1000),
            "lastPoll": None if self.last_poll is None else int(self.last_poll * 1000),
            "secondsAgo": None if ago is None else round(ago, 1),
            "connected": connected,
            "polling": self.polling > 0,
            "lastWait": self.last_wait,
            "polls": self.polls,
            "commandsTaken": self.commands_taken,
            "resultsPosted": self.results_posted,
            "sessions": self.sessions,
        }


@dataclasses.dataclass(frozen=True)
class Registration:
    """A registered agent certificate and what came with it."""

    cert: AgentCert
    added_at: float
    sign_in_endpoint: str
    agent_version: str

    def view(self) -> dict[str, Any]:
        """JSON for the admin API and the status page."""
        return {
            "kid": self.cert.kid,
            "subject": self.cert.subject,
            "notAfter": self.cert.not_after.isoformat(),
            "addedAt": int(self.added_at * 1000),
            "signInEndpoint": self.sign_in_endpoint,
            "agentVersion": self.agent_version,
        }


@dataclasses.dataclass
class _Session:
    """A relayed sign-in; ``created`` is when it was relayed (hub clock)."""

    ref: str = dataclasses.field(repr=False)
    wctx: str
    profile: dict[str, Any]
    method: str
    agent: str
    created: float
    redeemed: bool = False

    def view(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "wctx": self.wctx,
            "profile": self.profile,
            "method": self.method,
            "agent": self.agent,
            "createdAt": int(self.created * 1000),
            "redeemed": self.redeemed,
        }


@dataclasses.dataclass
class Fault:
    """An injected failure for the next ``remaining`` agent requests (to ``endpoint``, if set).

    ``status``: answer with that HTTP status (and ``Retry-After`` if ``retry_after``);
    ``close``: drop the connection without an answer; ``delay``: stall ``delay`` seconds, then
    answer normally.
    """

    kind: FaultKind
    remaining: int
    status: int = 0
    delay: float = 0.0
    retry_after: int | None = None
    endpoint: str | None = None

    def view(self) -> dict[str, Any]:
        """JSON for the admin API."""
        out: dict[str, Any] = {"kind": self.kind, "remaining": self.remaining}
        if self.kind == "status":
            out["status"] = self.status
            if self.retry_after is not None:
                out["retryAfter"] = self.retry_after
        if self.kind == "delay":
            out["delay"] = self.delay
        if self.endpoint:
            out["endpoint"] = self.endpoint
        return out


class HubState:
    """One tenant's connection, in memory; every public method is thread-safe."""

    def __init__(
        self,
        lease_seconds: int,
        session_seconds: float = 120.0,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        *,
        max_waiters_per_client: int = 8,
        max_waiters: int = 1000,
    ) -> None:
        self.lease_seconds = lease_seconds
        self.session_seconds = session_seconds
        self.max_waiters_per_client = max_waiters_per_client
        self.max_waiters = max_waiters
        self._wall = wall
        self._mono = monotonic
        self._cond = threading.Condition()
        self._offset = 0.0
        self._overrides: dict[str, dict[str, Any]] = {}
        self._closed = False
        self._certs: collections.OrderedDict[str, Registration] = collections.OrderedDict()
        self._jtis: dict[str, float] = {}
        self._jti_expiry: list[tuple[float, str]] = []  # a heap: the earliest to forget first
        self._commands: dict[str, _Command] = {}
        self._queue: collections.deque[str] = collections.deque()
        self._leased: set[str] = set()
        self._agents: dict[str, _Agent] = {}
        self._sessions: dict[str, _Session] = {}  # relayed, oldest first
        self._spent: dict[str, float] = {}  # refs presented by a browser, oldest first
        self._waiters: dict[str, threading.Event] = {}  # refs a browser waits for
        self._waiting: collections.Counter[str] = collections.Counter()  # per client address
        self._faults: list[Fault] = []
        self._counters: collections.Counter[str] = collections.Counter()

    # ---- clock -----------------------------------------------------------------------------

    def now(self) -> float:
        """The hub clock, in seconds since the epoch (wall time plus the offset)."""
        return self._wall() + self._offset

    @property
    def clock_offset(self) -> float:
        """Seconds the hub clock runs ahead of the wall clock (negative: behind)."""
        return self._offset

    def set_clock_offset(self, seconds: float) -> None:
        """Make the hub clock run ``seconds`` off the wall clock."""
        with self._cond:
            self._offset = float(seconds)

    def override(self, answer: str) -> dict[str, Any]:
        """Fields served in ``answer`` (``ticket-info``, ``registration``) over the real ones: a
        tampered answer, for the agent's checks; empty: none."""
        with self._cond:
            return dict(self._overrides.get(answer, {}))

    def set_override(self, answer: str, fields: dict[str, Any]) -> None:
        """Serve ``fields`` in ``answer`` over the real ones ({}: the real answer again)."""
        with self._cond:
            self._overrides[answer] = dict(fields)

    def close(self) -> None:
        """Wake every waiting poll (they answer with no commands); used at shutdown."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            for event in self._waiters.values():
                event.set()

    def reset(self, certificates: bool = False) -> None:
        """Forget commands, agents, sessions, faults, counters, the clock offset and the
        tampered answers (and the
        registered certificates too if ``certificates``); wakes the waiting polls."""
        with self._cond:
            self._commands.clear()
            self._queue.clear()
            self._leased.clear()
            self._agents.clear()
            self._sessions.clear()
            self._spent.clear()
            for event in self._waiters.values():
                event.set()
            self._faults.clear()
            self._counters.clear()
            self._offset = 0.0
            self._overrides.clear()
            if certificates:
                self._certs.clear()
            self._cond.notify_all()

    # ---- certificates and tokens -------------------------------------------------------------

    def register(self, certs: list[AgentCert], sign_in_endpoint: str, agent_version: str) -> None:
        """Add agent certificates (re-adding one makes it the newest); keep the newest 20."""
        with self._cond:
            for cert in certs:
                self._certs.pop(cert.kid, None)
                self._certs[cert.kid] = Registration(
                    cert, self.now(), sign_in_endpoint, agent_version
                )
            while len(self._certs) > MAX_CERTS:
                self._certs.popitem(last=False)
            self._counters["registrations"] += 1

    def certificates(self) -> list[AgentCert]:
        """The registered agent certificates, oldest first."""
        with self._cond:
            return [r.cert for r in self._certs.values()]

    def registrations(self) -> list[Registration]:
        """The registrations, oldest first."""
        with self._cond:
            return list(self._certs.values())

    def use_jti(self, jti: str, exp: float) -> bool:
        """Record a token's ``jti`` until its ``exp``; False if it was seen before (replay)."""
        with self._cond:
            now = self.now()
            heap = self._jti_expiry
            while heap and heap[0][0] < now:
                until, old = heapq.heappop(heap)
                if self._jtis.get(old) == until:
                    del self._jtis[old]
            if jti in self._jtis:
                return False
            self._jtis[jti] = exp
            heapq.heappush(heap, (exp, jti))
            return True

    def count(self, counter: str, n: int = 1) -> None:
        """Add ``n`` to a named counter (shown by ``counters``)."""
        with self._cond:
            self._counters[counter] += n

    # ---- commands ----------------------------------------------------------------------------

    @staticmethod
    def new_command_id() -> str:
        """A fresh, unguessable command id."""
        return "c-" + secrets.token_urlsafe(12)

    def queue(
        self, command_id: str, name: str, jwt: str, payload: dict[str, Any], raw: bool = False
    ) -> None:
        """Queue a command whose signed JWT is ready; wakes the waiting polls.

        Raises:
            DuplicateCommand: the id is taken.
        """
        with self._cond:
            if command_id in self._commands:
                raise DuplicateCommand(command_id)
            self._commands[command_id] = _Command(
                id=command_id,
                name=name,
                jwt=jwt,
                payload=redact(payload),
                raw=raw,
                created=self.now(),
            )
            self._queue.append(command_id)
            self._counters["commandsQueued"] += 1
            self._cond.notify_all()

    def replay(self, command_id: str, jwt: str) -> None:
        """Hand a done command out again with ``jwt`` (its own token, or another under its id),
        keeping its first result: a hub replaying a command, for the agent's checks.

        Raises:
            UnknownCommand: no such command.
            DuplicateCommand: it is not done yet.
        """
        with self._cond:
            cmd = self._commands.get(command_id)
            if cmd is None:
                raise UnknownCommand(command_id)
            if cmd.state != "done":
                raise DuplicateCommand(command_id)
            cmd.jwt, cmd.state, cmd.done_at = jwt, "queued", None
            self._queue.append(command_id)
            self._counters["replays"] += 1
            self._cond.notify_all()

    def _lapse_leases(self) -> float | None:
        """Requeue commands whose lease lapsed; the monotonic time of the next lapse, if any."""
        mono = self._mono()
        upcoming: float | None = None
        for cid in list(self._leased):
            cmd = self._commands[cid]
            if cmd.lease_deadline <= mono:
                self._leased.discard(cid)
                cmd.state = "queued"
                self._queue.appendleft(cid)
                self._counters["leasesLapsed"] += 1
            elif upcoming is None or cmd.lease_deadline < upcoming:
                upcoming = cmd.lease_deadline
        return upcoming

    def take(
        self,
        sub: str,
        max_commands: int,
        wait: float,
        gone: Callable[[], bool] | None = None,
    ) -> list[dict[str, str]]:
        """A poll: lease up to ``max_commands`` to agent ``sub``, waiting up to ``wait`` s.

        ``gone`` says whether the poll's connection has closed: checked at least every
        ``GONE_CHECK_SECONDS`` while waiting and before leasing, so that a poll its agent
        abandoned never takes commands with it (they would wait out a lease).
        """
        with self._cond:
            start = self._mono()
            agent = self._agent(sub)
            agent.polls += 1
            agent.last_poll = self.now()
            agent.last_poll_mono = start
            agent.last_wait = wait
            agent.polling += 1
            self._counters["polls"] += 1
            deadline = start + wait
            try:
                while True:
                    next_lapse = self._lapse_leases()
                    remaining = deadline - self._mono()
                    if self._queue or self._closed or remaining <= 0:
                        break
                    if next_lapse is not None:
                        remaining = min(remaining, max(next_lapse - self._mono(), 0.0) + 0.001)
                    if gone is not None:
                        if gone():
                            return []
                        remaining = min(remaining, GONE_CHECK_SECONDS)
                    self._cond.wait(remaining)
                if gone is not None and self._queue and gone():
                    self._counters["abandonedPolls"] += 1
                    return []
                count = min(max_commands, len(self._queue))
                self._counters["largestPoll"] = max(self._counters["largestPoll"], count)
                return [self._lease(self._queue.popleft(), agent) for _ in range(count)]
            finally:
                agent.polling -= 1

    def _lease(self, cid: str, agent: _Agent) -> dict[str, str]:
        cmd = self._commands[cid]
        cmd.state = "leased"
        cmd.deliveries += 1
        cmd.agent = agent.sub
        cmd.lease_deadline = self._mono() + self.lease_seconds
        self._leased.add(cid)
        agent.commands_taken += 1
        self._counters["deliveries"] += 1
        if cmd.deliveries > 1:
            self._counters["redeliveries"] += 1
        return {"id": cmd.id, "name": cmd.name, "jwt": cmd.jwt}

    def post_results(self, sub: str, results: list[tuple[str, dict[str, Any]]]) -> list[str]:
        """Record results (the first per command is final); returns the acknowledged ids.

        A result ``{"err": {"name": "Unavailable"}}`` sends its command back to the front of
        the queue instead, at most ``MAX_UNAVAILABLE_REQUEUES`` times.
        """
        with self._cond:
            self._agent(sub).results_posted += len(results)
            self._counters["resultPosts"] += 1
            for cid, result in results:
                self._counters["resultsReceived"] += 1
                cmd = self._commands.get(cid)
                if cmd is None:
                    self._counters["resultsUnknown"] += 1
                    continue
                cmd.result_count += 1
                cmd.last_result = result
                if cmd.state == "done":
                    self._counters["resultsDuplicate"] += 1
                    continue
                if cmd.result is not None:  # handed out again after its answer (replay)
                    self._counters["resultsDuplicate"] += 1
                    self._leased.discard(cid)
                    if cmd.state == "queued":
                        self._queue.remove(cid)
                    cmd.state, cmd.jwt = "done", ""
                    continue
                self._leased.discard(cid)
                if cmd.state == "queued":  # its lease lapsed: it waits in the queue again
                    self._queue.remove(cid)
                err = result.get("err")
                unavailable = isinstance(err, dict) and err.get("name") == "Unavailable"
                if unavailable and cmd.unavailable_requeues < MAX_UNAVAILABLE_REQUEUES:
                    cmd.unavailable_requeues += 1
                    cmd.state = "queued"
                    self._queue.appendleft(cid)
                    self._counters["unavailableRequeues"] += 1
                    continue
                cmd.state = "done"
                cmd.result = result
                cmd.agent = sub
                cmd.done_at = self.now()
                cmd.jwt = ""
                self._counters["commandsDone"] += 1
            self._cond.notify_all()
            return [cid for cid, _ in results]

    def command(self, command_id: str) -> dict[str, Any]:
        """The admin view of a command.

        Raises:
            UnknownCommand: no such command.
        """
        with self._cond:
            self._lapse_leases()
            cmd = self._commands.get(command_id)
            if cmd is None:
                raise UnknownCommand(command_id)
            return cmd.view()

    def wait_done(self, command_id: str, timeout: float) -> dict[str, Any]:
        """The admin view of a command once it is done, or after ``timeout`` seconds.

        Raises:
            UnknownCommand: no such command.
        """
        deadline = self._mono() + timeout
        with self._cond:
            while True:
                view = self.command(command_id)
                remaining = deadline - self._mono()
                if view["state"] == "done" or remaining <= 0 or self._closed:
                    return view
                self._cond.wait(remaining)

    def commands(self) -> list[dict[str, Any]]:
        """Admin views of every command, oldest first."""
        with self._cond:
            self._lapse_leases()
            return [c.view() for c in self._commands.values()]

    # ---- agents ------------------------------------------------------------------------------

    def _agent(self, sub: str) -> _Agent:
        agent = self._agents.get(sub)
        if agent is None:
            agent = self._agents[sub] = _Agent(sub=sub, first_seen=self.now())
        return agent

    def agents(self) -> list[dict[str, Any]]:
        """Every agent seen, most recent poll first."""
        with self._cond:
            mono = self._mono()
            views = [a.view(mono) for a in self._agents.values()]
        return sorted(views, key=lambda v: -(v["lastPoll"] or 0))

    # ---- browser-flow sessions ---------------------------------------------------------------

    def _forget_old(self) -> None:
        """Forget relayed sign-ins and spent refs older than ``SESSION_MEMORY_SECONDS``."""
        horizon = self.now() - SESSION_MEMORY_SECONDS
        for book in (self._sessions, self._spent):
            while book:
                oldest = next(iter(book))
                entry = book[oldest]
                if (entry if isinstance(entry, float) else entry.created) >= horizon:
                    break
                del book[oldest]

    def relay_signins(
        self, sub: str, signins: list[tuple[str, str, dict[str, Any], str]]
    ) -> list[str]:
        """Keep sign-ins ``(ref, wctx, profile, method)`` relayed by agent ``sub`` (the first
        relay of a ``ref`` is final; one whose ``ref`` is spent is dropped); wakes a browser
        waiting for one. Returns the acknowledged refs: all of them."""
        with self._cond:
            self._forget_old()
            now = self.now()
            self._counters["signinRelays"] += 1
            self._agent(sub).sessions += len(signins)
            for ref, wctx, profile, method in signins:
                self._counters["signinsReceived"] += 1
                if ref in self._sessions:
                    self._counters["signinsDuplicate"] += 1
                    continue
                waiter = self._waiters.get(ref)
                if ref in self._spent and waiter is None:
                    self._counters["signinsLate"] += 1
                    continue
                self._sessions[ref] = _Session(ref, wctx, profile, method, sub, now)
                if waiter is not None:
                    waiter.set()
            self._counters["largestSigninRelay"] = max(
                self._counters["largestSigninRelay"], len(signins)
            )
            return [ref for ref, *_ in signins]

    @overload
    def redeem_session(
        self, ref: str, wctx: str, client: str = "", wait: float = 0.0
    ) -> dict[str, Any]: ...

    @overload
    def redeem_session(
        self, ref: str, wctx: str, client: str = "", wait: float = 0.0, *, blocking: bool
    ) -> dict[str, Any] | None: ...

    def redeem_session(
        self, ref: str, wctx: str, client: str = "", wait: float = 0.0, *, blocking: bool = True
    ) -> dict[str, Any] | None:
        """Redeem ``ref`` once, with its ``wctx``, within ``session_seconds`` of its relay;
        wait up to ``wait`` seconds for a ``ref`` not relayed yet (protocol §5.3).
        ``blocking=False``: None instead of a wait, with nothing changed (no counter, the
        ``ref`` unspent), for a server that waits elsewhere (``tests/bench/hubserver.py``).

        Raises:
            SessionError: malformed or unknown (after the wait), already presented, expired,
                another ``wctx`` (each spends the ``ref``); or ``busy``: too many requests
                wait already, from ``client`` or in all (the ``ref`` is left unspent).
        """
        if not REF_PATTERN.fullmatch(ref):
            raise SessionError("unknown", "this reference is unknown")
        with self._cond:
            self._forget_old()
            if ref in self._spent:
                self._counters["sessionsReplayed"] += 1
                raise SessionError("redeemed", "this reference was already used")
            session = self._sessions.get(ref)
            waiter = None
            if session is None and wait > 0:
                if not blocking:
                    return None
                if (
                    self._waiting[client] >= self.max_waiters_per_client
                    or len(self._waiters) >= self.max_waiters
                ):
                    self._counters["sessionWaitsRefused"] += 1
                    raise SessionError(
                        "busy", "too many sign-ins are waiting; try again in a moment"
                    )
                waiter = self._waiters[ref] = threading.Event()
                self._waiting[client] += 1
                self._counters["sessionWaits"] += 1
            self._spent[ref] = self.now()
        if waiter is not None:
            waiter.wait(wait)
            with self._cond:
                del self._waiters[ref]
                self._waiting[client] -= 1
                if self._waiting[client] <= 0:
                    del self._waiting[client]
                session = self._sessions.get(ref)
        if session is None:
            self.count("sessionsUnknown")
            raise SessionError(
                "unknown",
                "this reference is unknown: no connector relayed it"
                + (f" within {wait:g} s" if wait > 0 else ""),
            )
        with self._cond:
            session.redeemed = True
            age = self.now() - session.created
            if age > self.session_seconds:
                self._counters["sessionsExpired"] += 1
                raise SessionError(
                    "expired",
                    f"this reference expired: it is {age:.0f} s old, the limit is "
                    f"{self.session_seconds:.0f} s",
                )
            if session.wctx != wctx:
                self._counters["sessionsWrongWctx"] += 1
                raise SessionError("wctx", "wctx does not match the one the connector relayed")
            self._counters["sessionsRedeemed"] += 1
            return session.view()

    def sessions(self) -> list[dict[str, Any]]:
        """Every remembered session, oldest first."""
        with self._cond:
            return [s.view() for s in self._sessions.values()]

    # ---- faults ------------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        """Apply ``fault`` to the next matching agent requests (after those already pending)."""
        with self._cond:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        """Forget every pending fault."""
        with self._cond:
            self._faults.clear()

    def faults(self) -> list[dict[str, Any]]:
        """The pending faults, in the order they apply."""
        with self._cond:
            return [f.view() for f in self._faults]

    def has_fault(self, endpoint: str) -> bool:
        """Whether a pending fault applies to ``endpoint`` (without consuming it)."""
        with self._cond:
            return any(fault.endpoint in (None, endpoint) for fault in self._faults)

    def next_fault(self, endpoint: str) -> Fault | None:
        """Consume one use of the first pending fault that applies to ``endpoint``."""
        with self._cond:
            for fault in self._faults:
                if fault.endpoint in (None, endpoint):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    self._counters["faultsInjected"] += 1
                    return dataclasses.replace(fault)
            return None

    # ---- counters ----------------------------------------------------------------------------

    def counters(self) -> dict[str, Any]:
        """Queue sizes and event counters, for the status page and ``/api/state``."""
        with self._cond:
            self._lapse_leases()
            states = collections.Counter(c.state for c in self._commands.values())
            return {
                "queued": states["queued"],
                "leased": states["leased"],
                "done": states["done"],
                "commands": len(self._commands),
                "agents": len(self._agents),
                "certificates": len(self._certs),
                "sessions": len(self._sessions),
                "waiting": len(self._waiters),
                "pendingFaults": len(self._faults),
                "clockOffsetSeconds": self._offset,
                "serverTime": int(self.now() * 1000),
                "events": dict(sorted(self._counters.items())),
            }
