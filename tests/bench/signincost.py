#!/usr/bin/env python3
"""The sign-in views' own CPU, in-process: a form sign-in and a Negotiate sign-in through the
Flask app (a WSGI environ built by hand, as gunicorn hands it over), against a real slapd and
a real MIT KDC (tests/servers.py), beside ``GET /health`` through the same app.

    PYTHONPATH=$PWD:tests python3 tests/bench/signincost.py [--n 300] [--repeats 7]
        [--only form,negotiate,health] [--seconds S]

The app is built by ``create_app`` as a gunicorn worker builds it (the text log on stderr,
which this script points at /dev/null, and the console's JSON ring file; prometheus in
multiprocess mode, the shared throttle files), with one difference: the agent's relay is a
no-op, so no hub is involved. Per variant: the process CPU (``time.process_time``) per
request, the minimum over ``repeats`` rounds of ``n`` requests (the machine is shared: the
minimum is the least disturbed). The Negotiate tokens are made before each round (a pyspnego
client with the user's ccache), so only the acceptor's side is timed. ``--seconds S`` instead
runs each chosen variant in a loop for S seconds (for ``py-spy record --pid``). Not a test:
nothing asserts a rate. Which connector is measured is the one on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))  # tests/: servers, configs
if str(HERE.parent.parent) not in sys.path:
    sys.path.append(str(HERE.parent.parent))  # after PYTHONPATH: the connector measured is its

from configs import openldap_config  # noqa: E402
from servers import MitKdc, Slapd  # noqa: E402

POST_TOKEN_URL = "http://127.0.0.1:9/login/callback"
WCTX = "bench"
FORM_USER = "alice"
KERBEROS_USER = "bob"


def _environ(method: str, path: str, query: str = "", **extra: Any) -> dict[str, Any]:
    """A WSGI environ like gunicorn's for a request from 127.0.0.1."""
    env = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "RAW_URI": f"{path}?{query}" if query else path,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "HTTP_HOST": "localhost:8080",
        "HTTP_USER_AGENT": "signincost/1",
        "HTTP_ACCEPT": "text/html",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    env.update(extra)
    return env


def _call(app: Any, environ: dict[str, Any]) -> str:
    """Run one request through the app; its status line."""
    seen: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        seen.append(status)
        return lambda data: None

    body = app(environ, start_response)
    try:
        for _ in body:
            pass
    finally:
        close = getattr(body, "close", None)
        if close:
            close()
    return seen[0]


def build(workdir: Path, slapd: Slapd, kdc: MitKdc) -> Any:
    """The connector's app, as a worker builds it, with a no-op relay."""
    from connector.settings import load_settings
    from connector.web import create_app, services

    cfg = openldap_config(
        slapd,
        REALM="urn:bench",
        REALM_POST_TOKEN_URL=POST_TOKEN_URL,
        KERBEROS_AUTH=True,
        KERBEROS_KEYTAB=kdc.keytab,
        KERBEROS_REALMS=[kdc.realm],
        KERBEROS_SERVICE_PRINCIPAL="HTTP/localhost",
        CLIENT_IP_RANGES=["127.0.0.0/8"],
        LOGIN_FAILURES_PER_ADDRESS=1_000_000,
        LOGIN_FAILURES_PER_USER=1_000_000,
        GROUPS_CACHE_SECONDS=0,
    )
    state = workdir / "connector"
    state.mkdir()
    path = state / "config.json"
    path.write_text(json.dumps(cfg))
    app = create_app(load_settings(path, environ={}))
    submitted: list[str] = []
    services(app).agent = SimpleNamespace(relay=stub_relay(submitted.append))
    app.extensions["signincost_submitted"] = submitted
    return app


def stub_relay(record: Callable[[str], Any]) -> Any:
    """A relay that records each sign-in's method and sends nothing."""
    return SimpleNamespace(
        submit=lambda ref, wctx, profile, method: record(method),
        checking=lambda: None,
        checked=lambda: None,
    )


