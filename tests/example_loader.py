"""Loading the examples of ``examples/`` in tests: each test gets fresh modules.

An example's modules build their ``perdure.App()`` when imported, from
``PERDURE_DATABASE_URL``: a test sets it (to its ``database_url``), then loads the
example, and the modules are forgotten afterwards, so that the next test's load
builds apps on its own database.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@contextlib.contextmanager
def load_example(name: str) -> Iterator[ModuleType]:
    """``examples/<name>/main.py``, imported afresh with the example's folder importable."""
    saved_path = list(sys.path)
    before = set(sys.modules)
    sys.path[:0] = [str(EXAMPLES / name), str(EXAMPLES)]
    try:
        spec = importlib.util.spec_from_file_location(
            f"example_{name}_main", EXAMPLES / name / "main.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while defined
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path[:] = saved_path
        for loaded in set(sys.modules) - before:
            path = getattr(sys.modules[loaded], "__file__", None) or ""
            if path.startswith(str(EXAMPLES)):
                del sys.modules[loaded]
