"""Bring the benchmark's world up and down: slapd (generated directory, cn=Monitor), MIT KDC
(principals for some generated users, their TGTs in ccaches), the devhub, the connector under
gunicorn (``deploy/gunicorn.conf.py``, set up from the hub's ticket) and, when installed,
Apache with the two peer modules. Everything listens on 127.0.0.1 and is stopped by its PID.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
from benchdir import NESTED_CHAIN, BenchDirectory, MonitoredSlapd, build
from configs import openldap_config
from connector_proc import ROOT, ConnectorProcess, setup_config
from fasthub import HUB_WORKER, GunicornDevHub, LoopDevHub
from lean import LeanReference
from loadgen import children
from peers import Apache, apache_binary
from servers import MitKdc, find_binary

KERBEROS_USERS = 8  # generated users that also get a Kerberos principal
WCTX = "bench"


class BenchConnector(ConnectorProcess):
    """:class:`ConnectorProcess` with a choice of gunicorn config (default: the deploy one)."""

    def __init__(
        self, state_dir: Path, *, conf: Path, root: Path | None = None, **options: Any
    ) -> None:
        super().__init__(state_dir, **options)
        self.conf = conf
        #: the checkout gunicorn runs in: ``python -m`` puts its directory first on sys.path,
        #: so the connector (and wsgi.py) are imported from there, before PYTHONPATH's
        self.root = root or ROOT

    def start(self, wait: bool = True) -> BenchConnector:
        env = {
            **os.environ,
            "CONNECTOR_CONFIG": str(self.state_dir / "config.json"),
            "BIND": f"127.0.0.1:{self.port}",
            "WEB_WORKERS": str(self.workers),
            "WEB_THREADS": str(self.threads),
            **self.extra_env,
        }
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(self.conf), "wsgi:app"],
            cwd=self.root,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_ready()
        return self


class Site:
    """Every server of one benchmark run; :meth:`stop` stops what was started, in reverse."""

    def __init__(
        self,
        workdir: Path,
        *,
        workers: int,
        threads: int,
        log_level: str,
        gunicorn_conf: Path | None = None,
        connector_env: dict[str, str] | None = None,
        hub_server: str = "loop",
    ) -> None:
        self.workdir = workdir
        self.hub_server = hub_server  #: "loop" (hubserver.py) or "gevent" (gunicorn, hubworker)
        self.gunicorn_conf = gunicorn_conf or ROOT / "deploy" / "gunicorn.conf.py"
        self.connector_env = connector_env or {}
        self.workers = workers
        self.threads = threads
        self.log_level = log_level
        self.started: list[Any] = []
        self.closed = False
        self.timings: dict[str, float] = {}
        self.slapd: MonitoredSlapd | None = None
        self.directory: BenchDirectory | None = None
        self.kdc: MitKdc | None = None
        self.ccaches: list[str] = []
        self.kerberos_users: list[str] = []
        self.hub: LoopDevHub | GunicornDevHub | None = None
        self.connector: ConnectorProcess | None = None
        self.apache: Apache | None = None
        self.lean: LeanReference | None = None
        self.state_dir = workdir / "connector"

    # ---- start -----------------------------------------------------------------------

    def _track(self, server: Any) -> None:
        """Remember a server before it starts (a half-started one is stopped too)."""
        if self.closed:
            raise RuntimeError("the benchmark is stopping: nothing more is started")
        self.started.append(server)

    def _timed(self, name: str, started: float) -> None:
        self.timings[name] = time.monotonic() - started

    def start_directory(self) -> None:
        t = time.monotonic()
        self.slapd = MonitoredSlapd(self.workdir / "slapd")
        self._track(self.slapd)
        self.slapd.start()
        self._timed("slapd_start_s", t)
        t = time.monotonic()
        self.directory = build(self.slapd)
        self._timed("directory_load_s", t)

    def start_kdc(self) -> None:
        assert self.directory is not None
        t = time.monotonic()
        self.kdc = MitKdc(self.workdir / "kdc")
        self._track(self.kdc)
        self.kdc.start()
        kadmin = find_binary("kadmin.local", "krb5-admin-server")
        step = len(self.directory.users) // KERBEROS_USERS
        self.kerberos_users = self.directory.users[::step][:KERBEROS_USERS]
        for uid in self.kerberos_users:
            self.kdc._kadmin(kadmin, f"addprinc -pw {self.directory.password} {uid}")
            cc = f"FILE:{self.workdir / 'kdc' / (uid + '.ccache')}"
            self.kdc.kinit(uid, self.directory.password, cc)
            self.ccaches.append(cc)
        self._timed("kdc_start_s", t)

    def start_hub(self) -> None:
        t = time.monotonic()
        # HS256: the hub's own signing cost (it is not the connector's) stays small on a
        # machine the hub shares with everything else; the agent's tokens stay RS256
        options: dict[str, Any] = {
            "alg": "HS256",
            "lease_seconds": 60,
            "kerberos": True,
            "ip_ranges": ["127.0.0.0/8"],
        }
        if self.hub_server == "gevent":
            self.hub = GunicornDevHub(self.workdir / "hub", HUB_WORKER, **options)
        else:
            self.hub = LoopDevHub(self.workdir / "hub", **options)
        self._track(self.hub)
        self.hub.start()
        self._timed("hub_start_s", t)

    def start_all(self) -> None:
        """The directory, the KDC, the hub and the connector (the bench tools' one site)."""
        self.start_directory()
        self.start_kdc()
        self.start_hub()
        self.start_connector()

    def start_connector(self) -> None:
        """``connector setup`` from the hub's ticket (once), then gunicorn until ready."""
        assert self.slapd is not None and self.kdc is not None and self.hub is not None
        t = time.monotonic()
        if not (self.state_dir / "config.json").exists():
            self._setup_connector()
            self._timed("connector_setup_s", t)
        self.launch_connector()

    def _setup_connector(self) -> None:
        assert self.slapd is not None and self.kdc is not None and self.hub is not None
        setup_config(
            self.state_dir,
            openldap_config(
                self.slapd,
                GROUPS_CACHE_SECONDS=0,  # every login does the whole walk, as the baseline
                LDAP_SEARCH_LIMIT=100,
            ),
            self.hub.ticket_url,
            POLL_WAIT_SECONDS=5,  # a short poll: a quick drain at the end
            KERBEROS_KEYTAB=self.kdc.keytab,
            KERBEROS_REALMS=[self.kdc.realm],
            KERBEROS_SERVICE_PRINCIPAL="HTTP/localhost",
            LOGIN_FAILURES_PER_ADDRESS=1_000_000,
            LOGIN_FAILURES_PER_USER=1_000_000,
        )

    def launch_connector(
        self,
        env: dict[str, str] | None = None,
        *,
        state_dir: Path | None = None,
        krb5_conf: str | None = None,
        root: Path | None = None,
    ) -> None:
        """Start gunicorn (``env`` added to the connector's environment; in the checkout
        ``root``, by default this one) and wait until
        ``/health`` answers (``connector_health_s``), then until ``/ready`` does and every
        worker's agent shows at the hub as connected (``connector_ready_s``). ``state_dir``
        and ``krb5_conf`` default to the OpenLDAP connector's and the MIT KDC's."""
        if krb5_conf is None:
            assert self.kdc is not None
            krb5_conf = self.kdc.krb5_conf
        rcache = self.workdir / "connector-rcache"
        rcache.mkdir(exist_ok=True)
        self.connector = BenchConnector(
            state_dir or self.state_dir,
            conf=self.gunicorn_conf,
            root=root,
            workers=self.workers,
            threads=self.threads,
            env={
                "KRB5_CONFIG": krb5_conf,
                "KRB5RCACHEDIR": str(rcache),
                "LOG_LEVEL": self.log_level,
                "CONSOLE_BIND": "off",
                **self.connector_env,
                **(env or {}),
            },
        )
        self._track(self.connector)
        t = time.monotonic()
        self.connector.start(wait=False)
        self.connector.wait_ready(timeout=60)
        self._timed("connector_health_s", t)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                r = requests.get(self.connector.url + "/ready", timeout=5)
                if r.status_code == 200 and self._agents_connected() >= self.workers:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError(f"connector not ready in 60 s:\n{self.connector.log()[-3000:]}")
        self._timed("connector_ready_s", t)

    def stop_connector(self) -> None:
        """Stop gunicorn (graceful: the agents drain) and forget it."""
        if self.connector is not None:
            self.connector.stop()
            if self.connector in self.started:
                self.started.remove(self.connector)
            self.connector = None

    def _agents_connected(self) -> int:
        assert self.hub is not None
        return sum(1 for a in self.hub.agents()["agents"] if a.get("connected"))

    def start_apache(self) -> bool:
        if apache_binary() is None:
            return False
        assert self.slapd is not None and self.kdc is not None
        t = time.monotonic()
        self.apache = Apache(
            self.workdir / "apache",
            ldap_url=self.slapd.uri,
            ca_file=self.slapd.ca_file,
            people_base=self.slapd.people_dn,
            bind_dn=self.slapd.bind_dn,
            bind_pw=self.slapd.bind_pw,
            require_group=self.slapd.group_dn(NESTED_CHAIN[1]),
            keytab=self.kdc.keytab,
            krb5_conf=self.kdc.krb5_conf,
            own_root=self.workdir,
        )
        self._track(self.apache)
        self.apache.start()
        self._timed("apache_start_s", t)
        return True

    def start_lean(self) -> None:
        """The lean reference sign-in (NOT the product), same workers and threads."""
        assert self.slapd is not None and self.hub is not None
        t = time.monotonic()
        s = self.slapd
        self.lean = LeanReference(
            self.workdir / "lean",
            workers=self.workers,
            threads=self.threads,
            uri=s.uri,
            ca_file=s.ca_file,
            bind_dn=s.bind_dn,
            bind_pw=s.bind_pw,
            people=s.people_dn,
            groups=s.groups_dn,
            post_token_url=f"{self.hub.ad_hub}/login/callback",
        )
        self._track(self.lean)
        self.lean.start()
        self._timed("lean_start_s", t)

    # ---- processes -------------------------------------------------------------------

    def worker_pids(self) -> list[int]:
        return children(self.connector.pid) if self.connector and self.connector.proc else []

    def server_pids(self) -> dict[str, list[int]]:
        """The PIDs whose CPU time is charged to each part."""
        out: dict[str, list[int]] = {}
        if self.connector is not None and self.connector.proc is not None:
            out["connector"] = [self.connector.pid, *self.worker_pids()]
        if self.hub is not None and self.hub.pid:
            out["devhub"] = [self.hub.pid, *children(self.hub.pid)]
        if self.slapd is not None and self.slapd.pid:
            out["slapd"] = [self.slapd.pid]
        if self.kdc is not None and self.kdc.pid:
            out["kdc"] = [self.kdc.pid]
        if self.apache is not None and self.apache.pid:
            out["apache"] = [self.apache.pid, *children(self.apache.pid)]
        if self.lean is not None and self.lean.pid:
            out["lean"] = [self.lean.pid, *children(self.lean.pid)]
        return out

    def wait_hub_idle(self, timeout: float = 60.0) -> None:
        """Until nothing is queued or leased at the hub (the previous point's tail drained)."""
        assert self.hub is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.hub.state()
            if state["queued"] == 0 and state["leased"] == 0:
                return
            time.sleep(0.1)

    def settings_file(self) -> Path:
        return self.state_dir / "config.json"

    def config(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.settings_file().read_text())
        return data

    # ---- stop ------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything started, newest first, each by its own PID; start nothing after."""
        self.closed = True
        while self.started:
            server = self.started.pop()
            try:
                server.stop()
            except Exception as exc:  # keep stopping the others
                print(f"bench: stopping {type(server).__name__} failed: {exc}", flush=True)


def environment_note() -> dict[str, Any]:
    """What the machine looked like: cores and load average."""
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in load]}
