"""The devhub (``connector/devhub``) as a child process for the tests: start, administer, stop.

Plain Python (no pytest), like ``tests/servers.py``::

    from hubs import start_devhub

    hub = start_devhub(tmp_path, lease_seconds=2)   # or: with DevHubProcess(tmp_path) as hub:
    try:
        hub.ticket_url                 # give this to `connector setup`
        command_id = hub.queue("ping", {"pid": "p-1"})
        hub.wait_done(command_id)      # {"id", "name", "state": "done", "result", ...}
        hub.add_fault(status=503, count=2, retry_after=1)
    finally:
        hub.stop()

:class:`DevHubProcess` runs ``python -m connector.devhub.server --port 0 ...`` with its output
in ``{workdir}/devhub.log``, waits until it listens (the ``devhub: serving URL`` line, then a
``GET .../api/state``), and stops exactly its own PID (SIGTERM, then SIGKILL). Helpers wrap
the admin API (``/tenants/{t}/api/...``, see ``connector/devhub/app.py``); a non-2xx answer
raises :class:`DevHubError` with the status and the body.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
from servers import _RUNNING, _tail, _terminate  # servers.py's process helpers, shared

_READY = re.compile(r"^devhub: serving (\S+)$", re.MULTILINE)


class DevHubError(RuntimeError):
    """The devhub's admin API answered with an error status."""

    def __init__(self, status: int, body: str, url: str) -> None:
        super().__init__(f"devhub answered {status} for {url}: {body}")
        self.status = status
        self.body = body


