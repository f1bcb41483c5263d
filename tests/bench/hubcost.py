"""The devhub's CPU per browser sign-in (issue 12's target: at most 1 ms), measured alone.

A browser sign-in is two requests at the hub: the agent's relay ``POST agent/signins`` (one
sign-in, a fresh ES256 agent token, on a kept connection, as the connector's relay thread at
one client) and the browser's ``GET …/login/callback?wctx=…&ref=…`` (a new connection each
time, as the bench's clients). Three ways::

    PYTHONPATH=$PWD python3 tests/bench/hubcost.py inproc [--n 2000] [--repeats 5]
    PYTHONPATH=$PWD python3 tests/bench/hubcost.py loop [--n 3000] [--repeats 3] [--floor]
    PYTHONPATH=$PWD python3 tests/bench/hubcost.py gunicorn [--n 3000] [--repeats 3] [--floor]

``inproc`` calls the WSGI app of ``hubapp.py`` directly (no server): the process CPU of N
pairs, the minimum of the repeats, divided by N. ``loop`` starts the hub as the bench does
(``fasthub.LoopDevHub``: ``hubserver.py``), ``gunicorn`` as ``--hub-server gevent`` does
(``fasthub.GunicornDevHub``); each reads the server's CPU from ``/proc/<pid>/stat`` around N
sequential pairs (the client's own CPU is not counted); ``--floor`` then sends the same
requests to a do-nothing WSGI app on the same server (``hubserver.py --floor``: answered on
the loop): what the server alone costs. ``--profile FILE`` py-spies the hub's server
(``profsum.py FILE`` reads it). Tokens are made before the timed window. Not a test: nothing
asserts a figure.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec

HERE = Path(__file__).resolve().parent
for extra in (HERE, HERE.parent, HERE.parent / "devhub"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from hub_agent import b64, kid_of, self_signed  # noqa: E402
from hubserver import call_wsgi  # noqa: E402
from loadgen import HttpClient, cpu_seconds  # noqa: E402

TENANT, CONNECTION, REALM, SUB = "acme", "corp", "urn:acme", "bench-host/w1"
ACCEPT = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"


def profile(rng: random.Random) -> dict[str, Any]:
    """A generated user's profile as the connector relays it (a dozen groups)."""
    uid = f"user{rng.randrange(10000):05d}"
    return {
        "user_id": uid,
        "username": uid,
        "email": f"{uid}@bench.example",
        "name": f"User {uid}",
        "dn": f"uid={uid},ou=people,dc=bench,dc=example",
        "groups": [f"g-{rng.randrange(300):03d}" for _ in range(12)],
    }


