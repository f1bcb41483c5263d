"""Real directory servers for the test-suite: OpenLDAP ``slapd`` and a Samba AD DC.

Plain Python (no pytest): ``tests/conftest.py`` wraps these in fixtures.  Everything runs
inside a work directory given by the caller, on loopback only, as child processes whose PIDs
are recorded; ``stop()`` kills exactly those PIDs (never anything by name).

* :class:`Slapd` -- OpenLDAP 2.5 on ``127.0.0.1`` (LDAP + StartTLS, LDAPS, ldapi), memberof
  and ppolicy overlays, own CA, data loaded with ``ldapadd`` over ldapi (never ``slapadd``:
  it bypasses the overlays, so memberOf would be missing).
* :class:`SambaAD` -- Samba 4.17 AD DC in the host network namespace bound only to a
  loopback alias (default ``127.0.0.2``), own CA, users/groups/PSOs, an HTTP service
  account with exported AES keytab and a client ``krb5.conf``.

A missing binary raises ``RuntimeError`` -- the servers are a hard requirement, never a skip.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# sbin directories are not always on a CI user's PATH (slapd and samba live there)
_EXTRA_PATH = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def find_binary(name: str, package: str = "") -> str:
    """Absolute path of ``name`` (PATH plus sbin dirs) or a clear ``RuntimeError``."""
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(_EXTRA_PATH)
    found = shutil.which(name, path=path)
    if not found:
        hint = f" (Debian package: {package})" if package else ""
        raise RuntimeError(f"required binary {name!r} not found on PATH or in sbin{hint}")
    return found


_HANDED_OUT: set[int] = set()
_HANDING_OUT = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago and that this process has not
    handed out before. The kernel picks each ``bind(0)`` port at random among some 14,000,
    and a port asked for is bound only later (by the server it is for), so two calls before
    either is bound (a server's two listeners, a connector and its console) would otherwise
    get the same port about once in 14,000 pairs."""
    with _HANDING_OUT:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port


# --------------------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSFiles:
    ca_file: str
    cert_file: str
    key_file: str
    ca_key_file: str


