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


def type_only(tree: ast.Module) -> set[int]:
    """The nodes under ``if TYPE_CHECKING:`` (imports for type checkers, never run)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
    return out


def imports(known: dict[str, Path], runtime: bool = False) -> dict[str, set[str]]:
    """Each module's imports of the package's modules (lazy ones inside functions included; with
    ``runtime``, those for type checkers only left out)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = type_only(tree) if runtime else set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
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


def test_the_runtime_import_graph_has_at_most_ten_levels() -> None:
    """The longest chain of modules importing modules, counting what runs (lazy imports included, imports
    for type checkers not): at most 10."""
    edges = imports(modules(), runtime=True)
    depth: dict[str, int] = {}

    def level(node: str) -> int:
        if node not in depth:
            depth[node] = 0  # no cycles (tested above), so this is never read half-made
            depth[node] = 1 + max((level(nxt) for nxt in edges.get(node, ())), default=0)
        return depth[node]

    deepest = max(modules(), key=level)
    assert level(deepest) <= 10, f"{deepest} stands {level(deepest)} levels deep"
