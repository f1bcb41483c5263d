"""The mapper page's file facts, without Flask (search and "try a login" run against slapd in
test_console_access and test_console_auth)."""

import hashlib
import os

from connector.web.console.users import mapper_file


def test_no_mapper():
    assert mapper_file(None) == {"path": None}
    assert mapper_file("") == {"path": ""}


def test_a_mapper_file_is_described(tmp_path):
    path = tmp_path / "mapper.py"
    path.write_bytes(b"def map(raw):\n    return raw\n")
    os.utime(path, (1_700_000_000, 1_700_000_000))
    info = mapper_file(str(path))
    assert info == {
        "path": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16],
        "size": 29,
        "modified": 1_700_000_000,
    }


def test_an_unreadable_mapper_says_why(tmp_path):
    info = mapper_file(str(tmp_path / "missing.py"))
    assert info["problem"].startswith("cannot be read: ") and "sha256" not in info
