"""The settings' files: which ``config.json`` is in use, reading it, and writing it atomically.

Reading never writes. Every write goes through :func:`write_file_atomic` (a temporary file in
the same directory, fsync, rename, fsync of the directory), so a reader sees the old file or
the new one, never a part; ``config.json`` is written with mode 0600.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from connector.errors import ConfigError


def config_file(
    config_path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """The config.json in use: the one given, else ``$CONNECTOR_CONFIG``, else ./config.json."""
    env = os.environ if environ is None else environ
    return Path(config_path or env.get("CONNECTOR_CONFIG") or "config.json").absolute()


def read_config_file(path: Path) -> dict[str, Any]:
    """Read ``config.json``; a missing file is an empty configuration.

    Raises:
        ConfigError: the file exists but is not a JSON object.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError([f"cannot read the file: {exc.strerror}"], str(path)) from exc
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise ConfigError([f"not valid JSON: {exc}"], str(path)) from exc
    if not isinstance(data, dict):
        raise ConfigError(["must hold a JSON object of KEY: value pairs"], str(path))
    return data


def write_file_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write a file atomically (temp file in the same directory, fsync, rename, fsync the dir).

    Raises:
        OSError: the directory is not writable.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_config_file(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``config.json`` atomically with mode 0600.

    Raises:
        OSError: the directory is not writable.
    """
    text = json.dumps(dict(data), indent=2, sort_keys=True) + "\n"
    write_file_atomic(Path(path), text.encode("utf-8"), 0o600)


def update_config_file(path: Path, changes: Mapping[str, Any]) -> None:
    """Merge ``changes`` into ``config.json`` (a ``None`` value removes a key), atomically.

    Raises:
        ConfigError: the existing file is not a JSON object.
        OSError: the file cannot be written.
    """
    data = read_config_file(Path(path))
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    write_config_file(Path(path), data)
