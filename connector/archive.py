"""Export and import: one encrypted archive that clones a connector (high availability).

The archive holds what a second instance needs to act as this one:

* ``config.json`` as stored (sealed values stay sealed),
* ``agent.crt`` and ``agent.key`` (the identity registered at the hub),
* ``secret.key`` (it opens the sealed values and the agent key),
* the files the configuration points to, when set: ``profile_mapper.py`` (``PROFILE_MAPPER``),
  ``ldap-ca.pem`` (``LDAP_CA_FILE``), ``hub-ca.pem`` (``HUB_CA_FILE``),
* ``manifest.json`` (version, time, host).

Because ``secret.key`` is inside, the archive is as sensitive as the service account's
password: it is a tar.gz encrypted with a passphrase the administrator gives (scrypt-derived
key, Fernet: AES-128-CBC + HMAC-SHA256). File layout::

    CONNECTOR-EXPORT-1\\n
    {"kdf": "scrypt", "n": 32768, "r": 8, "p": 1, "salt": "<base64>"}\\n
    <Fernet token>

Import checks everything before writing anything: the key derivation's cost (no more than
export asks: a header asking scrypt for gigabytes is refused before deriving), the passphrase,
the size of the whole and of each entry (1 MB), only known entry names (no directories, links,
paths or duplicates),
``config.json`` valid, the agent key opening with the archive's ``secret.key`` and matching
its certificate. It then reports what changes (keys added, changed, removed; certificate,
secret key, mapper), keeps the replaced files in ``backup-<time>/`` beside ``config.json`` (the
last ``KEEP_BACKUPS`` of them: each holds an old ``secret.key``), and writes each new file
atomically, ``config.json`` last. Files carried for ``PROFILE_MAPPER``,
``LDAP_CA_FILE`` and ``HUB_CA_FILE`` land beside ``config.json`` and those keys point there.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import io
import json
import os
import shutil
import socket
import tarfile
import tempfile
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from connector import __version__
from connector.channel.identity import CERT_FILE, KEY_FILE, AgentIdentity
from connector.errors import ConfigError, ConnectorError
from connector.secretbox import PREFIX, SecretBox, SecretError
from connector.settings import SECRET_KEYS, Settings, load_settings
from connector.settings.files import read_config_file, write_config_file, write_file_atomic

MAGIC = b"CONNECTOR-EXPORT-1\n"
MAX_ARCHIVE_BYTES = 8 * 1024 * 1024
MAX_ENTRY_BYTES = 1024 * 1024
MAX_PLAIN_BYTES = 6 * 1024 * 1024
MIN_PASSPHRASE = 12
#: What export asks of scrypt (128 * n * r bytes of memory: 32 MB), and the most import accepts.
SCRYPT = {"n": 2**15, "r": 8, "p": 1}
#: The lowest cost import accepts (what export wrote is never below it).
MIN_SCRYPT_N = 2**14
#: How many ``backup-*`` folders an import keeps (the newest).
KEEP_BACKUPS = 3

MANIFEST = "manifest.json"
CONFIG = "config.json"
SECRET = "secret.key"  # noqa: S105 - a file name
#: Optional entries: the config key pointing to the file, and the file's name on import.
CARRIED = {
    "profile_mapper.py": "PROFILE_MAPPER",
    "ldap-ca.pem": "LDAP_CA_FILE",
    "hub-ca.pem": "HUB_CA_FILE",
}
REQUIRED = (MANIFEST, CONFIG, CERT_FILE, KEY_FILE, SECRET)
ENTRIES = frozenset((*REQUIRED, *CARRIED))


class ArchiveError(ConnectorError):
    """The archive cannot be made or used; the message says why (never a secret)."""


# --- encryption ------------------------------------------------------------------------------


def _fernet(passphrase: str, salt: bytes, n: int, r: int, p: int) -> Fernet:
    key = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt(plain: bytes, passphrase: str) -> bytes:
    """Seal ``plain`` under ``passphrase`` in the archive file format.

    Raises:
        ArchiveError: the passphrase is too short.
    """
    if len(passphrase) < MIN_PASSPHRASE:
        raise ArchiveError(f"the passphrase must have at least {MIN_PASSPHRASE} characters")
    salt = os.urandom(16)
    header = {"kdf": "scrypt", **SCRYPT, "salt": base64.b64encode(salt).decode("ascii")}
    token = _fernet(passphrase, salt, **SCRYPT).encrypt(plain)
    return MAGIC + json.dumps(header).encode("ascii") + b"\n" + token


def decrypt(data: bytes, passphrase: str) -> bytes:
    """Open an archive file.

    Raises:
        ArchiveError: not an archive, too large, or the passphrase is wrong.
    """
    if len(data) > MAX_ARCHIVE_BYTES:
        raise ArchiveError(f"the archive is larger than {MAX_ARCHIVE_BYTES // 1024 // 1024} MB")
    if not data.startswith(MAGIC):
        raise ArchiveError("not a connector export (it does not start with CONNECTOR-EXPORT-1)")
    header_line, _, token = data[len(MAGIC) :].partition(b"\n")
    try:
        header = json.loads(header_line)
        salt = base64.b64decode(header["salt"], validate=True)
        n, r, p = int(header["n"]), int(header["r"]), int(header["p"])
    except (ValueError, KeyError, TypeError):
        raise ArchiveError("the archive's header is damaged") from None
    if header.get("kdf") != "scrypt":
        raise ArchiveError("the archive's key derivation is not scrypt")
    _check_cost(n, r, p)
    try:
        return _fernet(passphrase, salt, n, r, p).decrypt(token.strip())
    except InvalidToken:
        raise ArchiveError("wrong passphrase, or the archive is damaged") from None


def _check_cost(n: int, r: int, p: int) -> None:
    """Refuse scrypt parameters other than export's kind: a header must not choose our cost.

    Raises:
        ArchiveError: n is not a power of two in [MIN_SCRYPT_N, SCRYPT n], or r or p is more
            than export writes.
    """
    most = SCRYPT
    if (
        MIN_SCRYPT_N <= n <= most["n"]
        and n & (n - 1) == 0
        and 1 <= r <= most["r"]
        and 1 <= p <= most["p"]
    ):
        return
    shown = f"n={n}" if n < 2**64 else "n=(huge)"
    raise ArchiveError(
        f"the archive asks scrypt for {shown}, r={r}, p={p}; this connector exports with and "
        f"accepts at most n={most['n']} (a power of two, at least {MIN_SCRYPT_N}), "
        f"r={most['r']}, p={most['p']}: refused without deriving a key"
    )


# --- the tar.gz inside -----------------------------------------------------------------------


def _pack(entries: Mapping[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in sorted(entries):
            info = tarfile.TarInfo(name)
            info.size = len(entries[name])
            info.mtime = int(time.time())
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(entries[name]))
    return buf.getvalue()


def _gunzip(data: bytes) -> bytes:
    """Decompress, refusing more than ``MAX_PLAIN_BYTES`` (a decompression bomb)."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, MAX_PLAIN_BYTES + 1)
    except zlib.error:
        raise ArchiveError("the archive's contents are not a tar.gz") from None
    if len(out) > MAX_PLAIN_BYTES or inflater.unconsumed_tail:
        raise ArchiveError("the archive's contents are too large")
    return out


