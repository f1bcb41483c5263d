"""Logging set-up: human-readable lines by default, JSON lines on request.

Besides the main stream (stderr: journald, a file, ``docker logs``), each gunicorn worker keeps
its recent lines as JSON in the shared run directory (``<run>/logs/<pid>.jsonl``, one writer
per file, rotated at a bound): :func:`read_recent` merges every worker's, so the admin console
shows the whole connector's recent log whichever worker answers the page.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
#: ``json.dumps(..., default=str, ensure_ascii=False)``, its encoder made once
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)


class _Seconds:
    """``strftime`` of a record's second, made once per second (a line's time differs from
    the last line's mostly in its milliseconds)."""

    def __init__(self, fmt: str, convert: Callable[[float | None], time.struct_time]) -> None:
        self._fmt = fmt
        self._convert = convert
        self._last: tuple[int, str] = (-1, "")

    def __call__(self, created: float) -> str:
        second = int(created)
        last = self._last
        if last[0] != second:
            last = self._last = (second, time.strftime(self._fmt, self._convert(second)))
        return last[1]


class TextFormatter(logging.Formatter):
    """The text line: ``logging.Formatter``'s, its time made once per second."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._seconds = _Seconds(self.default_time_format, self.converter)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """``logging.Formatter.formatTime`` (no ``datefmt``: the default), cached per second."""
        if datefmt:
            return super().formatTime(record, datefmt)
        seconds, msec = self._seconds(record.created), self.default_msec_format
        return msec % (seconds, record.msecs) if msec else seconds


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    def __init__(self) -> None:
        super().__init__()
        self._seconds = _Seconds("%Y-%m-%dT%H:%M:%S", time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON line."""
        out: dict[str, Any] = {
            "time": f"{self._seconds(record.created)}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return _ENCODER.encode(out)


def configure(level: str = "info", fmt: str = "text", stream: Any = None) -> None:
    """Send the ``connector`` loggers to ``stream`` (stderr) in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger("connector")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False


LEVELS = ("debug", "info", "warning", "error")
RING_MAX_BYTES = 512 * 1024
RING_KEEP_FILES = 16


class RingHandler(logging.Handler):
    """This process's recent log lines as JSON in ``<dir>/<pid>.jsonl`` (one old file kept).

    Each process writes only its own file, so rotation needs no lock between processes; the
    file name follows the process id, so a handler inherited across a fork starts a new file.
    """

    def __init__(self, directory: Path, max_bytes: int = RING_MAX_BYTES) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.setFormatter(JsonFormatter())
        self._pid = 0
        self._fh: Any = None
        self._size = 0  # bytes in this process's file
        self._io_lock = threading.Lock()
        _RINGS.add(self)

    def _file(self) -> Any:
        if self._fh is None:  # none yet, rotated, or forked (see _after_fork)
            self.directory.mkdir(parents=True, exist_ok=True)
            self._pid = os.getpid()
            self._fh = open(self.directory / f"{self._pid}.jsonl", "ab")
            self._size = self._fh.seek(0, os.SEEK_END)
        return self._fh

    def emit(self, record: logging.LogRecord) -> None:
        """Append the record; rotate this process's file past the bound."""
        try:
            data = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
            with self._io_lock:
                fh = self._file()
                fh.write(data)
                fh.flush()
                self._size += len(data)
                if self._size > self.max_bytes:
                    fh.close()
                    self._fh = None
                    current = self.directory / f"{self._pid}.jsonl"
                    os.replace(current, current.with_suffix(".jsonl.1"))
        except Exception:  # noqa: BLE001 - logging must never break the caller
            self.handleError(record)

    def close(self) -> None:
        """Close this process's file."""
        with self._io_lock:
            if self._fh is not None:
                with contextlib.suppress(OSError):
                    self._fh.close()
                self._fh = None
        super().close()


#: Every ring handler of this process: a forked child starts its own file (see _file).
_RINGS: weakref.WeakSet[RingHandler] = weakref.WeakSet()


def _after_fork() -> None:
    for ring in list(_RINGS):
        ring._fh = None  # the parent's file (flushed after every line): left to the parent
        ring._io_lock = threading.Lock()  # a thread of the parent may have held it at the fork


os.register_at_fork(after_in_child=_after_fork)


def add_ring(directory: Path) -> RingHandler | None:
    """Also keep the ``connector`` loggers' lines in ``directory`` (None if not writable)."""
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    root = logging.getLogger("connector")
    for old in [h for h in root.handlers if isinstance(h, RingHandler)]:
        root.removeHandler(old)
        old.close()
    handler = RingHandler(Path(directory))
    root.addHandler(handler)
    return handler


def prune_ring(directory: Path, keep: int = RING_KEEP_FILES) -> None:
    """Remove all but the ``keep`` most recent files (at start-up, before workers write)."""
    try:
        files = sorted(Path(directory).glob("*.jsonl*"), key=lambda p: p.stat().st_mtime)
    except OSError:
        return
    for old in files[: max(0, len(files) - keep)]:
        with contextlib.suppress(OSError):
            old.unlink()


def _matches_user(entry: dict[str, Any], user: str) -> bool:
    wanted = user.casefold()
    for key in ("user", "username"):
        value = entry.get(key)
        if isinstance(value, str) and value.casefold() == wanted:
            return True
    message = str(entry.get("message", "")).casefold()
    return f"'{wanted}'" in message or f"={wanted} " in message + " "


def read_recent(
    directory: Path, limit: int = 200, level: str | None = None, user: str | None = None
) -> list[dict[str, Any]]:
    """The most recent lines of every process, oldest first, filtered by level and user.

    ``level`` keeps lines at that level or above; ``user`` keeps lines about that user (the
    audit lines' ``user``, or ``user='name'`` / ``username='name'`` in the message).
    """
    floor = LEVELS.index(level) if level in LEVELS else 0
    entries: list[dict[str, Any]] = []
    try:
        files = list(Path(directory).glob("*.jsonl*"))
    except OSError:
        return []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        pid = path.name.split(".", 1)[0]
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not isinstance(entry, dict):
                continue
            lvl = str(entry.get("level", "info"))
            if (LEVELS.index(lvl) if lvl in LEVELS else 1) < floor:
                continue
            if user and not _matches_user(entry, user):
                continue
            entry.setdefault("pid", pid)
            entries.append(entry)
    entries.sort(key=lambda e: (str(e.get("time", "")), float(e.get("created", 0) or 0)))
    return entries[-limit:] if limit else entries
