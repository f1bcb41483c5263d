"""No module of the connector, nor any test, reaches into a private name of ``gssapi`` or
``spnego``, so a new release of either cannot break seamless sign-in silently (no exact
version pin is needed: setup.cfg gives lower bounds only).

The check is an AST scan, per file: names bound to those packages (``import gssapi.raw``,
``from spnego import client``) and everything assigned from them (``ctx = spnego.client()``,
``res = gssapi.raw.accept_sec_context(...)``, iterated to a fixed point) are *tainted*; on a
tainted object, an attribute starting with ``_`` (``ctx._context``), ``getattr`` with such a
name, or a keyword argument starting with ``_`` in a call (``spnego.server(_gssapi_credential=
…)``) is a finding, as is importing ``gssapi._x`` / ``spnego._x`` at all. Dunder names
(``__version__``) are public. The scanner is shown to find each pattern the old acceptor used.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import gssapi
import gssapi.raw
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gssapi", "spnego")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _roots(node: ast.expr) -> set[str]:
    """The names an expression starts from: ``a`` of ``a.b(c).d[0]``; each element's of a
    tuple (``x, y = a(), b()``)."""
    if isinstance(node, ast.Tuple | ast.List):
        return {r for elt in node.elts for r in _roots(elt)}
    root = _root(node)
    return {root} if root else set()


def _root(node: ast.expr) -> str | None:
    """The name an expression starts from: ``a`` of ``a.b(c).d[0]``."""
    while True:
        if isinstance(node, ast.Attribute | ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Await):
            node = node.value
        elif isinstance(node, ast.Name):
            return node.id
        else:
            return None


def _targets(node: ast.AST) -> list[str]:
    """Names bound by an assignment target (tuples unpacked)."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Tuple | ast.List):
        return [n for elt in node.elts for n in _targets(elt)]
    if isinstance(node, ast.Starred):
        return _targets(node.value)
    return []


def private_uses(source: str, filename: str = "<source>") -> list[str]:
    """Each private use of gssapi/spnego in ``source``, as ``line: what``."""
    tree = ast.parse(source, filename)
    found: list[str] = []
    tainted: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in PACKAGES:
                    tainted.add(alias.asname or parts[0])
                    if any(_private(p) for p in parts):
                        found.append(f"{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] in PACKAGES:
                for alias in node.names:
                    tainted.add(alias.asname or alias.name)
                    if any(_private(p) for p in [*parts, alias.name]):
                        found.append(f"{node.lineno}: from {node.module} import {alias.name}")
    bindings: list[tuple[list[str], ast.expr]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            bindings.append(([n for t in node.targets for n in _targets(t)], node.value))
        elif isinstance(node, ast.AnnAssign | ast.NamedExpr) and node.value is not None:
            bindings.append((_targets(node.target), node.value))
        elif isinstance(node, ast.For | ast.comprehension):
            bindings.append((_targets(node.target), node.iter))
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            bindings.append((_targets(node.optional_vars), node.context_expr))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            # a function returning a tainted object taints what its callers bind
            for inner in ast.walk(node):
                if isinstance(inner, ast.Return) and inner.value is not None:
                    bindings.append(([node.name], inner.value))
    changed = True
    while changed:
        changed = False
        for names, value in bindings:
            if _roots(value) & tainted and not set(names) <= tainted:
                tainted |= set(names)
                changed = True
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            if _root(node.value) in tainted:
                found.append(f"{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Call):
            func_root = _root(node.func)
            if (
                isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr", "setattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
                and _private(node.args[1].value)
                and _root(node.args[0]) in tainted
            ):
                found.append(f"{node.lineno}: {node.func.id}(…, {node.args[1].value!r})")
            if func_root in tainted:
                for kw in node.keywords:
                    if kw.arg and _private(kw.arg):
                        found.append(f"{node.lineno}: keyword {kw.arg}=")
    return sorted(set(found), key=lambda f: int(f.split(":")[0]))


def _sources() -> list[Path]:
    files = sorted((ROOT / "connector").rglob("*.py")) + sorted((ROOT / "tests").rglob("*.py"))
    return [f for f in files if f.name != Path(__file__).name]


def test_no_private_gssapi_or_spnego_names_anywhere() -> None:
    files = _sources()
    assert ROOT / "connector" / "kerberos" / "acceptor.py" in files
    findings = [
        f"{path.relative_to(ROOT)}:{use}"
        for path in files
        for use in private_uses(path.read_text(), str(path))
    ]
    assert findings == []


# what the acceptor did before it used public APIs only: each must be found
OLD_HABITS = {
    "from spnego._context import GSSMech": "from spnego._context import GSSMech",
    "from spnego import _context": "from spnego import _context",
    "import spnego._spnego": "import spnego._spnego",
    "import spnego\nkrb = spnego.server(_gssapi_credential=c)": "keyword _gssapi_credential=",
    "import spnego\nctx, krb = spnego.server(), spnego.server()\nx = krb._context": "._context",
    "import spnego\nk = spnego.server()\ngetattr(k, '_context', None)": "getattr(…, '_context')",
    "import gssapi\nctx = gssapi.SecurityContext()\nerr = ctx._last_err": "._last_err",
    "from gssapi import SecurityContext as S\nfor c in [S()]:\n    c._last_err": "._last_err",
    "import gssapi.raw as r\nr.misc._something": "._something",
    "import spnego\ndef make(c):\n    k = spnego.server()\n    return k, c\n"
    "def use():\n    _, k = make(1)\n    return k._context": "._context",
    "import spnego\ndef f():\n    with spnego.server() as s:\n        return s._cred": "._cred",
}


@pytest.mark.parametrize("source", list(OLD_HABITS))
def test_the_scan_finds_each_private_use(source: str) -> None:
    found = private_uses(source)
    assert len(found) == 1 and found[0].endswith(OLD_HABITS[source]), found


@pytest.mark.parametrize(
    "source",
    [
        "import gssapi\nx = gssapi.__version__",
        "import spnego\nctx = spnego.client()\nctx.step()\nctx.complete",
        "class A:\n    def f(self):\n        return self._local",  # not a dependency's object
        "import gssapi.raw\nres = gssapi.raw.accept_sec_context(b'', None)\nres.token",
    ],
)
def test_the_scan_passes_public_uses(source: str) -> None:
    assert private_uses(source) == []


def test_the_gssapi_calls_the_acceptor_uses_exist() -> None:
    """Fails loudly if an installed python-gssapi lacks a call the acceptor relies on (the
    credential store and RFC 6680 are extensions: a build without them is not enough)."""
    from gssapi.raw import ext_rfc6680
    from gssapi.raw.misc import GSSError

    for name in ("acquire_cred_from", "set_neg_mechs", "accept_sec_context", "display_name"):
        assert callable(getattr(gssapi.raw, name)), name
    assert callable(ext_rfc6680.get_name_attribute)
    assert {"maj_code", "min_code", "token"} <= set(GSSError(0, 0).__dict__) | set(
        dir(GSSError(0, 0))
    )


def test_the_acceptor_does_not_import_pyspnego() -> None:
    """pyspnego is a test tool now (the tests' clients): the product runs without it."""
    code = "import sys, connector.kerberos, connector.web.signin; print('spnego' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
