"""Tools of the fault suite: command streams, sign-in streams, a hub that can vanish, rows.

Plain Python (no pytest), like ``tests/servers.py``:

* :class:`Stream` queues ``authenticate_user`` commands at the devhub at a steady rate from a
  thread, and a second thread watches them until they are done. :meth:`Stream.row` counts
  what was sent, answered, lost and duplicated, and when the service recovered.
* :class:`FormStream` signs in through the connector's form at a steady rate;
  :class:`NegotiateStream` does the same with Kerberos tokens from pyspnego. Both keep the
  ``ref`` of every sign-in sent to the hub (303); :func:`relay_tally` says how many of those
  the hub holds (protocol §5: relayed by the agent).
* :class:`HubOutage` is a TCP forwarder in front of the devhub that can go away: ``down()``
  closes its listening socket (new connections are refused) and cuts every open connection;
  ``up()`` listens again on the same port.
* :func:`start_connector` sets a connector up from the hub's ticket and starts it under
  gunicorn; :class:`ReadOnlyStateConnector` starts one whose state directory is a read-only
  bind mount in a mount namespace of its own.

Times are wall-clock seconds (``time.time()``); the devhub's ``doneAt`` is converted from the
hub clock with the offsets the test set (:meth:`Stream.clock_moved`).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import dataclasses
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import spnego
from connector_proc import ConnectorProcess, setup_config
from hubs import DevHubError, DevHubProcess
from servers import free_port
from waits import until, within

#: A short long-poll keeps the tests brisk; four commands at once per worker.
FAST = {"POLL_WAIT_SECONDS": 1, "AGENT_CONCURRENCY": 4}

OPENLDAP_LOGINS = [("alice", "alicepw"), ("bob", "bobpw"), ("carol", "carolpw"), ("dave", "davepw")]

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_MESSAGE = re.compile(r'id="message"[^>]*>\s*([^<]*?)\s*<', re.S)


# --------------------------------------------------------------------------------------
# connectors
# --------------------------------------------------------------------------------------


def launch(proc_factory: Callable[[], ConnectorProcess], attempts: int = 3) -> ConnectorProcess:
    """Start a connector; on a port taken meanwhile (``free_port`` races), a new port."""
    for attempt in range(attempts):
        proc = proc_factory()
        try:
            return proc.start()
        except RuntimeError as exc:
            proc.stop()
            if attempt + 1 == attempts or "Connection in use" not in str(exc):
                raise
    raise AssertionError("unreachable")


def start_connector(
    state: Path,
    hub: DevHubProcess,
    directory_cfg: dict[str, Any],
    *,
    workers: int = 2,
    env: dict[str, str] | None = None,
    **extra: Any,
) -> ConnectorProcess:
    """``connector setup --ticket`` into ``state``, then gunicorn; returns once every worker's
    agent polls the hub."""
    setup_config(state, directory_cfg, hub.ticket_url, **{**FAST, **extra})
    proc = launch(lambda: ConnectorProcess(state, workers=workers, threads=4, env=env))
    wait_agents(hub, proc)
    return proc


def agent_pid(sub: str | None) -> int | None:
    """The worker PID in an agent id (``host/pid``)."""
    if not sub or "/" not in sub:
        return None
    tail = sub.rsplit("/", 1)[1]
    return int(tail) if tail.isdigit() else None


def wait_agents(hub: DevHubProcess, proc: ConnectorProcess, timeout: float = 30.0) -> list[int]:
    """Wait until the agent of every current worker of ``proc`` polls; their PIDs."""
    deadline = time.monotonic() + timeout
    while True:
        pids = proc.worker_pids()
        polling = {
            agent_pid(a["sub"]) for a in hub.agents()["agents"] if a["connected"] and a["polls"]
        }
        if len(pids) == proc.workers and set(pids) <= polling:
            return pids
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers {pids} not all polling (agents: {polling})")
        time.sleep(0.1)


class ReadOnlyStateConnector(ConnectorProcess):
    """gunicorn in a private mount namespace where the state directory is mounted read-only.

    ``unshare -m`` + ``mount --bind -o ro``: a real read-only file system (EROFS) even for
    root, for whom permission bits do not bind. ``unshare`` and ``sh`` exec, so the PID is
    gunicorn's master. The log file is opened here, before the mount, so it stays writable.
    """

    def command(self) -> list[str]:
        script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
        unshare = ["unshare", "-m", "--propagation", "private", "sh", "-c", script]
        return [*unshare, str(self.state_dir), *super().command()]


def wait_log(
    proc: ConnectorProcess, pattern: str, timeout: float = 15.0, after: int = 0
) -> re.Match[str]:
    """The first match of ``pattern`` in the connector's log past offset ``after``."""
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(pattern, proc.log()[after:])
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no {pattern!r} in the log:\n{proc.log()[-4000:]}")
        time.sleep(0.1)