class DevHubProcess:
    """A devhub child process on loopback (see the module docstring).

    Args:
        workdir: where ``devhub.log`` goes (created if missing).
        tenant, connection, realm: the names (defaults as the devhub's: acme, corp, urn:acme).
        alg: ``"RS256"`` or ``"HS256"``: the kind of tenant signing key.
        lease_seconds: how long a handed-out command stays leased.
        ticket: the ticket id; a random one by default (``self.ticket``).
        kerberos, ip_ranges: what the ticket info announces.
        login_wait: seconds the login page waits for the result before the Try page.
        public_url: a base URL the hub hands out instead of the request's host.
        tls_cert, tls_key: serve HTTPS; ``ca_file`` then verifies it (``self.verify``).
        host, port: where to listen; port 0 (default) lets the hub pick a free one.
        extra_args: more ``connector.devhub.server`` arguments.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        tenant: str = "acme",
        connection: str = "corp",
        realm: str = "urn:acme",
        alg: str = "RS256",
        lease_seconds: int = 30,
        ticket: str | None = None,
        kerberos: bool = False,
        ip_ranges: tuple[str, ...] | list[str] = (),
        login_wait: float | None = None,
        public_url: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        ca_file: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        extra_args: tuple[str, ...] | list[str] = (),
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.tenant = tenant
        self.connection = connection
        self.realm = realm
        self.alg = alg
        self.lease_seconds = lease_seconds
        self.ticket = ticket or "t-" + secrets.token_urlsafe(16)
        self.verify: bool | str = ca_file or True
        self.log_file = self.workdir / "devhub.log"
        self.base = ""  # set by start(): scheme://host:port
        self.proc: subprocess.Popen[bytes] | None = None
        args = [
            "--host", host, "--port", str(port), "--tenant", tenant, "--connection", connection,
            "--realm", realm, "--alg", alg, "--lease-seconds", str(lease_seconds),
            "--ticket", self.ticket,
        ]  # fmt: skip
        if kerberos:
            args.append("--kerberos")
        if ip_ranges:
            args += ["--ip-ranges", ",".join(ip_ranges)]
        if login_wait is not None:
            args += ["--login-wait", str(login_wait)]
        if public_url:
            args += ["--public-url", public_url]
        if tls_cert or tls_key:
            args += ["--tls-cert", str(tls_cert), "--tls-key", str(tls_key)]
        self.args = [*args, *extra_args]

    # ---- life cycle ------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> DevHubProcess:
        """Start the child and wait until it answers; returns self.

        Raises:
            RuntimeError: it exited or did not get ready in ``timeout`` seconds (with its log).
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        command, env, cwd = self.launch()
        with open(self.log_file, "wb") as log:
            self.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            )
        _RUNNING.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"devhub exited with {self.proc.returncode}:\n{_tail(self.log_file)}"
                )
            found = _READY.search(self.log_file.read_text(errors="replace"))
            if found:
                self.base = found.group(1)
                if self.answers():
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"devhub not ready after {timeout} s:\n{_tail(self.log_file)}")

    def launch(self) -> tuple[list[str], dict[str, str], Path]:
        """What :meth:`start` runs: the command line, more environment, the directory."""
        return [sys.executable, "-m", "connector.devhub.server", *self.args], {}, self.workdir

    def answers(self) -> bool:
        """Whether the started hub answers its admin API (it printed its URL already)."""
        try:
            self.state()
        except (requests.RequestException, DevHubError):
            return False
        return True

    def stop(self) -> None:
        """Stop the child: SIGTERM to its PID, SIGKILL after 5 s. Idempotent."""
        if self.proc is not None:
            _terminate(self.proc)
        _RUNNING.discard(self)

    def __enter__(self) -> DevHubProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        """The child's PID (None before start)."""
        return None if self.proc is None else self.proc.pid

    def log_text(self) -> str:
        """Everything the devhub printed and logged so far."""
        return self.log_file.read_text(errors="replace")

    # ---- addresses -------------------------------------------------------------------------

    @property
    def ad_hub(self) -> str:
        """``adHub``: ``{base}/tenants/{tenant}`` (as the hub announces it when reached at base)."""
        return f"{self.base}/tenants/{self.tenant}"

    @property
    def ticket_url(self) -> str:
        """The provisioning ticket URL (``connector setup`` takes it)."""
        return f"{self.base}/tickets/{self.ticket}"

    def url(self, path: str) -> str:
        """``adHub`` joined with ``path`` (e.g. ``"login"``, ``"status"``, ``"agent/poll"``)."""
        return f"{self.ad_hub}/{path.lstrip('/')}"

    # ---- admin API -------------------------------------------------------------------------

    def admin(
        self,
        method: str,
        path: str,
        json: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float = 30.0,
    ) -> Any:
        """Call ``{adHub}/api/{path}``; the decoded JSON answer.

        Raises:
            DevHubError: a non-2xx status.
        """
        url = self.url("api/" + path.lstrip("/"))
        response = requests.request(
            method, url, json=json, params=params, timeout=timeout, verify=self.verify
        )
        if not response.ok:
            raise DevHubError(response.status_code, response.text, url)
        return response.json()

    def info(self) -> dict[str, Any]:
        """``GET {ticket}/info``."""
        response = requests.get(self.ticket_url + "/info", timeout=10, verify=self.verify)
        response.raise_for_status()
        return dict(response.json())

    def queue(
        self,
        name: str,
        payload: dict[str, Any] | None = None,
        *,
        ttl: int | None = None,
        claims: dict[str, Any] | None = None,
    ) -> str:
        """Sign and queue a command; its id. ``claims`` overrides claims (None removes one)."""
        body: dict[str, Any] = {"name": name, "payload": payload or {}}
        if ttl is not None:
            body["ttl"] = ttl
        if claims is not None:
            body["claims"] = claims
        return str(self.admin("POST", "commands", body)["id"])

    def queue_raw(self, jwt: str, *, name: str | None = None, id: str | None = None) -> str:
        """Queue a caller-made command JWT verbatim; its id (default: the token's jti)."""
        body: dict[str, Any] = {"jwt": jwt}
        if name is not None:
            body["name"] = name
        if id is not None:
            body["id"] = id
        return str(self.admin("POST", "raw-commands", body)["id"])

    def replay(self, command_id: str, jwt: str) -> None:
        """Hand a done command out again with ``jwt`` (its first result is kept; the new
        answer shows as ``lastResult``)."""
        self.admin("POST", f"commands/{command_id}/replay", {"jwt": jwt})

    def command(self, command_id: str, wait: float = 0.0) -> dict[str, Any]:
        """A command's state; ``wait`` > 0 holds the answer until it is done (at most 120 s)."""
        params = {"wait": wait} if wait else None
        return dict(self.admin("GET", f"commands/{command_id}", params=params))

    def wait_done(self, command_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """The command once done.

        Raises:
            TimeoutError: still not done after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            view = self.command(command_id, wait=max(0.0, min(remaining, 60.0)))
            if view["state"] == "done":
                return view
            if remaining <= 0:
                raise TimeoutError(f"command {command_id} not done after {timeout} s: {view}")

    def commands(self) -> list[dict[str, Any]]:
        """Every command, oldest first."""
        return list(self.admin("GET", "commands")["commands"])

    def agents(self) -> dict[str, Any]:
        """``{"agents": [...], "certificates": [...], "serverTime"}`` (the status page)."""
        return dict(self.admin("GET", "agents"))

    def state(self) -> dict[str, Any]:
        """Settings and counters (``queued``, ``leased``, ``done``, ``events``, ...)."""
        return dict(self.admin("GET", "state"))

    def sessions(self) -> list[dict[str, Any]]:
        """Sign-ins the agents relayed (with ``ref``, ``wctx``, ``profile``), oldest first."""
        return list(self.admin("GET", "sessions")["sessions"])

    def add_fault(
        self,
        *,
        status: int | None = None,
        close: int | None = None,
        delay: float | None = None,
        count: int = 1,
        retry_after: int | None = None,
        endpoint: str | None = None,
    ) -> list[dict[str, Any]]:
        """Make the next agent requests fail; the pending faults.

        Exactly one of: ``status`` (answer it ``count`` times, with ``Retry-After`` if
        ``retry_after``), ``close`` (drop that many connections unanswered), ``delay`` (stall
        ``count`` requests that many seconds, then answer). ``endpoint`` limits the fault to
        ``"poll"``, ``"results"`` or ``"signins"``.
        """
        body: dict[str, Any] = {}
        if status is not None:
            body = {"status": status, "count": count}
            if retry_after is not None:
                body["retryAfter"] = retry_after
        elif close is not None:
            body = {"close": close}
        elif delay is not None:
            body = {"delay": delay, "count": count}
        if endpoint is not None:
            body["endpoint"] = endpoint
        return list(self.admin("POST", "faults", body)["faults"])

    def faults(self) -> list[dict[str, Any]]:
        """The faults still pending."""
        return list(self.admin("GET", "faults")["faults"])

    def clear_faults(self) -> None:
        """Forget the pending faults."""
        self.admin("DELETE", "faults")

    def reset(self, certificates: bool = False) -> None:
        """Forget commands, agents, sessions, faults, counters and the clock offset; with
        ``certificates`` the registered agent certificates too. Keys and ticket stay."""
        self.admin("POST", "reset", {"certificates": certificates})

    def set_info(self, **fields: Any) -> dict[str, Any]:
        """Serve ``fields`` in the ticket information over the real ones (none: restore it)."""
        return dict(self.admin("PUT", "overrides/ticket-info", fields)["override"])

    def set_registration(self, **fields: Any) -> dict[str, Any]:
        """Serve ``fields`` (e.g. ``signingKey``) in the answer to a registration over the real
        ones (none: restore it)."""
        return dict(self.admin("PUT", "overrides/registration", fields)["override"])

    def set_clock_offset(self, seconds: float) -> dict[str, Any]:
        """Make the hub's clock run ``seconds`` off; ``{"offsetSeconds", "serverTime"}``."""
        return dict(self.admin("POST", "clock", {"offsetSeconds": seconds}))


def start_devhub(workdir: str | os.PathLike[str], **options: Any) -> DevHubProcess:
    """A started :class:`DevHubProcess` (``options`` as its constructor's); stop() it after."""
    return DevHubProcess(workdir, **options).start()
