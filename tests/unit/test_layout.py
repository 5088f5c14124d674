"""The package's layout: each subpackage imports only the ones below it, and no module import cycles."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest_safeedit

PACKAGE = Path(pytest_safeedit.__file__).resolve().parent
#: Bottom to top: a package may import the ones before it, never one after it.
LAYERS = (
    "util",
    "config",
    "cases",
    "backends",
    "judges",
    "editors",
    "results",
    "demo",
    "reports",
    "run",
    "plugin",
    "cli",
)


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["pytest_safeedit", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(known: dict[str, Path]) -> dict[str, set[str]]:
    """Each module's imports of the package's modules (lazy ones inside functions included)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
                targets = subs if len(subs) == len(node.names) else [base, *subs]
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges[name].add(target)
    return edges


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None


def test_every_subpackage_has_a_layer() -> None:
    found = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert found - {"suites"} == set(LAYERS), "add the new package to LAYERS (and to docs/architecture.md)"


def test_packages_import_only_packages_below_them() -> None:
    known = modules()
    upward = []
    for source, targets in imports(known).items():
        for target in targets:
            a, b = layer(source), layer(target)
            if a is not None and b is not None and a != b and LAYERS.index(b) > LAYERS.index(a):
                upward.append(f"{source} -> {target}")
    assert not upward, "imports that point up the layers:\n" + "\n".join(sorted(upward))


def test_no_module_import_cycle() -> None:
    edges = imports(modules())
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(modules()):
        if start not in state and (cycle := visit(start)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))
