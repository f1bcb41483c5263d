"""The admin console's own password when ``CONSOLE_PASSWORD`` is not set: generated, kept hashed.

``connector console-password`` makes a random password, prints it once and writes only its
scrypt hash to ``console-password`` in the state directory (mode 0600, replaced atomically).
The console reads that file on every sign-in and every request, so a new password applies at
once and ends every session made under the old one (a session is bound to the record). There
is no default password: until one is made (or ``CONSOLE_PASSWORD`` is set) nobody signs in.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

FILE_NAME = "console-password"
_SCHEME = "scrypt"
_N, _R, _P = 2**14, 8, 1
_MAX_RECORD = 256


def record_path(state_dir: Path) -> Path:
    """Where the hash of the generated console password lives."""
    return Path(state_dir) / FILE_NAME


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"), salt=salt, n=n, r=r, p=p, dklen=32
    )


def hash_password(password: str) -> str:
    """A self-describing record: ``scrypt$N$r$p$salt$hash`` (base64url)."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, _N, _R, _P)
    return f"{_SCHEME}${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify(record: str, password: str) -> bool:
    """Whether ``password`` matches ``record`` (False for a damaged or foreign record)."""
    parts = record.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        return False
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, expected = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        return False
    if (n, r, p) != (_N, _R, _P) or len(expected) != 32:  # no cost chosen by the file
        return False
    return hmac.compare_digest(_scrypt(password, salt, n, r, p), expected)


def read_record(state_dir: Path) -> str | None:
    """The stored record, or None when no password has been generated (or it is unreadable)."""
    try:
        with open(record_path(state_dir), encoding="ascii") as fh:
            text = fh.read(_MAX_RECORD + 1).strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if text and len(text) <= _MAX_RECORD else None


def create(state_dir: Path) -> str:
    """Generate a new password, store its hash (replacing any), and return it (to show once).

    Run as root on a state directory owned by the connector's user, the file is given to that
    user, so that the connector can read it.
    """
    state = Path(state_dir)
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    password = secrets.token_urlsafe(18)  # 144 bits
    target = record_path(state)
    temp = state / f".{FILE_NAME}-{secrets.token_hex(4)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(hash_password(password) + "\n")
        owner = state.stat()
        if os.geteuid() == 0 and owner.st_uid != 0:
            os.chown(temp, owner.st_uid, owner.st_gid)
        os.replace(temp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    return password


def console_url(address: tuple[str, int]) -> str:
    """The console's address for a browser on this machine."""
    host, port = address
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/console/"