def _unpack(data: bytes) -> dict[str, bytes]:
    """The entries of the tar.gz, every one checked (see the module docstring).

    Raises:
        ArchiveError: an entry is not allowed.
    """
    entries: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(_gunzip(data)), mode="r:") as tar:
            for member in tar:
                name = member.name
                if name not in ENTRIES:
                    shown = name if len(name) < 80 else name[:80] + "…"
                    raise ArchiveError(f"unexpected entry {shown!r} in the archive")
                if not member.isreg():
                    raise ArchiveError(f"{name} is not a regular file (links are refused)")
                if name in entries:
                    raise ArchiveError(f"{name} appears twice in the archive")
                if member.size > MAX_ENTRY_BYTES:
                    raise ArchiveError(f"{name} is larger than {MAX_ENTRY_BYTES // 1024} KB")
                fh = tar.extractfile(member)
                if fh is None:  # pragma: no cover - regular files always have data
                    raise ArchiveError(f"{name} cannot be read")
                content = fh.read(MAX_ENTRY_BYTES + 1)
                if len(content) > MAX_ENTRY_BYTES:
                    raise ArchiveError(f"{name} is larger than {MAX_ENTRY_BYTES // 1024} KB")
                entries[name] = content
    except tarfile.TarError as exc:
        raise ArchiveError(f"the archive's contents are not a valid tar file ({exc})") from None
    missing = [n for n in REQUIRED if n not in entries]
    if missing:
        raise ArchiveError(f"the archive lacks {', '.join(missing)}")
    return entries