# --------------------------------------------------------------------------------------
# the table's rows
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    """One line of the suite's table."""

    fault: str
    sent: int
    results: int
    lost: int
    duplicated: int
    slowest: float
    errors: dict[str, int]
    signins: str
    recovery: float | None
    limit: float | None
    measured_from: str
    relay: RelayTally | None = None

    def check(self, allowed_errors: frozenset[str] = frozenset()) -> None:
        """Nothing lost, nothing answered twice, only the expected errors, recovered in time."""
        assert self.sent > 0, self
        assert self.lost == 0, f"{self.fault}: {self.lost} commands lost"
        assert self.duplicated == 0, f"{self.fault}: {self.duplicated} commands answered twice"
        assert set(self.errors) <= set(allowed_errors), f"{self.fault}: errors {self.errors}"
        if self.relay is not None:
            self.relay.check(self.fault)
        if self.limit is not None:
            assert self.recovery is not None, f"{self.fault}: never recovered"
            assert self.recovery <= self.limit, (
                f"{self.fault}: recovered after {self.recovery:.1f} s (limit {self.limit} s)"
            )


@dataclasses.dataclass(frozen=True)
class RelayTally:
    """Browser sign-ins sent to the hub (303) against those the hub holds (relayed)."""

    sent: int
    landed: int
    duplicated: int

    @property
    def lost(self) -> int:
        return self.sent - self.landed

    def __str__(self) -> str:
        return f"{self.sent}/{self.landed}/{self.lost}/{self.duplicated}"

    def check(self, fault: str) -> None:
        """Every sign-in sent to the hub landed there, once."""
        assert self.lost == 0, f"{fault}: {self.lost} relayed sign-ins lost"
        assert self.duplicated == 0, f"{fault}: {self.duplicated} sign-ins held twice"


def relay_tally(hub: DevHubProcess, refs: list[str], timeout: float = 0.0) -> RelayTally:
    """How many of ``refs`` the hub holds (waiting up to ``timeout`` for all of them)."""
    deadline = time.monotonic() + timeout
    while True:
        held = collections.Counter(s["ref"] for s in hub.sessions())
        landed = [r for r in refs if r in held]
        if len(landed) == len(refs) or time.monotonic() >= deadline:
            duplicated = sum(held[r] - 1 for r in landed) + len(refs) - len(set(refs))
            return RelayTally(len(refs), len(landed), duplicated)
        time.sleep(0.1)


def ref_of(location: str) -> str:
    """The ``ref`` query parameter of a redirect to the hub."""
    return parse_qs(urlsplit(location).query)["ref"][0]


# --------------------------------------------------------------------------------------
# command streams
# --------------------------------------------------------------------------------------


