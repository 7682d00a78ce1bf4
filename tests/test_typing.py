"""The public API is typed: mypy checks start/run arguments against the workflow, in
the plain form ``app.start(fn, *args)`` and with options ``app.options(...).start(...)``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import perdure

SAMPLE = textwrap.dedent(
    """
    import perdure

    app = perdure.App()

    @app.workflow
    def checkout(order: dict[str, int], retries: int = 1) -> str:
        return "ok"

    @app.workflow
    async def ship(order: dict[str, int]) -> int:
        return 1

    @app.step(retry=perdure.Retry(max_attempts=3))
    def charge(amount: int) -> float:
        return 1.0

    async def main() -> None:
        reveal_type(await app.options(workflow_id="s").start_async(ship, {"a": 1}))
        reveal_type(await app.options(timeout=5).run_async(ship, {"a": 1}))
        reveal_type(await app.run_async(ship, {"a": 1}))

    handle = app.options(workflow_id="order-42").start(checkout, {"a": 1})
    reveal_type(handle)
    reveal_type(app.options(workflow_id="x", timeout=3).run(checkout, {"a": 1}))
    reveal_type(app.start(checkout, {"a": 1}, retries=2))
    reveal_type(charge)
    reveal_type(app.start(ship, {"a": 1}))
    reveal_type(app.start(checkout, {"a": 1}, workflow_id="order-43"))
    reveal_type(app.start("checkout", {"a": 1}))
    app.options(workflow_id="bad-1").start(checkout, "not a dict")
    app.start(checkout, {"a": 1}, retries="2")
    app.options(timeout=3).run(ship, {"a": "b"})
    app.start(checkout)
    app.options(workflow_id=1)
    reveal_type(app.start(checkout, {"a": 1}, timeout=3))

    # What the engine calls back into (its host): the app and its client both are one.
    from typing import Any, Protocol

    class Host(Protocol):
        @property
        def store(self) -> perdure.storage.Store: ...
        @property
        def serializer(self) -> perdure.Serializer: ...
        @property
        def clock(self) -> perdure.Clock: ...
        @property
        def registry(self) -> Any: ...
        @property
        def settings(self) -> perdure.Settings: ...
        @property
        def notifier(self) -> Any: ...
        def wake(self) -> None: ...

    hosts: list[Host] = [app, app.client]
    """
)

#: The lines of SAMPLE that must be type errors, and why.
ERRORS = {
    31: "a str, not a dict (options form)",
    32: 'retries="2" (plain form)',
    33: "a dict[str, str], not a dict[str, int] (async workflow, options form)",
    34: "the order is missing",
    35: "a workflow ID is a str",
}


def test_start_and_run_are_checked_against_the_workflow(tmp_path: Path) -> None:
    (tmp_path / "sample.py").write_text(SAMPLE)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "sample.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        # Check the perdure that this test imports (PYTHONPATH may be relative).
        env={**os.environ, "PYTHONPATH": str(Path(perdure.__file__).parent.parent)},
    )
    lines = result.stdout.splitlines()
    revealed = [line.split("Revealed type is ")[1] for line in lines if "Revealed type" in line]
    assert revealed == [
        '"perdure._handle.WorkflowHandle[int]"',
        '"int"',
        '"int"',
        '"perdure._handle.WorkflowHandle[str]"',
        '"str"',
        '"perdure._handle.WorkflowHandle[str]"',
        '"def (amount: int) -> float"',
        '"perdure._handle.WorkflowHandle[int]"',
        # The older form, options as keywords: accepted, its arguments unchecked.
        '"perdure._handle.WorkflowHandle[Any]"',
        '"perdure._handle.WorkflowHandle[Any]"',
        '"perdure._handle.WorkflowHandle[Any]"',
    ], result.stdout
    errors = [line for line in lines if ": error:" in line]
    lines_with_errors = {int(line.split(":")[1]) for line in errors}
    assert lines_with_errors == set(ERRORS), result.stdout
