"""Loading the settings: ``config.json`` and the environment, read once and checked together.

Loading only reads: a plain ``LDAP_BIND_PASSWORD`` in the file is used as it is, and a sealed
value is opened (:mod:`connector.settings.sealing`). Environment variables of the config keys'
names override the file. Every problem found is reported together in one :class:`ConfigError`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from connector.errors import ConfigError
from connector.secretbox import SecretBox
from connector.settings.files import config_file, read_config_file
from connector.settings.schema import (
    KNOWN_KEYS,
    NODE_KEYS_IGNORED,
    SEALED_KEYS,
    Settings,
    convert,
    overlay,
    settle_signing_alg,
)
from connector.settings.sealing import open_passwords, open_tenant_key, seal_config_file

log = logging.getLogger(__name__)


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    require_directory: bool = True,
    encrypt_in_place: bool = False,
) -> Settings:
    """Build the settings from ``config.json`` and the environment, validating everything.

    Nothing is written: a plain password in the file is used as it is (see
    :func:`~connector.settings.sealing.seal_config_file` for the step that seals it).

    Args:
        config_path: the ``config.json`` to read (it may not exist yet). Defaults to
            ``$CONNECTOR_CONFIG`` or ``./config.json``.
        environ: the environment (defaults to ``os.environ``); known keys override the file.
        require_directory: also report missing LDAP settings.
        encrypt_in_place: deprecated, for callers of older versions: run
            :func:`~connector.settings.sealing.seal_config_file` first (and log what it did).

    Raises:
        ConfigError: listing every missing or invalid key at once.
    """
    env = os.environ if environ is None else environ
    path = config_file(config_path, env)
    if encrypt_in_place:
        for level, note in seal_config_file(path, env):
            log.log(level, "%s", note)
    data = read_config_file(path)
    box = SecretBox.for_config(path, env)
    merged = overlay(data, env)

    values, problems = convert(merged)
    opened = open_tenant_key(values, box)  # before its algorithm is checked
    settled = settle_signing_alg(values)
    problems.extend(problem for problem in (opened, settled) if problem)
    # The passwords: plain in the environment, or encrypted in the file.
    problems.extend(open_passwords(values, merged, box, path, data, env))

    ignored = sorted(k for k in data if k not in KNOWN_KEYS and k not in NODE_KEYS_IGNORED)
    settings = Settings(
        **values,
        config_path=str(path),
        secret_key_file=str(box.key_file),
        ignored_keys=tuple(ignored),
        env_keys=tuple(sorted(k for k in KNOWN_KEYS if k in env)),
        unsealed_keys=tuple(k for k in SEALED_KEYS if isinstance(data.get(k), str) and data[k]),
    )
    problems.extend(settings.conflicts())
    if require_directory:
        problems.extend(p for p in settings.directory_problems() if p not in problems)
    if problems:
        raise ConfigError(problems, str(path))
    if ignored:
        log.warning("unknown keys in %s ignored: %s", path, ", ".join(ignored))
    return settings
