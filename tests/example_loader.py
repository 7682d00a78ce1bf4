"""Loading the examples of ``examples/`` in tests: each test gets fresh modules.

An example's modules build their ``perdure.App()`` when imported, from
``PERDURE_DATABASE_URL``: a test sets it (to its ``database_url``), then loads the
example, and the modules are forgotten afterwards, so that the next test's load
builds apps on its own database.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import subprocess
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


def run_script(name: str, timeout: float = 60, database_url: str | None = None) -> str:
    """Run ``python examples/<name>/main.py`` as a user would, from the repository root, on
    the default database (a scratch folder) or on ``database_url`` (as
    ``PERDURE_DATABASE_URL``); returns its output, after checking that it succeeded and
    left none of the processes it names ("pid N") running."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERDURE_")}
    if database_url is not None:
        env["PERDURE_DATABASE_URL"] = database_url
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name / "main.py")],
        cwd=EXAMPLES.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    for pid in {int(pid) for pid in re.findall(r"\(pid (\d+)\)", done.stdout)}:
        assert not _running(pid), f"{name} left process {pid} running"
    return done.stdout


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or reused by another user
        return False
    return True
