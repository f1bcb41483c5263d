"""One frozen settings object, built once from ``config.json`` plus the environment.

The package in four modules, each with one job:

* :mod:`~connector.settings.schema`: every key declared once on the frozen :class:`Settings`
  (key, default, description, check), and plain values coerced and checked; no I/O;
* :mod:`~connector.settings.files`: which ``config.json`` is in use, reading it, writing it
  (and other state files) atomically;
* :mod:`~connector.settings.sealing`: sealing plain passwords in the file, the one step that
  writes them (``connector setup``, ``connector seal``, gunicorn's master), and opening sealed
  values, the Node connector's included;
* :mod:`~connector.settings.loading`: :func:`load_settings`, which only reads, and reports
  every problem at once in one :class:`~connector.errors.ConfigError`.

This module only names their public parts. The address and URL helpers that used to live here
are :mod:`connector.netpolicy`'s and :mod:`connector.urls`'s.
"""

from connector.settings.files import (
    config_file,
    read_config_file,
    update_config_file,
    write_config_file,
    write_file_atomic,
)
from connector.settings.loading import load_settings
from connector.settings.schema import (
    KNOWN_KEYS,
    NODE_KEYS_IGNORED,
    SEALED_KEYS,
    SECRET_KEYS,
    TLS_REQUIRE_CERT,
    TLS_VERIFYING,
    Settings,
    declared,
    describe,
    refine,
)
from connector.settings.sealing import SealNote, seal_config_file

__all__ = [
    "KNOWN_KEYS",
    "NODE_KEYS_IGNORED",
    "SEALED_KEYS",
    "SECRET_KEYS",
    "TLS_REQUIRE_CERT",
    "TLS_VERIFYING",
    "SealNote",
    "Settings",
    "config_file",
    "declared",
    "describe",
    "load_settings",
    "read_config_file",
    "refine",
    "seal_config_file",
    "update_config_file",
    "write_config_file",
    "write_file_atomic",
]
