"""The demo's sample OpenLDAP directory: its own CA, StartTLS, memberof, users in nested groups.

``slapd`` runs in the foreground on a free loopback port with a config written here; the
entries are added over StartTLS with python-ldap *after* it starts (``slapadd`` would bypass
the memberof overlay, and ``memberOf`` would be missing).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import ipaddress
import os
import secrets
from pathlib import Path
from typing import Any

import ldap
import ldap.modlist
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from connector.demo.procs import Children, DemoError, pick_port

BASE = "dc=demo,dc=test"
PEOPLE = f"ou=people,{BASE}"
GROUPS = f"ou=groups,{BASE}"
SERVICE_DN = f"cn=connector,ou=services,{BASE}"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")


@dataclasses.dataclass(frozen=True)
class DemoUser:
    """A person in the demo directory (and, with Kerberos, a principal with the same password)."""

    uid: str
    given_name: str
    surname: str
    title: str

    @property
    def password(self) -> str:
        """The demo password: ``<uid>-demo-pw``."""
        return f"{self.uid}-demo-pw"


USERS = (
    DemoUser("alice", "Alice", "Anderson", "Engineering Manager"),
    DemoUser("bob", "Bob", "Brown", "Accountant"),
    DemoUser("carol", "Carol", "Clark", "Developer"),
    DemoUser("dave", "Dave", "Davis", "Kernel Developer"),
)

#: groups innermost first, so each member exists when its group is added; a member is a uid
#: or a group: dave -> kernel -> developers -> engineering -> staff (four levels)
NESTED_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("kernel", ("dave",)),
    ("developers", ("carol", "kernel")),
    ("engineering", ("alice", "developers")),
    ("finance", ("bob",)),
    ("staff", ("engineering", "finance")),
)


def groups_of(name: str) -> list[str]:
    """Every group ``name`` (a uid or group) is in, directly or through nesting, innermost first."""
    out: list[str] = []
    frontier = [name]
    while frontier:
        parents = [g for g, members in NESTED_GROUPS for m in frontier if m in members]
        frontier = [g for g in dict.fromkeys(parents) if g not in out]
        out += frontier
    return out


@dataclasses.dataclass(frozen=True)
class Directory:
    """Where the running demo directory is and how the connector binds to it."""

    url: str
    ca_file: Path
    bind_dn: str
    bind_password: str = dataclasses.field(repr=False)

    def connector_settings(self) -> dict[str, Any]:
        """The LDAP part of the connector's ``config.json``."""
        return {
            "LDAP_URL": self.url,
            "LDAP_STARTTLS": True,
            "LDAP_CA_FILE": str(self.ca_file),
            "LDAP_BASE": BASE,
            "LDAP_BIND_USER": self.bind_dn,
            "LDAP_BIND_PASSWORD": self.bind_password,
            "LDAP_USER_BY_NAME": "(uid={0})",
            "LDAP_SEARCH_QUERY": "(&(objectClass=inetOrgPerson)(|(uid={0}*)(cn={0}*)))",
            "LDAP_SEARCH_ALL_QUERY": "(objectClass=inetOrgPerson)",
            "LDAP_SEARCH_LIST_GROUPS_QUERY": "(objectClass=groupOfNames)",
            "LDAP_BASE_GROUPS": GROUPS,
            "GROUPS_STRATEGY": "memberof",
        }


def _ssha(password: str) -> str:
    """``{SSHA}`` as slappasswd makes it."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()  # noqa: S324 - LDAP {SSHA}
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A fresh CA and a server certificate for ``127.0.0.1``/``localhost`` (EC P-256).

    Returns:
        ``(ca.crt, server.crt, server.key)``; the key is mode 0600.
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "connector demo CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.DNSName("localhost"),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = (directory / n for n in ("ca.crt", "server.crt", "server.key"))
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return ca_file, cert_file, key_file


def _slapd_conf(workdir: Path, admin_password: str) -> str:
    tls = workdir / "tls"
    schemas = "\n".join(
        f"include {SCHEMA_DIR / name}.schema" for name in ("core", "cosine", "nis", "inetorgperson")
    )
    return f"""\
{schemas}
pidfile   {workdir}/slapd.pid
argsfile  {workdir}/slapd.args
modulepath {MODULE_DIR}
moduleload back_mdb
moduleload memberof
TLSCACertificateFile  {tls}/ca.crt
TLSCertificateFile    {tls}/server.crt
TLSCertificateKeyFile {tls}/server.key
TLSVerifyClient never

database  mdb
maxsize   104857600
suffix    "{BASE}"
rootdn    "cn=admin,{BASE}"
rootpw    {_ssha(admin_password)}
directory {workdir}/db
index     objectClass,uid,cn,member,memberOf eq