def form_requests(app: Any) -> Callable[[int], list[dict[str, Any]]]:
    """``n`` ready environs of a form sign-in of alice (a valid CSRF cookie and token)."""
    from connector.web import services
    from connector.web.guards import CSRF_COOKIE

    csrf = services(app).csrf
    cookie = csrf.new_cookie()
    query = urlencode({"wtrealm": "urn:bench", "wctx": WCTX})
    body = urlencode(
        {
            "wtrealm": "urn:bench",
            "wctx": WCTX,
            "wreply": "",
            "csrf_token": csrf.token(cookie),
            "username": FORM_USER,
            "password": "alicepw",
        }
    ).encode()

    def make(n: int) -> list[dict[str, Any]]:
        return [
            _environ(
                "POST",
                "/wsfed",
                query,
                CONTENT_TYPE="application/x-www-form-urlencoded",
                CONTENT_LENGTH=str(len(body)),
                HTTP_COOKIE=f"{CSRF_COOKIE}={cookie}",
                **{"wsgi.input": io.BytesIO(body)},
            )
            for _ in range(n)
        ]

    return make


def negotiate_requests(n: int) -> list[dict[str, Any]]:
    """``n`` ready environs of a Negotiate sign-in of bob (fresh SPNEGO tokens)."""
    import spnego

    query = urlencode({"wtrealm": "urn:bench", "wctx": WCTX})
    out = []
    for _ in range(n):
        token = spnego.client(hostname="localhost", service="HTTP", protocol="negotiate").step()
        assert token is not None
        header = "Negotiate " + base64.b64encode(token).decode()
        out.append(_environ("GET", "/wsfed", query, HTTP_AUTHORIZATION=header))
    return out


def health_requests(n: int) -> list[dict[str, Any]]:
    """``n`` environs of ``GET /health``."""
    return [_environ("GET", "/health") for _ in range(n)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=300, help="requests per round")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--only", default="health,form,negotiate")
    p.add_argument("--seconds", type=float, default=0.0, help="loop for py-spy instead")
    args = p.parse_args()
    chosen = [v.strip() for v in args.only.split(",") if v.strip()]
    with tempfile.TemporaryDirectory(prefix="signincost-") as tmp:
        work = Path(tmp)
        metrics_dir = work / "metrics"
        metrics_dir.mkdir()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # as the gunicorn hooks do
        slapd = Slapd(work / "slapd").start()
        kdc = MitKdc(work / "kdc").start()
        saved_stderr = os.dup(2)
        try:
            os.environ.update(kdc.env)
            os.environ["KRB5CCNAME"] = f"FILE:{tmp}/bob.ccache"
            os.environ["KRB5RCACHEDIR"] = str(work)
            kdc.kinit(KERBEROS_USER, kdc.users[KERBEROS_USER], f"{tmp}/bob.ccache")
            app = build(work, slapd, kdc)
            makers: dict[str, tuple[Callable[[int], list[dict[str, Any]]], str]] = {
                "health": (health_requests, "200 OK"),
                "form": (form_requests(app), "303 SEE OTHER"),
                "negotiate": (negotiate_requests, "303 SEE OTHER"),
            }
            for name in chosen:  # warm-up, and every variant does what it says
                for env in makers[name][0](3):
                    status = _call(app, env)
                    if status != makers[name][1]:
                        raise RuntimeError(f"{name}: {status}, not {makers[name][1]}")
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)  # the text log line goes to stderr, as under gunicorn
            if args.seconds:
                for name in chosen:
                    end = time.monotonic() + args.seconds
                    while time.monotonic() < end:
                        for env in makers[name][0](50):
                            _call(app, env)
                return
            best = dict.fromkeys(chosen, float("inf"))
            for _ in range(args.repeats):
                for name in chosen:
                    envs = makers[name][0](args.n)
                    t0 = time.process_time()
                    for env in envs:
                        _call(app, env)
                    best[name] = min(best[name], (time.process_time() - t0) / len(envs))
        finally:
            os.dup2(saved_stderr, 2)
            kdc.stop()
            slapd.stop()
    print(f"CPU per request in-process, min over {args.repeats} rounds of {args.n}:")
    for name, seconds in best.items():
        print(f"  {name:10s} {seconds * 1e6:8.1f} us")


if __name__ == "__main__":
    main()
