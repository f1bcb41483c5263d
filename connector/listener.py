"""The sign-in endpoint's listener: its TLS certificate (``SSL_PFX``) and what to say at start.

gunicorn serves https from a PEM file (``certfile``/``keyfile``); the Node connector's
``SSL_PFX`` is a PKCS#12 file, given as base64 in ``config.json`` (a path works too).
:func:`write_server_pem` opens it with ``cryptography`` and writes the key and the certificate
chain to one mode-0600 file that gunicorn reads. Without a certificate the endpoint listens on
loopback only (see ``Settings.main_bind``); :func:`start_notes` says so when gunicorn starts.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import logging
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from connector.errors import ConfigError
from connector.netpolicy import is_loopback_host, split_host_port
from connector.settings import Settings
from connector.settings.files import write_file_atomic

#: The file in the run directory that holds the PEM key and certificates for gunicorn.
SERVER_PEM = "tls-server.pem"


def _pfx_bytes(settings: Settings) -> bytes:
    """The PKCS#12 bytes ``SSL_PFX`` names (a file) or holds (base64).

    Raises:
        ConfigError: neither a readable file nor base64.
    """
    value = (settings.ssl_pfx or "").strip()
    where = settings.config_path or ""
    # a PKCS#12 file is DER (a SEQUENCE, 0x30): its base64 starts with "M", never with "/" or "."
    if value.startswith(("/", ".", "~")) or value.lower().endswith((".pfx", ".p12")):
        try:
            return Path(value).expanduser().read_bytes()
        except OSError as exc:
            raise ConfigError(
                [f"SSL_PFX: cannot read {value} ({exc.strerror or exc})"], where
            ) from None
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):  # the value may be a secret: never repeat it
        raise ConfigError(
            ["SSL_PFX: neither the path of a .pfx file nor base64 of one"], where
        ) from None


def server_pem(settings: Settings) -> tuple[bytes, x509.Certificate]:
    """The key and certificate chain of ``SSL_PFX`` as PEM (key first), and the certificate.

    Raises:
        ConfigError: the file cannot be read or opened (wrong ``SSL_KEY_PASSWORD``, not
            PKCS#12), or it lacks a private key or a certificate.
    """
    data = _pfx_bytes(settings)
    password = settings.ssl_key_password.encode("utf-8") if settings.ssl_key_password else None
    where = settings.config_path or ""
    try:
        key, cert, chain = pkcs12.load_key_and_certificates(data, password)
    except (ValueError, TypeError):
        # cryptography says "Invalid password or PKCS12 data" for both; so do we
        raise ConfigError(
            ["SSL_PFX: cannot be opened: not a PKCS#12 file, or SSL_KEY_PASSWORD is wrong"], where
        ) from None
    if key is None or cert is None:
        raise ConfigError(["SSL_PFX: must hold the private key and its certificate"], where)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    for c in (cert, *chain):
        pem += c.public_bytes(serialization.Encoding.PEM)
    return pem, cert


def write_server_pem(settings: Settings, directory: Path) -> tuple[Path, x509.Certificate]:
    """Write ``SSL_PFX``'s key and certificates to ``directory``/tls-server.pem (mode 0600).

    The file is loaded once into an SSL context, so a key that does not match its
    certificate is found here, in the master, rather than at every connection.

    Raises:
        ConfigError: ``SSL_PFX`` is unusable (see :func:`server_pem`).
        OSError: the directory cannot be written.
    """
    pem, cert = server_pem(settings)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / SERVER_PEM
    write_file_atomic(path, pem, 0o600)
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(path)
    except ssl.SSLError as exc:
        path.unlink(missing_ok=True)
        raise ConfigError(
            [f"SSL_PFX: its key and certificate cannot be used together ({exc.reason})"],
            settings.config_path or "",
        ) from None
    return path, cert


def start_notes(
    settings: Settings, cert: x509.Certificate | None, now: datetime.datetime | None = None
) -> list[tuple[int, str]]:
    """What gunicorn's master logs at start about the sign-in listener: (level, message)."""
    bind = settings.main_bind
    if cert is not None:
        now = now or datetime.datetime.now(datetime.UTC)
        until = cert.not_valid_after_utc
        text = (
            f"serving https on {bind} with the certificate from SSL_PFX "
            f"({cert.subject.rfc4514_string()}, valid until {until:%Y-%m-%d})"
        )
        if not cert.not_valid_before_utc <= now <= until:
            return [(logging.WARNING, f"{text}: the certificate is not valid now")]
        return [(logging.INFO, text)]
    if not settings.bind:
        return [
            (
                logging.WARNING,
                f"no TLS certificate (SSL_PFX): the sign-in endpoint listens on {bind} only, "
                "over plain http; put a TLS proxy in front of it on this host, set SSL_PFX to "
                "serve https on every address, or set BIND to listen elsewhere",
            )
        ]
    found = split_host_port(bind)
    if found is not None and is_loopback_host(found[0]):
        return [(logging.INFO, f"plain http on {bind} (loopback: for a TLS proxy on this host)")]
    return [
        (
            logging.WARNING,
            f"plain http on {bind} (BIND): passwords typed in the sign-in form cross the network "
            "in clear text unless a TLS proxy is in front; set SSL_PFX to serve https",
        )
    ]
