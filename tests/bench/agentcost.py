#!/usr/bin/env python3
"""The agent's own CPU per hub command, in-process, without the directory or the hub.

    PYTHONPATH=$PWD python3 tests/bench/agentcost.py [--n 2000] [--repeats 7]

What a drained ``authenticate_user`` command costs the agent around the directory call: its
token verified (HS256), replay checks, the dispatcher (a stub directory returning a typical
profile), the audit line (text on a null stream and the console's JSON ring file, as in a
worker), the metrics (prometheus in multiprocess mode, as under gunicorn) and the result
queued; then the results batch encoded as the poster sends it, and a poll answer parsed as
the client does. Per part: process CPU per command, the minimum over ``repeats`` rounds of
``n`` commands. Not a test: nothing asserts a figure. Which connector is measured is the one
on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jwt

KEY = "bench-tenant-secret-0123456789abcdef"
AUDIENCE = "bench-connection"


class _Directory:
    """A directory whose every authentication succeeds with the same profile."""

    def __init__(self) -> None:
        self.profile = {
            "user_id": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
            "username": "alice",
            "email": "alice@example.org",
            "name": "Alice Liddell",
            "given_name": "Alice",
            "family_name": "Liddell",
            "dn": "uid=alice,ou=people,dc=example,dc=org",
            "groups": ["Everyone", "Staff", "Team-Core", "Team-Dev"],
            "raw": {"uid": "alice", "mail": "alice@example.org", "cn": "Alice Liddell"},
        }

    def authenticate(self, username: str, password: str, escaped: bool = False) -> Any:
        return dict(self.profile)


class _Client:
    agent_id = "bench-agent"
    base = "http://127.0.0.1:9"


def _commands(n: int, start: int) -> list[dict[str, Any]]:
    now = int(time.time())
    out = []
    for i in range(start, start + n):
        cid = f"c-{i}"
        claims = {
            "iss": "adHub",
            "aud": AUDIENCE,
            "jti": cid,
            "cmd": "authenticate_user",
            "iat": now,
            "exp": now + 60,
            "payload": {"username": "alice", "password": "secret", "pid": f"p-{i}"},
        }
        out.append(
            {"id": cid, "name": "authenticate_user", "jwt": jwt.encode(claims, KEY, "HS256")}
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    run = Path(tempfile.mkdtemp(prefix="agentcost-"))
    (run / "metrics").mkdir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(run / "metrics")
    from connector import logs
    from connector.channel import agent as agent_mod
    from connector.channel.client import HubClient  # noqa: F401 - imported as in a worker
    from connector.channel.commands import CommandVerifier, Dispatcher

    with open(os.devnull, "w") as null:
        logs.configure("info", "text", null)
        logs.add_ring(run / "logs")
        verifier = CommandVerifier(KEY, AUDIENCE, "adHub", algorithm="HS256")
        agent = agent_mod.Agent(_Client(), Dispatcher(_Directory(), False), verifier)  # type: ignore[arg-type]
        best: dict[str, float] = {}
        start = 0
        for _ in range(args.repeats):
            raws = _commands(args.n, start)
            start += args.n
            poll_answer = json.dumps({"commands": raws[:8], "leaseSeconds": 30}).encode()
            t0 = time.process_time()
            commands = [verifier.verify(raw) for raw in raws]
            t1 = time.process_time()
            for command in commands:
                verifier.replays.admit(command)
                agent._inflight.add(command.id)
                agent._execute(command, time.monotonic())
            t2 = time.process_time()
            items = list(agent._outbox.items())
            for i in range(0, len(items), 100):
                batch = [{"id": k, "result": v} for k, v in items[i : i + 100]]
                json.dumps({"results": batch}, separators=(",", ":"), allow_nan=False).encode()
            t3 = time.process_time()
            for _ in range(args.n // 8):
                json.loads(poll_answer)
            t4 = time.process_time()
            agent._outbox.clear()
            for name, seconds in (
                ("verify", t1 - t0),
                ("execute (dispatch, audit, metrics, queue)", t2 - t1),
                ("results JSON", t3 - t2),
                ("poll answer JSON", t4 - t3),
                ("total", t4 - t0),
            ):
                per = seconds / args.n * 1e6
                best[name] = min(best.get(name, per), per)
        for name, per in best.items():
            print(f"{name:45s} {per:7.1f} us per command")
    sys.stdout.flush()


if __name__ == "__main__":
    logging.raiseExceptions = True
    main()
