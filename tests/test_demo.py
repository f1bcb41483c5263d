"""The quick start, ``connector demo``, run as a user runs it.

The command is started as a subprocess in a temporary ``--dir``; once it prints its ready
line, a demo user logs in at the devhub's login page (the Try page must show the profile
with the nested groups) and another signs in seamlessly with exactly the ``kinit`` and
``curl --negotiate`` commands it printed; the admin console answers at the address printed
and its printed password signs in. Then SIGINT: it must exit 0 and leave none of the
processes it started (``pids.json``: children and their descendants) running.
"""

from __future__ import annotations

import html
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from servers import free_port

from connector.demo import DemoError
from connector.demo.directory import groups_of
from connector.demo.procs import find_binaries, pick_port
from connector.demo.runner import hub_arguments, new_ticket
from connector.devhub.config import DevHubConfig
from connector.devhub.server import build_parser, config_from_args

ROOT = Path(__file__).resolve().parent.parent
READY = "connector demo: ready in "
DEMO = (sys.executable, "-m", "connector.cli", "demo")


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class Demo:
    """``connector demo`` as a child process, its output collected line by line."""

    def __init__(self, workdir: Path, *args: str) -> None:
        self.workdir = workdir
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.stderr_path = workdir.parent / "demo.stderr"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [*DEMO, "--dir", str(workdir), *args],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith(READY):
                self.ready.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def report(self) -> str:
        return f"stdout:\n{self.output}\nstderr:\n{self.stderr_path.read_text(errors='replace')}"

    def wait_ready(self, timeout: float = 45) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.1):
            assert self.proc.poll() is None, f"demo exited {self.proc.returncode}\n{self.report()}"
            assert time.monotonic() < deadline, f"demo not ready in {timeout} s\n{self.report()}"

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self._reader.join(5)
        return code


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    running = Demo(tmp_path / "demo", "--port", str(free_port()), "--hub-port", "0")
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            running.stop(signal.SIGTERM)


def _printed_command(output: str, program: str) -> tuple[dict[str, str], list[str]]:
    """The environment assignments and argv of the printed ``VAR=... program ...`` line."""
    line = next(x for x in output.splitlines() if re.match(rf"\s+KRB5_CONFIG=\S+ \S+ {program}", x))
    words = shlex.split(line)
    env = dict(w.split("=", 1) for w in words[:2])
    return env, words[2:]


def _alive(recorded: dict[int, str]) -> dict[int, str]:
    return {pid: st for pid, st in recorded.items() if _start_time(pid) == st}


