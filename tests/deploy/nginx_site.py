"""The shipped nginx site (``deploy/nginx-connector.conf``) run by a real nginx for the tests.

Plain Python (no pytest), like ``tests/servers.py``::

    site = adapt_site(SITE_FILE.read_text(), https_port=..., http_port=..., upstream_port=...,
                      cert_file=..., key_file=...)
    nginx = Nginx(workdir, site, proxy_source="127.0.0.3").start()
    try:
        ...  # https://127.0.0.1:{nginx.https_port}/wsfed
    finally:
        nginx.stop()

:func:`adapt_site` changes only ports, listen addresses (loopback) and certificate paths, by
plain text substitution, and fails if any expected text is missing: a change to the shipped
file must show up here, never be silently tested around. :class:`Nginx` wraps the site in a
minimal ``nginx.conf`` (pid, logs and temp paths in the work directory; the site included in
the ``http`` block as Debian's ``sites-enabled`` is), runs ``nginx -g 'daemon off;'`` as a
child and stops exactly that PID. ``proxy_source`` adds ``proxy_bind`` to the wrapper, so
nginx reaches gunicorn from another loopback address than the test's clients.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from servers import _RUNNING, _descendants, _start_time, _tail, _terminate, find_binary

ROOT = Path(__file__).resolve().parents[2]
SITE_FILE = ROOT / "deploy" / "nginx-connector.conf"

#: what the shipped file says -> (what the test uses, how many times it must occur)
_CERT = "/etc/connector/tls/fullchain.pem"
_KEY = "/etc/connector/tls/privkey.pem"


def adapt_site(
    text: str,
    *,
    https_port: int,
    http_port: int,
    upstream_port: int,
    cert_file: str,
    key_file: str,
) -> str:
    """The shipped site with test ports, loopback listen addresses and test certificate paths.

    Raises:
        AssertionError: an expected line is missing or occurs an unexpected number of times,
            or a production port or path is left after the substitution.
    """
    changes = [
        ("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;", 1),
        ("listen [::]:443 ssl;", f"listen [::1]:{https_port} ssl;", 1),
        ("listen 80;", f"listen 127.0.0.1:{http_port};", 1),
        ("listen [::]:80;", f"listen [::1]:{http_port};", 1),
        ("server 127.0.0.1:4000;", f"server 127.0.0.1:{upstream_port};", 1),
        (_CERT, cert_file, 1),
        (_KEY, key_file, 1),
    ]
    for old, new, count in changes:
        found = text.count(old)
        assert found == count, f"{old!r} occurs {found} times in the site file, expected {count}"
        text = text.replace(old, new)
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert ":4000" not in code and "/etc/" not in code, "a production port or path is left"
    for address in re.findall(r"^\s*listen\s+(\S+)", code, re.MULTILINE):
        assert address.startswith(("127.0.0.1:", "[::1]:")), f"listen {address} not adapted"
    return text


def _wrapper(workdir: Path, proxy_source: str | None) -> str:
    user = ""
    if os.geteuid() == 0:  # as root, workers would run as nobody, who cannot enter workdir
        name = pwd.getpwuid(os.getuid()).pw_name
        user = f"user {name};"
    bind = f"proxy_bind {proxy_source};" if proxy_source else ""
    tmp = workdir / "tmp"
    return f"""\
{user}
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log info;
events {{
    worker_connections 256;
}}
http {{
    access_log {workdir}/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    {bind}
    include {workdir}/site.conf;
}}
"""


def _listening(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class Nginx:
    """nginx serving ``site`` (an adapted site file) from ``workdir`` (see module docstring)."""

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        site: str,
        *,
        https_port: int,
        proxy_source: str | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.site = site
        self.https_port = https_port
        self.proxy_source = proxy_source
        self.conf_file = self.workdir / "nginx.conf"
        self.error_log = self.workdir / "error.log"
        self.access_log = self.workdir / "access.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _command(self, *extra: str) -> list[str]:
        binary = find_binary("nginx", "nginx")
        return [
            binary, "-p", str(self.workdir), "-e", str(self.error_log),
            "-c", str(self.conf_file), *extra,
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> Nginx:
        """Write the files, check them with ``nginx -t``, start, wait for the HTTPS port.

        Raises:
            RuntimeError: nginx is missing, refuses the configuration, exits or does not
                listen in ``timeout`` seconds (with its error log).
        """
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        (self.workdir / "site.conf").write_text(self.site)
        self.conf_file.write_text(_wrapper(self.workdir, self.proxy_source))
        check = subprocess.run(self._command("-t"), capture_output=True, text=True, timeout=30)
        if check.returncode:
            raise RuntimeError(f"nginx -t refused the configuration:\n{check.stderr}")
        with open(self.workdir / "nginx.stdout", "wb") as out:
            self.proc = subprocess.Popen(
                self._command("-g", "daemon off;"),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        _RUNNING.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"nginx exited with {self.proc.returncode}:\n{_tail(self.error_log)}"
                )
            if _listening("127.0.0.1", self.https_port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx not listening after {timeout} s:\n{_tail(self.error_log)}")

    def stop(self) -> None:
        """SIGTERM exactly the master PID (it stops its workers), SIGKILL after 5 s; then
        SIGKILL any worker of that master still running (identified by PID and start time)."""
        if self.proc is not None and self.proc.poll() is None:
            workers = _descendants(self.proc.pid)
            _terminate(self.proc)
            for pid, started in workers:
                if _start_time(pid) == started:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        _RUNNING.discard(self)

    @property
    def pid(self) -> int | None:
        """The master's PID (None before start)."""
        return None if self.proc is None else self.proc.pid

    def errors(self) -> str:
        """nginx's error log so far."""
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""
