"""Values sealed as the Node AD/LDAP connector seals ``LDAP_BIND_CREDENTIALS``, built here from
its published algorithm (no Node needed), apart from the code under test:

* v2 ``$2$.<salt>.<iv>.<ciphertext>`` (hex), AES-256-CBC under
  ``scrypt(key bytes, salt, N=16384, r=8, p=1, 32 bytes)`` (``cryptography``'s Scrypt);
* v1 ``<ciphertext>`` (hex), AES-256-CBC under OpenSSL's ``EVP_BytesToKey`` (MD5, one round,
  no salt) over the key bytes; ``openssl_evp`` asks the openssl command for the same pair.
"""

from __future__ import annotations

import hashlib
import re
import subprocess

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from servers import find_binary

#: Fixed, so that every run seals the same bytes (a wrong key fails the same way each time).
SALT = bytes.fromhex("5f0c2a9e81d34b7766aa01fe39c2d810")
IV = bytes.fromhex("0123456789abcdeffedcba9876543210")


def _aes_cbc(key: bytes, iv: bytes, text: str) -> bytes:
    padder = padding.PKCS7(128).padder()
    data = padder.update(text.encode("utf-8")) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def seal_v2(text: str, secret: bytes, salt: bytes = SALT, iv: bytes = IV) -> str:
    key = Scrypt(salt=salt, length=32, n=16384, r=8, p=1).derive(secret)
    return f"$2$.{salt.hex()}.{iv.hex()}.{_aes_cbc(key, iv, text).hex()}"


def evp_md5(secret: bytes) -> tuple[bytes, bytes]:
    """EVP_BytesToKey(MD5, no salt, one round): D1 = MD5(secret), Di = MD5(Di-1 + secret)."""
    d1 = hashlib.md5(secret, usedforsecurity=False).digest()
    d2 = hashlib.md5(d1 + secret, usedforsecurity=False).digest()
    d3 = hashlib.md5(d2 + secret, usedforsecurity=False).digest()
    return d1 + d2, d3


def seal_v1(text: str, secret: bytes) -> str:
    key, iv = evp_md5(secret)
    return _aes_cbc(key, iv, text).hex()


def openssl_evp(password: str) -> tuple[bytes, bytes]:
    """(key, iv) that ``openssl enc -aes-256-cbc -md md5 -nosalt`` derives from a password."""
    out = subprocess.run(
        [find_binary("openssl", "openssl"), "enc", "-aes-256-cbc", "-md", "md5", "-nosalt",
         "-pass", f"pass:{password}", "-P"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    found = dict(re.findall(r"^(key|iv)\s*=\s*([0-9A-F]+)$", out, re.M))
    return bytes.fromhex(found["key"]), bytes.fromhex(found["iv"])
