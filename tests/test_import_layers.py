"""The layer rule of the package, read from the source with ``ast`` (nothing is imported).

Each subpackage (or top-level module) of ``structkd`` has a rank; a module may import only from
subpackages of a lower rank (or its own), so there is no import circle, and no function hides an
import of ``structkd`` to dodge one. The pure layers are held tighter: ``structures`` imports no
other structkd package, ``io`` none, ``kd`` only ``structures`` and ``io``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "src" / "structkd"

RANKS = {
    "io": 0,
    "structures": 0,
    "kd": 1,
    "config": 2,
    "data": 3,
    "nn": 3,
    "devices": 3,
    "metrics": 4,
    "models": 5,
    "tasks": 6,
    "export": 6,
    "train": 7,
    "predictor": 7,
    "lab": 8,
    "structkd": 9,  # the package's __init__: re-exports only
    "cli": 10,
    "__main__": 11,
}
"""Bottom (0) to top, as docs/architecture.md draws them: a layer imports only layers of a lower
rank (the config reads the KD method registry, so kd sits below it)."""

ONLY = {"io": set(), "structures": set(), "kd": {"structures", "io"}}
"""The pure layers: all they may import of structkd."""

EXCEPTIONS: dict[tuple[str, str], str] = {}
"""(module, layer) imports that break the rule today, each with the reason it is tolerated. An
exception that no longer occurs fails ``test_every_exception_is_still_needed``: delete it."""

LAZY_ALLOWED: set[tuple[str, str]] = set()
"""(module, imported structkd module) imports allowed inside a function: none. Optional
third-party extras (transformers, onnxruntime, matplotlib, pyarrow) are imported where used
and are not structkd imports."""


def _layer(module: str) -> str:
    """``structkd.models.tagger`` -> ``models``; ``structkd`` (the __init__) -> ``structkd``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), ast.parse(path.read_text(encoding="utf-8"), str(path))


def _is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The absolute module names an import statement names (``from structkd import kd``
    names ``structkd.kd``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level == 0:
        base = node.module or ""
    else:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join([*parts, *([node.module] if node.module else [])])
    names = [f"{base}.{alias.name}" for alias in node.names]
    return [name if _is_module(name) else base for name in names]


def imports(tree: ast.Module, module: str, is_package: bool) -> Iterator[tuple[str, bool]]:
    """(imported module, inside a function or class) for every import of ``tree``."""

    def walk(node: ast.AST, nested: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for name in _imported(child, module, is_package):
                    yield name, nested
            inner = nested or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
            )
            yield from walk(child, inner)

    yield from walk(tree, False)


def structkd_imports() -> list[tuple[str, str, bool]]:
    """(importing module, imported structkd module, nested) across the package."""
    out = []
    for module, tree in _modules():
        is_package = (PACKAGE.parent / module.replace(".", "/") / "__init__.py").exists()
        for name, nested in imports(tree, module, is_package):
            if name == "structkd" or name.startswith("structkd."):
                out.append((module, name, nested))
    return out


def layer_violations(edges: list[tuple[str, str]]) -> list[str]:
    """The (module, imported module) pairs that break the layer rule, as messages."""
    problems = []
    for module, name in edges:
        source, target = _layer(module), _layer(name)
        if source == target or (module, target) in EXCEPTIONS:
            continue
        if source in ONLY and target not in ONLY[source]:
            allowed = ", ".join(sorted(ONLY[source])) or "nothing"
            problems.append(f"{module} imports {name}; {source} may import {allowed} of structkd")
        elif RANKS[target] >= RANKS[source]:
            problems.append(f"{module} imports {name}: {target} is not below {source}")
    return problems


def layer_cycles(edges: list[tuple[str, str]]) -> list[list[str]]:
    """Import cycles between layers (each as the list of layers around it)."""
    graph: dict[str, set[str]] = {}
    for module, name in edges:
        source, target = _layer(module), _layer(name)
        if source != target:
            graph.setdefault(source, set()).add(target)
    cycles, done = [], set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            cycles.append(path[path.index(node) :] + [node])
            return
        if node in done:
            return
        for target in sorted(graph.get(node, ())):
            visit(target, [*path, node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    return cycles


def test_every_layer_has_a_rank() -> None:
    layers = {_layer(module) for module, _ in _modules()}
    assert layers - set(RANKS) == set(), "give each new subpackage a rank in RANKS"


def test_the_reader_finds_the_imports() -> None:
    """The checks below would pass vacuously if the reader found nothing."""
    edges = {(_layer(m), _layer(n)) for m, n, _ in structkd_imports()}
    assert {("models", "structures"), ("tasks", "models"), ("train", "tasks")} <= edges
    assert ("structkd.structures.token_softmax", "structkd.structures.base", False) in set(
        structkd_imports()
    )


def test_each_layer_imports_only_layers_below_it() -> None:
    edges = [(m, n) for m, n, _ in structkd_imports()]
    assert layer_violations(edges) == []


def test_no_import_cycle_between_subpackages() -> None:
    assert layer_cycles([(m, n) for m, n, _ in structkd_imports()]) == []


def test_no_structkd_import_inside_a_function() -> None:
    nested = {(m, n) for m, n, inside in structkd_imports() if inside}
    assert nested - LAZY_ALLOWED == set()


def test_every_exception_is_still_needed() -> None:
    edges = {(m, _layer(n)) for m, n, _ in structkd_imports()}
    assert set(EXCEPTIONS) <= edges


@pytest.mark.parametrize(
    ("edge", "problem"),
    [
        (("structkd.models.checkpoint", "structkd.tasks"), "tasks is not below models"),
        (("structkd.structures.base", "structkd.io"), "structures may import nothing"),
        (("structkd.kd.losses", "structkd.models.base"), "kd may import io, structures"),
        (("structkd.data.conll", "structkd"), "structkd is not below data"),
        (("structkd.tasks.ner", "structkd.tasks.base"), None),
    ],
)
def test_the_rule_catches_an_upward_import(edge: tuple[str, str], problem: str | None) -> None:
    messages = layer_violations([edge])
    assert len(messages) == (problem is not None)
    assert all(problem in message for message in messages)


def test_the_cycle_check_catches_a_circle() -> None:
    edges = [("structkd.train.loop", "structkd.tasks"), ("structkd.tasks.ner", "structkd.train")]
    assert layer_cycles(edges) == [["tasks", "train", "tasks"]]