def make_ca(
    dir: str | os.PathLike[str],
    ips: list[str] | tuple[str, ...] = ("127.0.0.1",),
    dns_names: list[str] | tuple[str, ...] = ("localhost",),
    cn: str = "localhost",
    ca_cn: str = "Test CA",
) -> TLSFiles:
    """Create ``ca.crt`` (self-signed CA) and ``server.crt``/``server.key`` with SANs in dir.

    EC P-256 keys: generating them takes milliseconds (RSA-2048 takes ~0.3 s each).
    Private keys are mode 0600 (Samba refuses anything else).
    """
    openssl = find_binary("openssl", "openssl")
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    key_opts = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    sans = [f"IP:{ip}" for ip in ips] + [f"DNS:{n}" for n in dns_names]
    (d / "ext.cnf").write_text(
        f"subjectAltName={','.join(sans)}\n"
        "extendedKeyUsage=serverAuth\n"
        "keyUsage=critical,digitalSignature,keyAgreement\n"
        "basicConstraints=critical,CA:FALSE\n"
    )
    cmds = [
        [
            openssl,
            "req",
            "-x509",
            *key_opts,
            "-days",
            "3",
            "-subj",
            f"/CN={ca_cn}",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        [
            openssl,
            "req",
            *key_opts,
            "-subj",
            f"/CN={cn}",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
        [
            openssl,
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "3",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ],
    ]
    for cmd in cmds:
        r = subprocess.run(cmd, cwd=d, capture_output=True, text=True, check=False)
        if r.returncode:
            raise RuntimeError(f"openssl failed ({' '.join(cmd[1:3])}): {r.stderr.strip()}")
    for key in ("ca.key", "server.key"):
        os.chmod(d / key, 0o600)
    return TLSFiles(
        str(d / "ca.crt"), str(d / "server.crt"), str(d / "server.key"), str(d / "ca.key")
    )


# --------------------------------------------------------------------------------------
# process helpers
# --------------------------------------------------------------------------------------

_RUNNING: weakref.WeakSet[Any] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:  # safety net if a fixture finaliser never ran
    for server in list(_RUNNING):
        with contextlib.suppress(Exception):
            server.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: identifies a process across PID reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _descendants(root: int) -> list[tuple[int, str]]:
    """(pid, start time) of every process below root, via /proc parent links."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    seen = {root}
    changed = True
    while changed:
        changed = False
        for pid, ppid in parent.items():
            if pid not in seen and ppid in seen:
                seen.add(pid)
                changed = True
    seen.discard(root)
    out = []
    for pid in seen:
        st = _start_time(pid)
        if st is not None:
            out.append((pid, st))
    return out


def _terminate(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM exactly proc.pid, wait, SIGKILL after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _ldap() -> Any:
    try:
        import ldap
    except ImportError as e:  # pragma: no cover - python-ldap is a hard dependency
        raise RuntimeError("python-ldap is required for the server fixtures") from e
    return ldap


def _tls_connect(uri: str, ca_file: str, starttls: bool | None = None, timeout: float = 5.0) -> Any:
    """python-ldap connection verifying the server against ca_file (DEMAND)."""
    ldap = _ldap()
    conn = ldap.initialize(uri)
    conn.protocol_version = 3
    conn.set_option(ldap.OPT_REFERRALS, 0)
    conn.set_option(ldap.OPT_NETWORK_TIMEOUT, timeout)
    conn.set_option(ldap.OPT_TIMEOUT, timeout)
    conn.set_option(ldap.OPT_X_TLS_CACERTFILE, ca_file)
    conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
    conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
    if starttls is None:
        starttls = uri.startswith("ldap://")
    if starttls:
        conn.start_tls_s()
    return conn


def _as_bytes_list(value: Any) -> list[bytes]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        value = [value]
    return [v if isinstance(v, bytes) else str(v).encode() for v in value]


# --------------------------------------------------------------------------------------
# LDIF writing (base64 for anything that is not plain safe ASCII, e.g. "jürgen")
# --------------------------------------------------------------------------------------


def _ldif_line(attr: str, value: str | bytes) -> str:
    raw = value if isinstance(value, bytes) else value.encode()
    safe = (
        raw.isascii()
        and b"\n" not in raw
        and b"\r" not in raw
        and b"\0" not in raw
        and not raw.startswith((b" ", b":", b"<"))
        and not raw.endswith(b" ")
    )
    if safe:
        return f"{attr}: {raw.decode()}"
    return f"{attr}:: {base64.b64encode(raw).decode()}"


def _ldif_record(dn: str, attrs: list[tuple[str, str | bytes]]) -> str:
    return "\n".join([_ldif_line("dn", dn), *(_ldif_line(a, v) for a, v in attrs)]) + "\n\n"


def ssha(password: str) -> str:
    """{SSHA} hash as slappasswd makes it (no slappasswd process per user)."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()  # noqa: S324 - LDAP {SSHA}
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


# --------------------------------------------------------------------------------------
# OpenLDAP
# --------------------------------------------------------------------------------------

SLAPD_BASE = "dc=example,dc=test"

#: uid -> (password, givenName, sn, policy cn or None, title)
SLAPD_PEOPLE: dict[str, tuple[str, str, str, str | None, str]] = {
    "alice": ("alicepw", "Alice", "Anderson", None, "Engineering Manager"),
    "bob": ("bobpw", "Bob", "Brown", None, "Accountant"),
    "carol": ("carolpw", "Carol", "Clark", None, "Developer"),
    "dave": ("davepw", "Dave", "Davis", None, "Core Developer"),
    "erin": ("erinpw", "Erin", "Evans", None, "Administrator"),
    "frank": ("frankpw", "Frank", "Fischer", None, "Contractor"),
    "locky": ("lockypw", "Locky", "Locked", None, "Lockout victim"),
    "expiry": ("expirypw", "Ex", "Piry", "short-expiry", "Expired password"),
    "mustchange": ("mustchangepw", "Must", "Change", "must-change", "Must change password"),
    "jürgen": ("jürgenpw", "Jürgen", "Müller", None, "Entwickler"),
    "paren": ("parenpw", "Paren", "Test", None, "DN escaping"),
}
#: the policy of the people tests add for the password change step (Slapd.add_person):
#: 30 days' maximum age with 3 grace sign-ins, at least 8 characters, 3 remembered
CHANGE_STEP_POLICY = "change-step"
CHANGE_STEP_MAX_AGE = 30 * 86400
#: name -> password of every user under ou=people
SLAPD_USERS: dict[str, str] = {uid: v[0] for uid, v in SLAPD_PEOPLE.items()}

PAREN_GROUP = "Paren (Group), Inc"
#: groups in creation order (innermost first, so memberof sees every member); a member
#: name is a uid if it is in SLAPD_USERS, else a group cn
SLAPD_GROUPS: list[tuple[str, list[str]]] = [
    ("team-core", ["dave"]),
    ("team-dev", ["carol", "team-core"]),
    ("staff", ["alice", "bob", "team-dev"]),
    ("everyone", ["staff"]),
    ("admins", ["erin"]),
    ("cycle-a", ["erin"]),
    ("cycle-b", ["cycle-a"]),
    (PAREN_GROUP, ["paren", "jürgen"]),
]
#: added after creation, closing the cycle cycle-a -> cycle-b -> cycle-a
SLAPD_GROUP_LATE_MEMBERS: list[tuple[str, str]] = [("cycle-a", "cycle-b")]

#: transitive group cns per user (nested groups flattened, cycle included)
SLAPD_EXPECTED_GROUPS: dict[str, set[str]] = {
    "alice": {"staff", "everyone"},
    "bob": {"staff", "everyone"},
    "carol": {"team-dev", "staff", "everyone"},
    "dave": {"team-core", "team-dev", "staff", "everyone"},
    "erin": {"admins", "cycle-a", "cycle-b"},
    "frank": set(),
    "locky": set(),
    "expiry": set(),
    "mustchange": set(),
    "jürgen": {PAREN_GROUP},
    "paren": {PAREN_GROUP},
}


def _dn_value(value: str) -> str:
    """Escape an RDN value (RFC 4514) without needing python-ldap at import time."""
    out = []
    for i, ch in enumerate(value):
        if ch in ',+"\\<>;=' or (ch == "#" and i == 0) or (ch == " " and i in (0, len(value) - 1)):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


class Slapd:
    """A throw-away OpenLDAP server in ``workdir`` (see module docstring)."""

    base = SLAPD_BASE
    admin_dn = f"cn=admin,{SLAPD_BASE}"
    admin_pw = "adminpw"
    bind_dn = f"cn=svc-proxy,ou=services,{SLAPD_BASE}"
    bind_pw = "svcpw"
    people_dn = f"ou=people,{SLAPD_BASE}"
    groups_dn = f"ou=groups,{SLAPD_BASE}"
    policies_dn = f"ou=policies,{SLAPD_BASE}"
    default_policy_dn = f"cn=default,ou=policies,{SLAPD_BASE}"
    expected_groups = SLAPD_EXPECTED_GROUPS

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        port: int | None = None,
        ldaps_port: int | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.port = port
        self.ldaps_port = ldaps_port if ldaps_port is not None else (port + 1 if port else None)
        self._fixed_ports = port is not None
        self.users: dict[str, str] = dict(SLAPD_USERS)
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.ca_file = str(self.workdir / "tls" / "ca.crt")
        self.log_file = self.workdir / "slapd.log"
        self.conf_file = self.workdir / "slapd.conf"
        self._ldapi_path = self.workdir / "ldapi"
        if len(str(self._ldapi_path)) > 100:  # sun_path is 108 bytes
            self._ldapi_path = Path(tempfile.mkdtemp(prefix="slapd-")) / "ldapi"
        self.start_seconds: float | None = None

    # ---- addresses ----------------------------------------------------------------
    @property
    def uri(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_uri(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def ldapi_uri(self) -> str:
        return "ldapi://" + str(self._ldapi_path).replace("/", "%2F")

    def user_dn(self, uid: str) -> str:
        return f"uid={_dn_value(uid)},{self.people_dn}"

    def group_dn(self, cn: str) -> str:
        return f"cn={_dn_value(cn)},{self.groups_dn}"

    def __repr__(self) -> str:
        return f"<Slapd {self.uri} pid={self.pid} dir={self.workdir}>"

    # ---- lifecycle ----------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def _loaded_marker(self) -> Path:
        return self.workdir / ".data-loaded"

    def start(self) -> Slapd:
        if self.running:
            return self
        t0 = time.monotonic()
        slapd = find_binary("slapd", "slapd")
        ldapadd = find_binary("ldapadd", "ldap-utils")
        first = not self._loaded_marker.exists()
        if first:
            (self.workdir / "db").mkdir(parents=True, exist_ok=True)
            make_ca(self.workdir / "tls", ["127.0.0.1"], ["localhost"], ca_cn="Test LDAP CA")
            self._write_conf()
        attempts = 1 if self._fixed_ports else 5
        for attempt in range(attempts):
            if self.port is None or (attempt and not self._fixed_ports):
                self.port, self.ldaps_port = free_port(), free_port()
            if self._spawn(slapd):
                self._fixed_ports = True  # kill()/stop() + start() keep these ports
                break
        else:
            raise RuntimeError(
                f"slapd did not start on ports {self.port}/{self.ldaps_port}:\n"
                f"{_tail(self.log_file)}\n{self._slaptest()}"
            )
        _RUNNING.add(self)
        if first:
            try:
                self._load_data(ldapadd)
            except BaseException:
                self.stop()
                raise
            self._loaded_marker.write_text("1\n")
        self.start_seconds = time.monotonic() - t0
        return self

    def _spawn(self, slapd: str) -> bool:
        with contextlib.suppress(FileNotFoundError):
            self._ldapi_path.unlink()
        urls = (
            f"ldap://127.0.0.1:{self.port}/ ldaps://127.0.0.1:{self.ldaps_port}/ {self.ldapi_uri}"
        )
        with open(self.log_file, "ab") as log:
            # "-d 0": foreground (any -d disables detaching); we own the PID, no pid file race
            self.proc = subprocess.Popen(
                [slapd, "-d", "0", "-f", str(self.conf_file), "-h", urls],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.pid = self.proc.pid
        (self.workdir / "slapd.pid").write_text(f"{self.pid}\n")
        ldap = _ldap()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc, self.pid = None, None
                return False
            try:
                for uri in (self.ldapi_uri, self.uri):
                    c = ldap.initialize(uri)
                    c.set_option(ldap.OPT_NETWORK_TIMEOUT, 1)
                    c.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["namingContexts"])
                    c.unbind_s()
                return True
            except ldap.LDAPError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"slapd not answering after 10 s:\n{_tail(self.log_file)}")

    def _slaptest(self) -> str:
        slaptest = shutil.which("slaptest", path=os.environ.get("PATH", "") + ":/usr/sbin")
        if not slaptest:
            return ""
        r = subprocess.run(
            [slaptest, "-u", "-f", str(self.conf_file)], capture_output=True, text=True, check=False
        )
        return r.stdout + r.stderr

    def stop(self) -> None:
        """SIGTERM exactly our PID (slapd flushes mdb), SIGKILL after 5 s."""
        if self.proc is not None:
            _terminate(self.proc)
        self.proc, self.pid = None, None
        _RUNNING.discard(self)

    def kill(self) -> None:
        """SIGKILL (crash simulation); mdb survives it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc, self.pid = None, None
        _RUNNING.discard(self)

    def restart(self) -> Slapd:
        """Stop and start again on the same ports with the same database (no reload)."""
        self.stop()
        self._fixed_ports = True
        return self.start()

    # ---- config and data ----------------------------------------------------------
    def _write_conf(self) -> None:
        d = self.workdir
        b = self.base
        self.conf_file.write_text(f"""\
include   /etc/ldap/schema/core.schema
include   /etc/ldap/schema/cosine.schema
include   /etc/ldap/schema/nis.schema
include   /etc/ldap/schema/inetorgperson.schema
pidfile   {d}/slapd.pid.internal
argsfile  {d}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
moduleload ppolicy
loglevel  none
sizelimit 5000
TLSCACertificateFile  {d}/tls/ca.crt
TLSCertificateFile    {d}/tls/server.crt
TLSCertificateKeyFile {d}/tls/server.key
TLSVerifyClient never

database  mdb
maxsize   104857600
suffix    "{b}"
rootdn    "{self.admin_dn}"
rootpw    {ssha(self.admin_pw)}
directory {d}/db
index     objectClass,uid,cn,mail,member,memberOf eq

# rootDSE and schema: anybody (clients discover controls / StartTLS there)
access to dn.base=""
  by * read
access to dn.base="cn=Subschema"
  by * read
# users may change their own password; nobody but rootdn reads it
access to attrs=userPassword
  by self write
  by anonymous auth
  by * none
# the service account (and any bound user) reads everything else
access to *
  by dn.exact="{self.bind_dn}" read
  by users read
  by * none

overlay   memberof
memberof-group-oc       groupOfNames
memberof-member-ad      member
memberof-memberof-ad    memberOf
memberof-refint         TRUE

overlay   ppolicy
ppolicy_default        "{self.default_policy_dn}"
ppolicy_use_lockout
ppolicy_hash_cleartext
""")

    def _data_ldif(self) -> str:
        b = self.base
        out = [
            _ldif_record(
                b,
                [
                    ("objectClass", "top"),
                    ("objectClass", "dcObject"),
                    ("objectClass", "organization"),
                    ("o", "Example Test"),
                    ("dc", "example"),
                ],
            ),
        ]
        for ou in ("people", "groups", "services", "policies"):
            out.append(
                _ldif_record(f"ou={ou},{b}", [("objectClass", "organizationalUnit"), ("ou", ou)])
            )
        policy_oc = [
            ("objectClass", "top"),
            ("objectClass", "device"),
            ("objectClass", "pwdPolicy"),
        ]
        out.append(
            _ldif_record(
                self.default_policy_dn,
                [
                    *policy_oc,
                    ("cn", "default"),
                    ("pwdAttribute", "userPassword"),
                    ("pwdLockout", "TRUE"),
                    ("pwdMaxFailure", "3"),
                    ("pwdLockoutDuration", "60"),
                    ("pwdFailureCountInterval", "300"),
                    ("pwdMaxAge", "0"),
                    ("pwdAllowUserChange", "TRUE"),
                    ("pwdMustChange", "FALSE"),
                ],
            )
        )
        out.append(
            _ldif_record(
                f"cn=must-change,{self.policies_dn}",
                [
                    *policy_oc,
                    ("cn", "must-change"),
                    ("pwdAttribute", "userPassword"),
                    ("pwdMustChange", "TRUE"),
                    ("pwdAllowUserChange", "TRUE"),
                    ("pwdMaxAge", "0"),
                    ("pwdLockout", "FALSE"),
                ],
            )
        )
        # expiry's pwdChangedTime is back-dated (Relax control) -> expired from the start
        out.append(
            _ldif_record(
                f"cn=short-expiry,{self.policies_dn}",
                [
                    *policy_oc,
                    ("cn", "short-expiry"),
                    ("pwdAttribute", "userPassword"),
                    ("pwdMaxAge", "60"),
                    ("pwdGraceAuthNLimit", "0"),
                    ("pwdExpireWarning", "0"),
                    ("pwdAllowUserChange", "TRUE"),
                    ("pwdLockout", "FALSE"),
                ],
            )
        )
        # the sign-in's password change step: people made per test with add_person()
        out.append(
            _ldif_record(
                f"cn={CHANGE_STEP_POLICY},{self.policies_dn}",
                [
                    *policy_oc,
                    ("cn", CHANGE_STEP_POLICY),
                    ("pwdAttribute", "userPassword"),
                    ("pwdMaxAge", str(CHANGE_STEP_MAX_AGE)),
                    ("pwdGraceAuthNLimit", "3"),
                    ("pwdMustChange", "TRUE"),
                    ("pwdAllowUserChange", "TRUE"),
                    ("pwdMinLength", "8"),
                    ("pwdInHistory", "3"),
                    ("pwdCheckQuality", "2"),
                    ("pwdLockout", "FALSE"),
                ],
            )
        )
        out.append(
            _ldif_record(
                self.bind_dn,
                [
                    ("objectClass", "applicationProcess"),
                    ("objectClass", "simpleSecurityObject"),
                    ("cn", "svc-proxy"),
                    ("description", "read-only service account"),
                    ("userPassword", ssha(self.bind_pw)),
                ],
            )
        )
        for n, (uid, (pw, gn, sn, policy, title)) in enumerate(SLAPD_PEOPLE.items()):
            ascii_uid = uid.replace("ü", "ue")
            cn = "Paren (Test), Jr" if uid == "paren" else f"{gn} {sn}"
            attrs: list[tuple[str, str | bytes]] = [
                ("objectClass", "inetOrgPerson"),
                ("objectClass", "posixAccount"),
                ("uid", uid),
                ("cn", cn),
                ("sn", sn),
                ("givenName", gn),
                ("displayName", cn),
                ("mail", f"{ascii_uid}@example.test"),
                ("telephoneNumber", f"+1 555 010{n:02d}"),
                ("title", title),
                ("description", f"test user {uid}"),
                ("uidNumber", str(10001 + n)),
                ("gidNumber", "10000"),
                ("homeDirectory", f"/home/{ascii_uid}"),
                ("loginShell", "/bin/bash"),
                ("userPassword", ssha(pw)),
            ]
            if policy:
                attrs.append(("pwdPolicySubentry", f"cn={policy},{self.policies_dn}"))
            if uid == "expiry":
                attrs.append(("pwdChangedTime", "20200101000000Z"))
            if uid == "mustchange":
                attrs.append(("pwdReset", "TRUE"))
            out.append(_ldif_record(self.user_dn(uid), attrs))

        def member_dn(name: str) -> str:
            return self.user_dn(name) if name in SLAPD_USERS else self.group_dn(name)

        for cn, members in SLAPD_GROUPS:
            out.append(
                _ldif_record(
                    self.group_dn(cn),
                    [
                        ("objectClass", "groupOfNames"),
                        ("cn", cn),
                        ("description", f"test group {cn}"),
                        *(("member", member_dn(m)) for m in members),
                    ],
                )
            )
        for cn, member in SLAPD_GROUP_LATE_MEMBERS:
            out.append(
                _ldif_line("dn", self.group_dn(cn))
                + "\nchangetype: modify\nadd: member\n"
                + _ldif_line("member", member_dn(member))
                + "\n-\n\n"
            )
        return "".join(out)

    def _load_data(self, ldapadd: str) -> None:
        ldif = self.workdir / "data.ldif"
        ldif.write_text(self._data_ldif())
        # -e relax: lets rootdn set the NO-USER-MODIFICATION pwdChangedTime of "expiry"
        r = subprocess.run(
            [
                ldapadd,
                "-e",
                "relax",
                "-x",
                "-H",
                self.ldapi_uri,
                "-D",
                self.admin_dn,
                "-w",
                self.admin_pw,
                "-f",
                str(ldif),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if r.returncode:
            raise RuntimeError(
                f"ldapadd of test data failed (rc {r.returncode}):\n"
                f"{r.stderr.strip()}\n{r.stdout[-2000:]}"
            )

    # ---- client helpers -----------------------------------------------------------
    def connect(
        self,
        bind_dn: str | None = None,
        password: str | None = None,
        *,
        uri: str | None = None,
        starttls: bool | None = None,
        serverctrls: list[Any] | None = None,
    ) -> Any:
        """python-ldap connection to ``uri`` (default: StartTLS on self.uri), bound if asked."""
        conn = _tls_connect(uri or self.uri, self.ca_file, starttls)
        if bind_dn is not None:
            conn.simple_bind_s(bind_dn, password or "", serverctrls=serverctrls)
        return conn

    def admin(self) -> Any:
        """Connection bound as rootdn over ldapi (bypasses ACLs and ppolicy)."""
        ldap = _ldap()
        conn = ldap.initialize(self.ldapi_uri)
        conn.simple_bind_s(self.admin_dn, self.admin_pw)
        return conn

    def _ctrls(self, relax: bool) -> list[Any] | None:
        if not relax:
            return None
        from ldap.controls import RequestControl

        return [RequestControl("1.3.6.1.4.1.4203.666.5.12", True)]  # Relax Rules

    def modify(self, dn: str, mods: list[tuple[int, str, Any]], *, relax: bool = False) -> None:
        """python-ldap modlist [(ldap.MOD_*, attr, str|bytes|list|None)] as rootdn."""
        mods_b = [(op, attr, _as_bytes_list(v) or None) for op, attr, v in mods]
        conn = self.admin()
        try:
            conn.modify_ext_s(dn, mods_b, serverctrls=self._ctrls(relax))
        finally:
            conn.unbind_s()

    def add(self, dn: str, attrs: dict[str, Any], *, relax: bool = False) -> None:
        conn = self.admin()
        try:
            conn.add_ext_s(
                dn,
                [(k, _as_bytes_list(v)) for k, v in attrs.items()],
                serverctrls=self._ctrls(relax),
            )
        finally:
            conn.unbind_s()

    def add_person(
        self,
        uid: str,
        password: str,
        *,
        policy: str | None = CHANGE_STEP_POLICY,
        changed: str | None = None,
        reset: bool = False,
    ) -> str:
        """Add a person of a test's own under ou=people (not in any group); their DN.

        ``changed``: a back-dated ``pwdChangedTime`` (GeneralizedTime); ``reset``: must change.
        """
        dn = self.user_dn(uid)
        attrs: dict[str, Any] = {
            "objectClass": [b"inetOrgPerson"],
            "uid": [uid.encode()],
            "cn": [uid.encode()],
            "sn": [uid.encode()],
            "mail": [f"{uid}@example.test".encode()],
            "userPassword": [password.encode()],
        }
        if policy:
            attrs["pwdPolicySubentry"] = [f"cn={policy},{self.policies_dn}".encode()]
        if changed:
            attrs["pwdChangedTime"] = [changed.encode()]
        if reset:
            attrs["pwdReset"] = [b"TRUE"]
        self.add(dn, attrs, relax=True)
        return dn

    def delete(self, dn: str) -> None:
        conn = self.admin()
        try:
            conn.delete_s(dn)
        finally:
            conn.unbind_s()

    def unlock(self, uid: str) -> None:
        """Clear ppolicy lockout state (pwdAccountLockedTime / pwdFailureTime) of a user."""
        ldap = _ldap()
        conn = self.admin()
        try:
            dn = self.user_dn(uid)
            got = conn.search_s(
                dn, ldap.SCOPE_BASE, "(objectClass=*)", ["pwdAccountLockedTime", "pwdFailureTime"]
            )[0][1]
            mods = [(ldap.MOD_DELETE, a, None) for a in got]
            if mods:
                conn.modify_ext_s(dn, mods, serverctrls=self._ctrls(True))
        finally:
            conn.unbind_s()

    def unlock_all(self) -> None:
        """Clear every user's ppolicy failure counts and lockouts (between tests)."""
        ldap = _ldap()
        conn = self.admin()
        try:
            found = conn.search_s(
                self.people_dn,
                ldap.SCOPE_ONELEVEL,
                "(|(pwdFailureTime=*)(pwdAccountLockedTime=*))",
                ["pwdAccountLockedTime", "pwdFailureTime"],
            )
            for dn, attrs in found:
                mods = [(ldap.MOD_DELETE, a, None) for a in attrs]
                if mods:
                    conn.modify_ext_s(dn, mods, serverctrls=self._ctrls(True))
        finally:
            conn.unbind_s()


class MonitoredSlapd(Slapd):
    """The test slapd plus ``cn=Monitor`` (readable by anyone), for operation counts."""

    def _write_conf(self) -> None:
        super()._write_conf()
        with open(self.conf_file, "a") as conf:
            conf.write('\ndatabase monitor\naccess to dn.subtree="cn=Monitor"\n  by * read\n')


def ldap_ops(conn: Any) -> dict[str, int]:
    """Completed operations by kind (Bind, Search, Compare, Extended, ...) from cn=Monitor."""
    ldap = _ldap()
    found = conn.search_s(
        "cn=Operations,cn=Monitor",
        ldap.SCOPE_ONELEVEL,
        "(objectClass=*)",
        ["monitorOpCompleted"],
    )
    out: dict[str, int] = {}
    for dn, attrs in found:
        name = dn.split(",", 1)[0].split("=", 1)[1]
        out[name] = int(attrs["monitorOpCompleted"][0])
    return out


# --------------------------------------------------------------------------------------
# Samba AD DC
# --------------------------------------------------------------------------------------

AD_REALM = "AD.EXAMPLE.TEST"
AD_DOMAIN = "ADEX"
AD_BASE = "DC=ad,DC=example,DC=test"
AD_ADMIN_PW = "Adm1n-Passw0rd!"

#: sAMAccountName -> (password, givenName, surname); users with a given name get
#: CN "<given> <surname>" (e.g. CN=Alice Anderson,CN=Users,...), the others CN=<name>
AD_PEOPLE: dict[str, tuple[str, str | None, str | None]] = {
    "alice": ("Alice-Passw0rd!", "Alice", "Anderson"),
    "bob": ("Bob-Passw0rd!", "Bob", "Brown"),
    "carol": ("Carol-Passw0rd!", "Carol", "Clark"),
    "dave": ("Dave-Passw0rd!", "Dave", "Davis"),
    "disabled1": ("Disabled-Passw0rd!", None, None),
    "mustchange1": ("Mustchange-Passw0rd!", None, None),
    "expired1": ("Expired-Passw0rd!", None, None),
    "acctexp1": ("Acctexp-Passw0rd!", None, None),
    "locked1": ("Locked-Passw0rd!", None, None),
    "svc-proxy": ("Svc-Proxy-Passw0rd!", None, None),
    "httpsvc": ("Httpsvc-Passw0rd!1", None, None),
}
AD_USERS: dict[str, str] = {sam: v[0] for sam, v in AD_PEOPLE.items()}

#: creation order (innermost first); then Cycle-B is added to Cycle-A (a group cycle)
AD_GROUPS: list[tuple[str, list[str]]] = [
    ("Team-Core", ["dave"]),
    ("Team-Dev", ["carol", "Team-Core"]),
    ("Staff", ["alice", "bob", "Team-Dev"]),
    ("Everyone", ["Staff"]),
    ("Cycle-A", ["bob"]),
    ("Cycle-B", ["Cycle-A"]),
]
AD_GROUP_LATE_MEMBERS: list[tuple[str, str]] = [("Cycle-A", "Cycle-B")]

#: transitive groups per user as returned by the 1.2.840.113556.1.4.1941 in-chain rule
#: (the primary group "Domain Users" is NOT returned by it)
AD_EXPECTED_GROUPS: dict[str, set[str]] = {
    "alice": {"Staff", "Everyone"},
    "bob": {"Staff", "Everyone", "Cycle-A", "Cycle-B"},
    "carol": {"Team-Dev", "Staff", "Everyone"},
    "dave": {"Team-Core", "Team-Dev", "Staff", "Everyone"},
}

#: people of the password change step's tests only (their passwords get changed):
#: sam -> (password, must change, PSO maximum age in days or 0, pwdLastSet days ago or 0);
#: each PSO: at least 8 characters, complexity, 3 remembered
AD_STEP_PEOPLE: dict[str, tuple[str, bool, int, int]] = {
    "stepmust1": ("Stepmust-Passw0rd!", True, 0, 0),
    "stepexp1": ("Stepexp-Passw0rd!", False, 2, 3),
    "stepexp2": ("Stepexp2-Passw0rd!", False, 2, 3),
    "stepsoon1": ("Stepsoon-Passw0rd!", False, 10, 5),
    "stephub1": ("Stephub-Passw0rd!", True, 0, 0),
    "stephub2": ("Stephub2-Passw0rd!", False, 2, 3),
    "stepreplay1": ("Stepreplay-Passw0rd!", True, 0, 0),
}
AD_STEP_GROUP = "PwStep"

# ports Samba binds with "server services = ldap cldap kdc dns" (its internal DNS on 53:
# the zone ad.example.test with the DC's SRV records, for DC discovery tests)
_AD_TCP_PORTS = (53, 88, 389, 464, 636, 3268, 3269)
_AD_UDP_PORTS = (53, 88, 389, 464)

# Runs under the Debian /usr/bin/python3 (the one with the samba module).  Provision AND
# all samba-tool sub-commands in ONE interpreter: samba-tool is a thin wrapper around
# samba.netcmd.main.cmd_sambatool, and ~0.5-1 s of interpreter + import per invocation
# was most of the start-up time.
_AD_SETUP = r"""
import json, shlex, sys, time
import ldb
from samba import dsdb
from samba.netcmd.main import cmd_sambatool
from samba.samdb import SamDB
from samba.param import LoadParm
from samba.auth import system_session

cfg = json.load(open(sys.argv[1]))
DIR, ADDR, BASE, SMBCONF = cfg["dir"], cfg["addr"], cfg["base"], cfg["smbconf"]
T0 = time.time()

def st(*args, conf=SMBCONF):
    print("+ samba-tool", shlex.join(args), "(%.2fs)" % (time.time() - T0), flush=True)
    cmd = cmd_sambatool()
    try:
        rv = cmd._run("samba-tool", *args, "-s", conf)
    except SystemExit as e:
        rv = e.code
    except Exception as e:            # CommandError etc.
        cmd.show_command_error(e)
        rv = 1
    if rv not in (None, 0):
        sys.exit("FAILED: samba-tool %s (rc %r)" % (shlex.join(args), rv))

# ---- provision (-s empty.conf: the system smb.conf must not leak in) ----
st("domain", "provision", "--targetdir=" + DIR + "/dc", "--realm=" + cfg["realm"],
   "--domain=" + cfg["domain"], "--server-role=dc", "--dns-backend=SAMBA_INTERNAL",
   "--use-rfc2307",
   "--adminpass=" + cfg["admin_pw"], "--host-name=dc1", "--host-ip=" + ADDR,
   "--option=pid directory=" + DIR + "/dc/run",
   "--option=server services=ldap cldap kdc dns",
   "--option=interfaces=" + ADDR + "/8", "--option=bind interfaces only=yes",
   "--option=log level=1",
   "--option=tls keyfile=" + cfg["tls_key"], "--option=tls certfile=" + cfg["tls_cert"],
   "--option=tls cafile=" + cfg["tls_ca"],
   conf=DIR + "/empty.conf")
# provision silently drops this --option: add it by hand (0 = old password dies at once)
text = open(SMBCONF).read()
text = text.replace("[global]\n", "[global]\n\told password allowed period = 0\n", 1)
open(SMBCONF, "w").write(text)
for needle in ("interfaces = %s/8\n" % ADDR, "bind interfaces only = Yes\n"):
    if needle.lower() not in text.lower():
        sys.exit("provision did not keep %r:\n%s" % (needle, text))

# ---- users / groups / policies: straight into sam.ldb, one SamDB, one transaction ----
# (samba-tool re-opens sam.ldb for every sub-command: ~0.15 s each, 30+ of them)
lp = LoadParm(); lp.load(SMBCONF)
db = SamDB(url=lp.private_path("sam.ldb"), session_info=system_session(), lp=lp)
DAY = 864000000000                                       # 100-ns ticks
def dn_of(sam):
    return db.search(db.domain_dn(), expression="(sAMAccountName=%s)" % sam, attrs=[])[0].dn
def replace(dn, attr, value, controls=None):
    m = ldb.Message(ldb.Dn(db, str(dn)))
    m[attr] = ldb.MessageElement(value, ldb.FLAG_MOD_REPLACE, attr)
    db.modify(m, controls=controls or [])
def add_values(dn, attr, values):
    m = ldb.Message(ldb.Dn(db, str(dn)))
    m[attr] = ldb.MessageElement(values, ldb.FLAG_MOD_ADD, attr)
    db.modify(m)
print("+ data (%.2fs)" % (time.time() - T0), flush=True)
db.transaction_start()
try:
    for sam, (pw, gn, sn) in cfg["people"].items():
        kw = {}
        if gn:
            kw = dict(givenname=gn, surname=sn, mailaddress="%s@ad.example.test" % sam,
                      telephonenumber="+1 555 02%02d" % len(sam), jobtitle="Tester",
                      description="test user " + sam)
        elif sam == "httpsvc":
            kw = dict(description="HTTP service account")
        elif sam == "svc-proxy":
            kw = dict(description="read-only LDAP service account")
        db.newuser(sam, pw, force_password_change_at_next_login_req=(sam == "mustchange1"),
                   **kw)
    db.disable_account("(sAMAccountName=disabled1)")
    for name, members in cfg["groups"]:
        db.newgroup(name, description="test group " + name)
        db.add_remove_group_members(name, members, add_members_operation=True)
    for name, member in cfg["late_members"]:
        db.add_remove_group_members(name, [member], add_members_operation=True)
    # a fresh password must be changeable at once ("0000052D too young" otherwise)
    replace(db.domain_dn(), "minPwdAge", "0")
    # PSOs: lockout only for locked1 (a domain-wide threshold would lock other users in
    # wrong-password tests); expired1 -> "data 532" needs max age > 1 day (Samba treats
    # <= 1 day as "never") AND a pwdLastSet older than that (back-dated below)
    psos = "CN=Password Settings Container,CN=System," + BASE
    for name, prec, max_age, threshold, target in [
            ("lockout3", "2", 42 * DAY, "3", "locked1"),
            ("short-expiry", "1", 2 * DAY, "0", "expired1")]:
        db.add({
            "dn": "CN=%s,%s" % (name, psos), "objectClass": "msDS-PasswordSettings",
            "msDS-PasswordSettingsPrecedence": prec,
            "msDS-PasswordReversibleEncryptionEnabled": "FALSE",
            "msDS-PasswordHistoryLength": "0",
            "msDS-MinimumPasswordLength": "7",
            "msDS-PasswordComplexityEnabled": "TRUE",
            "msDS-MinimumPasswordAge": "0",
            "msDS-MaximumPasswordAge": str(-max_age),
            "msDS-LockoutThreshold": threshold,
            "msDS-LockoutObservationWindow": str(-600000000),     # 1 min
            "msDS-LockoutDuration": str(-600000000),              # 1 min
            "msDS-PSOAppliesTo": str(dn_of(target)),
        })
    # the sign-in's password change step: people of its own tests (passwords get changed)
    for sam, (pw, must, age_days, set_days_ago) in cfg["step_people"].items():
        db.newuser(sam, pw, force_password_change_at_next_login_req=must)
        if age_days:
            db.add({
                "dn": "CN=step-%s,%s" % (sam, psos), "objectClass": "msDS-PasswordSettings",
                "msDS-PasswordSettingsPrecedence": "3",
                "msDS-PasswordReversibleEncryptionEnabled": "FALSE",
                "msDS-PasswordHistoryLength": "3",
                "msDS-MinimumPasswordLength": "8",
                "msDS-PasswordComplexityEnabled": "TRUE",
                "msDS-MinimumPasswordAge": "0",
                "msDS-MaximumPasswordAge": str(-age_days * DAY),
                "msDS-LockoutThreshold": "0",
                "msDS-LockoutObservationWindow": str(-600000000),
                "msDS-LockoutDuration": str(-600000000),
                "msDS-PSOAppliesTo": str(dn_of(sam)),
            })
    db.newgroup(cfg["step_group"], description="password change step tests")
    db.add_remove_group_members(cfg["step_group"], list(cfg["step_people"]),
                                add_members_operation=True)
    db.setexpiry("(sAMAccountName=acctexp1)", 0)          # accountExpires=now -> "data 701"
    # LDAP only accepts pwdLastSet 0/-1 -> back-date it here, bypassing password_hash
    nt_now = int((time.time() + 11644473600) * 10**7)    # 100-ns ticks since 1601
    replace(dn_of("expired1"), "pwdLastSet", str(nt_now - 3 * DAY),
            ["local_oid:%s:0" % dsdb.DSDB_CONTROL_BYPASS_PASSWORD_HASH_OID])
    for sam, (_, must, age_days, set_days_ago) in cfg["step_people"].items():
        if set_days_ago:
            replace(dn_of(sam), "pwdLastSet", str(nt_now - set_days_ago * DAY),
                    ["local_oid:%s:0" % dsdb.DSDB_CONTROL_BYPASS_PASSWORD_HASH_OID])
    # without msDS-SupportedEncryptionTypes: RC4-only tickets and an RC4-only keytab
    replace(dn_of("httpsvc"), "msDS-SupportedEncryptionTypes", "24")
    add_values(dn_of("httpsvc"), "servicePrincipalName", ["HTTP/localhost"])
    add_values(dn_of("DC1$"), "servicePrincipalName", ["ldap/" + ADDR])  # GSSAPI binds
    db.transaction_commit()
except BaseException:
    db.transaction_cancel()
    raise
# the acceptor accepts a ticket for ANY key in its keytab: only HTTP/localhost in it
st("domain", "exportkeytab", cfg["keytab"], "--principal=HTTP/localhost")
print("setup done (%.2fs)" % (time.time() - T0), flush=True)
"""


def _samba_python() -> str:
    """The interpreter that has the ``samba`` module (Debian's, not a pyenv one)."""
    candidates = [os.environ.get("SAMBA_PYTHON", ""), "/usr/bin/python3"]
    for py in filter(None, candidates):
        if os.path.exists(py):
            r = subprocess.run(
                [py, "-c", "import samba.netcmd.main"], capture_output=True, check=False
            )
            if r.returncode == 0:
                return py
    raise RuntimeError(
        "no python3 with the samba module found (tried /usr/bin/python3; "
        "Debian packages samba, python3-samba) -- set SAMBA_PYTHON"
    )


def _port_free(addr: str, port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:  # like samba: TIME_WAIT leftovers must not count
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((addr, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _ad_ports_free(addr: str) -> bool:
    return all(_port_free(addr, p, socket.SOCK_STREAM) for p in _AD_TCP_PORTS) and all(
        _port_free(addr, p, socket.SOCK_DGRAM) for p in _AD_UDP_PORTS
    )


def _proc_net_sockets() -> dict[int, tuple[str, str, int, str]]:
    """inode -> (proto, local ip, port, tcp state) from /proc/net/{tcp,udp}[6]."""
    out: dict[int, tuple[str, str, int, str]] = {}
    for proto in ("tcp", "udp", "tcp6", "udp6"):
        try:
            lines = Path(f"/proc/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            ip_hex, port_hex = f[1].split(":")
            if len(ip_hex) == 8:
                ip = socket.inet_ntop(socket.AF_INET, bytes.fromhex(ip_hex)[::-1])
            else:
                raw = bytes.fromhex(ip_hex)
                ip = socket.inet_ntop(
                    socket.AF_INET6, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                )
            out[int(f[9])] = (proto, ip, int(port_hex, 16), f[3])
    return out


def _process_sockets(pids: list[int]) -> set[tuple[str, str, int]]:
    inodes: set[int] = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    table = _proc_net_sockets()
    out = set()
    for inode in inodes:
        if inode in table:
            proto, ip, port, state = table[inode]
            if proto.startswith("udp") or state == "0A":  # 0A = LISTEN
                out.add((proto.rstrip("6"), ip, port))
    return out


class SambaAD:
    """A throw-away Samba AD DC bound only to a loopback alias (see module docstring)."""

    realm = AD_REALM
    domain = AD_DOMAIN
    base = AD_BASE
    admin_dn = f"CN=Administrator,CN=Users,{AD_BASE}"
    admin_pw = AD_ADMIN_PW
    bind_dn = f"CN=svc-proxy,CN=Users,{AD_BASE}"
    bind_pw = AD_USERS["svc-proxy"]
    upn_suffix = "ad.example.test"
    http_spn = "HTTP/localhost"
    expected_groups = AD_EXPECTED_GROUPS

    def __init__(self, workdir: str | os.PathLike[str], addr: str | None = None) -> None:
        self.workdir = Path(workdir).resolve()
        self.addr: str | None = addr or os.environ.get("AD_TEST_ADDR") or None
        self._fixed_addr = self.addr is not None
        self.users: dict[str, str] = dict(AD_USERS)
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self._lock_fd: int | None = None
        self.ca_file = str(self.workdir / "tls" / "ca.crt")
        self.krb5_conf = str(self.workdir / "krb5.conf")
        self.keytab = str(self.workdir / "ad-http.keytab")
        self.ccache = "FILE:" + str(self.workdir / "ccache")
        self.smb_conf = str(self.workdir / "dc" / "etc" / "smb.conf")
        self.log_file = self.workdir / "samba.log"
        self.timings: dict[str, float] = {}

    @property
    def uri(self) -> str:
        return f"ldap://{self.addr}"

    @property
    def ldaps_uri(self) -> str:
        return f"ldaps://{self.addr}"

    @property
    def gc_uri(self) -> str:
        return f"ldap://{self.addr}:3268"

    def upn(self, sam: str) -> str:
        return f"{sam}@{self.upn_suffix}"

    def __repr__(self) -> str:
        return f"<SambaAD {self.uri} pid={self.pid} dir={self.workdir}>"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def env(self) -> dict[str, str]:
        """Kerberos client environment for subprocesses (kinit, curl, ...)."""
        return {
            "KRB5_CONFIG": self.krb5_conf,
            "KRB5CCNAME": self.ccache,
            "KRB5RCACHEDIR": str(self.workdir),
        }

    # ---- address selection --------------------------------------------------------
    def _claim(self, addr: str) -> bool:
        """Per-address lock (held for this object's lifetime) + nothing listening there."""
        lock = os.path.join(tempfile.gettempdir(), f".test-samba-ad-{addr}.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        if not _ad_ports_free(addr):
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def _pick_addr(self) -> None:
        if self._lock_fd is not None:
            return
        if self._fixed_addr:
            assert self.addr is not None
            if not self._claim(self.addr):
                raise RuntimeError(
                    f"{self.addr}: another test DC holds it or something "
                    f"listens on one of {_AD_TCP_PORTS} there"
                )
            return
        for last in range(2, 40):
            if self._claim(f"127.0.0.{last}"):
                self.addr = f"127.0.0.{last}"
                return
        raise RuntimeError("no free loopback alias 127.0.0.2-39 for the Samba AD DC")

    # ---- lifecycle ----------------------------------------------------------------
    def start(self) -> SambaAD:
        if self.running:
            return self
        if os.geteuid() != 0:
            raise RuntimeError("the Samba AD DC fixture needs root (ports 88/389/636)")
        t0 = time.monotonic()
        samba = find_binary("samba", "samba-ad-dc")
        find_binary("samba-tool", "samba-ad-dc")
        if not Path("/usr/share/samba/setup/ad-schema").is_dir():
            raise RuntimeError(
                "Samba AD provisioning data missing: /usr/share/samba/setup "
                "(Debian package: samba-ad-provision)"
            )
        first = not (self.workdir / ".provisioned").exists()
        self._pick_addr()
        assert self.addr is not None
        if first:
            self._provision()
            (self.workdir / ".provisioned").write_text(self.addr + "\n")
        else:
            deadline = time.monotonic() + 10  # workers of a previous run may still exit
            while not _ad_ports_free(self.addr):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ports on {self.addr} still busy; cannot restart")
                time.sleep(0.1)
        t1 = time.monotonic()
        with open(self.log_file, "ab") as log:
            # -i: foreground, logs to stdout; --no-process-group: killable by its own PID
            self.proc = subprocess.Popen(
                [samba, "-s", self.smb_conf, "-i", "--no-process-group"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.pid = self.proc.pid
        (self.workdir / "samba.pid").write_text(f"{self.pid}\n")
        _RUNNING.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.timings["samba_up"] = time.monotonic() - t1
        self.timings["start_total"] = time.monotonic() - t0
        return self

    def _provision(self) -> None:
        import json

        d = self.workdir
        d.mkdir(parents=True, exist_ok=True)
        t = time.monotonic()
        tls = make_ca(
            d / "tls",
            [self.addr or "", "127.0.0.1"],
            ["dc1.ad.example.test", "localhost"],
            cn="dc1.ad.example.test",
            ca_cn="Test AD CA",
        )
        self.timings["tls"] = time.monotonic() - t
        (d / "empty.conf").write_text("")
        (d / "dc" / "run").mkdir(parents=True, exist_ok=True)
        (d / "krb5.conf").write_text(self._krb5_conf_text())
        cfg = {
            "dir": str(d),
            "addr": self.addr,
            "base": self.base,
            "smbconf": self.smb_conf,
            "realm": self.realm,
            "domain": self.domain,
            "admin_pw": self.admin_pw,
            "tls_key": tls.key_file,
            "tls_cert": tls.cert_file,
            "tls_ca": tls.ca_file,
            "people": AD_PEOPLE,
            "groups": AD_GROUPS,
            "late_members": AD_GROUP_LATE_MEMBERS,
            "step_people": AD_STEP_PEOPLE,
            "step_group": AD_STEP_GROUP,
            "keytab": self.keytab,
        }
        (d / "setup.json").write_text(json.dumps(cfg))
        (d / "setup.py").write_text(_AD_SETUP)
        t = time.monotonic()
        with open(d / "setup.log", "wb") as log:
            r = subprocess.run(
                [_samba_python(), str(d / "setup.py"), str(d / "setup.json")],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        self.timings["provision_and_data"] = time.monotonic() - t
        if r.returncode:
            raise RuntimeError(
                f"Samba provision/setup failed (rc {r.returncode}):\n{_tail(d / 'setup.log', 40)}"
            )

    def _krb5_conf_text(self) -> str:
        # rdns / dns_canonicalize_hostname = false: "localhost" must stay "localhost"
        return f"""\
[libdefaults]
    default_realm = {self.realm}
    dns_lookup_realm = false
    dns_lookup_kdc = false
    rdns = false
    dns_canonicalize_hostname = false
    default_ccache_name = {self.ccache}
    udp_preference_limit = 1
[realms]
    {self.realm} = {{
        kdc = {self.addr}:88
        kpasswd_server = {self.addr}:464
        admin_server = {self.addr}
    }}
[domain_realm]
    localhost = {self.realm}
    .localhost = {self.realm}
    .ad.example.test = {self.realm}
    ad.example.test = {self.realm}
"""

    def _wait_ready(self) -> None:
        """Our own DC answers LDAPS with OUR CA, KDC answers, all sockets on addr only."""
        ldap = _ldap()
        assert self.proc is not None and self.addr is not None
        kinit = shutil.which("kinit")
        deadline = time.monotonic() + 60
        ldap_ok = kdc_ok = False
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"samba exited (rc {self.proc.returncode}):\n{_tail(self.log_file)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"samba not ready after 60 s:\n{_tail(self.log_file)}")
            if not ldap_ok:
                try:
                    # verifying against our own fresh CA proves it is OUR server answering
                    c = _tls_connect(self.ldaps_uri, self.ca_file, timeout=2)
                    c.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["defaultNamingContext"])
                    c.unbind_s()
                    ldap_ok = True
                except ldap.LDAPError:
                    time.sleep(0.1)
                    continue
            if not kdc_ok:
                if kinit is None:
                    kdc_ok = True
                else:
                    probe = self.workdir / "probe.cc"
                    env = {
                        **os.environ,
                        "KRB5_CONFIG": self.krb5_conf,
                        "KRB5CCNAME": f"FILE:{probe}",
                    }
                    r = subprocess.run(
                        [kinit, "administrator"],
                        input=self.admin_pw + "\n",
                        env=env,
                        capture_output=True,
                        text=True,
                        check=False,
                        timeout=10,
                    )
                    with contextlib.suppress(FileNotFoundError):
                        probe.unlink()
                    if r.returncode:
                        time.sleep(0.1)
                        continue
                    kdc_ok = True
            socks = _process_sockets([self.proc.pid] + [p for p, _ in _descendants(self.proc.pid)])
            want = {("tcp", self.addr, p) for p in _AD_TCP_PORTS} | {
                ("udp", self.addr, p) for p in _AD_UDP_PORTS
            }
            outside = {
                s for s in socks if s[1] != self.addr and s[2] in _AD_TCP_PORTS + _AD_UDP_PORTS
            }
            if outside:
                raise RuntimeError(f"samba listens outside {self.addr}: {sorted(outside)}")
            if want <= socks:
                return
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM exactly the root PID; SIGKILL it after 5 s; then SIGKILL recorded
        descendants that are still there 3 s later (same PID *and* start time)."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            tree = _descendants(proc.pid)
            _terminate(proc)
            deadline = time.monotonic() + 3
            left = tree
            while left and time.monotonic() < deadline:
                left = [(p, st) for p, st in left if _start_time(p) == st]
                if left:
                    time.sleep(0.05)
            for p, st in left:
                if _start_time(p) == st:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, signal.SIGKILL)
        self.proc, self.pid = None, None
        _RUNNING.discard(self)

    def restart(self) -> SambaAD:
        self.stop()
        return self.start()

    # ---- client helpers -----------------------------------------------------------
    def connect(
        self,
        bind_dn: str | None = None,
        password: str | None = None,
        *,
        uri: str | None = None,
        starttls: bool | None = None,
    ) -> Any:
        """python-ldap connection (StartTLS on self.uri by default), bound if asked."""
        conn = _tls_connect(uri or self.uri, self.ca_file, starttls)
        if bind_dn is not None:
            conn.simple_bind_s(bind_dn, password or "")
        return conn

    def samdb(self, code: str, data: Any = None) -> str:
        """Run ``code`` under Debian's python3 with ``db`` (a SamDB on the DC's own sam.ldb,
        as the system), ``ldb`` and ``data`` (JSON-able) in scope, in one transaction: bulk
        data in seconds where LDAP adds take a minute."""
        import json

        prelude = (
            "import json, sys, ldb\n"
            "from samba.samdb import SamDB\n"
            "from samba.param import LoadParm\n"
            "from samba.auth import system_session\n"
            "lp = LoadParm(); lp.load(sys.argv[1])\n"
            "db = SamDB(url=lp.private_path('sam.ldb'), session_info=system_session(), lp=lp)\n"
            "data = json.loads(sys.stdin.read())\n"
            "db.transaction_start()\n"
            "try:\n"
        )
        body = "".join(f"    {line}\n" for line in code.splitlines())
        coda = (
            "except BaseException:\n"
            "    db.transaction_cancel()\n"
            "    raise\n"
            "db.transaction_commit()\n"
        )
        r = subprocess.run(
            [_samba_python(), "-c", prelude + body + coda, self.smb_conf],
            input=json.dumps(data),
            capture_output=True,
            text=True,
            check=False,
        )
        if r.returncode:
            raise RuntimeError(f"samdb script failed: {r.stderr.strip()[-2000:]}")
        return r.stdout

    def samba_tool(self, *args: str) -> str:
        """Run ``samba-tool ARGS -s smb.conf`` against the local sam.ldb (e.g. unlock)."""
        tool = find_binary("samba-tool", "samba-ad-dc")
        r = subprocess.run(
            [tool, *args, "-s", self.smb_conf], capture_output=True, text=True, check=False
        )
        if r.returncode:
            raise RuntimeError(f"samba-tool {' '.join(args)} failed: {r.stderr.strip()}")
        return r.stdout


# --------------------------------------------------------------------------------------
# MIT Kerberos KDC
# --------------------------------------------------------------------------------------

MIT_REALM = "EXAMPLE.TEST"

#: client principals (without realm) -> password; the same names as the OpenLDAP users
MIT_USERS: dict[str, str] = {"alice": "alicepw", "bob": "bobpw", "dave": "davepw"}

#: service principals written to ``http.keytab`` (the acceptor's keytab)
MIT_HTTP_PRINCIPALS: tuple[str, ...] = ("HTTP/localhost", "HTTP/127.0.0.1")
#: the only principal in ``other.keytab`` (a keytab for some other service)
MIT_OTHER_PRINCIPAL = "HTTP/otherhost"


def _udp_and_tcp_free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _free_udp_tcp_port() -> int:
    for _ in range(50):
        port = free_port()
        if _udp_and_tcp_free(port):
            return port
    raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")


class MitKdc:
    """A throw-away MIT Kerberos KDC (krb5 1.20) for realm ``EXAMPLE.TEST`` in ``workdir``.

    Listens on ``127.0.0.1:port`` (UDP and TCP).  Nothing touches ``/etc``: every tool is
    pointed at ``workdir`` through ``KRB5_CONFIG`` / ``KRB5_KDC_PROFILE``.  Files:

    * ``krb5.conf`` -- client and acceptor configuration (``rdns = false`` and
      ``dns_canonicalize_hostname = false``, or ``localhost`` would be canonicalised to the
      machine's name and the service ticket would not be found)
    * ``http.keytab`` -- ``HTTP/localhost`` and ``HTTP/127.0.0.1`` (:attr:`keytab`)
    * ``other.keytab`` -- only ``HTTP/otherhost`` (:attr:`other_keytab`), for wrong-service tests

    Principals: ``alice``/``alicepw``, ``bob``/``bobpw``, ``dave``/``davepw``.
    ``stop()`` kills exactly the ``krb5kdc`` PID it started.
    """

    realm = MIT_REALM
    http_principals = MIT_HTTP_PRINCIPALS
    other_principal = MIT_OTHER_PRINCIPAL

    def __init__(self, workdir: str | os.PathLike[str], port: int | None = None) -> None:
        self.workdir = Path(workdir).resolve()
        self.port = port
        self._fixed_port = port is not None
        self.users: dict[str, str] = dict(MIT_USERS)
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.krb5_conf = str(self.workdir / "krb5.conf")
        self.kdc_conf = str(self.workdir / "kdc.conf")
        self.keytab = str(self.workdir / "http.keytab")
        self.other_keytab = str(self.workdir / "other.keytab")
        self.log_file = self.workdir / "kdc.log"
        self.start_seconds: float | None = None

    def __repr__(self) -> str:
        return f"<MitKdc {self.realm} 127.0.0.1:{self.port} pid={self.pid} dir={self.workdir}>"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def kdc_address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Kerberos environment for clients and acceptors; add ``KRB5CCNAME`` per client."""
        return {"KRB5_CONFIG": self.krb5_conf, "KRB5RCACHEDIR": str(self.workdir)}

    @property
    def _kdc_env(self) -> dict[str, str]:
        return {**os.environ, **self.env, "KRB5_KDC_PROFILE": self.kdc_conf}

    def principal(self, name: str) -> str:
        """``name@EXAMPLE.TEST``."""
        return f"{name}@{self.realm}"

    # ---- configuration ------------------------------------------------------------
    def krb5_conf_text(self) -> str:
        """The client ``krb5.conf``; :meth:`realm_stanza` gives its realm block alone."""
        return f"""\
[libdefaults]
    default_realm = {self.realm}
    dns_lookup_realm = false
    dns_lookup_kdc = false
    rdns = false
    dns_canonicalize_hostname = false
    default_ccache_name = FILE:{self.workdir}/ccache
    udp_preference_limit = 1
    ticket_lifetime = 10h
[realms]
{self.realm_stanza()}
[domain_realm]
    localhost = {self.realm}
    127.0.0.1 = {self.realm}
    otherhost = {self.realm}
    .example.test = {self.realm}
"""

    def realm_stanza(self) -> str:
        """The ``[realms]`` entry for this KDC (to build a krb5.conf naming several realms)."""
        return f"""\
    {self.realm} = {{
        kdc = 127.0.0.1:{self.port}
    }}
"""

    def _kdc_conf_text(self) -> str:
        d = self.workdir
        return f"""\
[kdcdefaults]
    kdc_listen = 127.0.0.1:{self.port}
    kdc_tcp_listen = 127.0.0.1:{self.port}
[realms]
    {self.realm} = {{
        database_name = {d}/principal
        key_stash_file = {d}/stash
        acl_file = {d}/kadm5.acl
        kdc_listen = 127.0.0.1:{self.port}
        kdc_tcp_listen = 127.0.0.1:{self.port}
        max_life = 10h
        max_renewable_life = 1d
        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
    }}
[logging]
    kdc = FILE:{d}/kdc.log
    default = FILE:{d}/kdc.log
"""

    @property
    def _created_marker(self) -> Path:
        return self.workdir / ".db-created"

    def _kadmin(self, kadmin: str, query: str) -> None:
        r = subprocess.run(
            [kadmin, "-r", self.realm, "-q", query],
            env=self._kdc_env,
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        # kadmin.local reports most failures on stderr with exit status 0
        if r.returncode or "error" in r.stderr.lower() or "cannot" in r.stderr.lower():
            cmd = query.split(" -pw ")[0]  # never echo a password
            raise RuntimeError(f"kadmin.local {cmd!r} failed: {r.stderr.strip()}")

    def _create(self, kdb5_util: str, kadmin: str) -> None:
        d = self.workdir
        d.mkdir(parents=True, exist_ok=True)
        (d / "kadm5.acl").write_text(f"*/admin@{self.realm} *\n")
        r = subprocess.run(
            [kdb5_util, "create", "-s", "-r", self.realm, "-P", "masterpw"],
            env=self._kdc_env,
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if r.returncode:
            raise RuntimeError(f"kdb5_util create failed: {r.stderr.strip()}")
        for name, password in self.users.items():
            self._kadmin(kadmin, f"addprinc -pw {password} {name}")
        for spn in (*self.http_principals, self.other_principal):
            self._kadmin(kadmin, f"addprinc -randkey {spn}")
        self._kadmin(kadmin, f"ktadd -k {self.keytab} {' '.join(self.http_principals)}")
        self._kadmin(kadmin, f"ktadd -k {self.other_keytab} {self.other_principal}")
        self._created_marker.write_text(f"{self.port}\n")

    # ---- lifecycle ----------------------------------------------------------------
    def start(self) -> MitKdc:
        if self.running:
            return self
        t0 = time.monotonic()
        krb5kdc = find_binary("krb5kdc", "krb5-kdc")
        kdb5_util = find_binary("kdb5_util", "krb5-kdc")
        kadmin = find_binary("kadmin.local", "krb5-admin-server")
        find_binary("kinit", "krb5-user")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._created_marker.exists() and self.port is None:
            self.port = int(self._created_marker.read_text().split()[0])  # restart: same port
        if self.port is None:
            self.port = _free_udp_tcp_port()
        (self.workdir / "krb5.conf").write_text(self.krb5_conf_text())
        (self.workdir / "kdc.conf").write_text(self._kdc_conf_text())
        if not self._created_marker.exists():
            self._create(kdb5_util, kadmin)
        with open(self.workdir / "krb5kdc.stdout", "wb") as out:
            # -n: do not fork, so the PID we hold is the KDC's own
            self.proc = subprocess.Popen(
                [krb5kdc, "-n", "-r", self.realm],
                env=self._kdc_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.pid = self.proc.pid
        (self.workdir / "krb5kdc.pid").write_text(f"{self.pid}\n")
        _RUNNING.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _wait_ready(self) -> None:
        """Ready = a real AS exchange (kinit) succeeds."""
        assert self.proc is not None
        probe = self.workdir / "probe.ccache"
        user, password = next(iter(self.users.items()))
        deadline = time.monotonic() + 20
        last = ""
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"krb5kdc exited (rc {self.proc.returncode}):\n"
                    f"{_tail(self.workdir / 'krb5kdc.stdout')}\n{_tail(self.log_file)}"
                )
            try:
                self.kinit(user, password, f"FILE:{probe}")
                break
            except RuntimeError as e:
                last = str(e)
            if time.monotonic() > deadline:
                raise RuntimeError(f"krb5kdc not ready after 20 s: {last}\n{_tail(self.log_file)}")
            time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            probe.unlink()

    def stop(self) -> None:
        """SIGTERM exactly the krb5kdc PID we started (SIGKILL after 5 s)."""
        if self.proc is not None:
            _terminate(self.proc)
        self.proc, self.pid = None, None
        _RUNNING.discard(self)

    def restart(self) -> MitKdc:
        self.stop()
        return self.start()

    # ---- client helpers -----------------------------------------------------------
    def kinit(self, user: str, password: str, ccache: str | os.PathLike[str]) -> None:
        """Get a TGT for ``user`` into ``ccache`` (a path or ``TYPE:residual``)."""
        kinit = find_binary("kinit", "krb5-user")
        name = str(ccache)
        if ":" not in name:
            name = f"FILE:{name}"
        principal = user if "@" in user else self.principal(user)
        r = subprocess.run(
            [kinit, principal],
            input=password + "\n",
            env={**os.environ, **self.env, "KRB5CCNAME": name},
            capture_output=True,
            text=True,
            check=False,
            timeout=20,
        )
        if r.returncode:
            raise RuntimeError(f"kinit {principal} failed: {r.stderr.strip()}")
