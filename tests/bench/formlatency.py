#!/usr/bin/env python3
"""Where a form sign-in's latency goes at 1 client: the POST to the connector, then the GET to
the hub's ``postTokenUrl`` (which waits there while the relayed profile has not arrived).

    PYTHONPATH=$PWD python3 tests/bench/formlatency.py [--n 1500] [--repeats 4] [--keepalive]
        [VARIANT ...]

Starts the bench's site (slapd with the generated directory, MIT KDC, devhub, the connector
under gunicorn as ``run_bench.py`` does), then for each variant restarts the connector with its
environment (``NAME=VALUE[,NAME=VALUE...]``; none: the shipped settings) and times ``--n``
sign-ins from one client, each followed to the hub as a browser would: the median of the POST
(until its 303 is read), of the GET at the hub, and of both. Variants alternate in order
A B … then … B A (the machine's speed drifts). A new connection per request, as the bench's
browsers, unless ``--keepalive``. Not a test: nothing asserts a time.

A hub GET that takes much longer than it does when the profile is already there (try a
variant that makes the browser late) is the browser waiting for the relay.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
for extra in (HERE, HERE.parent, HERE.parent / "soak", HERE.parent.parent):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from loadgen import HttpClient  # noqa: E402
from run_bench import form_posts  # noqa: E402
from sites import Site  # noqa: E402

WARM = 200  # sign-ins before the timed ones (connections, caches)


def sign_ins(site: Site, n: int, seed: int, keepalive: bool) -> list[tuple[float, float]]:
    """(POST seconds, hub GET seconds) of ``n`` form sign-ins of the bench's users."""
    assert site.connector is not None and site.directory is not None
    port = site.connector.port
    client = HttpClient("127.0.0.1", port, keepalive=keepalive)
    users = list(site.directory.users)
    random.Random(seed).shuffle(users)
    order = [users[i % len(users)] for i in range(WARM + n)]
    posts = form_posts(client, port, order, site.directory.password)
    hub: HttpClient | None = None
    out = []
    for i, post in enumerate(posts):
        t0 = time.perf_counter()
        status, head, body = client.request(post)
        t1 = time.perf_counter()
        location = re.search(rb"\r\nLocation: ([^\r]+)", head)
        if status != 303 or location is None:
            raise RuntimeError(f"form sign-in answered {status}: {body[:200]!r}")
        to = urlsplit(location.group(1).decode())
        if hub is None:
            hub = HttpClient(to.hostname or "127.0.0.1", to.port or 80, keepalive=keepalive)
        status, _, body = hub.request(
            f"GET {to.path}?{to.query} HTTP/1.1\r\nHost: {to.netloc}\r\n\r\n".encode()
        )
        t2 = time.perf_counter()
        if status != 200:
            raise RuntimeError(f"the hub's postTokenUrl answered {status}: {body[:200]!r}")
        if i >= WARM:
            out.append((t1 - t0, t2 - t1))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("variants", nargs="*", help="NAME=VALUE[,NAME=VALUE...] each (default: one)")
    p.add_argument("--n", type=int, default=1500, help="timed sign-ins per round (1500)")
    p.add_argument("--repeats", type=int, default=4, help="rounds of every variant (4)")
    p.add_argument("--keepalive", action="store_true", help="reuse the client's connections")
    args = p.parse_args()
    variants = [
        dict(item.split("=", 1) for item in v.split(",") if item) for v in args.variants
    ] or [{}]
    workdir = Path(tempfile.mkdtemp(prefix="connector-formlatency-"))
    site = Site(workdir, workers=2, threads=8, log_level="info")
    rounds: dict[str, list[tuple[float, float, float]]] = {}
    try:
        site.start_directory()
        site.start_kdc()
        site.start_hub()
        site.start_connector()
        for rep in range(args.repeats):
            for env in variants if rep % 2 == 0 else variants[::-1]:
                site.stop_connector()
                site.launch_connector(env)
                waits = site.hub.state().get("sessionWaits", 0)
                times = sign_ins(site, args.n, rep, args.keepalive)
                waits = site.hub.state().get("sessionWaits", 0) - waits
                post = 1000 * statistics.median(t[0] for t in times)
                get = 1000 * statistics.median(t[1] for t in times)
                both = 1000 * statistics.median(t[0] + t[1] for t in times)
                row = (post, get, both)
                rounds.setdefault(str(env), []).append(row)
                print(
                    f"{env}: POST {row[0]:.2f} ms, hub GET {row[1]:.2f}, both {row[2]:.2f} "
                    f"({waits} of {WARM + args.n} GETs waited for the relay)"
                )
    finally:
        site.stop()
    print("\nmedians of the rounds, ms (p50 of each round's sign-ins):")
    for name, rows in rounds.items():
        post, get, both = (statistics.median(r[i] for r in rows) for i in range(3))
        print(f"  {name}: POST {post:.2f}, hub GET {get:.2f}, both {both:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