access to dn.base="" by * read
access to dn.base="cn=Subschema" by * read
access to attrs=userPassword
  by self write
  by anonymous auth
  by * none
access to *
  by users read
  by * none

overlay   memberof
memberof-group-oc     groupOfNames
memberof-member-ad    member
memberof-memberof-ad  memberOf
memberof-refint       TRUE
"""


def _entries(service_password: str) -> list[tuple[str, dict[str, list[str]]]]:
    """Every entry, parents and members first."""
    out: list[tuple[str, dict[str, list[str]]]] = [
        (
            BASE,
            {
                "objectClass": ["top", "dcObject", "organization"],
                "o": ["Demo Corp"],
                "dc": ["demo"],
            },
        ),
    ]
    for ou in ("people", "groups", "services"):
        out.append((f"ou={ou},{BASE}", {"objectClass": ["organizationalUnit"], "ou": [ou]}))
    out.append(
        (
            SERVICE_DN,
            {
                "objectClass": ["applicationProcess", "simpleSecurityObject"],
                "cn": ["connector"],
                "description": ["the connector's read-only service account"],
                "userPassword": [_ssha(service_password)],
            },
        )
    )
    for user in USERS:
        name = f"{user.given_name} {user.surname}"
        out.append(
            (
                f"uid={user.uid},{PEOPLE}",
                {
                    "objectClass": ["inetOrgPerson"],
                    "uid": [user.uid],
                    "cn": [name],
                    "sn": [user.surname],
                    "givenName": [user.given_name],
                    "displayName": [name],
                    "mail": [f"{user.uid}@demo.test"],
                    "title": [user.title],
                    "userPassword": [_ssha(user.password)],
                },
            )
        )
    uids = {u.uid for u in USERS}
    for cn, members in NESTED_GROUPS:
        dns = [f"uid={m},{PEOPLE}" if m in uids else f"cn={m},{GROUPS}" for m in members]
        out.append(
            (
                f"cn={cn},{GROUPS}",
                {"objectClass": ["groupOfNames"], "cn": [cn], "member": dns},
            )
        )
    return out


def _connect(url: str, ca_file: Path) -> Any:
    """A python-ldap connection over StartTLS that trusts only the demo CA."""
    conn = ldap.initialize(url)
    conn.protocol_version = 3
    conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 2)
    conn.set_option(ldap.OPT_TIMEOUT, 5)
    conn.set_option(ldap.OPT_X_TLS_CACERTFILE, str(ca_file))
    conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
    conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
    conn.start_tls_s()
    return conn


def start_directory(children: Children, workdir: Path, slapd: str) -> Directory:
    """Start slapd on a free loopback port, wait until it answers over StartTLS, load the entries.

    Raises:
        DemoError: slapd did not start or the entries could not be added.
    """
    for path in (SCHEMA_DIR / "core.schema", MODULE_DIR / "memberof.so"):
        if not path.exists():
            raise DemoError("directory", f"{path} is missing (Debian package slapd)")
    workdir.mkdir(parents=True)
    (workdir / "db").mkdir()
    ca_file, _, _ = make_tls(workdir / "tls")
    admin_password = secrets.token_urlsafe(18)
    service_password = secrets.token_urlsafe(18)
    conf = workdir / "slapd.conf"
    conf.write_text(_slapd_conf(workdir, admin_password))
    for attempt in range(3):  # a port picked free may be taken before slapd binds it
        url = f"ldap://127.0.0.1:{pick_port(None)}"
        # -d stats: stay in the foreground (the PID is slapd's own), log connections and binds
        child = children.start(
            "slapd",
            [slapd, "-d", "stats", "-f", str(conf), "-h", f"{url}/"],
            workdir / "slapd.log",
            stop_timeout=10,
        )

        def answers(url: str = url) -> Any:
            try:
                conn = _connect(url, ca_file)
                conn.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["namingContexts"])
            except ldap.LDAPError:
                return None
            return conn

        try:
            conn = children.wait_for(child, answers, f"slapd on {url}", timeout=15)
            break
        except DemoError:
            if attempt == 2 or child.exited() is None:
                raise
            children.forget_exited(child)
    try:
        conn.simple_bind_s(f"cn=admin,{BASE}", admin_password)
        for dn, attrs in _entries(service_password):
            values = {k: [v.encode() for v in vs] for k, vs in attrs.items()}
            conn.add_s(dn, ldap.modlist.addModlist(values))
    except ldap.LDAPError as exc:
        raise DemoError("directory", f"adding the demo entries failed: {exc}") from exc
    finally:
        conn.unbind_s()
    return Directory(url, ca_file, SERVICE_DN, service_password)