class Stream:
    """``authenticate_user`` commands queued at ``rate`` per second, and watched until done."""

    def __init__(
        self,
        hub: DevHubProcess,
        logins: list[tuple[str, str]],
        rate: float = 4.0,
        prefix: str = "s",
    ) -> None:
        self.hub = hub
        self.logins = logins
        self.rate = rate
        self.prefix = prefix
        self.sent: list[str] = []
        self.sent_at: dict[str, float] = {}
        self.views: dict[str, dict[str, Any]] = {}
        self.queue_failures: list[str] = []
        self._frames: list[tuple[float, float]] = [(time.time(), 0.0)]  # (since, hub offset)
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._idle = threading.Event()  # set by the producer once it has seen the pause
        self._lock = threading.Lock()
        self._producer = threading.Thread(target=self._produce, name="stream", daemon=True)
        self._watcher = threading.Thread(target=self._watch, name="watch", daemon=True)
        self._watching = threading.Event()
        self._local = threading.local()

    def _admin(self, method: str, path: str, json: Any = None) -> Any:
        """The devhub's admin API over a keep-alive session of this thread (few sockets)."""
        http = getattr(self._local, "http", None)
        if http is None:
            http = self._local.http = requests.Session()
        response = http.request(method, self.hub.url("api/" + path), json=json, timeout=30)
        if not response.ok:
            raise DevHubError(response.status_code, response.text, response.url)
        return response.json()

    def commands(self) -> list[dict[str, Any]]:
        """Every command at the hub (admin view)."""
        return list(self._admin("GET", "commands")["commands"])

    # ---- life cycle ----------------------------------------------------------------------

    def start(self) -> Stream:
        """Start queueing and watching."""
        self._watching.set()
        self._producer.start()
        self._watcher.start()
        return self

    def pause(self) -> None:
        """Stop queueing until :meth:`resume`; returns once everything sent is done."""
        self._paused.set()
        # the producer says when it has seen the pause (a command it was queueing is sent)
        assert self._idle.wait(30), "the stream's producer did not pause"
        self.wait_done(30)

    def resume(self) -> None:
        """Queue again."""
        self._idle.clear()
        self._paused.clear()

    def clock_moved(self, offset: float) -> None:
        """The test set the hub clock ``offset`` seconds off (to convert ``doneAt``)."""
        with self._lock:
            self._frames.append((time.time(), offset))

    def stop(self, timeout: float = 60.0) -> None:
        """Stop queueing; wait until every command sent is done (or ``timeout``)."""
        self._stop.set()
        self._producer.join()
        try:
            self.wait_done(timeout)
        except TimeoutError:
            pass  # counted as lost by row()
        # a second result can only come from a delivery not answered yet: wait until every
        # delivery is; one to a worker the test killed never is, hence the bound
        within(self._deliveries_answered, 2.0, interval=0.1)
        self._watching.clear()
        self._watcher.join()

    # ---- threads -------------------------------------------------------------------------

    def _produce(self) -> None:
        n = 0
        due = time.monotonic()
        while not self._stop.is_set():
            if self._paused.is_set():
                self._idle.set()
                self._stop.wait(0.05)
                due = time.monotonic()
                continue
            user, password = self.logins[n % len(self.logins)]
            payload = {"pid": f"{self.prefix}-{n}", "username": user, "password": password}
            try:
                body = {"name": "authenticate_user", "payload": payload}
                cid = str(self._admin("POST", "commands", body)["id"])
            except Exception as exc:  # the devhub itself failing is a test problem
                self.queue_failures.append(repr(exc))
            else:
                with self._lock:
                    self.sent.append(cid)
                    self.sent_at[cid] = time.time()
            n += 1
            due += 1.0 / self.rate
            self._stop.wait(max(0.0, due - time.monotonic()))

    def _deliveries_answered(self) -> bool:
        """Whether every command sent has had as many results as it was handed out."""
        self._refresh()
        with self._lock:
            views = [self.views.get(c) for c in self.sent]
        return all(v is not None and v["resultCount"] >= v["deliveries"] for v in views)

    def _refresh(self) -> None:
        mine = set(self.sent)
        views = {v["id"]: v for v in self.commands() if v["id"] in mine}
        with self._lock:
            self.views.update(views)

    def _watch(self) -> None:
        while self._watching.is_set():
            with contextlib.suppress(requests.RequestException):
                self._refresh()
            time.sleep(0.25)

    # ---- questions -----------------------------------------------------------------------

    def pending(self) -> list[str]:
        """Ids sent and not yet done."""
        with self._lock:
            return [c for c in self.sent if self.views.get(c, {}).get("state") != "done"]

    def wait_done(self, timeout: float) -> None:
        """Wait until every command sent so far is done.

        Raises:
            TimeoutError: some are still not done.
        """
        deadline = time.monotonic() + timeout
        while True:
            self._refresh()
            left = self.pending()
            if not left:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(left)} commands not done: {left[:5]}")
            time.sleep(0.2)

    def _wall(self, hub_ms: int) -> float:
        """A hub-clock ``doneAt`` as wall-clock seconds: the frame (offset) it falls in."""
        hub_seconds = hub_ms / 1000.0
        frames = self._frames
        for i, (since, offset) in enumerate(frames):
            until = frames[i + 1][0] if i + 1 < len(frames) else time.time()
            wall = hub_seconds - offset
            if since - 1.0 <= wall <= until + 1.0:
                return wall
        return hub_seconds

    def successes(self) -> list[float]:
        """Wall times at which the hub recorded a profile, sorted."""
        with self._lock:
            views = list(self.views.values())
        return sorted(
            self._wall(v["doneAt"])
            for v in views
            if v["state"] == "done" and v["doneAt"] is not None and "profile" in (v["result"] or {})
        )

    def first_success_after(self, t: float) -> float | None:
        """Seconds from ``t`` to the first profile recorded after it (None if none yet)."""
        later = [s for s in self.successes() if s >= t]
        return later[0] - t if later else None

    def wait_flowing(self, count: int = 4, timeout: float = 30.0) -> None:
        """Wait until ``count`` more profiles are recorded than now: the service answers (before
        a fault, so that it hits a working one; after recovery, so that the row shows more
        than the first answer).

        Raises:
            AssertionError: fewer came within ``timeout`` seconds.
        """
        self._refresh()
        target = len(self.successes()) + count

        def enough() -> bool:
            self._refresh()
            return len(self.successes()) >= target

        until(enough, timeout, f"{count} more answered commands", interval=0.1)

    def wait_success_after(self, t: float, timeout: float) -> float | None:
        """Wait for a success recorded after ``t``; seconds from ``t`` (None if none came)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._refresh()
            found = self.first_success_after(t)
            if found is not None:
                return found
            time.sleep(0.2)
        return None

    def row(
        self,
        fault: str,
        *,
        recovery: float | None,
        limit: float | None,
        measured_from: str,
        signins: str = "",
        relay: RelayTally | None = None,
    ) -> Row:
        """The table row for this stream (call after :meth:`stop`)."""
        with self._lock:
            views = [self.views.get(c) for c in self.sent]
        done = [v for v in views if v is not None and v["state"] == "done"]
        errors = collections.Counter(
            v["result"]["err"]["name"] for v in done if isinstance(v["result"].get("err"), dict)
        )
        # a result counts once; an Unavailable that sent the command back to the queue is not
        # a second answer but a retry the hub asked for (protocol §4)
        duplicated = sum(1 for v in done if v["resultCount"] - v.get("unavailableRequeues", 0) > 1)
        waits = [(v["doneAt"] - v["createdAt"]) / 1000.0 for v in done if v["doneAt"] is not None]
        return Row(
            fault=fault,
            sent=len(self.sent),
            results=len(done),
            lost=len(self.sent) - len(done),
            duplicated=duplicated,
            slowest=round(max(waits, default=0.0), 1),
            errors=dict(errors),
            signins=signins,
            recovery=None if recovery is None else round(recovery, 1),
            limit=limit,
            measured_from=measured_from,
            relay=relay,
        )


# --------------------------------------------------------------------------------------
# browser sign-ins
# --------------------------------------------------------------------------------------


class _Repeating:
    """Calls ``self.once()`` every ``interval`` seconds from a thread; records outcomes."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.outcomes: list[tuple[float, int, str]] = []  # (wall time, status, message)
        self.locations: list[str] = []  # where the sign-ins sent to the hub (303) went
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def once(self) -> tuple[int, str]:
        raise NotImplementedError

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            try:
                status, message = self.once()
            except requests.RequestException as exc:
                status, message = 0, type(exc).__name__
            self.outcomes.append((time.time(), status, message))
            due += self.interval
            self._stop.wait(max(0.0, due - time.monotonic()))

    def start(self) -> _Repeating:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def statuses(self) -> collections.Counter[int]:
        return collections.Counter(status for _, status, _ in self.outcomes)

    def first_after(self, t: float, status: int) -> float | None:
        """Seconds from ``t`` to the first outcome with ``status`` after it."""
        later = [at for at, s, _ in self.outcomes if s == status and at >= t]
        return min(later) - t if later else None

    def wait_after(self, t: float, status: int, timeout: float = 30.0) -> bool:
        """Wait for an outcome with ``status`` after ``t`` (a sign-in once a fault is over);
        whether one came (the test's assertions judge, after its row is in the table)."""
        return bool(within(lambda: self.first_after(t, status) is not None, timeout))

    @property
    def refs(self) -> list[str]:
        """The ``ref`` of every sign-in sent to the hub."""
        return [ref_of(location) for location in self.locations]

    def relay(self, hub: DevHubProcess, timeout: float = 15.0) -> RelayTally:
        """The sign-ins this stream sent to the hub, against those the hub holds."""
        return relay_tally(hub, list(self.refs), timeout)

    def summary(self) -> str:
        """``303:12 503:3`` (status:count)."""
        return " ".join(f"{s}:{n}" for s, n in sorted(self.statuses().items()))


