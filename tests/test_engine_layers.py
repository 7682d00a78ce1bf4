"""The engine stands on its own: it never imports the app, the client or the worker
(not even for type checking), its modules import each other without a cycle, and each
stays small."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[1] / "src" / "perdure" / "_engine"
FORBIDDEN = {"_app", "_handle", "_starting", "_talking", "_executor"}


def _imports(path: Path) -> set[str]:
    """Modules of the perdure package that ``path`` imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            names = [node.module] if node.module else [alias.name for alias in node.names]
            for name in names:
                assert name is not None
                prefix = "" if node.level == 1 else ".."
                found.add(prefix + name)
    return found


def test_the_engine_imports_nothing_above_it() -> None:
    for path in ENGINE.glob("*.py"):
        above = {name.lstrip(".").split(".")[0] for name in _imports(path) if name.startswith("..")}
        assert not above & FORBIDDEN, (path.name, above & FORBIDDEN)


def test_the_engine_modules_form_no_cycle() -> None:
    graph = {
        path.stem: {name for name in _imports(path) if not name.startswith("..")}
        for path in ENGINE.glob("*.py")
    }
    done: set[str] = set()

    def visit(module: str, trail: tuple[str, ...]) -> None:
        assert module not in trail, " -> ".join((*trail, module))
        if module in done:
            return
        for imported in graph.get(module.split(".")[0], set()):
            visit(imported.split(".")[0], (*trail, module))
        done.add(module)

    for module in graph:
        visit(module, ())


def test_engine_modules_are_small() -> None:
    for path in ENGINE.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 600, path.name
