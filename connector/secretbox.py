"""Encryption at rest for secrets kept in ``config.json`` (the service account's password).

Secrets are sealed with Fernet (AES-128-CBC + HMAC-SHA256) under a key that lives in its own
file, ``secret.key`` beside ``config.json`` (mode 0600) or wherever
``CONNECTOR_SECRET_KEY_FILE`` points, so a copy of ``config.json`` alone (a backup, a support
ticket) reveals nothing. Sealed values look like ``enc:v1:<token>``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from connector.errors import SecretError as SecretError  # re-exported: its old home

PREFIX = "enc:v1:"


class SecretBox:
    """Seals and opens secrets with a key kept in one file, created on first use."""

    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        self._fernet: Fernet | None = None

    @classmethod
    def for_config(cls, config_path: Path, environ: Mapping[str, str]) -> SecretBox:
        """The box for a given ``config.json``: its key file sits beside it."""
        explicit = environ.get("CONNECTOR_SECRET_KEY_FILE")
        return cls(Path(explicit) if explicit else config_path.parent / "secret.key")

    def _load(self, create: bool) -> Fernet:
        if self._fernet is not None:
            return self._fernet
        try:
            key = self.key_file.read_bytes().strip()
        except FileNotFoundError:
            if not create:
                raise SecretError(
                    f"the key file {self.key_file} is missing; put it back, or set "
                    "LDAP_BIND_PASSWORD again so the password is sealed under a new key"
                ) from None
            key = Fernet.generate_key()
            fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(key + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise SecretError(f"cannot read the key file {self.key_file}: {exc.strerror}") from exc
        try:
            self._fernet = Fernet(key)
        except ValueError:
            raise SecretError(f"the key file {self.key_file} does not hold a valid key") from None
        return self._fernet

    def passphrase(self, create: bool = False) -> bytes:
        """Key material for files encrypted with a passphrase (the agent's private key).

        Raises:
            SecretError: there is no key file and ``create`` is false.
        """
        self._load(create=create)
        return self.key_file.read_bytes().strip()

    def encrypt(self, plain: str) -> str:
        """Seal ``plain``; creates the key file (0600) if there is none.

        Raises:
            OSError: the key file cannot be created.
        """
        return PREFIX + self._load(create=True).encrypt(plain.encode("utf-8")).decode("ascii")

    def decrypt(self, sealed: str) -> str:
        """Open a value made by :meth:`encrypt`.

        Raises:
            SecretError: the value is damaged or was sealed under another key.
        """
        if not sealed.startswith(PREFIX):
            raise SecretError("not a value sealed by this connector (expected enc:v1:…)")
        fernet = self._load(create=False)
        try:
            return fernet.decrypt(sealed[len(PREFIX) :].encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise SecretError(
                f"cannot be opened with the key in {self.key_file} (sealed under another key, "
                "or damaged); set LDAP_BIND_PASSWORD again"
            ) from None