# --- export ----------------------------------------------------------------------------------


def _read_limited(path: Path, what: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_ENTRY_BYTES:
            raise ArchiveError(f"{what} {path} is larger than {MAX_ENTRY_BYTES // 1024} KB")
        return path.read_bytes()
    except OSError as exc:
        raise ArchiveError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def export_archive(settings: Settings, passphrase: str) -> bytes:
    """The encrypted archive of this connector's state (see the module docstring).

    Raises:
        ArchiveError: a file is missing or unreadable, or the passphrase is too short.
    """
    if len(passphrase) < MIN_PASSPHRASE:
        raise ArchiveError(f"the passphrase must have at least {MIN_PASSPHRASE} characters")
    config = Path(settings.config_path or "config.json")
    state = config.parent
    if not config.exists():
        raise ArchiveError(f"there is no {config} to export yet: set the connector up first")
    entries = {
        CONFIG: _read_limited(config, "the configuration"),
        CERT_FILE: _read_limited(state / CERT_FILE, "the agent certificate"),
        KEY_FILE: _read_limited(state / KEY_FILE, "the agent key"),
        SECRET: _read_limited(Path(settings.secret_box.key_file), "the secret key"),
    }
    carried = {
        "profile_mapper.py": settings.profile_mapper,
        "ldap-ca.pem": settings.ldap_ca_file,
        "hub-ca.pem": settings.hub_ca_file,
    }
    for name, source in carried.items():
        if source:
            entries[name] = _read_limited(Path(source), f"{CARRIED[name]}")
    manifest = {
        "version": __version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "entries": sorted(entries),
    }
    entries[MANIFEST] = json.dumps(manifest, indent=2).encode("utf-8")
    return encrypt(_pack(entries), passphrase)


# --- import ----------------------------------------------------------------------------------


@dataclasses.dataclass
class ImportReport:
    """What an import changes (or changed); secret values are never in it."""

    added: dict[str, str] = dataclasses.field(default_factory=dict)
    changed: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    removed: list[str] = dataclasses.field(default_factory=list)
    certificate_changed: bool = False
    old_kid: str | None = None
    new_kid: str = ""
    secret_key_changed: bool = False
    files: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> "new" | "changed"
    warnings: list[str] = dataclasses.field(default_factory=list)
    source: dict[str, Any] = dataclasses.field(default_factory=dict)
    backup: str | None = None
    pruned: list[str] = dataclasses.field(default_factory=list)
    applied: bool = False

    @property
    def nothing_changed(self) -> bool:
        """True when the archive holds exactly what is already here."""
        return not (
            self.added
            or self.changed
            or self.removed
            or self.certificate_changed
            or self.secret_key_changed
            or self.files
        )

    def lines(self) -> list[str]:
        """The report as lines of text."""
        out = [
            f"archive from {self.source.get('host', '?')}, connector "
            f"{self.source.get('version', '?')}, made {self.source.get('created', '?')}"
        ]
        out += [f"+ {k} = {v}" for k, v in sorted(self.added.items())]
        out += [f"~ {k}: {old} -> {new}" for k, (old, new) in sorted(self.changed.items())]
        out += [f"- {k}" for k in sorted(self.removed)]
        if self.certificate_changed:
            out.append(f"~ agent certificate: {self.old_kid or '(none)'} -> {self.new_kid}")
        if self.secret_key_changed:
            out.append("~ secret key replaced")
        out += [f"~ file {name} ({state})" for name, state in sorted(self.files.items())]
        if self.nothing_changed:
            out.append("nothing changes: this connector already holds the same state")
        out += [f"warning: {w}" for w in self.warnings]
        if self.backup:
            out.append(f"previous files kept in {self.backup}")
        if self.pruned:
            out.append(
                f"older backups removed (the last {KEEP_BACKUPS} are kept): "
                + ", ".join(self.pruned)
            )
        return out


def _shown(key: str, value: Any) -> str:
    if key in SECRET_KEYS:
        return "(secret)"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 200 else text[:200] + "…"


def _opened(config: Mapping[str, Any], box: SecretBox) -> dict[str, Any]:
    """Config values with sealed ones opened (when possible), to compare two configs."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, str) and value.startswith(PREFIX):
            try:
                out[key] = ("opened", box.decrypt(value))
            except SecretError:
                out[key] = ("sealed", value)
        else:
            out[key] = value
    return out


@dataclasses.dataclass
class _Plan:
    entries: dict[str, bytes]
    config: dict[str, Any]
    report: ImportReport


def _plan(data: bytes, passphrase: str, config_path: Path, secret_key_file: Path) -> _Plan:
    """Open and check the archive, and work out what importing it into ``config_path`` does."""
    entries = _unpack(decrypt(data, passphrase))
    report = ImportReport()
    try:
        manifest = json.loads(entries[MANIFEST])
        if isinstance(manifest, dict):
            report.source = {k: manifest.get(k) for k in ("host", "version", "created")}
    except ValueError:
        raise ArchiveError("the archive's manifest.json is not JSON") from None
    try:
        new_config = json.loads(entries[CONFIG])
    except ValueError as exc:
        raise ArchiveError(f"the archive's config.json is not valid JSON: {exc}") from None
    if not isinstance(new_config, dict):
        raise ArchiveError("the archive's config.json is not a JSON object")
    state = config_path.parent
    for name, key in CARRIED.items():
        if name in entries:
            new_config[key] = str(state / name)
        elif new_config.get(key):
            report.warnings.append(
                f"{key} points to {new_config[key]}, which the archive does not carry: "
                "make sure that file exists here too"
            )
    if "profile_mapper.py" in entries:
        try:
            compile(entries["profile_mapper.py"], "profile_mapper.py", "exec")
        except (SyntaxError, ValueError) as exc:
            raise ArchiveError(f"the archive's profile mapper does not compile: {exc}") from None
    for name in ("ldap-ca.pem", "hub-ca.pem"):
        if name in entries:
            try:
                x509.load_pem_x509_certificates(entries[name])
            except ValueError:
                raise ArchiveError(f"the archive's {name} holds no PEM certificate") from None

    # Validate the configuration and the identity with the archive's own secret key.
    with tempfile.TemporaryDirectory(prefix="connector-import-") as tmp:
        folder = Path(tmp)
        (folder / SECRET).write_bytes(entries[SECRET])
        (folder / CERT_FILE).write_bytes(entries[CERT_FILE])
        (folder / KEY_FILE).write_bytes(entries[KEY_FILE])
        write_config_file(folder / CONFIG, new_config)
        new_box = SecretBox(folder / SECRET)
        try:
            Fernet(entries[SECRET].strip())
        except ValueError:
            raise ArchiveError("the archive's secret.key is not a valid key") from None
        try:
            settings = load_settings(
                folder / CONFIG,
                {"CONNECTOR_SECRET_KEY_FILE": str(folder / SECRET)},
                require_directory=False,
                encrypt_in_place=False,
            )
        except ConfigError as exc:
            raise ArchiveError(
                "the archive's config.json is not valid:\n"
                + "\n".join(f"  - {p}" for p in exc.problems)
            ) from None
        try:
            identity = AgentIdentity.load(folder, new_box)
            cert = x509.load_pem_x509_certificate(entries[CERT_FILE])
        except ValueError as exc:
            raise ArchiveError(
                f"the archive's agent key or certificate is unusable: {exc}"
            ) from None
        if identity is None:  # pragma: no cover - both files were written above
            raise ArchiveError("the archive lacks the agent key or certificate")
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        encoding = serialization.Encoding.DER
        if cert.public_key().public_bytes(
            encoding, public
        ) != identity.key.public_key().public_bytes(encoding, public):
            raise ArchiveError("the archive's agent.key does not belong to its agent.crt")
        report.new_kid = identity.kid
        if settings.agent_cert_thumbprint and settings.agent_cert_thumbprint != identity.kid:
            report.warnings.append(
                "the archive's certificate is not the one its configuration registered; "
                "the connector will register it again with PROVISIONING_TICKET"
            )
        if settings.directory_problems():
            report.warnings.append(
                "the configuration is incomplete: " + "; ".join(settings.directory_problems())
            )
        if not settings.hub_configured:
            report.warnings.append("the configuration is not set up with a hub")
        new_opened = _opened(new_config, new_box)

    # Compare with what is here now.
    old_config = read_config_file(config_path) if config_path.exists() else {}
    old_box = SecretBox(secret_key_file)
    old_opened = _opened(old_config, old_box) if secret_key_file.exists() else old_config
    for key in sorted(set(old_config) | set(new_config)):
        if key not in old_config:
            report.added[key] = _shown(key, new_config[key])
        elif key not in new_config:
            report.removed.append(key)
        elif old_opened.get(key) != new_opened.get(key):
            report.changed[key] = (_shown(key, old_config[key]), _shown(key, new_config[key]))
    try:
        old_identity = AgentIdentity.load(state, old_box) if secret_key_file.exists() else None
        report.old_kid = old_identity.kid if old_identity else None
    except (ValueError, SecretError):
        report.old_kid = "(unreadable)"
    if (state / CERT_FILE).exists() and report.old_kid is None:
        report.old_kid = "(unreadable)"
    report.certificate_changed = report.old_kid != report.new_kid
    try:
        old_secret = secret_key_file.read_bytes().strip()
    except OSError:
        old_secret = b""
    report.secret_key_changed = old_secret != entries[SECRET].strip()
    for name in CARRIED:
        if name in entries:
            target = state / name
            try:
                same = (
                    hashlib.sha256(target.read_bytes()).digest()
                    == hashlib.sha256(entries[name]).digest()
                )
            except OSError:
                report.files[name] = "new"
                continue
            if not same:
                report.files[name] = "changed"
    return _Plan(entries, new_config, report)


def _prune_backups(state: Path) -> list[str]:
    """Remove all but the newest ``KEEP_BACKUPS`` backup folders; the names removed.

    Names sort by time (``backup-YYYYmmdd-HHMMSS[-micro]``); links and files are left alone.
    """
    found = sorted(p for p in state.glob("backup-*") if p.is_dir() and not p.is_symlink())
    old = found[:-KEEP_BACKUPS] if len(found) > KEEP_BACKUPS else []
    for folder in old:
        shutil.rmtree(folder)
    return [f.name for f in old]


def import_archive(
    data: bytes,
    passphrase: str,
    config_path: str | os.PathLike[str],
    *,
    secret_key_file: str | os.PathLike[str] | None = None,
    dry_run: bool = False,
) -> ImportReport:
    """Check an archive and, unless ``dry_run``, install it beside ``config_path``.

    Args:
        data: the archive file's bytes.
        passphrase: the passphrase it was exported with.
        config_path: the ``config.json`` to replace (its folder receives the other files).
        secret_key_file: where this instance keeps its secret key (default: beside config).
        dry_run: only report what would change.

    Raises:
        ArchiveError: the archive is refused (nothing was written).
        OSError: writing failed (the replaced files are in the report's backup folder).
    """
    config = Path(config_path).absolute()
    secret = Path(secret_key_file) if secret_key_file else config.parent / SECRET
    plan = _plan(data, passphrase, config, secret)
    report = plan.report
    if dry_run or report.nothing_changed:
        return report
    state = config.parent
    state.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    backup = state / f"backup-{stamp}"
    existing = [
        p
        for p in (
            config,
            secret,
            state / CERT_FILE,
            state / KEY_FILE,
            *(state / n for n in CARRIED),
        )
        if p.exists()
    ]
    if existing:
        backup.mkdir(mode=0o700, exist_ok=True)
        for path in existing:
            shutil.copy2(path, backup / path.name)
        report.backup = str(backup)
        report.pruned = _prune_backups(state)
    write_file_atomic(secret, plan.entries[SECRET], 0o600)
    write_file_atomic(state / KEY_FILE, plan.entries[KEY_FILE], 0o600)
    write_file_atomic(state / CERT_FILE, plan.entries[CERT_FILE], 0o644)
    for name in CARRIED:
        if name in plan.entries:
            write_file_atomic(state / name, plan.entries[name], 0o644)
    write_config_file(config, plan.config)
    report.applied = True
    return report
