"""The hostile-input suite's site and helpers (plain Python, see ``conftest.py``)."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any

import requests
from configs import openldap_config
from connector_proc import ConnectorProcess
from faultkit import launch, start_connector, wait_agents
from hubs import DevHubProcess, start_devhub

REALM_URL = "urn:acme"
ALLOWED_WREPLY = "https://app.example/after"
OUTSIDE_RANGE = "10.1.2.0/24"

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_MESSAGE = re.compile(r'id="message"[^>]*>\s*([^<]*?)\s*<', re.S)
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)")
_ACCESS_5XX = re.compile(r'^\S+ "[A-Z]+ [^"]*" 5\d\d ', re.M)


def b64(data: bytes) -> str:
    """base64url without padding, as in a JWT."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def raw_jwt(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A JWT made by hand, HS256-signed with ``key`` (None: unsigned): PyJWT refuses to key
    HMAC with anything like a public key, and ``json.dumps`` writes NaN and Infinity."""
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    if key is None:
        return signing_input + "."
    signature = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


def message(html: str) -> str:
    """The page's ``id="message"`` text (HTML-unescaped), or ''."""
    import html as html_lib

    found = _MESSAGE.search(html)
    return html_lib.unescape(found.group(1)) if found else ""


def is_form(resp: requests.Response) -> bool:
    """Whether the answer is the sign-in form."""
    return 'id="signin"' in resp.text and 'name="password"' in resp.text


@dataclasses.dataclass
class Site:
    """The hub, the two connectors, and what must never show up in their logs."""

    workdir: Path
    hub: DevHubProcess
    inside: ConnectorProcess
    outside: ConnectorProcess
    slapd: Any
    kdc: Any
    extra: list[ConnectorProcess] = dataclasses.field(default_factory=list)
    secrets: list[str] = dataclasses.field(default_factory=list)
    pids: dict[int, list[int]] = dataclasses.field(default_factory=dict)

    # ---- the channel ---------------------------------------------------------------------

    def results(
        self, commands: list[tuple[str, dict[str, Any]]], hub: DevHubProcess | None = None
    ) -> list[dict[str, Any]]:
        """Queue every command at once, then each one's result (checked: exactly one)."""
        hub = hub or self.hub
        ids = [hub.queue(name, payload) for name, payload in commands]
        out = []
        for cid in ids:
            done = hub.wait_done(cid, 60)
            assert done["resultCount"] == 1, done
            out.append(done["result"])
        return out

    def result(self, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self.results([(name, payload)])[0]

    # ---- the browser ---------------------------------------------------------------------

    def url(self, proc: ConnectorProcess | None = None) -> str:
        return (proc or self.inside).url + "/wsfed"

    def form(
        self, session: requests.Session, proc: ConnectorProcess | None = None, **params: str
    ) -> str:
        """GET the sign-in page in ``session``; the CSRF token it carries."""
        query = {"wtrealm": REALM_URL, "wctx": "ctx-hostile", **params}
        resp = session.get(self.url(proc), params=query, timeout=30)
        found = _CSRF.search(resp.text)
        assert found, (resp.status_code, resp.text[:500])
        self.secrets.append(found.group(1))
        return found.group(1)

    def submit(
        self,
        username: str,
        password: str,
        proc: ConnectorProcess | None = None,
        headers: dict[str, str] | None = None,
        **params: str,
    ) -> requests.Response:
        """A whole form sign-in in a fresh session (GET, then POST with its CSRF token)."""
        with requests.Session() as s:
            token = self.form(s, proc)
            data = {
                "wtrealm": REALM_URL,
                "wctx": "ctx-hostile",
                **params,
                "username": username,
                "password": password,
                "csrf_token": token,
            }
            return s.post(
                self.url(proc), data=data, headers=headers, allow_redirects=False, timeout=60
            )

    # ---- the end -------------------------------------------------------------------------

    def processes(self) -> list[ConnectorProcess]:
        return [self.inside, self.outside, *self.extra]

    def logs(self) -> dict[str, str]:
        """gunicorn's output of each connector, and the log files the workers keep (the
        console's ring of JSON lines under ``run/logs``), decoded so escapes hide nothing."""
        out = {p.log_path.name: p.log() for p in self.processes()}
        for proc in self.processes():
            for ring in sorted((proc.state_dir / "run" / "logs").glob("*.jsonl*")):
                lines = []
                for line in ring.read_text(errors="replace").splitlines():
                    lines.append(line)
                    with contextlib.suppress(ValueError):
                        lines.append(json.dumps(json.loads(line), ensure_ascii=False))
                out[f"{proc.state_dir.name}/{ring.name}"] = "\n".join(lines)
        return out

    def check_logs(self) -> None:
        """No secret, no traceback, no 5xx in any log; the same masters and workers."""
        for proc in self.processes():
            assert proc.proc is not None and proc.proc.poll() is None, f"{proc.url} exited"
            if proc.pid in self.pids:
                assert proc.worker_pids() == self.pids[proc.pid], f"{proc.url}: worker replaced"
        for name, text in self.logs().items():
            assert not _TRACEBACK.search(text), f"traceback in {name}"
            assert not _ACCESS_5XX.search(text), _ACCESS_5XX.search(text)
            for secret in set(self.secrets):
                for piece in _pieces(secret):
                    assert piece not in text, f"a secret ({piece[:12]}…) is in {name}"

    def stop(self) -> None:
        for proc in self.processes():
            proc.stop()
        self.hub.stop()


def _pieces(secret: str) -> list[str]:
    """The secret, and for a long one a slice of its middle (a log might cut it)."""
    pieces = [secret]
    if len(secret) > 64:
        middle = len(secret) // 2
        pieces.append(secret[middle - 16 : middle + 16])
    return pieces


def start_site(workdir: Path, slapd: Any, kdc: Any) -> Site:
    """Start the hub and both connectors (see ``conftest.py``)."""
    hub = start_devhub(workdir / "hub", lease_seconds=10, kerberos=True, ip_ranges=["127.0.0.0/8"])
    rcache = workdir / "rcache"
    rcache.mkdir()
    krb_env = {"KRB5_CONFIG": kdc.krb5_conf, "KRB5RCACHEDIR": str(rcache)}
    state = workdir / "connector"
    procs: list[ConnectorProcess] = []
    try:
        inside = start_connector(
            state,
            hub,
            openldap_config(slapd),
            env=krb_env,
            KERBEROS_KEYTAB=kdc.keytab,
            KERBEROS_REALMS=[kdc.realm],
            KERBEROS_SERVICE_PRINCIPAL="HTTP/localhost",
            WREPLY_ALLOWED=[ALLOWED_WREPLY],
            LOGIN_FAILURES_PER_USER=100000,
            LOGIN_FAILURES_PER_ADDRESS=100000,
        )
        procs.append(inside)
        outside_env = {
            **krb_env,
            "CLIENT_IP_RANGES": OUTSIDE_RANGE,
            "LOGIN_FAILURES_PER_ADDRESS": "3",
        }
        outside = launch(lambda: ConnectorProcess(state, workers=1, threads=4, env=outside_env))
        procs.append(outside)
        wait_agents(hub, outside)
    except BaseException:
        for proc in procs:
            proc.stop()
        hub.stop()
        raise
    site = Site(workdir, hub, inside, outside, slapd, kdc)
    site.pids = {p.pid: p.worker_pids() for p in site.processes()}
    site.secrets += [slapd.bind_pw, *slapd.users.values(), *kdc.users.values()]
    return site
