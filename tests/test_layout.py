"""The package's layout stays readable: small modules, no import cycles, no lazy imports.

Every module of ``src/perdure`` is parsed with ``ast`` (nothing is imported). The
import graph counts every import: at module level, under ``if TYPE_CHECKING:`` and
inside functions, so that a cycle can't hide behind a type-checking import or a lazy
one. A lower layer that must call up takes a small ``Protocol`` instead.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "perdure"
MAX_LINES = 600

#: Imports inside functions that are allowed: the optional PostgreSQL driver is only
#: imported when a PostgreSQL URL is opened (not to dodge a cycle).
ALLOWED_FUNCTION_IMPORTS = {
    ("perdure.storage", "perdure.storage._postgres"),
    ("perdure.storage", "perdure.storage._sqlite"),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted((SRC / PACKAGE).rglob("*.py"))}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    # A module's relative import is resolved from its package; a package's from itself.
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path, known: set[str]) -> Iterator[tuple[str, bool]]:
    """``(imported module, inside a function)`` for every import of a package module."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST, in_function: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == PACKAGE:
                        yield _known(alias.name, known), nested
            elif isinstance(child, ast.ImportFrom):
                target = _resolve(module, is_package, child)
                if target.split(".")[0] != PACKAGE:
                    continue
                for alias in child.names:
                    # ``from . import probes`` imports a module; ``from .x import y`` a name.
                    candidate = f"{target}.{alias.name}"
                    yield (candidate if candidate in known else _known(target, known)), nested
            yield from visit(child, nested)

    yield from visit(tree, False)


def _known(name: str, known: set[str]) -> str:
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _graph() -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    lazy: list[tuple[str, str]] = []
    for name, path in modules.items():
        for target, in_function in _imports(name, path, known):
            if target == name:
                continue
            # A package's ``__init__`` is imported with any of its modules; a module
            # importing its own package's ``__init__`` is the only way round that.
            graph[name].add(target)
            if in_function:
                lazy.append((name, target))
    return graph, lazy


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def _package_edges(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    # A module's import of its own package (``from . import x`` inside a subpackage
    # resolves to the package) is the package importing itself: not an edge that can
    # close a cycle by itself, but an edge to the package ``__init__`` still counts.
    return {name: {t for t in targets if t != name} for name, targets in graph.items()}


def test_the_graph_sees_every_kind_of_import() -> None:
    graph, lazy = _graph()
    # A module-level import, and one from a subpackage, are both seen.
    assert "perdure._errors" in graph["perdure._app"]
    assert "perdure._errors" in graph["perdure.storage"]
    # The allowed lazy imports are seen as lazy.
    assert ("perdure.storage", "perdure.storage._sqlite") in lazy
    # Tarjan finds a planted cycle.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    graph, _ = _graph()
    assert _cycles(_package_edges(graph)) == []


def test_no_imports_inside_functions() -> None:
    _, lazy = _graph()
    assert [edge for edge in lazy if edge not in ALLOWED_FUNCTION_IMPORTS] == []


def test_no_module_is_over_600_lines() -> None:
    long = {
        name: lines
        for name, path in _modules().items()
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
