"""The house rules, checked: layers point down, no import cycles, the CLI owns argparse, small files.

Layers (DESIGN.md): L0 errors/fileio/device/events/parsing; L1 architectures/data/regularizer/
checkpoints/catalog/adversarial; L2 cells/robustness/training/evaluation/jacobian_stats;
L3 figures/reproduce/jobs; L4 cli/commands. A module may import its own layer or lower ones, never
a higher one; imports inside functions count; the package facade ``jacreg/__init__.py`` is exempt.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jacreg"

LAYERS: dict[str, int] = {
    "errors": 0, "fileio": 0, "device": 0, "events": 0, "parsing": 0,
    "architectures": 1, "data": 1, "regularizer": 1, "checkpoints": 1, "catalog": 1,
    "adversarial": 1, "onnx_import": 1,
    "cells": 2, "robustness": 2, "training": 2, "evaluation": 2, "jacobian_stats": 2,
    "figures": 3, "reproduce": 3, "jobs": 3,
    "cli": 4, "commands": 4, "__main__": 4,
}
MAX_LINES = 600


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """jacreg modules imported anywhere in ``path`` (``from x import y`` counts y when y is a module)."""
    out: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("jacreg")}
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, path.name == "__init__.py", node)
            if not target.startswith("jacreg"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
    return {m for m in out if m in known and m != module}


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return -1  # the facade
    key = parts[1]
    if key not in LAYERS:
        pytest.fail(f"{module}: not in the layer table of tests/test_layout.py; give it a layer")
    return LAYERS[key]


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: _imports(m, p, known) for m, p in mods.items() if m != "jacreg"}


def test_imports_point_down_only():
    bad = []
    for module, deps in _graph().items():
        for dep in deps:
            if dep != "jacreg" and _layer(dep) > _layer(module):
                bad.append(f"{module} (L{_layer(module)}) imports {dep} (L{_layer(dep)})")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycles():
    graph = {m: {d for d in deps if d != "jacreg"} for m, deps in _graph().items()}
    # Packages import their own submodules (re-exports): an edge into a package's __init__ from
    # inside the package is what makes a cycle, so count a package as its __init__ only.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_argparse_tqdm_and_print_only_in_the_cli_layer():
    bad = []
    for module, path in _modules().items():
        if _layer(module) == 4 or module == "jacreg":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(n.split(".")[0] in ("argparse", "tqdm") for n in names):
                bad.append(f"{module} imports {names}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                bad.append(f"{module}:{node.lineno} calls print")
    assert not bad, "\n".join(bad)


def test_no_silent_import_errors_in_the_cli_layer():
    for module, path in _modules().items():
        if _layer(module) != 4:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                names = [n.id for n in ast.walk(node.type) if isinstance(n, ast.Name)]
                assert "ImportError" not in names and "ModuleNotFoundError" not in names, module


def test_app_never_imports_the_cli_layer():
    for path in sorted((ROOT / "app").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "jacreg.cli" not in text and "jacreg.commands" not in text, path


def test_no_file_over_the_limit():
    files = sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "app").rglob("*.py"))
    long = [f"{p.relative_to(ROOT)}: {n}" for p in files
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_typed_package():
    assert (PACKAGE / "py.typed").is_file()