class Agent:
    """An ES256 agent key and its certificate; tokens made ahead of the timed window."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.der = self_signed(self.key, "bench-agent")
        self.kid = kid_of(self.der)

    def tokens(self, n: int) -> list[str]:
        now = int(time.time())
        claims = {"iss": CONNECTION, "aud": REALM, "sub": SUB, "iat": now, "exp": now + 300}
        return [
            jwt.encode(
                {**claims, "jti": secrets.token_urlsafe(16)},
                self.key,
                algorithm="ES256",
                headers={"kid": self.kid},
            )
            for _ in range(n)
        ]


def pairs(agent: Agent, n: int, seed: int) -> list[tuple[str, bytes, str]]:
    """N (token, relay body, callback query) triples."""
    rng = random.Random(seed)
    out = []
    for token in agent.tokens(n):
        ref = secrets.token_urlsafe(24)
        wctx = f"w{rng.randrange(1 << 30)}"
        body = {"signins": [{"ref": ref, "wctx": wctx, "profile": profile(rng), "method": "form"}]}
        out.append((token, json.dumps(body).encode(), urlencode({"wctx": wctx, "ref": ref})))
    return out


# ---- in-process ------------------------------------------------------------------------------


def _environ(method: str, path: str, query: str, body: bytes, headers: dict[str, str]) -> dict:
    env = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8700",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "HTTP_HOST": "127.0.0.1:8700",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if body:
        env["CONTENT_TYPE"] = "application/json"
        env["CONTENT_LENGTH"] = str(len(body))
    for name, value in headers.items():
        env["HTTP_" + name.upper().replace("-", "_")] = value
    return env


def _call(app: Callable[..., Iterable[bytes]], env: dict) -> tuple[str, bytes]:
    answer = call_wsgi(app, env)
    assert answer is not None
    return answer[0], answer[2]


def inproc(n: int, repeats: int, seed: int) -> None:
    os.environ["BENCH_HUB_CONFIG"] = json.dumps({"alg": "HS256", "ticket": "bench-ticket"})
    import hubapp

    app = hubapp.app
    agent = Agent()
    reg = json.dumps({"certs": [b64(agent.der)], "signInEndpoint": "", "agentVersion": "b"})
    status, body = _call(app, _environ("POST", "/tickets/bench-ticket", "", reg.encode(), {}))
    assert status.startswith("200"), body
    relay_path = f"/tenants/{TENANT}/agent/signins"
    callback_path = f"/tenants/{TENANT}/login/callback"
    best = float("inf")
    for r in range(repeats):
        work = pairs(agent, n, seed + r)
        envs = [
            (
                _environ(
                    "POST",
                    relay_path,
                    "",
                    body,
                    {"Authorization": f"Bearer {token}", "X-Connector-Protocol": "2"},
                ),
                _environ("GET", callback_path, query, b"", {"Accept": ACCEPT}),
            )
            for token, body, query in work
        ]
        started = time.process_time()
        for relay, callback in envs:
            s1, b1 = _call(app, relay)
            s2, b2 = _call(app, callback)
            if not (s1.startswith("200") and s2.startswith("200")):
                raise RuntimeError(f"{s1} {b1[:200]!r} / {s2} {b2[:200]!r}")
        spent = (time.process_time() - started) / n
        best = min(best, spent)
        print(f"  repeat {r + 1}: {spent * 1e6:.0f} µs per sign-in", flush=True)
    print(f"inproc: {best * 1e6:.0f} µs of CPU per sign-in (min of {repeats}, n={n})")


# ---- under gunicorn, as the bench runs it ----------------------------------------------------


def _spy(pid: int, output: str) -> subprocess.Popen[bytes]:
    """py-spy on the hub worker (only threads holding the GIL), as the bench's ``--profile``."""
    command = [
        "py-spy", "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
        "--output", output, "--nonblocking", "--gil",
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def floor_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """The floor: a WSGI app that reads the body and answers 1.5 kB, no work at all."""
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    body = b"x" * 1500
    start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", "1500")])
    return [body]


def _drive(host: str, port: int, raws: list[tuple[bytes, bytes]], browser_first: bool) -> None:
    """Each relay on one kept connection, each callback on a new one (closed with a reset);
    ``browser_first``: the callback is sent before the relay and answered after it, as in the
    bench, where the browser follows the 303 while the relay is on its way."""
    relay_client = HttpClient(host, port, keepalive=True)
    for relay, callback in raws:
        browser = HttpClient(host, port, keepalive=False)
        if browser_first:
            sock = browser._connect()  # loadgen's client, split in its two halves
            sock.sendall(callback)
            s1, _, b1 = relay_client.request(relay)
            s2, _, b2 = browser._response(sock)
        else:
            s1, _, b1 = relay_client.request(relay)
            s2, _, b2 = browser.request(callback)
        browser.close()
        if s1 != 200 or s2 != 200:
            raise RuntimeError(f"{s1} {b1[:200]!r} / {s2} {b2[:200]!r}")
    relay_client.close()


def _requests(netloc: str, base: str, work: list[tuple[str, bytes, str]]) -> list:
    return [
        (
            (
                f"POST {base}/agent/signins HTTP/1.1\r\nHost: {netloc}\r\n"
                f"Authorization: Bearer {token}\r\nX-Connector-Protocol: 2\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body,
            (
                f"GET {base}/login/callback?{query} HTTP/1.1\r\nHost: {netloc}\r\n"
                f"Accept: {ACCEPT}\r\n\r\n"
            ).encode(),
        )
        for token, body, query in work
    ]


def _measure(
    label: str, worker: int, netloc: str, base: str, agent: Agent, args: Any, server: str
) -> None:
    host, _, port = netloc.partition(":")
    results = []
    spy = _spy(worker, args.profile) if args.profile and label == "devhub" else None
    for r in range(args.repeats):
        raws = _requests(netloc, base, pairs(agent, args.n, args.seed + r))
        cpu0, wall0 = cpu_seconds(worker), time.monotonic()
        _drive(host, int(port), raws, args.browser_first)
        cpu, wall = (cpu_seconds(worker) - cpu0) / args.n, (time.monotonic() - wall0) / args.n
        results.append(cpu)
        print(f"  {label} {r + 1}: {cpu * 1e6:.0f} µs CPU, {wall * 1e6:.0f} µs wall", flush=True)
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        spy.wait(30)
    print(
        f"{label} under {server}: {min(results) * 1e6:.0f} µs (min), "
        f"{sorted(results)[len(results) // 2] * 1e6:.0f} µs (median) of the worker's CPU per "
        f"sign-in (n={args.n}, {args.repeats} repeats, load {os.getloadavg()[0]:.2f})",
        flush=True,
    )


def _measure_devhub(hub: Any, agent: Agent, args: Any, server: str = "hubserver") -> None:
    """Start ``hub``, register ``agent`` there, measure, stop it."""
    hub.start()
    try:
        reg = {"certs": [b64(agent.der)], "signInEndpoint": "", "agentVersion": "bench"}
        answer = requests.post(hub.ticket_url, json=reg, timeout=10)
        assert answer.status_code == 200, answer.text
        assert hub.worker_pid is not None
        parts = urlsplit(hub.ad_hub)
        _measure("devhub", hub.worker_pid, parts.netloc, parts.path, agent, args, server)
    finally:
        hub.stop()


def under_gunicorn(args: Any) -> None:
    """The devhub as the bench serves it; then (``--floor``) the floor app, same settings."""
    from fasthub import HUB_OPTIONS, HUB_THREADS, GunicornDevHub, popen_gunicorn
    from servers import free_port

    agent = Agent()
    print(f"gunicorn worker: {args.worker}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        hub = GunicornDevHub(tmp, args.worker, alg="HS256", lease_seconds=60, kerberos=True)
        _measure_devhub(hub, agent, args, "gunicorn")
        if not args.floor:
            return
        port = free_port()
        log = Path(tmp) / "floor.log"
        proc = popen_gunicorn(
            "hubcost:floor_app", port, 1, HUB_THREADS, log, {}, *HUB_OPTIONS, worker=args.worker
        )
        try:
            from loadgen import children

            deadline = time.monotonic() + 30
            while not children(proc.pid) or not _listening(port):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the floor app did not start: {log.read_text()}")
                time.sleep(0.1)
            worker = children(proc.pid)[0]
            _measure("floor", worker, f"127.0.0.1:{port}", "/tenants/acme", agent, args, "gunicorn")
        finally:
            proc.terminate()
            proc.wait(30)


def under_loop(args: Any) -> None:
    """The devhub as the bench serves it (``hubserver.py``); then (``--floor``) the server
    with its do-nothing app answering on the loop."""
    from fasthub import LoopDevHub

    agent = Agent()
    with tempfile.TemporaryDirectory() as tmp:
        _measure_devhub(LoopDevHub(tmp, alg="HS256", lease_seconds=60, kerberos=True), agent, args)
        if not args.floor:
            return
        floor = LoopDevHub(Path(tmp) / "floor", floor=True)
        floor.start()
        try:
            assert floor.worker_pid is not None
            netloc = urlsplit(floor.base).netloc
            _measure("floor", floor.worker_pid, netloc, "/tenants/acme", agent, args, "hubserver")
        finally:
            floor.stop()


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("how", choices=("inproc", "loop", "gunicorn"))
    p.add_argument("--n", type=int, default=0, help="sign-ins per repeat")
    p.add_argument("--repeats", type=int, default=0)
    p.add_argument("--seed", type=int, default=12)
    p.add_argument("--profile", metavar="FILE", help="gunicorn: py-spy the hub's worker to FILE")
    p.add_argument(
        "--floor", action="store_true", help="gunicorn: also a do-nothing app, same settings"
    )
    p.add_argument(
        "--browser-first",
        action="store_true",
        help="gunicorn: send each callback before its relay (the hub waits for the relay)",
    )
    p.add_argument(
        "--worker",
        choices=("gevent", "gevent_pywsgi", "hubworker.HubPyWSGIWorker", "gthread"),
        help="gunicorn: the worker class (default: the bench's, fasthub.HUB_WORKER)",
    )
    args = p.parse_args()
    if args.how == "inproc":
        inproc(args.n or 2000, args.repeats or 5, args.seed)
    elif args.how == "loop":
        args.n, args.repeats = args.n or 3000, args.repeats or 3
        under_loop(args)
    else:
        from fasthub import HUB_WORKER

        args.n, args.repeats = args.n or 3000, args.repeats or 3
        args.worker = args.worker or HUB_WORKER
        under_gunicorn(args)


if __name__ == "__main__":
    main()
