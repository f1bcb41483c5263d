#!/usr/bin/env python3
"""Benchmarks: how close the connector comes to the limit, how far ahead of its peers it is.

    python3 tests/bench/run_bench.py [--seconds N] [--json out.json] [--png out.png]

Starts its own OpenLDAP (10,000 generated users in 300 nested groups, 5 levels deep, plus a
user in 200 groups through nesting), an MIT KDC, the devhub and the connector under gunicorn
(and Apache httpd with mod_authnz_ldap and mod_auth_gssapi when installed), then measures each
kind of login for a fixed time at 1 and 4 concurrent clients and reports every figure as a
ratio to a baseline measured in the same run (see docs/benchmarks.md). Loopback only; every
loop bounded in time; everything started is stopped by its PID at the end, also on Ctrl-C.
``--only negotiate_pac`` (not in a default run) measures Negotiate sign-ins with PAC groups
beside LDAP groups on a Samba AD DC instead (pacbench.py).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for extra in (HERE, HERE.parent, HERE.parent / "soak", ROOT):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import baselines  # noqa: E402
from benchdir import NESTED_USER, WIDE_USER, ldap_ops  # noqa: E402
from loadgen import (  # noqa: E402
    HttpClient,
    Point,
    cpu_seconds,
    header,
    pss_mb,
    rss_mb,
    run_clients,
)
from pacbench import NegotiatePac  # noqa: E402
from report import Row, Table, both_sides  # noqa: E402
from sites import WCTX, Site, environment_note  # noqa: E402

from connector.settings import Settings  # noqa: E402

#: the agent's default concurrency (the bench's config leaves it unset)
AGENT_CONCURRENCY = Settings().agent_concurrency

CONCURRENCY = (1, 4)


def form_posts(client: HttpClient, port: int, users: list[str], password: str) -> list[bytes]:
    """The form's page fetched once on ``client`` (its CSRF cookie and token), then a form
    sign-in POST for each of ``users``, as raw requests to the connector at ``port``."""
    from urllib.parse import quote

    query = urlencode({"wtrealm": "urn:acme", "wctx": WCTX})
    get = f"GET /wsfed?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    status, head, body = client.request(get)
    cookie = re.search(rb"connector_csrf=([^;]+)", head)
    token = re.search(rb'name="csrf_token" value="([^"]+)"', body)
    if not cookie or not token:
        raise RuntimeError(f"no CSRF cookie/token in the form ({status})")
    posts = []
    for uid in users:
        form = (
            f"wtrealm=urn%3Aacme&wctx={WCTX}&wreply=&username={quote(uid)}"
            f"&password={quote(password)}&csrf_token={token.group(1).decode()}"
        ).encode()
        posts.append(
            (
                f"POST /wsfed HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Cookie: connector_csrf={cookie.group(1).decode()}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {len(form)}\r\n\r\n"
            ).encode()
            + form
        )
    return posts


class Bench:
    """One run: the site, the measured rows, and what they are compared with."""

    def __init__(self, args: argparse.Namespace, site: Site) -> None:
        self.args = args
        self.site = site
        self.seconds: float = args.seconds
        self.table = Table()
        self.profiles: dict[str, str] = {}
        self._token_sets: dict[int, list[bytes]] = {}
        self._token_sets_at = 0.0
        self.channel_batches: dict[str, Any] = {}
        self.channel_drains: list[dict[str, Any]] = []
        self.admin: Any = None

    # ---- one measured point ----------------------------------------------------------

    @contextlib.contextmanager
    def accounting(self) -> Iterator[dict[str, Any]]:
        """CPU seconds per part and LDAP operations done while the block runs."""
        pids = self.site.server_pids()
        before = {part: sum(cpu_seconds(p) for p in ps) for part, ps in pids.items()}
        ops0 = ldap_ops(self.admin)
        load = os.getloadavg()[0]
        out: dict[str, Any] = {}
        yield out
        ops1 = ldap_ops(self.admin)
        out["cpu"] = {
            part: sum(cpu_seconds(p) for p in ps) - before[part] for part, ps in pids.items()
        }
        ops = {k: ops1.get(k, 0) - ops0.get(k, 0) for k in ops1}
        ops["Search"] = ops.get("Search", 0) - 1  # the monitor read of ops0 itself
        out["ldap_ops"] = {k: v for k, v in ops.items() if v > 0}
        out["load"] = load

    def measure(
        self,
        name: str,
        kind: str,
        setup: Any,
        clients: int,
        *,
        limit: int = 10**9,
        parts: tuple[str, ...] = (),
        seconds: float | None = None,
        profile: bool = False,
        record: bool = True,
    ) -> Row:
        """Run one point and add it to the table (``record``) or only print it."""
        seconds = self.seconds if seconds is None else seconds
        spy = self._profile_start(f"{kind}-c{clients}", seconds) if profile else []
        events = self.hub_events() if "devhub" in parts else None  # outside the window
        with self.accounting() as acct:
            point = run_clients(setup, clients, seconds, limit=limit)
        self._profile_finish(spy)
        row = Row.from_point(name, kind, clients, point, acct, parts)
        if events is not None:
            after = self.hub_events()
            row.hub_events = {
                k: v - events.get(k, 0) for k, v in after.items() if v != events.get(k, 0)
            }
        if record:
            self.table.add(row)
        print(row.line() if record else f"    beside: {row.line().strip()}", flush=True)
        if point.first_error:
            print(f"    first error: {point.first_error}", flush=True)
        return row

    def beside(
        self,
        clients: int,
        setups: dict[str, tuple[Any, dict[str, Any]]],
        seconds: float | None = None,
        where: str = "before",
    ) -> dict[str, Any]:
        """A point's baselines measured again just before it or just after it (``where``; an
        issue 12 CPU budget's, or a drained backlog's raw validate), for ``seconds`` each
        (``--beside-seconds``; not added to the table; printed): each one's rate, CPU ms per
        operation and p50 by kind, and their CPU in all. This host's speed drifts by a quarter
        from one minute to the next, and the run's own baselines were measured minutes
        earlier; the two sides together are the point's ``Row.beside`` (:meth:`around`)."""
        if self.args.beside_seconds <= 0:
            return {}
        kinds: dict[str, dict[str, Any]] = {}
        for kind, (setup, options) in setups.items():
            row = self.measure(
                f"{kind}, {where} the point",
                kind,
                setup,
                clients,
                seconds=self.args.beside_seconds if seconds is None else seconds,
                record=False,
                **options,
            )
            kinds[kind] = {"rate": row.rate, "cost": row.cost(), "p50": row.p50_ms}
        costs = [k["cost"] for k in kinds.values()]
        return {"kinds": kinds, "cost": sum(costs) if all(costs) else None}

    def around(
        self,
        clients: int,
        before: dict[str, tuple[Any, dict[str, Any]]],
        after: dict[str, tuple[Any, dict[str, Any]]],
        point: Callable[[], Row],
        seconds: float | None = None,
    ) -> Row:
        """``point`` measured between its baselines: ``before`` just before it and ``after``
        (the same kinds, made afresh: a token accepted once is a replay the second time) just
        after it, ``seconds`` each, their means its ``Row.beside`` (:func:`report.both_sides`)."""
        first = self.beside(clients, before, seconds)
        row = point()
        row.beside = both_sides(first, self.beside(clients, after, seconds, where="after"))
        return row

    def hub_events(self) -> dict[str, int]:
        """The devhub's event counters (``signinRelays``: relay requests, ``sessionWaits``:
        callbacks that came before their relay and waited, ...)."""
        return dict(self.site.hub.state()["events"])

    # ---- py-spy --------------------------------------------------------------------------

    def _profile_start(
        self, label: str, seconds: float
    ) -> list[tuple[subprocess.Popen[bytes], Path]]:
        """py-spy each worker for the point: only threads holding the GIL (CPU in Python)."""
        if not self.args.profile:
            return []
        out = []
        outdir = Path(self.args.profile)
        outdir.mkdir(parents=True, exist_ok=True)
        for pid in self.site.worker_pids():
            path = outdir / f"{label}-{pid}.txt"
            command = [
                "py-spy", "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
                "--duration", str(int(seconds) + 1), "--output", str(path), "--nonblocking",
                "--gil",
            ]  # fmt: skip
            proc = subprocess.Popen(
                command,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            out.append((proc, path))
        time.sleep(0.3)
        return out

    def _profile_finish(self, spies: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
        for proc, path in spies:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            self.profiles[path.stem] = str(path)

    # ---- (1) the limit ---------------------------------------------------------------

    def ldap_setup(self, users: list[str], seed: int) -> Any:
        s = self.site.slapd
        d = self.site.directory
        assert s is not None and d is not None
        return baselines.ldap_validate(
            s.uri, s.ca_file, s.bind_dn, s.bind_pw, s.people_dn, s.groups_dn, users, d.password,
            seed,
        )  # fmt: skip

    def limit(self) -> None:
        d = self.site.directory
        assert d is not None
        for c in CONCURRENCY:
            self.measure(
                "raw python-ldap validate (search+bind+walk), generated users",
                "ldap_raw",
                self.ldap_setup(d.users, 1),
                c,
                parts=("slapd",),
            )
        for c in CONCURRENCY:
            self.measure(
                "raw python-ldap validate, the nested user",
                "ldap_raw_nested",
                self.ldap_setup([NESTED_USER], 2),
                c,
                parts=("slapd",),
            )

    # ---- (2) channel -----------------------------------------------------------------

    def channel_setup(self, window: int, users: list[str], seed: int) -> Any:
        hub = self.site.hub
        d = self.site.directory
        assert hub is not None and d is not None
        parts = urlsplit(hub.ad_hub)
        host, port, prefix = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
        password = d.password

        def setup(index: int) -> Callable[[int], float | None]:
            import collections
            import random

            client = HttpClient(host, port)
            order = list(users)
            random.Random(seed * 100 + index).shuffle(order)
            pending: collections.deque[str] = collections.deque()
            counter = [0]

            def queue() -> None:
                uid = order[counter[0] % len(order)]
                counter[0] += 1
                body = json.dumps(
                    {
                        "name": "authenticate_user",
                        "payload": {"pid": f"b{index}-{counter[0]}", "username": uid,
                                    "password": password},
                    }
                ).encode()  # fmt: skip
                raw = (
                    f"POST {prefix}/api/commands HTTP/1.1\r\nHost: {host}:{port}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode() + body
                status, _, answer = client.request(raw)
                if status != 200:
                    raise RuntimeError(f"queue: {status} {answer[:200]!r}")
                pending.append(json.loads(answer)["id"])

            def op(n: int) -> float | None:
                while len(pending) < window:
                    queue()
                cid = pending.popleft()
                raw = (
                    f"GET {prefix}/api/commands/{cid}?wait=30 HTTP/1.1\r\n"
                    f"Host: {host}:{port}\r\n\r\n"
                ).encode()
                status, _, answer = client.request(raw)
                view = json.loads(answer)
                if status != 200 or view.get("state") != "done":
                    raise RuntimeError(f"command {cid}: {status} {view.get('state')}")
                result = view.get("result") or {}
                if "profile" not in result:
                    raise RuntimeError(f"command {cid}: {result.get('err')}")
                return float(view["doneAt"] - view["createdAt"]) / 1000.0

            return op

        return setup

    def channel(self) -> None:
        d = self.site.directory
        hub = self.site.hub
        assert d is not None and hub is not None
        for c in CONCURRENCY:
            hub.reset()
            self.measure(
                "channel authenticate_user, end to end (closed loop)",
                "channel",
                self.channel_setup(1, d.users, 3 + c),
                c,
                parts=("connector", "devhub", "slapd"),
                profile=True,
            )
            self.site.wait_hub_idle()
        self.channel_drain()
        hub.reset()

    def queue_setup(self, users: list[str], per_client: int) -> Any:
        """Feeders that only queue ``per_client`` authenticate_user commands each."""
        hub = self.site.hub
        d = self.site.directory
        assert hub is not None and d is not None
        parts = urlsplit(hub.ad_hub)
        host, port, prefix = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
        password = d.password

        def setup(index: int) -> Callable[[int], float | None]:
            client = HttpClient(host, port)
            mine = users[index::4]

            def op(n: int) -> float | None:
                if n >= per_client:
                    raise StopIteration
                body = json.dumps(
                    {
                        "name": "authenticate_user",
                        "payload": {"username": mine[n % len(mine)], "password": password},
                    }
                ).encode()
                raw = (
                    f"POST {prefix}/api/commands HTTP/1.1\r\nHost: {host}:{port}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode() + body
                status, _, answer = client.request(raw)
                if status != 200:
                    raise RuntimeError(f"queue: {status} {answer[:200]!r}")
                return None

            return op

        return setup

    def channel_drain(self) -> None:
        """The channel's capacity: a backlog queued while the agents are held (the hub delays
        their next polls), then drained with batched polls and results; ``--drains`` times.
        Each drain is compared with raw validate at 4 clients measured just before it, while
        the agents are held (this host's speed drifts by a quarter within a minute, and one
        backlog drains in a few seconds). Every drain is printed; the table keeps the one with
        the median CPU ratio, and the JSON has them all."""
        closed = self.table.find("channel", 4)
        guess = 3 * (closed.rate if closed else 100.0) * self.seconds
        n = int(min(self.args.max_backlog, max(400, guess)) // 4 * 4)
        drains: list[tuple[Row, dict[str, Any]]] = []
        for i in range(self.args.drains):
            row = self._drain_once(n, seed=10 + i, profile=i == 0)
            drains.append((row, self._batch_sizes()))
            cpu, rate = row.beside_ratio("cost"), row.beside_ratio("rate", "ldap_raw")
            print(f"    drain {i + 1}/{self.args.drains}: {row.line().strip()}", flush=True)
            print(f"    against raw validate@4 around it: CPU {cpu}, rate {rate}", flush=True)
            print(f"    hub: {drains[-1][1]}", flush=True)
        order = sorted(drains, key=lambda d: d[0].beside_ratio("cost") or float("inf"))
        median, self.channel_batches = order[(len(order) - 1) // 2]
        median.name = f"channel, backlog of {n} drained (batched), median of {len(drains)}"
        self.table.add(median)
        self.channel_drains = [dataclasses.asdict(r) for r, _ in drains]
        print(median.line(), flush=True)

    def _drain_once(self, n: int, seed: int, profile: bool) -> Row:
        """One backlog of ``n`` commands queued while the agents are held, then drained,
        between raw validate at 4 clients measured during the hold and again once it is drained
        (the agents idle in their polls; :meth:`around`)."""
        hub = self.site.hub
        d = self.site.directory
        assert hub is not None and d is not None
        hub.reset()
        poll_wait = float(self.site.config().get("POLL_WAIT_SECONDS", 5))
        hold = min(poll_wait + 3 + n / 400, poll_wait + 12)  # < the agent's read timeout
        hub.add_fault(delay=hold, count=self.site.workers, endpoint="poll")
        held = time.monotonic()
        # the side before it: while the polls in flight return and the next ones are held
        return self.around(
            4,
            {"ldap_raw": (self.ldap_setup(d.users, seed), {})},
            {"ldap_raw": (self.ldap_setup(d.users, seed + 50), {})},
            lambda: self._drained(n, held + poll_wait + 0.5, held + hold, profile),
            seconds=max(poll_wait - 1, 1.0),
        )

    def _drained(self, n: int, release: float, held_until: float, profile: bool) -> Row:
        """The backlog queued (from ``release``, once the held polls are the agents' only
        ones, until ``held_until``), then drained: its row. The rate is taken from the hub's
        doneAt times; the hub then does nothing but answer polls and results."""
        hub = self.site.hub
        d = self.site.directory
        assert hub is not None and d is not None
        time.sleep(max(0.0, release - time.monotonic()))
        hold = held_until - time.monotonic()
        # py-spy from before the release (the held workers barely hold the GIL) to the end
        spy = (
            self._profile_start("channel_drain-c8", min(hold + 1 + n / 200, hold + 40))
            if profile
            else []
        )
        fed = run_clients(self.queue_setup(d.users, n // 4), 4, hold, timeout=30)
        if fed.ok != n:
            raise RuntimeError(f"queued {fed.ok} of {n} commands: {fed.first_error}")
        if time.monotonic() > held_until - 0.5:
            print("    (the backlog took longer to queue than the agents were held)", flush=True)
        with self.accounting() as acct:
            deadline = time.monotonic() + max(120.0, 10 * self.seconds)
            while time.monotonic() < deadline:
                state = hub.state()
                if state["done"] >= n:
                    break
                time.sleep(0.05)
        self._profile_finish(spy)
        views = [v for v in hub.commands() if v["state"] == "done"]
        done = sorted(v["doneAt"] for v in views)
        failed = sum(1 for v in views if "profile" not in (v.get("result") or {}))
        elapsed = (done[-1] - done[0]) / 1000 if len(done) > 1 else 0.0
        point = Point(
            ok=len(done) - 1 - failed,
            errors=failed + (n - len(done)),
            elapsed=elapsed,
            latencies=[],
            client_cpu=0.0,
            first_error="" if not failed else "some commands failed",
        )
        return Row.from_point(
            f"channel, backlog of {n} drained (batched polls and results)",
            "channel_drain",
            self.site.workers * int(self.site.config().get("AGENT_CONCURRENCY", AGENT_CONCURRENCY)),
            point,
            acct,
            (),
        )

    def _batch_sizes(self) -> dict[str, Any]:
        """How many commands each poll took and results each post carried (from the hub)."""
        hub = self.site.hub
        assert hub is not None
        ev = hub.state()["events"]
        polls = ev.get("polls", 0)
        return {
            "polls": polls,
            "deliveries": ev.get("deliveries", 0),
            "commands_per_poll": round(ev.get("deliveries", 0) / polls, 2) if polls else None,
            "results_received": ev.get("resultsReceived", 0),
        }

    # ---- (3) form logins -------------------------------------------------------------

    def browser_follow(self) -> Callable[[], Callable[[bytes], None]]:
        """Made in a client: follows a 303 to the hub's postTokenUrl as a browser would, so a
        sign-in counts only once the hub holds its profile (v1: the ref exists already; v2: the
        hub waits for the relayed ref). The hub answers 200 (its page) or a redirect."""
        hub = self.site.hub
        assert hub is not None
        base = urlsplit(hub.ad_hub)
        keep = self.args.keepalive

        def make() -> Callable[[bytes], None]:
            client = HttpClient(base.hostname or "127.0.0.1", base.port or 80, keepalive=keep)

            def follow(head: bytes) -> None:
                location = urlsplit(header(head, "Location") or "")
                if location.netloc != base.netloc:
                    raise RuntimeError(f"303 to {location.geturl()!r}, not to the hub")
                raw = (
                    f"GET {location.path}?{location.query} HTTP/1.1\r\nHost: {base.netloc}\r\n"
                    "Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8\r\n\r\n"
                ).encode()
                status, _, body = client.request(raw)
                if status not in (200, 302, 303):
                    raise RuntimeError(f"the hub's postTokenUrl answered {status}: {body[:160]!r}")

            return follow

        return make

    def form_setup(
        self, users: list[str], seed: int, port: int | None = None, follow: bool = True
    ) -> Any:
        """Form sign-ins at ``port`` (default: the connector's), each followed to the hub."""
        conn = self.site.connector
        d = self.site.directory
        assert conn is not None and d is not None
        port = conn.port if port is None else port
        password = d.password
        keep = self.args.keepalive
        make_follow = self.browser_follow() if follow else None

        def setup(index: int) -> Callable[[int], float | None]:
            import random

            client = HttpClient("127.0.0.1", port, keepalive=keep)
            order = list(users)
            random.Random(seed * 100 + index).shuffle(order)
            requests_ = form_posts(client, port, order[:5000], password)
            follow = make_follow() if make_follow else None

            def op(n: int) -> float | None:
                status, head, body = client.request(requests_[n % len(requests_)])
                if status != 303:
                    raise RuntimeError(f"form login answered {status}: {body[:200]!r}")
                if follow is not None:
                    follow(head)
                return None

            return op

        return setup

    def basic_setup(self, uid: str) -> Any:
        apache = self.site.apache
        d = self.site.directory
        assert apache is not None and d is not None
        port = apache.port
        cred = base64.b64encode(f"{uid}:{d.password}".encode()).decode()
        raw = (
            f"GET /ldap/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Basic {cred}\r\n\r\n"
        ).encode()
        return self.same_request_setup(port, raw, "apache basic")

    def health_setup(self) -> Any:
        conn = self.site.connector
        assert conn is not None
        raw = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{conn.port}\r\n\r\n".encode()
        return self.same_request_setup(conn.port, raw, "/health")

    def same_request_setup(self, port: int, raw: bytes, what: str) -> Any:
        """Clients that send ``raw`` to ``port`` again and again and expect a 200."""
        keep = self.args.keepalive

        def setup(index: int) -> Callable[[int], float | None]:
            client = HttpClient("127.0.0.1", port, keepalive=keep)

            def op(n: int) -> float | None:
                status, _, body = client.request(raw)
                if status != 200:
                    raise RuntimeError(f"{what} answered {status}: {body[:120]!r}")
                return None

            return op

        return setup

    def forms(self) -> None:
        d = self.site.directory
        assert d is not None
        for c in CONCURRENCY:
            self.measure(
                "HTTP overhead: GET /health (same gunicorn)",
                "http_health",
                self.health_setup(),
                c,
                parts=("connector",),
            )
        lean = self.site.lean
        if lean is not None:
            for c in CONCURRENCY:
                self.measure(
                    "lean reference, NOT the product: form view, no hand-off",
                    "lean_form",
                    self.form_setup(d.users, 5, port=lean.port, follow=False),
                    c,
                    parts=("lean", "slapd"),
                )
        for c in CONCURRENCY:
            self.form_around(c, profile=True)
        for c in CONCURRENCY:
            self.measure(
                "form login POST /wsfed + hub postTokenUrl, the nested user",
                "form_nested",
                self.form_setup([NESTED_USER], 6),
                c,
                parts=("connector", "devhub", "slapd"),
            )
        if self.site.apache is not None:
            for c in CONCURRENCY:
                self.measure(
                    "Apache mod_authnz_ldap Basic, nested user, LDAP cache off",
                    "apache_ldap",
                    self.basic_setup(NESTED_USER),
                    c,
                    parts=("apache", "slapd"),
                )

    def form_around(
        self, clients: int, seed: int = 5, sides: tuple[int, int] = (20, 30), profile: bool = False
    ) -> Row:
        """The form point at ``clients`` (users shuffled by ``seed``) between its baselines,
        ``GET /health`` and raw validate (users shuffled by ``sides`` + ``clients``)."""
        d = self.site.directory
        assert d is not None

        def baselines(side: int) -> dict[str, tuple[Any, dict[str, Any]]]:
            return {
                "http_health": (self.health_setup(), {}),
                "ldap_raw": (self.ldap_setup(d.users, side + clients), {}),
            }

        return self.around(
            clients,
            baselines(sides[0]),
            baselines(sides[1]),
            lambda: self.measure(
                "form login POST /wsfed + hub postTokenUrl, generated users",
                "form",
                self.form_setup(d.users, seed),
                clients,
                parts=("connector", "devhub", "slapd"),
                profile=profile,
            ),
        )

    # ---- (4) Negotiate -----------------------------------------------------------------

    def make_tokens(self, n: int) -> list[bytes]:
        """``n`` fresh tokens, made in two forked processes (outside any timed window)."""
        import multiprocessing

        kdc = self.site.kdc
        assert kdc is not None
        ccaches, conf = self.site.ccaches, kdc.krb5_conf
        ctx = multiprocessing.get_context("fork")
        half = [n // 2, n - n // 2]
        t0 = time.perf_counter()
        with ctx.Pool(2) as pool:
            parts = pool.starmap(
                _tokens_worker, [(half[0], ccaches[::2], conf), (half[1], ccaches[1::2], conf)]
            )
        tokens = [t for part in parts for t in part]
        rate = n / (time.perf_counter() - t0)
        print(f"  made {n} Negotiate tokens at {rate:.0f}/s (2 processes)", flush=True)
        return tokens

    def negotiate_setup(self, port: int, path: str, tokens: list[bytes], clients: int) -> Any:
        """Negotiate requests; a sign-in's 303 (``/wsfed``) is followed to the hub."""
        expect = 303 if "/wsfed" in path else 200
        keep = self.args.keepalive
        make_follow = self.browser_follow() if expect == 303 else None

        def setup(index: int) -> Callable[[int], float | None]:
            client = HttpClient("127.0.0.1", port, keepalive=keep)
            mine = tokens[index::clients]
            follow = make_follow() if make_follow else None

            def op(n: int) -> float | None:
                if n >= len(mine):
                    raise StopIteration
                raw = (
                    f"GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\n"
                    f"Authorization: Negotiate {base64.b64encode(mine[n]).decode()}\r\n\r\n"
                ).encode()
                status, head, body = client.request(raw)
                mutual = header(head, "WWW-Authenticate") or ""
                if status != expect or not mutual.startswith("Negotiate "):
                    raise RuntimeError(f"negotiate answered {status}: {body[:160]!r}")
                if follow is not None:
                    follow(head)
                return None

            return op

        return setup

    def token_sets(self) -> dict[int, list[bytes]]:
        """One set of fresh tokens per client count (the same set serves every acceptor: each
        has its own replay cache), made again when older than 3 minutes (Kerberos allows 5)."""
        if not self._token_sets or time.monotonic() - self._token_sets_at > 180:
            self._token_sets = {c: self.make_tokens(self.args.max_tokens) for c in CONCURRENCY}
            self._token_sets_at = time.monotonic()
        return self._token_sets

    def negotiate(self) -> None:
        kdc = self.site.kdc
        conn = self.site.connector
        assert kdc is not None and conn is not None
        cap = self.args.max_tokens
        rc = self.site.workdir / "bench-rcache"
        rc.mkdir(exist_ok=True)
        for c in CONCURRENCY:
            self.measure(
                "raw python-gssapi accept (MIT SPNEGO), no HTTP",
                "gssapi_raw",
                baselines.gssapi_accept(kdc.keytab, f"file2:{rc}/gssapi-{c}", kdc.krb5_conf,
                                        self.token_sets()[c], c),
                c,
                limit=cap,
            )  # fmt: skip
        s = self.site.slapd
        assert s is not None
        for c in CONCURRENCY:
            self.measure(
                "raw python-ldap profile lookup (search+walk), Kerberos users",
                "ldap_raw_lookup",
                baselines.ldap_validate(s.uri, s.ca_file, s.bind_dn, s.bind_pw, s.people_dn,
                                        s.groups_dn, self.site.kerberos_users, None, 8),
                c,
                parts=("slapd",),
            )  # fmt: skip
        for c in CONCURRENCY:
            self.measure(
                "connector KerberosAcceptor (python-gssapi), no HTTP",
                "acceptor_raw",
                baselines.acceptor_accept(kdc.keytab, f"file2:{rc}/acceptor-{c}", kdc.krb5_conf,
                                          kdc.realm, self.token_sets()[c], c),
                c,
                limit=cap,
            )  # fmt: skip
        if self.site.apache is not None:
            for c in CONCURRENCY:
                self.measure(
                    "Apache mod_auth_gssapi Negotiate handshake (no sessions)",
                    "apache_gssapi",
                    self.negotiate_setup(self.site.apache.port, "/krb/", self.token_sets()[c], c),
                    c,
                    limit=cap,
                    parts=("apache",),
                )
        query = urlencode({"wtrealm": "urn:acme", "wctx": WCTX})
        users = self.site.kerberos_users
        for c in CONCURRENCY:
            tokens = self.token_sets()[c]

            def baselines_(
                side: str, seed: int, c: int = c, tokens: list[bytes] = tokens
            ) -> dict[str, Any]:
                # each side its own replay cache: the same tokens are accepted on both
                gssapi = baselines.gssapi_accept(
                    kdc.keytab, f"file2:{rc}/gssapi-{side}-{c}", kdc.krb5_conf, tokens, c
                )
                lookup = baselines.ldap_validate(
                    s.uri, s.ca_file, s.bind_dn, s.bind_pw, s.people_dn, s.groups_dn, users,
                    None, seed,
                )  # fmt: skip
                return {
                    "http_health": (self.health_setup(), {}),
                    "gssapi_raw": (gssapi, {"limit": cap}),
                    "ldap_raw_lookup": (lookup, {}),
                }

            self.around(
                c,
                baselines_("before", 9 + c),
                baselines_("after", 19 + c),
                lambda c=c, tokens=tokens: self.measure(  # type: ignore[misc]
                    "Negotiate sign-in GET /wsfed + hub postTokenUrl",
                    "negotiate",
                    self.negotiate_setup(conn.port, f"/wsfed?{query}", tokens, c),
                    c,
                    limit=cap,
                    parts=("connector", "devhub", "slapd"),
                    profile=True,
                ),
            )

    # ---- (5) group resolution ------------------------------------------------------------

    def groups(self) -> dict[str, Any]:
        """The 200-group user through the connector's Directory, in this process: cold (cache
        cleared) and warm, per strategy: group queries (the strategy's count), LDAP operations
        (cn=Monitor) and time."""
        from connector.directory import Directory
        from connector.settings import load_settings

        d = self.site.directory
        assert d is not None
        out: dict[str, Any] = {}
        env = {"GROUPS_CACHE_SECONDS": "600"}
        for strategy in ("member", "memberof"):
            settings = load_settings(
                self.site.settings_file(),
                {**env, "GROUPS_STRATEGY": strategy},
                encrypt_in_place=False,
            )
            directory = Directory(settings)
            try:
                directory.authenticate(WIDE_USER, d.password)  # connections opened
                result: dict[str, Any] = {}
                for state in ("cold", "warm"):
                    times, queries, ops, groups = [], [], [], 0
                    for _ in range(self.args.group_repeats):
                        if state == "cold":
                            directory.cache.clear()
                        q0 = directory.strategy.queries
                        o0 = ldap_ops(self.admin)
                        t0 = time.perf_counter()
                        profile = directory.authenticate(WIDE_USER, d.password)
                        times.append(time.perf_counter() - t0)
                        o1 = ldap_ops(self.admin)
                        queries.append(directory.strategy.queries - q0)
                        ops.append(
                            sum(o1.get(k, 0) - o0.get(k, 0) for k in o1) - 1  # minus o0's read
                        )
                        groups = len(profile.get("groups") or [])
                    result[state] = {
                        "groups": groups,
                        "group_queries": statistics.median(queries),
                        "ldap_ops_per_login": statistics.median(ops),
                        "ms_p50": round(statistics.median(times) * 1000, 2),
                        "ms_min": round(min(times) * 1000, 2),
                    }
                if result["cold"]["groups"] != len(d.wide_groups):
                    result["error"] = f"expected {len(d.wide_groups)} groups"
                out[strategy] = result
            finally:
                directory.close()
        out["raw_member_walk"] = self.raw_walk()
        for strategy, r in out.items():
            if strategy == "raw_member_walk":
                print(f"  raw python-ldap member walk of '{WIDE_USER}': {r}", flush=True)
                continue
            print(
                f"  groups of '{WIDE_USER}' ({strategy} walk): {r['cold']['groups']} groups; "
                f"cold {r['cold']['group_queries']} group queries, "
                f"{r['cold']['ldap_ops_per_login']} LDAP ops, {r['cold']['ms_p50']} ms; "
                f"warm {r['warm']['group_queries']} group queries, "
                f"{r['warm']['ldap_ops_per_login']} LDAP ops, {r['warm']['ms_p50']} ms",
                flush=True,
            )
        return out

    def raw_walk(self) -> dict[str, Any]:
        """The limit for group resolution: python-ldap's member walk of the wide user."""
        s = self.site.slapd
        assert s is not None
        conn = baselines.connect(s.uri, s.ca_file)
        conn.simple_bind_s(s.bind_dn, s.bind_pw)
        dn = s.user_dn(WIDE_USER)
        out: dict[str, Any] = {}
        try:
            for label, attrs in (("cn", ("cn",)), ("cn+memberOf", ("cn", "memberOf"))):
                times, found = [], 0
                for _ in range(self.args.group_repeats):
                    t0 = time.perf_counter()
                    found = len(baselines.member_walk(conn, s.groups_dn, dn, attrs))
                    times.append(time.perf_counter() - t0)
                out[f"attrs {label}"] = {
                    "groups": found,
                    "ms_p50": round(statistics.median(times) * 1000, 2),
                    "ms_min": round(min(times) * 1000, 2),
                }
        finally:
            conn.unbind_s()
        return out

    # ---- (6) memory -----------------------------------------------------------------------

    def rss(self, measure: Callable[[int], float | None] = rss_mb) -> dict[str, float | None]:
        """Each worker's RSS (or another per-process measure) in MB."""
        out = {}
        for pid in self.site.worker_pids():
            mb = measure(pid)
            out[str(pid)] = None if mb is None else round(mb, 1)
        return out

    def warm_up(self) -> None:
        """A few seconds of every kind of login, so the workers have loaded what they use."""
        d = self.site.directory
        conn = self.site.connector
        assert d is not None and conn is not None
        seconds = self.args.warmup
        run_clients(self.form_setup(d.users, 11), 2, seconds)
        if self.site.lean is not None:
            lean = self.form_setup(d.users, 11, port=self.site.lean.port, follow=False)
            run_clients(lean, 2, seconds)
        run_clients(self.channel_setup(4, d.users, 12), 2, seconds)
        tokens = self.make_tokens(600)
        query = urlencode({"wtrealm": "urn:acme", "wctx": WCTX})
        run_clients(
            self.negotiate_setup(conn.port, f"/wsfed?{query}", tokens, 2), 2, seconds, limit=300
        )
        self.site.wait_hub_idle()
        assert self.site.hub is not None
        self.site.hub.reset()

    def check_correctness(self) -> dict[str, Any]:
        """One login of each singled-out user through the channel: the groups are right."""
        hub = self.site.hub
        d = self.site.directory
        assert hub is not None and d is not None
        out = {}
        for uid, expected in ((NESTED_USER, d.nested_groups), (WIDE_USER, d.wide_groups)):
            cid = hub.queue("authenticate_user", {"username": uid, "password": d.password})
            view = hub.wait_done(cid, 30)
            got = set((view.get("result") or {}).get("profile", {}).get("groups") or [])
            out[uid] = {"groups": len(got), "ok": got == set(expected)}
            if got != set(expected):
                raise RuntimeError(f"{uid}: groups {sorted(got)[:5]}... != expected")
        sample = d.users[123]
        cid = hub.queue("authenticate_user", {"username": sample, "password": d.password})
        got = set(hub.wait_done(cid, 30)["result"]["profile"]["groups"])
        if got != d.big.expected_groups(sample):
            raise RuntimeError(f"{sample}: groups {sorted(got)} != {d.big.expected_groups(sample)}")
        out[sample] = {"groups": len(got), "ok": True}
        return out


def git_state() -> dict[str, Any]:
    """Which code is measured: HEAD and the files changed under connector/ (uncommitted), as
    the run starts."""

    def git(*cmd: str) -> str:
        out = subprocess.run(
            ["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=20, check=False
        )
        return out.stdout

    # porcelain lines are "XY path": the status's first column may be a space
    changed = [line[3:] for line in git("status", "--porcelain", "connector").splitlines()]
    head = git("rev-parse", "--short", "HEAD").strip()
    return {"head": head, "uncommitted_under_connector": changed}


def _tokens_worker(n: int, ccaches: list[str], krb5_conf: str) -> list[bytes]:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the pool ends its workers with SIGTERM
    tokens, _ = baselines.make_tokens(n, ccaches, krb5_conf)
    return tokens


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="length of each point (10)")
    p.add_argument("--json", help="write the table and the details as JSON here")
    p.add_argument("--png", help="draw the ratios as a PNG chart here (needs matplotlib)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    p.add_argument("--threads", type=int, default=8, help="gunicorn threads per worker (8)")
    p.add_argument("--log-level", default="info", help="the connector's LOG_LEVEL (info)")
    p.add_argument(
        "--max-tokens", type=int, default=25000, help="Negotiate tokens per client count (25000)"
    )
    p.add_argument(
        "--keepalive",
        action="store_true",
        help="reuse each client's HTTP connection (default: a new one per sign-in, as "
        "different browsers would; with few keep-alive clients gunicorn may give them all to "
        "one worker)",
    )
    p.add_argument(
        "--max-backlog", type=int, default=4000, help="most commands in the drained backlog"
    )
    p.add_argument(
        "--beside-seconds",
        type=float,
        default=3.0,
        help="the CPU budgets' baselines measured again just before and just after each point, "
        "this long each (a drain's: the agents' hold); 0: compare with the run's own baselines "
        "only",
    )
    p.add_argument(
        "--drains", type=int, default=3, help="backlogs drained; the table keeps the median (3)"
    )
    p.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per kind (3)")
    p.add_argument("--group-repeats", type=int, default=20, help="logins per group case (20)")
    p.add_argument(
        "--only",
        default="limit,channel,forms,negotiate,groups",
        help="comma-separated parts to run (limit,channel,forms,negotiate,groups); also "
        "negotiate_pac: Negotiate with PAC groups beside LDAP groups on Samba AD (not by default)",
    )
    p.add_argument(
        "--hub-server",
        choices=("loop", "gevent"),
        default="loop",
        help="how the devhub is served: hubserver.py's event loop (default) or gunicorn's "
        "gevent worker (hubworker.py), as before stop 21",
    )
    p.add_argument("--profile", metavar="DIR", help="py-spy the workers during chosen points")
    p.add_argument("--from-json", metavar="FILE", help="render a saved run again; start nothing")
    p.add_argument("--workdir", help="work directory (default: a new temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.seconds > 600:
        p.error("--seconds must be in (0, 600]")
    return args


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def measure_all(bench: Bench, site: Site, only: set[str], details: dict[str, Any]) -> None:
    """Start the servers, check the logins are right, warm up, then measure every part."""
    if only == {"negotiate_pac"}:  # Samba AD and a hub: none of the OpenLDAP world
        details["negotiate_pac"] = NegotiatePac(bench, site).run()
        return
    site.start_directory()
    print(f"  directory loaded in {site.timings['directory_load_s']:.1f} s", flush=True)
    site.start_kdc()
    site.start_hub()
    site.start_connector()
    print(
        f"  connector: /health after {site.timings['connector_health_s']:.2f} s, "
        f"ready (agents connected) after {site.timings['connector_ready_s']:.2f} s",
        flush=True,
    )
    if not site.start_apache():
        print("  apache2 (mod_authnz_ldap, mod_auth_gssapi) not installed: no peer rows")
    if "forms" in only:
        site.start_lean()
    assert site.slapd is not None
    bench.admin = site.slapd.admin()
    details["correctness"] = bench.check_correctness()
    bench.warm_up()
    details["rss_after_warmup_mb"] = bench.rss()
    details["pss_after_warmup_mb"] = bench.rss(pss_mb)
    print(f"  RSS per worker after warm-up: {details['rss_after_warmup_mb']} MB", flush=True)
    print(Row.header(), flush=True)
    if "limit" in only:
        bench.limit()
    if "channel" in only:
        bench.channel()
        details["channel_batches"] = bench.channel_batches
        details["channel_drains"] = bench.channel_drains
    if "forms" in only:
        bench.forms()
    if "negotiate" in only:
        bench.negotiate()
    if "groups" in only:
        details["groups"] = bench.groups()
    if "negotiate_pac" in only:
        details["negotiate_pac"] = NegotiatePac(bench, site).run()
    details["rss_after_run_mb"] = bench.rss()
    details["pss_after_run_mb"] = bench.rss(pss_mb)


def render_saved(args: argparse.Namespace) -> int:
    """``--from-json``: the table, ratios and targets of a saved run; JSON/PNG again if asked."""
    table, details = Table.from_json(json.loads(Path(args.from_json).read_text()))
    report = table.finish(details)
    print(report["text"])
    if args.json:
        Path(args.json).write_text(json.dumps(report["json"], indent=2) + "\n")
    if args.png:
        print(table.png(args.png))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        return render_saved(args)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="connector-bench-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(","))
    site = Site(
        workdir,
        workers=args.workers,
        threads=args.threads,
        log_level=args.log_level,
        hub_server=args.hub_server,
    )
    bench = Bench(args, site)
    started = datetime.datetime.now(datetime.UTC)
    env_before = environment_note()
    measured = git_state()  # the code the workers load now (not what the tree holds at the end)
    print(f"bench: work directory {workdir}; load average {env_before['loadavg']}", flush=True)
    details: dict[str, Any] = {}
    failure: list[BaseException] = []

    def work() -> None:
        try:
            measure_all(bench, site, only, details)
        except BaseException as exc:
            failure.append(exc)

    # The measurements run in a thread of their own: Ctrl-C and SIGTERM land in this (main)
    # thread, which never holds a python-ldap lock, and stops every server by its PID; the
    # worker's calls then fail and it ends.
    worker = threading.Thread(target=work, name="bench", daemon=True)
    code = 0
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.5)
    except KeyboardInterrupt:
        print("\nbench: interrupted; stopping everything", flush=True)
        code = 130
    finally:
        if code == 0 and failure:
            exc = failure[0]
            print(f"\nbench: failed: {type(exc).__name__}: {exc}", flush=True)
            if site.connector is not None:
                print(site.connector.log()[-2000:], flush=True)
            code = 1
        if code == 0 and bench.admin is not None:
            with contextlib.suppress(Exception):
                bench.admin.unbind_s()
        site.stop()
        worker.join(15)
        site.stop()  # anything the worker was starting while the first stop ran
        if not args.keep and not args.workdir and code in (0, 130):
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    if code == 1:
        raise failure[0]
    if code:
        return code
    details.update(
        {
            "started": started.isoformat(timespec="seconds"),
            "seconds_per_point": args.seconds,
            "environment_before": env_before,
            "environment_after": environment_note(),
            "startup": {k: round(v, 3) for k, v in site.timings.items()},
            "workers": args.workers,
            "threads": args.threads,
            "log_level": args.log_level,
            "profiles": bench.profiles,
            "git": measured,
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        }
    )
    report = bench.table.finish(details)
    print(report["text"])
    if args.json:
        Path(args.json).write_text(json.dumps(report["json"], indent=2) + "\n")
        print(f"bench: JSON written to {args.json}")
    if args.png:
        print(bench.table.png(args.png))
    if bench.profiles:
        print_profiles(bench.profiles)
    return 0


def print_profiles(profiles: dict[str, str]) -> None:
    """Top frames (inclusive, CPU in Python: py-spy --gil) per profiled point, all workers."""
    import profsum

    by_point: dict[str, list[str]] = {}
    for stem, path in profiles.items():
        by_point.setdefault(stem.rsplit("-", 1)[0], []).append(path)
    for point, paths in sorted(by_point.items()):
        stacks = profsum.load(p for p in paths if Path(p).exists())
        print(f"\npy-spy (--gil) {point}: {', '.join(paths)}")
        text = profsum.summarise(stacks, top=14, plumbing=False)
        print("\n".join(text.split("\n\ntop 14 self:")[0].splitlines()))


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
