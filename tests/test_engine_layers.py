"""The engine stands on its own: it never imports the app, the client or the worker (not
even for type checking). The whole package's cycles and sizes: ``test_layout.py``."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[1] / "src" / "perdure" / "_engine"
#: The layers above the engine: the app, the client and its handles, the worker, the CLI.
FORBIDDEN = {"_app", "_client", "_handle", "_options", "_worker", "_cli"}


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
