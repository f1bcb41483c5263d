"""The demo's MIT Kerberos KDC: realm ``DEMO.TEST``, the demo users, ``HTTP/localhost``.

Nothing touches ``/etc``: every tool is pointed at the work directory through
``KRB5_CONFIG`` and ``KRB5_KDC_PROFILE``. ``krb5.conf`` says ``rdns = false`` and
``dns_canonicalize_hostname = false``, or ``localhost`` would be canonicalised to the
machine's name and the ticket for ``HTTP/localhost`` would not be asked for.
"""

from __future__ import annotations

import dataclasses
import secrets
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from connector.demo.directory import DemoUser
from connector.demo.procs import Children, DemoError, pick_port

REALM = "DEMO.TEST"
SERVICE_PRINCIPAL = "HTTP/localhost"

#: the programs this module runs, with their Debian packages
BINARIES = {
    "krb5kdc": "krb5-kdc",
    "kdb5_util": "krb5-kdc",
    "kadmin.local": "krb5-admin-server",
    "kinit": "krb5-user",
}


@dataclasses.dataclass(frozen=True)
class Kdc:
    """Where the running KDC is and the files a client or the connector needs."""

    port: int
    krb5_conf: Path
    keytab: Path
    rcache_dir: Path

    @property
    def env(self) -> dict[str, str]:
        """The Kerberos environment of the connector (clients add ``KRB5CCNAME``)."""
        return {"KRB5_CONFIG": str(self.krb5_conf), "KRB5RCACHEDIR": str(self.rcache_dir)}

    def ccache(self, user: str) -> str:
        """A credential cache for ``user`` inside the demo directory."""
        return f"FILE:{self.krb5_conf.parent / f'{user}.ccache'}"


def _krb5_conf(workdir: Path, port: int) -> str:
    return f"""\
[libdefaults]
    default_realm = {REALM}
    dns_lookup_realm = false
    dns_lookup_kdc = false
    rdns = false
    dns_canonicalize_hostname = false
    udp_preference_limit = 1
    default_ccache_name = FILE:{workdir}/default.ccache
[realms]
    {REALM} = {{
        kdc = 127.0.0.1:{port}
    }}
[domain_realm]
    localhost = {REALM}
"""


def _kdc_conf(workdir: Path, port: int) -> str:
    return f"""\
[kdcdefaults]
    kdc_listen = 127.0.0.1:{port}
    kdc_tcp_listen = 127.0.0.1:{port}
[realms]
    {REALM} = {{
        database_name = {workdir}/principal
        key_stash_file = {workdir}/stash
        acl_file = {workdir}/kadm5.acl
        kdc_listen = 127.0.0.1:{port}
        kdc_tcp_listen = 127.0.0.1:{port}
        max_life = 10h
        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
    }}
[logging]
    kdc = FILE:{workdir}/kdc.log
    default = FILE:{workdir}/kdc.log
"""


def _run(argv: list[str], env: Mapping[str, str], what: str, stdin: str = "") -> None:
    """Run a Kerberos admin tool; kadmin.local reports most failures on stderr with status 0.

    Raises:
        DemoError: the tool failed (the message never holds a password).
    """
    result = subprocess.run(
        argv, input=stdin, env=dict(env), capture_output=True, text=True, timeout=30, check=False
    )
    problem = result.stderr.lower()
    if result.returncode or "error" in problem or "cannot" in problem:
        raise DemoError("kerberos", f"{what} failed: {result.stderr.strip()}")


def start_kdc(
    children: Children,
    workdir: Path,
    tools: Mapping[str, str],
    users: Iterable[DemoUser],
    base_env: Mapping[str, str],
) -> Kdc:
    """Create the realm's database, start ``krb5kdc`` and wait until a ``kinit`` works.

    ``base_env`` is the environment of the tools and the KDC, the Kerberos variables aside.

    Raises:
        DemoError: the database could not be made or the KDC did not start.
    """
    users = list(users)
    workdir.mkdir(parents=True)
    (workdir / "rcache").mkdir()
    (workdir / "kadm5.acl").write_text(f"*/admin@{REALM} *\n")
    kdc = Kdc(0, workdir / "krb5.conf", workdir / "http.keytab", workdir / "rcache")
    env = {**base_env, **kdc.env, "KRB5_KDC_PROFILE": str(workdir / "kdc.conf")}
    probe = workdir / "probe.ccache"
    user = users[0]

    def kinit_works() -> bool | None:
        try:
            login = [tools["kinit"], f"{user.uid}@{REALM}"]
            _run(login, {**env, "KRB5CCNAME": f"FILE:{probe}"}, "kinit", user.password)
        except (DemoError, subprocess.TimeoutExpired):
            return None
        return True

    for attempt in range(3):  # a port picked free may be taken before krb5kdc binds it
        port = pick_port(None, udp=True)
        kdc = dataclasses.replace(kdc, port=port)
        kdc.krb5_conf.write_text(_krb5_conf(workdir, port))
        (workdir / "kdc.conf").write_text(_kdc_conf(workdir, port))
        if attempt == 0:
            master = secrets.token_urlsafe(18)
            create = [tools["kdb5_util"], "create", "-s", "-r", REALM, "-P", master]
            _run(create, env, "kdb5_util create")
            kadmin = [tools["kadmin.local"], "-r", REALM, "-q"]
            for person in users:
                add = f"addprinc -pw {person.password} {person.uid}"
                _run([*kadmin, add], env, "addprinc")
            _run([*kadmin, f"addprinc -randkey {SERVICE_PRINCIPAL}"], env, "addprinc")
            ktadd = f"ktadd -k {kdc.keytab} {SERVICE_PRINCIPAL}"
            _run([*kadmin, ktadd], env, "ktadd")
        # -n: do not fork, so the PID we hold is the KDC's own
        child = children.start(
            "krb5kdc",
            [tools["krb5kdc"], "-n", "-r", REALM],
            workdir / "krb5kdc.stdout",
            env=env,
            stop_timeout=5,
        )
        try:
            children.wait_for(child, kinit_works, f"krb5kdc on 127.0.0.1:{port}", timeout=15)
            break
        except DemoError:
            if attempt == 2 or child.exited() is None:
                raise
            children.forget_exited(child)
    probe.unlink(missing_ok=True)
    return kdc
