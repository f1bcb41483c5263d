"""Every module of the package imports on its own, in a fresh interpreter (no import cycles)."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import connector

ROOT = Path(__file__).resolve().parent.parent

# A module-level state (the metrics registry) cannot be imported twice in one interpreter, so
# each module gets its own; a few run at a time.
_AT_ONCE = 4


def _modules() -> list[str]:
    found = ["connector"]
    found += [m.name for m in pkgutil.walk_packages(connector.__path__, "connector.")]
    return sorted(found)


def test_the_package_is_the_one_under_test():
    assert Path(connector.__file__).resolve().parent == ROOT / "connector"


def test_every_module_imports_alone():
    modules = _modules()
    assert "connector.services" in modules and "connector.web.guards" in modules
    failed = []
    for i in range(0, len(modules), _AT_ONCE):
        running = [
            (
                name,
                subprocess.Popen(
                    [sys.executable, "-c", f"import {name}"],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                ),
            )
            for name in modules[i : i + _AT_ONCE]
        ]
        for name, proc in running:
            output, _ = proc.communicate(timeout=120)
            if proc.returncode:
                failed.append(f"{name}: {output.strip().splitlines()[-1:]}")
    assert not failed, "\n".join(failed)
