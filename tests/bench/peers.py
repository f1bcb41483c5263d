"""The peers the connector is compared with: Apache httpd with mod_authnz_ldap (Basic login
against the same slapd, LDAP caches off, nested-group requirement) and mod_auth_gssapi (a bare
Negotiate handshake, no sessions), both in one ``apache2`` started from a config file of our
own in a work directory, on loopback, stopped by its PID.

Debian packages: ``apache2 libapache2-mod-auth-gssapi`` (``apache2-utils`` is not needed).
Nothing under ``/etc/apache2`` is read or changed, and no systemd unit is started.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

from servers import _tail, _terminate, free_port

MODULES = Path("/usr/lib/apache2/modules")
LDAP_PATH = "/ldap/"
USER_FILTER = "(objectClass=inetOrgPerson)"
KRB_PATH = "/krb/"


def apache_binary() -> str | None:
    """The apache2 binary, when apache2 and both modules are installed."""
    found = shutil.which("apache2", path=os.environ.get("PATH", "") + ":/usr/sbin")
    needed = ("mod_mpm_event.so", "mod_ldap.so", "mod_authnz_ldap.so", "mod_auth_gssapi.so")
    if not found or not all((MODULES / m).exists() for m in needed):
        return None
    return found


class Apache:
    """One apache2 (mpm_event) serving ``/ldap/`` (Basic via LDAP) and ``/krb/`` (Negotiate).

    Args:
        workdir: where its config, logs, keytab copy and replay cache go.
        ldap_url: ``ldap://127.0.0.1:PORT`` of the slapd; StartTLS, verified with ``ca_file``.
        people_base, bind_dn, bind_pw: where users are and the service account.
        require_group: DN of the group a user must be in (through nesting, 5 levels at most).
        keytab, krb5_conf: the HTTP/ service keytab and the KDC's krb5.conf.
        own_root: the benchmark's work directory (made traversable for www-data, nothing
            above it is touched).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        ldap_url: str,
        ca_file: str,
        people_base: str,
        bind_dn: str,
        bind_pw: str,
        require_group: str,
        keytab: str,
        krb5_conf: str,
        own_root: Path,
    ) -> None:
        self.workdir = workdir
        self.own_root = own_root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ldap_url = ldap_url
        self.ca_file = ca_file
        self.people_base = people_base
        self.bind_dn = bind_dn
        self.bind_pw = bind_pw
        self.require_group = require_group
        self.keytab = keytab
        self.krb5_conf = krb5_conf
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "error.log"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def _write(self) -> Path:
        d = self.workdir
        for sub in ("docs/ldap", "docs/krb", "run", "rcache"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "docs/ldap/index.html").write_text("ok\n")
        (d / "docs/krb/index.html").write_text("ok\n")
        keytab = d / "http.keytab"
        shutil.copyfile(self.keytab, keytab)
        user = "www-data"
        try:
            ent = pwd.getpwnam(user)
        except KeyError:
            ent = None
        if ent is not None:  # the children run as www-data: they read the keytab and rcache
            for path in (keytab, d / "rcache", d / "run"):
                os.chown(path, ent.pw_uid, ent.pw_gid)
            keytab.chmod(0o600)
            # our own directories down to this one must be traversable (x) for www-data
            for parent in (d, *d.parents):
                if parent == self.own_root.parent:
                    break
                parent.chmod(parent.stat().st_mode | 0o011)
        conf = d / "httpd.conf"
        host, port = self.ldap_url.removeprefix("ldap://").split(":")
        conf.write_text(f"""\
ServerRoot "{d}"
ServerName 127.0.0.1
Listen 127.0.0.1:{self.port}
PidFile {d}/run/httpd.pid
DefaultRuntimeDir {d}/run
Mutex file:{d}/run default
ErrorLog {self.log}
LogLevel warn
{"User www-data" if ent else ""}
{"Group www-data" if ent else ""}
LoadModule mpm_event_module {MODULES}/mod_mpm_event.so
LoadModule authn_core_module {MODULES}/mod_authn_core.so
LoadModule authz_core_module {MODULES}/mod_authz_core.so
LoadModule authz_user_module {MODULES}/mod_authz_user.so
LoadModule auth_basic_module {MODULES}/mod_auth_basic.so
LoadModule dir_module {MODULES}/mod_dir.so
LoadModule ldap_module {MODULES}/mod_ldap.so
LoadModule authnz_ldap_module {MODULES}/mod_authnz_ldap.so
LoadModule auth_gssapi_module {MODULES}/mod_auth_gssapi.so
StartServers 2
ServerLimit 4
ThreadsPerChild 25
MaxRequestWorkers 100
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 15
DocumentRoot "{d}/docs"
DirectoryIndex index.html
LDAPTrustedGlobalCert CA_BASE64 {self.ca_file}
LDAPVerifyServerCert On
# LDAP caches off: every login goes to the directory, as the connector's do
LDAPCacheEntries 0
LDAPOpCacheEntries 0
<Location "{LDAP_PATH}">
    AuthType Basic
    AuthName "bench"
    AuthBasicProvider ldap
    AuthLDAPURL "ldap://{host}:{port}/{self.people_base}?uid?sub?{USER_FILTER}" STARTTLS
    AuthLDAPBindDN "{self.bind_dn}"
    AuthLDAPBindPassword "{self.bind_pw}"
    AuthLDAPGroupAttribute member
    AuthLDAPGroupAttributeIsDN on
    AuthLDAPMaxSubGroupDepth 5
    AuthLDAPSubGroupAttribute member
    AuthLDAPSubGroupClass groupOfNames
    Require ldap-group {self.require_group}
</Location>
<Location "{KRB_PATH}">
    AuthType GSSAPI
    AuthName "bench"
    GssapiCredStore keytab:{keytab}
    GssapiAllowedMech krb5
    GssapiUseSessions Off
    GssapiBasicAuth Off
    Require valid-user
</Location>
""")
        return conf

    def start(self, timeout: float = 20.0) -> Apache:
        binary = apache_binary()
        if binary is None:
            raise RuntimeError("apache2 with mod_authnz_ldap and mod_auth_gssapi is not installed")
        conf = self._write()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C",
            "KRB5_CONFIG": self.krb5_conf,
            "KRB5RCACHEDIR": str(self.workdir / "rcache"),
        }
        with open(self.workdir / "stdout.log", "ab") as out:
            self.proc = subprocess.Popen(
                [binary, "-f", str(conf), "-DFOREGROUND"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"apache2 exited {self.proc.returncode}:\n{_tail(self.workdir / 'stdout.log')}"
                    f"\n{_tail(self.log)}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"apache2 not listening after {timeout} s:\n{_tail(self.log)}")

    def stop(self) -> None:
        """SIGTERM to the parent we started (it stops its own children), SIGKILL after 5 s."""
        if self.proc is not None:
            _terminate(self.proc, timeout=8)
            self.proc = None
