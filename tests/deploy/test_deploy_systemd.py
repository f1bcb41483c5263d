"""``deploy/connector.service``: systemd accepts it, it is hardened, and its command serves.

``systemd-analyze verify`` checks that ExecStart's binary exists, so the unit is verified as
a copy whose ``/opt/connector`` is a temporary tree (the only change): ``venv/bin/gunicorn``
is this interpreter's gunicorn, ``deploy``, ``connector`` and ``wsgi.py`` link to this
checkout. ``verify`` exits 0 on an unknown key (it only warns), so any output at all fails
the test; two broken copies prove the check catches both kinds of error.

``systemd-analyze`` is in Debian's ``systemd`` package: missing, these tests fail.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from servers import _descendants, _start_time, find_binary, free_port

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "connector.service"
INSTALL_DIR = "/opt/connector"
STATE_DIR = "/var/lib/connector"


def _directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of every assignment, in order (keys may repeat)."""
    out, section = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {raw!r}"
        out.append((section, key.strip(), value.strip()))
    return out


def _values(text: str, key: str, section: str = "Service") -> list[str]:
    return [v for s, k, v in _directives(text) if s == section and k == key]


def _one(text: str, key: str, section: str = "Service") -> str:
    found = _values(text, key, section)
    assert len(found) == 1, f"{key}= appears {len(found)} times in [{section}]"
    return found[0]


def _environment(text: str) -> dict[str, str]:
    env = {}
    for value in _values(text, "Environment"):
        for item in shlex.split(value):
            name, _, val = item.partition("=")
            env[name] = val
    return env


@pytest.fixture
def install_root(tmp_path: Path) -> Path:
    """A stand-in for /opt/connector holding what the unit refers to."""
    root = tmp_path / "opt" / "connector"
    (root / "venv" / "bin").mkdir(parents=True)
    gunicorn = root / "venv" / "bin" / "gunicorn"
    installed = Path(sys.executable).parent / "gunicorn"
    if installed.exists():
        gunicorn.symlink_to(installed)
    else:  # a console script elsewhere: the same thing, spelt out
        gunicorn.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m gunicorn "$@"\n')
        gunicorn.chmod(0o755)
    for name in ("deploy", "docs", "connector", "wsgi.py"):
        (root / name).symlink_to(ROOT / name)
    return root


def _adapted(install_root: Path, text: str | None = None) -> str:
    text = UNIT.read_text() if text is None else text
    assert INSTALL_DIR in text
    return text.replace(INSTALL_DIR, str(install_root))


def _verify(directory: Path, text: str) -> tuple[int, str]:
    """``systemd-analyze verify`` on ``text`` saved as connector.service: (status, output)."""
    analyze = find_binary("systemd-analyze", "systemd")
    path = directory / "connector.service"
    path.write_text(text)
    result = subprocess.run(
        [analyze, "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    return result.returncode, (result.stdout + result.stderr).strip()


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path, install_root: Path) -> None:
    status, output = _verify(tmp_path, _adapted(install_root))
    assert status == 0 and output == "", output


def test_verify_check_catches_unit_errors(tmp_path: Path, install_root: Path) -> None:
    # an unknown key: verify only warns (status 0), the output gives it away
    typo = _adapted(install_root).replace("ProtectSystem=strict", "ProtectSytem=strict")
    status, output = _verify(tmp_path, typo)
    assert "Unknown key" in output and "ProtectSytem" in output, (status, output)
    # the shipped paths without an installation: ExecStart is not executable
    status, output = _verify(tmp_path, UNIT.read_text())
    assert status != 0 and "is not executable" in output, (status, output)


def test_security_exposure_stays_low(tmp_path: Path, install_root: Path) -> None:
    analyze = find_binary("systemd-analyze", "systemd")
    path = tmp_path / "connector.service"
    path.write_text(_adapted(install_root))
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    assert found, result.stdout[-2000:] + result.stderr
    assert float(found.group(1)) <= 1.5 and found.group(2) == "OK", result.stdout


def test_unit_declares_the_service_contract() -> None:
    text = UNIT.read_text()
    expected = {
        "Type": "notify",
        "User": "connector",
        "Group": "connector",
        "WorkingDirectory": INSTALL_DIR,
        "StateDirectory": "connector",
        "StateDirectoryMode": "0700",
        "ReadWritePaths": STATE_DIR,
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "Restart": "on-failure",
        "KillSignal": "SIGTERM",
        "KillMode": "mixed",
    }
    for key, value in expected.items():
        assert _one(text, key) == value, key
    assert "DynamicUser" not in {k for _, k, _ in _directives(text)}
    assert _values(text, "SystemCallFilter") == [
        "@system-service",
        "~@privileged @resources",
        "sched_setaffinity",  # alone back from @resources: a worker pins itself to a CPU
    ]
    argv = shlex.split(_one(text, "ExecStart"))
    assert argv == [
        f"{INSTALL_DIR}/venv/bin/gunicorn", "-c", f"{INSTALL_DIR}/deploy/gunicorn.conf.py",
        "wsgi:app",
    ]  # fmt: skip
    env = _environment(text)
    assert env["CONNECTOR_CONFIG"] == f"{STATE_DIR}/config.json"
    assert env["BIND"] == "127.0.0.1:4000"  # what deploy/nginx-connector.conf proxies to
    assert "127.0.0.1:4000" in (ROOT / "deploy" / "nginx-connector.conf").read_text()
    assert env["KRB5RCACHEDIR"] == STATE_DIR
    assert _values(text, "WantedBy", "Install") == ["multi-user.target"]


def test_stop_timeout_covers_gunicorns_graceful_drain(tmp_path: Path) -> None:
    """TimeoutStopSec must outlast graceful_timeout (POLL_WAIT_SECONDS + 35) with defaults."""
    code = "from connector import gunicorn_config as g; print(g.graceful_timeout)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "CONNECTOR_CONFIG": str(tmp_path / "config.json")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    graceful = int(result.stdout.split()[-1])
    stop = _one(UNIT.read_text(), "TimeoutStopSec")
    assert stop.isdigit(), f"TimeoutStopSec={stop}: write plain seconds"
    assert int(stop) >= graceful + 10, (stop, graceful)


def test_exec_start_as_written_serves_and_stops_on_kill_signal(
    tmp_path: Path, install_root: Path
) -> None:
    """The unit's command line, working directory and environment (paths and port adapted)
    start the connector; the unit's KillSignal stops it cleanly, well within TimeoutStopSec."""
    text = _adapted(install_root)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    port = free_port()
    env = {
        key: value.replace(STATE_DIR, str(state)).replace(":4000", f":{port}")
        for key, value in _environment(text).items()
    }
    # the console listens on the sign-in port + 1 by default: a port nobody checked is free
    env["CONSOLE_BIND"] = f"127.0.0.1:{free_port()}"
    argv = shlex.split(_one(text, "ExecStart"))
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=_one(text, "WorkingDirectory"),
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                resp = requests.get(f"http://127.0.0.1:{port}/health", timeout=1)
                if resp.status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert resp.json() == {"status": "ok"}
        started = time.monotonic()
        proc.send_signal(getattr(signal, _one(text, "KillSignal")))
        assert proc.wait(timeout=int(_one(text, "TimeoutStopSec"))) == 0, log.read_text()
        assert time.monotonic() - started < 30
    finally:
        if proc.poll() is None:  # stop exactly this master and the workers it started
            workers = _descendants(proc.pid)
            proc.kill()
            proc.wait(5)
            for pid, started_at in workers:
                if _start_time(pid) == started_at:
                    os.kill(pid, signal.SIGKILL)
