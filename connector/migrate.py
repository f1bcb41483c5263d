"""``connector migrate NODE_DIR``: bring a Node AD/LDAP connector's installation over.

What comes over:

* ``config.json``: every key this connector reads, as it is, except the service password,
  which is opened (plain ``LDAP_BIND_PASSWORD``, or ``LDAP_BIND_CREDENTIALS`` sealed by the
  Node connector, see :mod:`connector.nodeseal`) and sealed again under this connector's
  ``secret.key``. Keys the Node connector reads and this one does not, and keys neither knows,
  are left out and listed.
* the agent's certificate and key (``AUTH_CERT`` and ``AUTH_CERT_KEY`` in the config when set,
  else ``certs/cert.pem`` and ``certs/cert.key``) become ``agent.crt`` and ``agent.key``
  (encrypted), with ``AGENT_CERT_THUMBPRINT`` naming that certificate: the hub already knows it.

What cannot: a JavaScript profile mapper (``profileMapper.js``); the report says which fields
it sets and how to write the Python mapper (``PROFILE_MAPPER``) instead.

Everything is read and checked before anything is written; each file is written atomically.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connector import nodeseal
from connector.channel.identity import CERT_FILE, KEY_FILE, AgentIdentity
from connector.errors import ConfigError
from connector.secretbox import PREFIX, SecretBox, SecretError
from connector.settings import KNOWN_KEYS, NODE_KEYS_IGNORED, Settings, refine
from connector.settings.files import read_config_file, write_config_file

#: Where the Node connector keeps a customised profile mapper, relative to its directory.
MAPPER_FILES = ("profileMapper.js", "lib/profileMapper.js")
_MAPPED_FIELD = re.compile(r"""profile(?:\[\s*['"]([\w.-]+)['"]\s*\]|\.(\w+))\s*=[^=]""")
#: Moved into agent.crt / agent.key rather than copied.
_IDENTITY_KEYS = ("AUTH_CERT", "AUTH_CERT_KEY")


@dataclasses.dataclass
class Migration:
    """What ``migrate`` found, brought over and left behind."""

    config: dict[str, Any]
    identity: AgentIdentity | None
    lines: list[str] = dataclasses.field(default_factory=list)
    todo: list[str] = dataclasses.field(default_factory=list)


def plan(node_dir: Path, box: SecretBox, environ: Mapping[str, str]) -> Migration:
    """Read and check a Node connector's directory; write nothing.

    Raises:
        ConfigError: no usable config.json there, a password that cannot be opened, a
            certificate and key that cannot be read or do not match, or keys that are invalid
            here (every problem listed).
    """
    source = node_dir / "config.json"
    if not source.is_file():
        raise ConfigError(
            ["no config.json there: name the Node connector's directory"], str(node_dir)
        )
    data = read_config_file(source)
    problems: list[str] = []
    config = {k: v for k, v in data.items() if k in KNOWN_KEYS}
    config.pop("LDAP_BIND_PASSWORD", None)
    config.pop("LDAP_BIND_CREDENTIALS", None)
    migration = Migration(config, None)
    lines = migration.lines

    password, how = _password(node_dir, data, environ, problems)
    if password is not None:
        lines.append(f"LDAP_BIND_CREDENTIALS: {how}, sealed again with {box.key_file}")
    migration.identity = _identity(node_dir, data, problems, lines)
    if migration.identity is not None:
        config["AGENT_CERT_THUMBPRINT"] = migration.identity.kid
    try:
        refine(Settings(), config)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems, str(source))
    if password is not None:
        config["LDAP_BIND_CREDENTIALS"] = password  # sealed by ``apply``

    lines.insert(0, f"config.json: {len(config)} keys from {source}")
    unused = sorted(k for k in data if k in NODE_KEYS_IGNORED and k not in _IDENTITY_KEYS)
    unknown = sorted(k for k in data if k not in KNOWN_KEYS and k not in NODE_KEYS_IGNORED)
    if unused:
        lines.append("left out, the Node connector's and not used here: " + ", ".join(unused))
    if unknown:
        lines.append("left out, unknown here: " + ", ".join(unknown))
    for name in MAPPER_FILES:
        if (node_dir / name).is_file():
            migration.todo.append(_mapper_todo(node_dir / name))
    return migration


def apply(migration: Migration, config_path: Path, box: SecretBox) -> list[Path]:
    """Write what :func:`plan` prepared beside ``config_path``; the files written.

    Raises:
        OSError: a file cannot be written.
    """
    config = dict(migration.config)
    written = []
    if "LDAP_BIND_CREDENTIALS" in config:
        config["LDAP_BIND_CREDENTIALS"] = box.encrypt(config["LDAP_BIND_CREDENTIALS"])
        written.append(box.key_file)
    if migration.identity is not None:
        migration.identity.save(config_path.parent, box)
        written += [config_path.parent / KEY_FILE, config_path.parent / CERT_FILE]
    write_config_file(config_path, config)
    return [config_path, *dict.fromkeys(written)]


def _password(
    node_dir: Path, data: Mapping[str, Any], environ: Mapping[str, str], problems: list[str]
) -> tuple[str | None, str]:
    """The service password in the clear, and how it was found."""
    plain, sealed = data.get("LDAP_BIND_PASSWORD"), data.get("LDAP_BIND_CREDENTIALS")
    if isinstance(plain, str) and plain:
        return plain, "from the plain LDAP_BIND_PASSWORD"
    if not isinstance(sealed, str) or not sealed:
        return None, ""
    if sealed.startswith(PREFIX):
        problems.append(
            "LDAP_BIND_CREDENTIALS: sealed by this connector, not by the Node connector; "
            "use export / import to move it, or set LDAP_BIND_PASSWORD"
        )
        return None, ""
    try:
        secret = nodeseal.node_key(node_dir, data, environ)
        plain = nodeseal.unseal(sealed, secret)
    except SecretError as exc:
        problems.append(f"LDAP_BIND_CREDENTIALS: {exc}")
        return None, ""
    version = "v2" if sealed.startswith(nodeseal.V2_PREFIX) else "v1"
    where = (
        "AUTH_CERT_KEY"
        if environ.get("AUTH_CERT_KEY") or data.get("AUTH_CERT_KEY")
        else (str(node_dir / nodeseal.KEY_FILE))
    )
    return plain, f"opened with {where} (Node format {version})"


def _identity(
    node_dir: Path, data: Mapping[str, Any], problems: list[str], lines: list[str]
) -> AgentIdentity | None:
    """The Node connector's certificate and key, if it has them."""
    # as the Node connector: AUTH_CERT / AUTH_CERT_KEY when set, else the files in certs/
    cert_pem = _text(data, "AUTH_CERT") or _read(node_dir / "certs" / "cert.pem")
    key_pem = _text(data, "AUTH_CERT_KEY") or _read(node_dir / nodeseal.KEY_FILE)
    if cert_pem is None or key_pem is None:
        lines.append(
            "certificate: none found (certs/cert.pem and cert.key, or AUTH_CERT and "
            "AUTH_CERT_KEY); `connector setup --ticket` makes and registers a new one"
        )
        return None
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        problems.append(f"certificate and key: cannot be read ({exc})")
        return None
    if not isinstance(key, rsa.RSAPrivateKey):
        problems.append("certificate and key: the key is not an RSA key")
        return None
    public = cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey) or (
        public.public_numbers() != key.public_key().public_numbers()
    ):
        problems.append("certificate and key: the key is not the certificate's")
        return None
    identity = AgentIdentity(key, cert)
    lines.append(
        f"certificate: the Node connector's ({cert.subject.rfc4514_string()}) becomes "
        f"{CERT_FILE} and {KEY_FILE} (encrypted); AGENT_CERT_THUMBPRINT {identity.kid}"
    )
    return identity


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _text(data: Mapping[str, Any], key: str) -> bytes | None:
    value = data.get(key)
    return value.encode("utf-8") if isinstance(value, str) and value.strip() else None


def _mapper_todo(path: Path) -> str:
    fields = []
    for match in _MAPPED_FIELD.finditer(path.read_text(encoding="utf-8", errors="replace")):
        fields.append(match.group(1) or match.group(2))
    named = ", ".join(dict.fromkeys(fields)) or "none recognised"
    return (
        f"profile mapper: {path} is JavaScript, which this connector does not run. Rewrite "
        "it as a Python file defining map_profile(raw, default) -> dict (raw: the entry's "
        "attributes; default: the profile this connector would send) and set PROFILE_MAPPER "
        f"to that file. The fields it sets: {named}."
    )