def test_demo_signs_in_through_the_hub_and_with_kerberos_then_stops_cleanly(demo: Demo) -> None:
    t0 = time.monotonic()
    demo.wait_ready()
    started = time.monotonic() - t0
    facts = json.loads((demo.workdir / "demo.json").read_text())
    pids = json.loads((demo.workdir / "pids.json").read_text())
    assert list(pids["children"]) == ["slapd", "krb5kdc", "devhub", "connector"]
    assert pids["descendants"], "the gunicorn workers are recorded"
    recorded = {p: _start_time(p) for p in [*pids["children"].values(), *pids["descendants"]]}
    assert all(recorded.values()), f"every recorded process runs: {recorded}"
    out = demo.output
    for user in ("alice", "bob", "carol", "dave"):
        assert re.search(rf"^\s+{user}\s+{user}-demo-pw\s", out, re.MULTILINE), out
    for url in (facts["hub"]["login"], facts["hub"]["status"], facts["signIn"]):
        assert url in out
    assert facts["signIn"].endswith("/wsfed?wtrealm=urn:acme&wctx=demo")
    assert facts["signIn"].startswith("http://localhost:")

    # hub-side login: the hub queues authenticate_user, the connector answers with the profile
    hub = requests.Session()
    hub.trust_env = False
    page = hub.get(facts["hub"]["login"], timeout=10)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert page.status_code == 200 and csrf, page.text
    answer = hub.post(
        facts["hub"]["login"],
        data={"username": "dave", "password": "dave-demo-pw", "csrf": csrf.group(1)},
        timeout=30,
    )
    assert answer.status_code == 200 and "/try/" in answer.url, answer.text
    assert 'id="outcome">Profile<' in answer.text, answer.text
    listed = re.search(r'<ul id="groups">(.*?)</ul>', answer.text, re.DOTALL)
    assert listed, answer.text
    groups = {html.unescape(g) for g in re.findall(r"<li>(.*?)</li>", listed.group(1))}
    assert groups == {"kernel", "developers", "engineering", "staff"}  # four levels deep

    # seamless Kerberos: exactly the two commands the demo printed
    env, kinit = _printed_command(out, "kinit")
    assert env["KRB5CCNAME"].startswith("FILE:") and kinit == ["kinit", "alice"]
    run_env = {**os.environ, **env}
    done = subprocess.run(
        kinit, input="alice-demo-pw\n", env=run_env, capture_output=True, text=True, timeout=20
    )
    assert done.returncode == 0, done.stderr
    env, curl = _printed_command(out, "curl")
    assert curl[:5] == ["curl", "--negotiate", "-u", ":", "-L"] and curl[5] == facts["signIn"]
    done = subprocess.run(
        curl, env={**os.environ, **env}, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert "Signed in through the connector" in done.stdout, done.stdout  # the hub's callback
    assert '<td id="method">kerberos</td>' in done.stdout, done.stdout
    assert '"uid": "alice"' in html.unescape(done.stdout), done.stdout
    for group in ("engineering", "staff"):
        assert f"<li>{group}</li>" in done.stdout

    # the admin console: at the printed address, behind the printed password
    _console_signs_in_with_what_was_printed(out, facts)

    # Ctrl-C: everything stops, children first, status 0, nothing left behind
    t1 = time.monotonic()
    assert demo.stop(signal.SIGINT) == 0, demo.report()
    stopping = time.monotonic() - t1
    order = re.findall(r"stopped (\S+) \(pid", demo.output)
    assert order == ["connector", "devhub", "krb5kdc", "slapd"], demo.report()
    assert not _alive(recorded), f"left running: {_alive(recorded)}"
    print(f"demo ready in {started:.1f} s, stopped in {stopping:.1f} s")


def _console_signs_in_with_what_was_printed(out: str, facts: dict) -> None:
    printed = re.search(r"^\s+(http://127\.0\.0\.1:\d+/console/)\s+password (\S+)$", out, re.M)
    assert printed, out
    url, password = printed.groups()
    assert url == facts["console"]["url"] and password not in json.dumps(facts)
    console = requests.Session()
    console.trust_env = False
    closed = console.get(url + "status.json", allow_redirects=False, timeout=10)
    assert closed.status_code == 302 and "/console/login" in closed.headers["Location"]
    page = console.get(url + "login", timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert page.status_code == 200 and token, page.text
    wrong = console.post(url + "login", data={"csrf_token": token.group(1), "password": "x"})
    assert wrong.status_code == 401
    signed = console.post(
        url + "login",
        data={"csrf_token": token.group(1), "password": password},
        allow_redirects=False,
        timeout=10,
    )
    assert signed.status_code == 303, signed.text
    status = console.get(url + "status.json", timeout=10).json()
    assert status["hub"]["configured"] and status["console_password"] == "generated"
    assert password not in Path(facts["config"]).parent.joinpath("gunicorn.log").read_text()


def test_demo_failing_step_is_named_and_stops_what_it_started(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        workdir = tmp_path / "demo"
        done = subprocess.run(
            [*DEMO, "--dir", str(workdir), "--no-kerberos", "--hub-port", str(port)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "step hub failed" in done.stderr, done.stderr
    assert "Address already in use" in done.stderr, done.stderr
    assert "stopped slapd (pid" in done.stdout, done.stdout
    pids = json.loads((workdir / "pids.json").read_text())
    assert list(pids["children"]) == ["slapd", "devhub"]
    for pid in pids["children"].values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize("ticket", ["-Zk3Q", "--help", "plain-ticket"])
def test_the_demo_hub_reads_any_random_ticket_as_the_ticket(ticket: str) -> None:
    # a random URL-safe ticket starts with "-" one time in 64: it was once read as an option
    # (the devhub exited "--ticket: expected one argument" and the demo stopped at its hub)
    args = build_parser().parse_args(hub_arguments(8700, ticket, kerberos=True))
    assert args.ticket == ticket
    assert args.port == 8700 and args.kerberos


def _demo_hub_config(ticket: str) -> DevHubConfig:
    """The devhub's configuration from the demo's arguments, the way its ``main`` builds it."""
    return config_from_args(build_parser().parse_args(hub_arguments(8700, ticket, kerberos=True)))


def test_the_demo_hub_takes_every_ticket_the_demo_makes() -> None:
    # the devhub wants a letter or digit first; the demo's URL-safe tickets began with '-' or
    # '_' one time in 32, and the devhub refused them ("ticket must be URL-safe"): the demo
    # stopped at its hub step. Each ticket goes the devhub's whole way: parser, then config.
    for _ in range(500):
        ticket = new_ticket()
        assert _demo_hub_config(ticket).ticket == ticket
    for refused in ("-Zk3Q", "_Zk3Q"):  # what the rule refuses, and why the demo makes hex
        with pytest.raises(ValueError, match="ticket must be URL-safe"):
            _demo_hub_config(refused)


def test_a_devhub_without_a_ticket_makes_one_it_accepts() -> None:
    tickets = {DevHubConfig().ticket for _ in range(500)}  # refused 1 in 32 when URL-safe
    assert len(tickets) == 500
    assert all(re.fullmatch(r"[0-9a-f]{48}", t) for t in tickets)


def test_missing_programs_name_their_debian_packages() -> None:
    with pytest.raises(DemoError) as caught:
        find_binaries({"sh": "dash", "no-such-program-xyz": "xyz-tools"})
    message = str(caught.value)
    assert caught.value.step == "prerequisites"
    assert "no-such-program-xyz  (Debian package xyz-tools)" in message
    assert "apt-get install xyz-tools" in message and "dash" not in message


def test_demo_groups_nest_four_levels() -> None:
    assert groups_of("dave") == ["kernel", "developers", "engineering", "staff"]
    assert groups_of("bob") == ["finance", "staff"]
    assert groups_of("staff") == []


def test_the_demo_never_picks_a_port_twice() -> None:
    """The demo picks every port (connector, console, slapd, KDC, hub) before its servers
    bind them; the kernel's random picks repeat within a few hundred (the birthday bound),
    and a port picked, though still free, is taken: not offered again, even as preferred."""
    ports = [pick_port(None) for _ in range(2000)]
    assert len(set(ports)) == len(ports)
    taken = ports[-1]
    assert pick_port(None, taken) != taken
    assert pick_port(0) not in ports
