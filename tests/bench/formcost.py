#!/usr/bin/env python3
"""Where a form sign-in's CPU goes under gunicorn: one thing toggled at a time.

    PYTHONPATH=$PWD python3 tests/bench/formcost.py [--seconds 4] [--repeats 2]

Starts the benchmark's site (slapd with the generated directory, MIT KDC, devhub, the
connector under gunicorn as ``run_bench.py`` does), then for each variant restarts the
connector and drives form sign-ins (each followed to the hub) and ``GET /health`` from one
client, reading the connector's CPU (master and workers) from /proc, split by thread: the
thread that served the requests, gunicorn's main loop, the relay, the rest. Variants are in
``VARIANTS``; each is a gunicorn config that imports the shipped one and changes one setting.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for extra in (HERE, HERE.parent, HERE.parent / "soak", HERE.parent.parent):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from loadgen import run_clients  # noqa: E402
from run_bench import Bench, parse_args  # noqa: E402
from sites import Site  # noqa: E402

SHIPPED = "from connector.gunicorn_config import *  # noqa: F403\n"
NO_MULTIPROC = """
import os as _os
from connector import gunicorn_config as _g
def on_starting(server):
    _g.on_starting(server)
    _os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
"""
# name: (extra gunicorn config, extra environment)
VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "shipped (info)": ("", {}),
    "LOG_LEVEL=warning": ("", {"LOG_LEVEL": "warning"}),
    "access log off": ("accesslog = None\n", {}),
    "prometheus in-process": (NO_MULTIPROC, {}),
    "all three off": (NO_MULTIPROC + "accesslog = None\n", {"LOG_LEVEL": "warning"}),
    "1 thread a worker": ("", {"WEB_THREADS": "1"}),
    # the bench's clients drop the connection after the answer (a browser each): gunicorn
    # keeps it, polls it and hands it to a pool thread again only to find it closed
    "keepalive = 0": ("keepalive = 0\n", {}),
}


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of ``pid`` (utime + stime)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def thread_names(pids: list[int]) -> dict[int, str]:
    """Thread id to Python thread name, from ``py-spy dump`` (a pause of a few ms, outside
    the measured window)."""
    out: dict[int, str] = {}
    for pid in pids:
        dump = subprocess.run(
            ["py-spy", "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30
        ).stdout
        for m in re.finditer(r'^Thread (\d+) \([^)]*\): "([^"]*)"', dump, re.M):
            out[int(m.group(1))] = m.group(2)
    return out


def snapshot(site: Site) -> dict[tuple[int, int], float]:
    out: dict[tuple[int, int], float] = {}
    for pid in [site.connector.pid, *site.worker_pids()]:  # type: ignore[union-attr]
        for tid, cpu in thread_cpu(pid).items():
            out[(pid, tid)] = cpu
    return out


def measure(site: Site, setup: Any, seconds: float) -> dict[str, float]:
    """ms of connector CPU per operation: in all, the master, and each worker thread by name."""
    master = site.connector.pid  # type: ignore[union-attr]
    before = snapshot(site)
    point = run_clients(setup, 1, seconds)
    after = snapshot(site)
    n = point.ok
    if not n:
        raise RuntimeError(f"no operations: {point.first_error}")
    delta = {k: after[k] - before.get(k, 0.0) for k in after}
    out = {"ops": float(n), "total": 1000 * sum(delta.values()) / n}
    out["master"] = 1000 * sum(v for (p, _), v in delta.items() if p == master) / n
    names = thread_names(site.worker_pids())
    for (pid, tid), v in delta.items():
        if pid == master:
            continue
        name = names.get(tid, "gone")
        group = "web" if name.startswith("ThreadPoolExecutor") else name
        out[group] = out.get(group, 0.0) + 1000 * v / n
    return out


def inprocess(site: Site, rounds: int, n: int) -> dict[str, float]:
    """The same form sign-ins (the bench's users, its config.json) through the app in this
    process, relay stubbed as in signincost.py: µs of process CPU per request, the mean and
    the least disturbed of ``rounds`` rounds of ``n``; ``/health`` beside."""
    import io
    import random
    from types import SimpleNamespace
    from urllib.parse import urlencode

    from signincost import _call, _environ, stub_relay

    from connector.settings import load_settings
    from connector.web import create_app, services
    from connector.web.guards import CSRF_COOKIE

    assert site.directory is not None and site.kdc is not None
    os.environ["KRB5_CONFIG"] = site.kdc.krb5_conf
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(site.workdir / "inproc-metrics"))
    Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(exist_ok=True)
    app = create_app(load_settings(site.settings_file(), environ={}))
    services(app).agent = SimpleNamespace(relay=stub_relay(lambda method: None))
    csrf = services(app).csrf
    cookie = csrf.new_cookie()
    users = list(site.directory.users)
    random.Random(5).shuffle(users)

    def form(uid: str) -> dict[str, Any]:
        body = urlencode(
            {
                "wtrealm": "urn:acme",
                "wctx": "bench",
                "wreply": "",
                "username": uid,
                "password": site.directory.password,  # type: ignore[union-attr]
                "csrf_token": csrf.token(cookie),
            }
        ).encode()
        return _environ(
            "POST",
            "/wsfed",
            urlencode({"wtrealm": "urn:acme", "wctx": "bench"}),
            CONTENT_TYPE="application/x-www-form-urlencoded",
            CONTENT_LENGTH=str(len(body)),
            HTTP_COOKIE=f"{CSRF_COOKIE}={cookie}",
            **{"wsgi.input": io.BytesIO(body)},
        )

    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # the text log line goes to stderr, as under gunicorn
    try:
        out: dict[str, list[float]] = {"form": [], "health": []}
        for r in range(rounds + 1):  # round 0 warms
            envs = [form(users[(r * n + i) % len(users)]) for i in range(n)]
            t0 = time.process_time()
            for env in envs:
                status = _call(app, env)
            if status != "303 SEE OTHER":
                raise RuntimeError(f"in-process form sign-in: {status}")
            health = [_environ("GET", "/health") for _ in range(n)]
            t1 = time.process_time()
            for env in health:
                _call(app, env)
            t2 = time.process_time()
            if r:
                out["form"].append((t1 - t0) / n * 1e6)
                out["health"].append((t2 - t1) / n * 1e6)
    finally:
        os.dup2(saved, 2)
    return {
        f"{k} {how}": f(v)
        for k, v in out.items()
        for how, f in (("mean", statistics.mean), ("min", min))
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--only", default="", help="comma-separated variant names")
    p.add_argument("--inprocess", type=int, default=300, help="in-process sign-ins a round")
    own = p.parse_args()
    args = parse_args(["--seconds", str(own.seconds)])
    workdir = Path(tempfile.mkdtemp(prefix="connector-formcost-"))
    site = Site(workdir, workers=2, threads=8, log_level="info")
    bench = Bench(args, site)
    wanted = [v for v in VARIANTS if not own.only or v in own.only.split(",")]
    results: dict[str, list[dict[str, float]]] = {}
    try:
        site.start_all()
        assert site.directory is not None
        if own.inprocess:
            site.stop_connector()
            got = inprocess(site, 3, own.inprocess)
            print("in-process, the bench's users, µs:", {k: round(v) for k, v in got.items()})
        for rep in range(own.repeats):
            for name in wanted:
                conf_text, env = VARIANTS[name]
                conf = workdir / f"gunicorn-{len(results)}.conf.py"
                conf.write_text(SHIPPED + conf_text)
                site.stop_connector()
                site.gunicorn_conf = conf
                site.launch_connector(env)
                form = bench.form_setup(site.directory.users, 5 + rep)
                run_clients(form, 1, 1.5)  # warm: connections, caches
                f = measure(site, form, own.seconds)
                h = measure(site, bench.health_setup(), own.seconds)
                results.setdefault(name, []).append(f)
                results.setdefault(name + " /health", []).append(h)
                print(
                    f"{name:28s} form {f['total']:.2f} ms ({f['ops'] / own.seconds:.0f}/s) "
                    f"health {h['total']:.2f} ms  split "
                    + " ".join(
                        f"{k}={v:.2f}"
                        for k, v in f.items()
                        if k not in ("ops", "total") and v >= 0.01
                    ),
                    flush=True,
                )
    finally:
        site.stop()
    print("\nmedians, ms of connector CPU per operation (1 client)")
    for name, rows in results.items():
        keys = sorted({k for r in rows for k in r if k != "ops"}, key=lambda k: k != "total")
        cells = " ".join(f"{k}={statistics.median(r.get(k, 0.0) for r in rows):.2f}" for k in keys)
        print(f"  {name:36s} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
