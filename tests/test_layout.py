"""The layout is enforced: every product module imports only what its row of DESIGN.md's
table (section 2) allows.

import-linter is the library for this, but it only takes packages as roots, and the
product's top level is a set of single-file modules fixed by the brief (``gateway.py``,
``store.py``, …); so the contracts are read from DESIGN.md itself (they cannot drift from it)
and checked here on the parsed imports. ``errors`` (the leaf exception tree) may be
imported everywhere; imports only for type checking (``if TYPE_CHECKING:``, the injected
clock's type) do not count, nor do the imports of what a module imports."""

from __future__ import annotations

import ast
import re
import subprocess

import pytest
from conftest import ROOT

DESIGN = ROOT.parent / "shared" / "DESIGN.md"


def _table() -> dict[str, set[str] | None]:
    """module → the modules it may import (None: anything)."""
    text = DESIGN.read_text()
    section = text[text.index("## 2. Layout"):text.index("## 3.")]
    rows = re.findall(r"^\| `([^`]+)` \| [^|]+ \| ([^|]+) \|$", section, re.M)
    names = {path.strip("/").removesuffix(".py") for path, _ in rows}
    table: dict[str, set[str] | None] = {}
    for path, may in rows:
        module = path.strip("/").removesuffix(".py")
        words = {w.strip(" `()") for w in re.split(r"[,\s]+", may)}
        table[module] = None if {"everything", "anything"} & words else {w for w in words if w in names}
    return table


def _imports(tree: ast.AST) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST, typing_only: bool) -> None:
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, typing_only)
            return
        if not typing_only:
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child, typing_only)

    visit(tree, False)
    return found


def test_design_table_is_read():
    table = _table()
    assert table["errors"] == set() and table["store"] == {"model", "errors", "clock"} and table["gateway"] is None
    assert table["worker"] == {"store", "mapping", "adapters", "updates", "model"}


def test_every_module_imports_only_what_design_allows():
    table = _table()
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    ours = set(table)
    broken = []
    for name in files:
        if name.startswith(("tests/", "bench/")):
            continue
        module = name.split("/")[0].removesuffix(".py")
        if module not in table:
            continue
        allowed = table[module]
        imported = (_imports(ast.parse((ROOT / name).read_text(), name)) & ours) - {module, "errors"}
        if module != "sandbox":
            if "sandbox" in imported:
                broken.append(f"{name} imports the sandbox, which the product never imports")
        if allowed is None:
            continue
        for other in sorted(imported - allowed):
            broken.append(f"{name} imports {other}; DESIGN.md lets {module} import {', '.join(sorted(allowed)) or 'nothing of ours'}")
    assert broken == []


def test_import_linter_contracts_say_what_design_says():
    """The import-linter contracts in pyproject.toml (run by ``make test``) cover every
    package of DESIGN.md's table, and each forbids exactly what its row does not allow."""
    import tomllib

    table = _table()
    linter = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    packages = {name for name in table if (ROOT / name / "__init__.py").is_file()}
    checked = set(linter["root_packages"])
    assert checked == packages - {"sandbox"}  # the sandbox may import anything
    contracts = {c["source_modules"][0]: c for c in linter["contracts"]}
    assert set(contracts) == checked
    for name, contract in contracts.items():
        assert contract["type"] == "forbidden"
        allowed = table[name]
        assert allowed is not None
        code = {n for n in table if (ROOT / f"{n}.py").is_file() or (ROOT / n / "__init__.py").is_file()}
        assert set(contract["forbidden_modules"]) == code - allowed - {name, "errors"}, name
