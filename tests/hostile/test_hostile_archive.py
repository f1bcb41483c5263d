"""Hostile archives and old secrets (issue 13, finding 14), through ``connector.archive``.

* an archive whose header asks scrypt for more work than export ever does (a memory and CPU
  bomb: n = 2**20, r = 16 is 2 GB) is refused with the parameters named, before any key is
  derived; so is a malformed cost (not a power of two);
* imports keep only the last few ``backup-*`` folders (each holds an old ``secret.key``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "console"))  # make_state
from test_console_archive import PASS, make_state

from connector import archive
from connector.archive import ArchiveError, export_archive, import_archive


def _with_header(data: bytes, **params: int) -> bytes:
    """The same archive with other scrypt parameters in its header."""
    body = data[len(archive.MAGIC) :]
    header_line, _, token = body.partition(b"\n")
    header = {**json.loads(header_line), **params}
    return archive.MAGIC + json.dumps(header).encode() + b"\n" + token


@pytest.mark.parametrize(
    "params",
    [
        {"n": 2**20, "r": 16},  # 2 GB of memory
        {"n": 2**16},  # twice what export writes
        {"r": 16},
        {"p": 4},
        {"n": 2**15 + 1},  # not a power of two
        {"n": 2**40},
    ],
    ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()),
)
def test_an_archive_asking_for_costly_key_derivation_is_refused(tmp_path, params):
    data = _with_header(export_archive(make_state(tmp_path / "a"), PASS), **params)
    with pytest.raises(ArchiveError, match="scrypt") as refused:
        import_archive(data, PASS, tmp_path / "b" / "config.json")
    assert f"at most n={archive.SCRYPT['n']}" in str(refused.value)
    assert not (tmp_path / "b").exists()


def test_the_accepted_costs_are_export_s_down_to_a_floor(tmp_path, monkeypatch):
    source = make_state(tmp_path / "a")
    monkeypatch.setitem(archive.SCRYPT, "n", archive.MIN_SCRYPT_N)
    cheaper = export_archive(source, PASS)
    monkeypatch.undo()
    assert import_archive(cheaper, PASS, tmp_path / "b" / "config.json").applied
    too_cheap = _with_header(cheaper, n=archive.MIN_SCRYPT_N // 2)
    with pytest.raises(ArchiveError, match="scrypt"):
        import_archive(too_cheap, PASS, tmp_path / "c" / "config.json")


KEEP = 3  # README and docs/security.md promise the last three


def test_imports_keep_the_last_backups_only(tmp_path):
    state = tmp_path / "b"
    make_state(state)
    archives = [
        export_archive(make_state(tmp_path / f"src{i}", LDAP_PAGE_SIZE=10 + i), PASS)
        for i in range(2)
    ]
    secrets = []
    for i in range(KEEP + 3):
        secrets.append((state / "secret.key").read_bytes())
        report = import_archive(archives[i % 2], PASS, state / "config.json")
        assert report.applied and report.backup
    backups = sorted(p for p in state.glob("backup-*") if p.is_dir())
    assert len(backups) == KEEP
    assert Path(report.backup) == backups[-1]
    kept = [(b / "secret.key").read_bytes() for b in backups]
    assert kept == secrets[-KEEP:]
    assert any("older backups removed" in line for line in report.lines())
