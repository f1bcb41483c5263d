"""Start the demo step by step, print how to use it, and stop it all on a signal or a failure.

Steps: prerequisites, directory (slapd), kerberos (krb5kdc), hub (the devhub), setup (the
connector's ``setup_from_ticket`` into ``config.json``, and a console password, as
``connector console-password`` makes it), connector (gunicorn: the sign-in endpoint and the
admin console on its own loopback port, both printed, with the console's password). A failing
step stops whatever was started and is named in the message; SIGINT, SIGTERM or SIGHUP stop
the children last-started first (connector, devhub, KDC, slapd) and end with status 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TextIO

import requests

import connector
from connector import consolepw
from connector.channel.provision import setup_from_ticket
from connector.demo import kdc as kdc_mod
from connector.demo.directory import BASE, USERS, Directory, groups_of, start_directory
from connector.demo.procs import (
    Children,
    DemoError,
    find_binaries,
    ipv6_loopback,
    pick_port,
    port_free,
)
from connector.devhub.config import new_ticket
from connector.errors import ConnectorError
from connector.settings import KNOWN_KEYS
from connector.settings.files import write_config_file

DEFAULT_PORT = 4000
DEFAULT_HUB_PORT = 8700
TENANT = "acme"
REALM = "urn:acme"
IP_RANGES = ("127.0.0.0/8", "::1/128")
#: how long the hub may hold a poll: also how long a Ctrl-C may wait for the connector
POLL_WAIT_SECONDS = 3
READY_TIMEOUT = 45.0
#: files and directories of ours in the demo directory (removed before a new run there)
_OURS = ("slapd", "kdc", "hub", "connector", "pids.json", "demo.json")
_SERVING = re.compile(r"^devhub: serving (\S+)$", re.MULTILINE)
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_CLEARED_ENV = {"CONNECTOR_CONFIG", "CONNECTOR_SECRET_KEY_FILE", "KRB5CCNAME", "KRB5_KTNAME"}


def hub_arguments(port: int, ticket: str, *, kerberos: bool) -> list[str]:
    """The devhub's command line for the demo, the ticket given as ``--ticket=...`` so that
    no ticket is ever read as an option (a URL-safe one starting with ``-`` once was)."""
    argv = ["--host", "127.0.0.1", "--port", str(port), f"--ticket={ticket}"]
    argv += ["--tenant", TENANT, "--realm", REALM]
    if kerberos:
        argv += ["--kerberos", "--ip-ranges", ",".join(IP_RANGES)]
    return argv


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    """What ``connector demo`` was asked for.

    Attributes:
        directory: where everything goes (default: a new temporary directory, removed after
            a clean stop); an existing one must be empty or hold an earlier demo.
        port: the connector's port (default 4000 if free, else a free one; 0: a free one).
        hub_port: the devhub's port (default 8700 if free, else a free one; 0: a free one).
        kerberos: start the KDC and offer seamless Kerberos sign-in.
    """

    directory: Path | None = None
    port: int | None = None
    hub_port: int | None = None
    kerberos: bool = True


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


def _child_env() -> dict[str, str]:
    """This environment without connector settings or Kerberos variables a user may have set."""
    return {k: v for k, v in os.environ.items() if k not in KNOWN_KEYS | _CLEARED_ENV}


def _prepare_dir(wanted: Path | None) -> tuple[Path, bool]:
    """The demo directory and whether we created it as a temporary one.

    Raises:
        DemoError: it holds something else, or a demo still running.
    """
    if wanted is None:
        return Path(tempfile.mkdtemp(prefix="connector-demo-")), True
    path = wanted.expanduser().absolute()
    path.mkdir(parents=True, exist_ok=True)
    if not any(path.iterdir()):
        return path, False
    pids = path / "pids.json"
    if not pids.is_file():
        raise DemoError("prerequisites", f"{path} is not empty: give an empty or new --dir")
    with contextlib.suppress(ValueError, OSError, KeyError, TypeError):
        pid = int(json.loads(pids.read_text())["demo"])
        if pid != os.getpid() and b"demo" in Path(f"/proc/{pid}/cmdline").read_bytes():
            raise DemoError("prerequisites", f"a demo (pid {pid}) is still running in {path}")
    for name in _OURS:
        target = path / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    return path, False


class Demo:
    """One run of the demo: its directory, its children and what it prints."""

    def __init__(self, options: DemoOptions, workdir: Path, out: TextIO) -> None:
        self.options = options
        self.workdir = workdir
        self.out = out
        self.children = Children(workdir / "pids.json")
        self.step = "prerequisites"
        self.env = _child_env()
        self.started = time.monotonic()
        self.console_password = ""  # printed once it is ready; never written to demo.json

    def say(self, text: str = "") -> None:
        """Print a line now (the output may be a pipe, or a terminal that has gone away)."""
        with contextlib.suppress(OSError):
            print(text, file=self.out, flush=True)

    @contextlib.contextmanager
    def _step(self, name: str) -> Iterator[list[str]]:
        """Name the step for a failure message; print what it did and how long it took."""
        self.step = name
        t0 = time.monotonic()
        done: list[str] = []
        yield done
        self.say(f"  {name:<13} {' '.join(done)}  ({time.monotonic() - t0:.1f} s)")

    # --- the steps ------------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        """Run every step; the facts printed and written to ``demo.json``.

        Raises:
            DemoError: a step failed.
        """
        self.say(f"connector demo: starting in {self.workdir}")
        with self._step("prerequisites") as done:
            needed = {"slapd": "slapd"}
            if self.options.kerberos:
                needed |= kdc_mod.BINARIES
            tools = find_binaries(needed)
            port = pick_port(self.options.port, DEFAULT_PORT, ipv6=ipv6_loopback())
            if self.options.port and not port_free(port, ipv6=ipv6_loopback()):
                raise DemoError("prerequisites", f"port {port} (--port) is in use")
            console_port = pick_port(None, port + 1)  # never the port picked just before
            done.append(f"{', '.join(tools)} found; connector port {port}, console {console_port}")
        with self._step("directory") as done:
            directory = start_directory(self.children, self.workdir / "slapd", tools["slapd"])
            done.append(f"slapd {directory.url} (StartTLS, demo CA), {len(USERS)} users")
        kdc = None
        if self.options.kerberos:
            with self._step("kerberos") as done:
                kdc = kdc_mod.start_kdc(self.children, self.workdir / "kdc", tools, USERS, self.env)
                done.append(f"krb5kdc realm {kdc_mod.REALM} on 127.0.0.1:{kdc.port}")
        with self._step("hub") as done:
            hub, ticket_url = self._start_hub()
            done.append(f"devhub {hub}")
        with self._step("setup") as done:
            config = self._setup(directory, kdc, ticket_url, port, console_port)
            self.console_password = consolepw.create(config.parent)
            done.append(f"connector setup --ticket {hub}/tickets/… -> {config}; console password")
        with self._step("connector") as done:
            conf, workers = self._start_connector(config, kdc, port, console_port, hub)
            done.append(f"gunicorn -c {conf}: http://localhost:{port}, {len(workers)} worker")
        facts = self._facts(directory, kdc, hub, config, port)
        facts["console"] = {
            "url": consolepw.console_url(("127.0.0.1", console_port)),
            "passwordHash": str(consolepw.record_path(config.parent)),
        }
        return facts

    def _start_hub(self) -> tuple[str, str]:
        hub_dir = self.workdir / "hub"
        hub_dir.mkdir()
        port = self.options.hub_port  # 0: the devhub picks a free one and says which
        if port is None:
            port = pick_port(None, DEFAULT_HUB_PORT)
        ticket = new_ticket()
        argv = [sys.executable, "-m", "connector.devhub.server"]
        argv += hub_arguments(port, ticket, kerberos=self.options.kerberos)
        log = hub_dir / "devhub.log"
        child = self.children.start("devhub", argv, log, env=self.env, cwd=hub_dir)

        def serving() -> str | None:
            found = _SERVING.search(log.read_text(errors="replace"))
            return found.group(1) if found else None

        url = self.children.wait_for(child, serving, f"devhub on port {port}", timeout=30)
        return url, f"{url}/tickets/{ticket}"

    def _setup(
        self,
        directory: Directory,
        kdc: kdc_mod.Kdc | None,
        ticket: str,
        port: int,
        console_port: int,
    ) -> Path:
        state = self.workdir / "connector"
        state.mkdir()
        config = state / "config.json"
        settings: dict[str, Any] = {
            **directory.connector_settings(),
            "PORT": port,
            "BIND": f"127.0.0.1:{port}",
            "CONSOLE_BIND": f"127.0.0.1:{console_port}",
            "SERVER_URL": f"http://localhost:{port}/wsfed",
            "WEB_WORKERS": 1,
            "WEB_THREADS": 8,
            "POLL_WAIT_SECONDS": POLL_WAIT_SECONDS,
            "LOG_LEVEL": "info",
            "KERBEROS_AUTH": kdc is not None,
        }
        if kdc is not None:
            settings |= {
                "KERBEROS_KEYTAB": str(kdc.keytab),
                "KERBEROS_REALMS": [kdc_mod.REALM],
                "KERBEROS_SERVICE_PRINCIPAL": kdc_mod.SERVICE_PRINCIPAL,
                "CLIENT_IP_RANGES": list(IP_RANGES),
            }
        write_config_file(config, settings)
        try:
            setup_from_ticket(config, ticket, environ=self.env)
        except ConnectorError as exc:
            raise DemoError("setup", str(exc)) from exc
        return config

    def _start_connector(
        self, config: Path, kdc: kdc_mod.Kdc | None, port: int, console_port: int, hub: str
    ) -> tuple[str, list[int]]:
        shipped = Path(connector.__file__).resolve().parent.parent / "deploy" / "gunicorn.conf.py"
        conf = str(shipped) if shipped.is_file() else "python:connector.gunicorn_config"
        argv = [sys.executable, "-m", "gunicorn", "-c", conf, "--bind", f"127.0.0.1:{port}"]
        if ipv6_loopback():
            argv += ["--bind", f"[::1]:{port}"]
        # --bind on the command line replaces the configuration's listeners: the console's too
        argv += ["--bind", f"127.0.0.1:{console_port}"]
        argv.append("connector.web:create_app()")
        env = {**self.env, "CONNECTOR_CONFIG": str(config), **(kdc.env if kdc else {})}
        log = config.parent / "gunicorn.log"
        child = self.children.start(
            "connector", argv, log, env=env, cwd=config.parent, stop_timeout=POLL_WAIT_SECONDS + 40
        )
        session = requests.Session()
        session.trust_env = False  # no proxy for loopback

        def ready() -> bool | None:
            """The connector reaches the directory and the hub has seen its agent poll."""
            try:
                checks = session.get(f"http://127.0.0.1:{port}/ready", timeout=3).json()
                agents = session.get(f"{hub}/tenants/{TENANT}/api/agents", timeout=3).json()
            except (requests.RequestException, ValueError):
                return None
            if checks.get("checks", {}).get("directory") == "ok" and agents.get("agents"):
                return True
            return None

        try:
            self.children.wait_for(child, ready, "the connector (directory and hub)", READY_TIMEOUT)
        finally:
            session.close()
        return conf, self.children.note_descendants(child)

    # --- what to print --------------------------------------------------------------------

    def _facts(
        self, directory: Directory, kdc: kdc_mod.Kdc | None, hub: str, config: Path, port: int
    ) -> dict[str, Any]:
        tenant = f"{hub}/tenants/{TENANT}"
        facts: dict[str, Any] = {
            "dir": str(self.workdir),
            "hub": {
                "url": hub,
                "adHub": tenant,
                "index": f"{tenant}/",
                "login": f"{tenant}/login",
                "status": f"{tenant}/status",
            },
            "connector": f"http://localhost:{port}",
            "signIn": f"http://localhost:{port}/wsfed?wtrealm={REALM}&wctx=demo",
            "config": str(config),
            "ldap": {
                "url": directory.url,
                "base": BASE,
                "caFile": str(directory.ca_file),
            },
            "users": [
                {"username": u.uid, "password": u.password, "groups": groups_of(u.uid)}
                for u in USERS
            ],
            "kerberos": None,
            "pids": self.children.pids(),
        }
        if kdc is not None:
            facts["kerberos"] = {
                "realm": kdc_mod.REALM,
                "kdc": f"127.0.0.1:{kdc.port}",
                "krb5Config": str(kdc.krb5_conf),
                "keytab": str(kdc.keytab),
                "servicePrincipal": kdc_mod.SERVICE_PRINCIPAL,
                "ccache": {u.uid: kdc.ccache(u.uid) for u in USERS},
            }
        return facts

    def print_ready(self, facts: dict[str, Any]) -> None:
        """The URLs, users and commands, once everything answers."""
        hub = facts["hub"]
        sign_in = facts["signIn"]
        elapsed = time.monotonic() - self.started
        lines = [
            "",
            f"connector demo: ready in {elapsed:.1f} s (everything listens on loopback only)",
            "",
            "  hub (devhub)",
            f"    log in     {hub['login']}   (the hub asks the connector; shows the Try page)",
            f"    status     {hub['status']}",
            f"    start page {hub['index']}",
            "  connector sign-in (Kerberos, or its password form)",
            f"    {sign_in}",
            "  connector admin console (setup, status, users, logs; this machine only)",
            f"    {facts['console']['url']}   password {self.console_password}",
            f"    a new password: connector --config {shlex.quote(facts['config'])} "
            "console-password",
            "",
            "  users        password        groups (nested ones included)",
        ]
        for user in facts["users"]:
            lines.append(
                f"    {user['username']:<10} {user['password']:<15} {', '.join(user['groups'])}"
            )
        lines.append("")
        krb = facts["kerberos"]
        if krb is not None:
            env = f"KRB5_CONFIG={shlex.quote(krb['krb5Config'])} "
            env += f"KRB5CCNAME={shlex.quote(krb['ccache']['alice'])}"
            lines += [
                "  seamless Kerberos sign-in with curl (kinit asks for alice-demo-pw):",
                f"    {env} kinit alice",
                f"    {env} curl --negotiate -u : -L {shlex.quote(sign_in)}",
                "",
                f"  kerberos     realm {krb['realm']}, KDC {krb['kdc']}, "
                f"keytab {krb['keytab']} ({krb['servicePrincipal']})",
            ]
        else:
            lines.append("  kerberos     off (--no-kerberos): the sign-in URL shows the form")
        pids = ", ".join(f"{name} {pid}" for name, pid in facts["pids"].items())
        lines += [
            f"  directory    {facts['ldap']['url']} (StartTLS), base {facts['ldap']['base']}",
            f"  config       {facts['config']}",
            f"  logs         {self.workdir}/*/*.log",
            f"  pids         {pids} ({self.workdir / 'pids.json'})",
            "",
            "Press Ctrl-C to stop everything.",
        ]
        self.say("\n".join(lines))

    def wait(self) -> NoReturn:
        """Block until a child ends (a failure) or a stop signal arrives (KeyboardInterrupt).

        Raises:
            DemoError: a child ended on its own.
        """
        while True:
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
            self.children.check_running()


def run(options: DemoOptions, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the demo until a stop signal; 0 after a requested stop, 1 if a step failed."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        workdir, temporary = _prepare_dir(options.directory)
    except DemoError as exc:
        print(f"connector demo: {exc}", file=err, flush=True)
        return 1
    demo = Demo(options, workdir, out)
    previous = {s: signal.signal(s, _interrupt) for s in _STOP_SIGNALS}
    status = 1
    try:
        demo.print_ready(_write_facts(workdir, demo.start()))
        demo.step = "running"
        demo.wait()
    except KeyboardInterrupt:
        when = "" if demo.step == "running" else f" during step {demo.step}"
        demo.say(f"connector demo: stopping on request{when}")
        status = 0
    except DemoError as exc:
        where = "stopped working" if demo.step == "running" else f"step {demo.step} failed"
        print(f"connector demo: {where}: {exc}", file=err, flush=True)
    finally:
        for s in _STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        clean = demo.children.stop_all(lambda line: demo.say(f"  {line}"))
        for s, handler in previous.items():
            signal.signal(s, handler)
    if status == 0 and clean and temporary:
        shutil.rmtree(workdir, ignore_errors=True)
        demo.say(f"connector demo: stopped; removed {workdir}")
    elif status == 0:
        demo.say(f"connector demo: stopped{'' if clean else ' (some needed SIGKILL)'}")
    else:
        print(f"connector demo: stopped what was started; logs in {workdir}", file=err, flush=True)
    return status


def _write_facts(workdir: Path, facts: dict[str, Any]) -> dict[str, Any]:
    (workdir / "demo.json").write_text(json.dumps(facts, indent=2) + "\n")
    return facts