def _message(html: str) -> str:
    found = _MESSAGE.search(html)
    return found.group(1) if found else ""


class FormStream(_Repeating):
    """Form sign-ins (GET for the CSRF token, then POST) through the connector."""

    def __init__(self, url: str, logins: list[tuple[str, str]], interval: float = 0.5) -> None:
        super().__init__(interval)
        self.url = url + "/wsfed"
        self.logins = logins
        self._n = 0

    def once(self) -> tuple[int, str]:
        user, password = self.logins[self._n % len(self.logins)]
        self._n += 1
        query = {"wtrealm": "urn:acme", "wctx": f"form-{self._n}"}
        with requests.Session() as s:
            page = s.get(self.url, params=query, timeout=30)
            token = _CSRF.search(page.text)
            if not token:
                return page.status_code, "no form"
            data = {**query, "username": user, "password": password, "csrf_token": token.group(1)}
            resp = s.post(self.url, data=data, allow_redirects=False, timeout=60)
        if resp.status_code == 303:
            self.locations.append(resp.headers["Location"])
        return resp.status_code, _message(resp.text)


_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def krb5_env(krb5_conf: str) -> Iterator[None]:
    """``KRB5_CONFIG`` (and a memory ccache) for the in-process pyspnego client, then back."""
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in ("KRB5_CONFIG", "KRB5CCNAME")}
        os.environ.update(KRB5_CONFIG=krb5_conf, KRB5CCNAME="MEMORY:faults")
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def negotiate_header(principal: str, password: str, krb5_conf: str) -> str:
    """``Negotiate <token>`` for ``HTTP/localhost`` from pyspnego (password, no ccache)."""
    with krb5_env(krb5_conf):
        ctx = spnego.client(
            principal, password, hostname="localhost", service="HTTP", protocol="negotiate"
        )
        token = ctx.step()
    assert token
    return "Negotiate " + base64.b64encode(token).decode()


