"""Every module of the package imports on its own, in a fresh interpreter (no import cycles)."""

import os
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


def test_the_product_does_not_load_the_tools(tmp_path):
    """The devhub and the demo are tools, not the product: importing every other module
    (the app, the agent, the CLI) loads neither. (In a directory of its own: building the app
    makes its run directory under the working directory.)"""
    product = [m for m in _modules() if not m.startswith(("connector.devhub", "connector.demo"))]
    assert "connector.cli" in product and "connector.channel.agent" in product
    code = (
        "import sys\n"
        + "".join(f"import {name}\n" for name in product)
        + "import wsgi\n"
        + "tools = sorted(m for m in sys.modules"
        + " if m.startswith(('connector.devhub', 'connector.demo')))\n"
        + "print(tools)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
