"""Opening secrets sealed by the Node AD/LDAP connector, to bring its ``config.json`` over.

The Node connector keeps the service account's password only as ``LDAP_BIND_CREDENTIALS``,
sealed with AES-256-CBC (PKCS#7 padding, no MAC) under a key derived from its own private key
file: ``certs/cert.key`` beside its ``config.json``, or the text of ``AUTH_CERT_KEY`` when that
key is set (in the file or the environment). Two formats, told apart by the prefix:

* v2 ``$2$.<salt hex>.<iv hex>.<ciphertext hex>``: the AES key is
  ``scrypt(key bytes, salt, N=16384, r=8, p=1, 32 bytes)``;
* v1 ``<ciphertext hex>``: key and IV come from OpenSSL's ``EVP_BytesToKey`` (MD5, one
  round, no salt) over the key bytes, as Node's old ``crypto.createCipher("aes256", key)``.

This module only opens them; :mod:`connector.settings` reseals the password in this
connector's own format (:mod:`connector.secretbox`). Without a MAC a wrong key shows as bad
padding, text that is not UTF-8, or control characters, each reported as the wrong key.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from connector.secretbox import SecretError

V2_PREFIX = "$2$"
KEY_FILE = Path("certs") / "cert.key"  # relative to the Node connector's directory
_HEX_BLOCKS = re.compile(r"(?:[0-9a-fA-F]{32})+")
_SCRYPT = {"n": 16384, "r": 8, "p": 1, "dklen": 32, "maxmem": 64 * 1024 * 1024}


def is_node_sealed(value: str) -> bool:
    """Whether ``value`` looks like a Node connector's sealed value (v2, or v1 hex blocks)."""
    return value.startswith(V2_PREFIX + ".") or _HEX_BLOCKS.fullmatch(value) is not None


def node_key(config_dir: Path, config: Mapping[str, Any], environ: Mapping[str, str]) -> bytes:
    """The Node connector's key material: ``AUTH_CERT_KEY`` (environment, then the config),
    else the bytes of ``certs/cert.key`` under ``config_dir``.

    Raises:
        SecretError: neither is there (or the key file cannot be read).
    """
    text = environ.get("AUTH_CERT_KEY") or config.get("AUTH_CERT_KEY")
    if isinstance(text, str) and text:
        return text.encode("utf-8")
    path = config_dir / KEY_FILE
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SecretError(
            f"sealed by the Node connector, whose key is missing: copy its {KEY_FILE} to "
            f"{path}, or set AUTH_CERT_KEY, or set LDAP_BIND_PASSWORD instead "
            f"({exc.strerror})"
        ) from None


def evp_bytes_to_key(secret: bytes, key_len: int = 32, iv_len: int = 16) -> tuple[bytes, bytes]:
    """OpenSSL's ``EVP_BytesToKey`` with MD5, one round and no salt: (key, iv)."""
    out, block = b"", b""
    while len(out) < key_len + iv_len:
        block = hashlib.md5(block + secret, usedforsecurity=False).digest()
        out += block
    return out[:key_len], out[key_len : key_len + iv_len]


def scrypt_key(secret: bytes, salt: bytes) -> bytes:
    """The v2 AES key: scrypt with Node's ``scryptSync`` defaults (N=16384, r=8, p=1)."""
    return hashlib.scrypt(secret, salt=salt, **_SCRYPT)


def unseal(value: str, secret: bytes) -> str:
    """Open a value sealed by the Node connector with its key material ``secret``.

    Raises:
        SecretError: the value is not in either format, is damaged, or the key is wrong.
    """
    try:
        if value.startswith(V2_PREFIX + "."):
            parts = value.split(".")
            if len(parts) != 4:
                raise ValueError("a v2 value has four parts")
            salt, iv, data = (bytes.fromhex(p) for p in parts[1:])
            key = scrypt_key(secret, salt)
        else:
            data = bytes.fromhex(value)
            key, iv = evp_bytes_to_key(secret)
        if len(iv) != 16 or not data or len(data) % 16:
            raise ValueError("wrong lengths")
    except ValueError:
        raise SecretError(
            "neither this connector's enc:v1: nor a Node connector's sealed value"
        ) from None
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(data) + decryptor.finalize()
    try:
        unpadder = padding.PKCS7(128).unpadder()
        text = (unpadder.update(padded) + unpadder.finalize()).decode("utf-8")
    except ValueError:  # bad padding, or not UTF-8 (UnicodeDecodeError is a ValueError)
        text = None
    if text is None or any(unicodedata.category(c) == "Cc" for c in text):
        raise SecretError(
            "sealed by the Node connector, but its key does not open it (another "
            "certs/cert.key or AUTH_CERT_KEY?); use the Node connector's own key, or set "
            "LDAP_BIND_PASSWORD instead"
        )
    return text
