"""Lint (ruff) and type checks (mypy, strict, on connector/) are part of the test run.

Both run as modules of this interpreter, so a virtual environment's tools are the ones used
even when its bin/ is not on PATH.
"""

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
