"""Lint (ruff) and type checks (mypy, strict, on connector/) are part of the test run.

Both run as modules of this interpreter, so a virtual environment's tools are the ones used
even when its bin/ is not on PATH.
"""

import configparser
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_lint_clean():
    out = _run(sys.executable, "-m", "ruff", "check", "connector", "tests", "wsgi.py")
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_format_clean():
    out = _run(sys.executable, "-m", "ruff", "format", "--check", "connector", "tests", "wsgi.py")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_strict_clean():
    out = _run(sys.executable, "-m", "mypy", "connector")
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_test_tool_is_pinned():
    """deploy/constraints-tests.txt (used by .ci/run) pins each requirement of the test extra."""
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    wanted = {
        _canonical(re.split(r"[<>=!~\[;\s]", line.strip(), maxsplit=1)[0])
        for line in setup["options.extras_require"]["test"].splitlines()
        if line.strip()
    }
    pins = {}
    for line in (ROOT / "deploy" / "constraints-tests.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version.strip(), f"not an exact pin: {line!r}"
            pins[_canonical(name)] = version.strip()
    assert wanted and wanted <= pins.keys(), sorted(wanted - pins.keys())


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def test_every_module_directory_is_a_package_a_wheel_would_carry() -> None:
    """``packages = find:`` skips a directory without ``__init__.py``: an editable install
    still imports it, a built wheel would not contain it."""
    import setuptools

    root = Path(__file__).resolve().parent.parent
    found = set(setuptools.find_packages(str(root), include=["connector", "connector.*"]))
    with_modules = {
        ".".join(p.parent.relative_to(root).parts)
        for p in (root / "connector").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert with_modules - found == set()
