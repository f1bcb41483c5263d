"""Keytab files: the principals a keytab holds (never its keys), for checks and the console."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from connector.errors import KeytabError


def read_keytab_principals(path: str) -> list[str]:
    """Distinct principals in a keytab file, in file order (no keys are read out).

    Uses the ``krb5`` package, or ``klist -k`` when it is not installed.

    Raises:
        KeytabError: missing, not a regular file, unreadable, empty or not a keytab.
    """
    p = Path(path)
    if not p.exists():
        raise KeytabError(path, "file does not exist")
    if not p.is_file():
        raise KeytabError(path, "not a regular file")
    try:
        with open(p, "rb") as f:
            head = f.read(2)
    except OSError as e:
        raise KeytabError(path, f"cannot be read ({e.strerror})") from None
    if not head:
        raise KeytabError(path, "file is empty")
    if head[:1] != b"\x05":
        raise KeytabError(path, "not a keytab file (bad format version)")
    try:
        principals = _principals_krb5(path)
    except ImportError:
        principals = _principals_klist(path)
    if not principals:
        raise KeytabError(path, "holds no keys")
    return principals


def _principals_krb5(path: str) -> list[str]:
    import krb5

    ctx = krb5.init_context()
    try:
        keytab = krb5.kt_resolve(ctx, f"FILE:{path}".encode())
        seen: dict[str, None] = {}
        for entry in keytab:  # unparse while the entry is alive (its principal dies with it)
            name = krb5.unparse_name_flags(ctx, entry.principal)
            seen[name.decode("utf-8", "replace")] = None
    except krb5.Krb5Error as e:
        raise KeytabError(path, f"cannot be read: {e}") from None
    return list(seen)


def _principals_klist(path: str) -> list[str]:
    klist = shutil.which("klist")
    if not klist:
        raise KeytabError(path, "cannot be read: neither the krb5 package nor klist is there")
    r = subprocess.run(
        [klist, "-k", f"FILE:{path}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
        env={"PATH": os.defpath, "LANG": "C"},
    )
    if r.returncode:
        problem = r.stderr.strip().removeprefix("klist: ") or f"klist exit {r.returncode}"
        raise KeytabError(path, f"cannot be read: {problem}")
    seen: dict[str, None] = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():  # "KVNO Principal" rows
            seen[parts[1]] = None
    return list(seen)