class NegotiateStream(_Repeating):
    """Kerberos sign-ins: a fresh ticket each time, sent as ``Authorization: Negotiate``.

    Status 303 is a Kerberos sign-in handed to the hub; 200 is the form with ``message``.
    """

    def __init__(
        self, url: str, principal: str, password: str, krb5_conf: str, interval: float = 0.5
    ) -> None:
        super().__init__(interval)
        self.url = url + "/wsfed"
        self.principal = principal
        self.password = password
        self.krb5_conf = krb5_conf
        self.headers_sent: list[str] = []
        self._n = 0

    def once(self) -> tuple[int, str]:
        self._n += 1
        header = negotiate_header(self.principal, self.password, self.krb5_conf)
        self.headers_sent.append(header)
        resp = requests.get(
            self.url,
            params={"wtrealm": "urn:acme", "wctx": f"krb-{self._n}"},
            headers={"Authorization": header},
            allow_redirects=False,
            timeout=30,
        )
        if resp.status_code == 303:
            self.locations.append(resp.headers["Location"])
        return resp.status_code, _message(resp.text)


# --------------------------------------------------------------------------------------
# a hub that can go away
# --------------------------------------------------------------------------------------


class HubOutage:
    """A TCP forwarder on a fixed loopback port in front of the devhub (see module doc)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.target: tuple[str, int] | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listening = threading.Event()
        self._thread: threading.Thread | None = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        """Listen again on the same port."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.settimeout(0.1)
        self._listening.set()
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Refuse new connections and cut the open ones (RST)."""
        self._listening.clear()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()

    close = down

    def _accept(self, listener: socket.socket) -> None:
        try:
            while self._listening.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                assert self.target is not None
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                except OSError:
                    client.close()
                    continue
                upstream.settimeout(None)
                client.settimeout(None)
                with self._lock:
                    self._conns |= {client, upstream}
                for src, dst in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()
        finally:
            listener.close()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


def poll_until(check: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Call ``check`` until it is true or ``timeout`` passes; its last answer."""
    return bool(within(check, timeout, interval))
