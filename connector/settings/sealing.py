"""Sealing the secrets of ``config.json``: the one step that writes them, and their opening.

:func:`seal_config_file` (run by ``connector setup``, ``connector seal`` and gunicorn's master
as it starts or reloads, before any worker reads the file) replaces a plain
``LDAP_BIND_PASSWORD`` / ``CONSOLE_PASSWORD`` by its encrypted ``…_CREDENTIALS`` (see
:mod:`connector.secretbox`) and reseals an ``LDAP_BIND_CREDENTIALS`` sealed by the Node
connector in this connector's format, rewriting the file atomically with mode 0600.

Loading only opens: :func:`open_tenant_key` and :func:`open_passwords` give
:func:`connector.settings.load_settings` the plain values, whether this connector sealed them
or the Node connector did (the Node format is :mod:`connector.nodeseal`'s, hooked in here by
:func:`open_sealed`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from connector import nodeseal
from connector.secretbox import PREFIX, SecretBox, SecretError
from connector.settings.files import config_file, read_config_file, update_config_file
from connector.settings.schema import SEALED_KEYS, declared

#: A note of :func:`seal_config_file`: (logging level, message).
SealNote = tuple[int, str]

#: The field of each plain secret of ``SEALED_KEYS``, filled from its sealed key when not given.
_FIELD_OF = {key: field.name for field, key, _ in declared() if key in SEALED_KEYS}


def _seal_plain(
    path: Path, data: dict[str, Any], box: SecretBox, plain_key: str, sealed_key: str
) -> SealNote | None:
    """Replace a plain ``plain_key`` in the file by its encrypted ``sealed_key``."""
    plain = data.get(plain_key)
    if not isinstance(plain, str) or not plain:
        return None
    try:
        token = box.encrypt(plain)
        update_config_file(path, {sealed_key: token, plain_key: None})
    except (OSError, SecretError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        return (
            logging.WARNING,
            f"could not encrypt {plain_key} in {path} ({reason}); it stays in plain text there",
        )
    data[sealed_key] = token
    del data[plain_key]
    return logging.INFO, f"{plain_key} in {path} replaced by encrypted {sealed_key}"


def _node_sealed(value: object) -> bool:
    return (
        isinstance(value, str) and not value.startswith(PREFIX) and nodeseal.is_node_sealed(value)
    )


def open_sealed(
    sealed: str, box: SecretBox, path: Path, data: Mapping[str, Any], env: Mapping[str, str]
) -> str:
    """A sealed value opened: ours with ``box``, a Node connector's with its key.

    Raises:
        SecretError: it cannot be opened (with what to do).
    """
    if _node_sealed(sealed):
        return nodeseal.unseal(sealed, nodeseal.node_key(path.parent, data, env))
    return box.decrypt(sealed)


def _reseal_node_credentials(
    path: Path, data: dict[str, Any], box: SecretBox, env: Mapping[str, str]
) -> SealNote | None:
    """Replace a Node-sealed ``LDAP_BIND_CREDENTIALS`` in the file by this connector's
    sealing; one that cannot be opened is left for
    :func:`connector.settings.load_settings` to report."""
    sealed = data.get("LDAP_BIND_CREDENTIALS")
    if not _node_sealed(sealed):
        return None
    try:
        token = box.encrypt(open_sealed(str(sealed), box, path, data, env))
        update_config_file(path, {"LDAP_BIND_CREDENTIALS": token})
    except SecretError:
        return None
    except OSError as exc:
        return (
            logging.WARNING,
            f"could not reseal LDAP_BIND_CREDENTIALS in {path} ({exc.strerror or exc}); it "
            "stays sealed the Node connector's way there",
        )
    data["LDAP_BIND_CREDENTIALS"] = token
    return (
        logging.INFO,
        f"LDAP_BIND_CREDENTIALS in {path}: opened with the Node connector's key, resealed "
        f"with {box.key_file}",
    )


def seal_config_file(
    config_path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> list[SealNote]:
    """Seal the secrets of ``config.json`` in place: the one step that writes them.

    A plain ``LDAP_BIND_PASSWORD`` (or ``CONSOLE_PASSWORD``) is replaced by its encrypted
    ``…_CREDENTIALS``, and an ``LDAP_BIND_CREDENTIALS`` sealed by the Node connector is resealed
    under this connector's key file (created if there is none). Loading settings never does
    this; ``connector setup``, ``connector seal`` and gunicorn's master (as it starts or
    reloads, before the workers read the file) do.

    Args:
        config_path: the ``config.json`` (default: ``$CONNECTOR_CONFIG`` or ``./config.json``).
        environ: the environment (defaults to ``os.environ``): the key file's place, the Node
            connector's key.

    Returns:
        What was done or could not be done (a read-only directory: the file stays as it was,
        and loading still works), one (logging level, message) each; empty if nothing was to
        seal.

    Raises:
        ConfigError: the file cannot be read or is not a JSON object.
    """
    env = os.environ if environ is None else environ
    path = config_file(config_path, env)
    data = read_config_file(path)
    box = SecretBox.for_config(path, env)
    notes = [_seal_plain(path, data, box, plain, sealed) for plain, sealed in SEALED_KEYS.items()]
    notes.append(_reseal_node_credentials(path, data, box, env))
    return [note for note in notes if note is not None]


def open_tenant_key(values: dict[str, Any], box: SecretBox) -> str | None:
    """Open a sealed tenant key in ``values`` (a shared secret is stored sealed; a public key
    is stored as it is).

    Returns:
        The problem found (``TENANT_SIGNING_KEY: …``), or None.
    """
    tenant_key = values.get("tenant_signing_key")
    if isinstance(tenant_key, str) and tenant_key.startswith(PREFIX):
        try:
            values["tenant_signing_key"] = box.decrypt(tenant_key)
        except SecretError as exc:
            return f"TENANT_SIGNING_KEY: {exc}"
    return None


def open_passwords(
    values: dict[str, Any],
    merged: Mapping[str, Any],
    box: SecretBox,
    path: Path,
    data: Mapping[str, Any],
    env: Mapping[str, str],
) -> list[str]:
    """Fill in the passwords of ``values`` not given plain (in the environment or the file)
    from their sealed keys in ``merged``.

    Returns:
        A problem for each sealed value that cannot be opened (empty when none).
    """
    problems = []
    for plain_key, sealed_key in SEALED_KEYS.items():
        name = _FIELD_OF[plain_key]
        if not values.get(name) and merged.get(sealed_key):
            try:
                values[name] = open_sealed(str(merged[sealed_key]), box, path, data, env)
            except SecretError as exc:
                problems.append(f"{sealed_key}: {exc}")
    return problems
