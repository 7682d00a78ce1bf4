"""The public API is typed: mypy checks start/run arguments against the workflow."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SAMPLE = textwrap.dedent(
    """
    import perdure

    app = perdure.App()

    @app.workflow
    def checkout(order: dict[str, int], retries: int = 1) -> str:
        return "ok"

    @app.step(retry=perdure.Retry(max_attempts=3))
    def charge(amount: int) -> float:
        return 1.0

    handle = app.start(checkout, {"a": 1}, workflow_id="order-42")
    reveal_type(handle)
    reveal_type(app.run(checkout, {"a": 1}, workflow_id="x"))
    reveal_type(app.start(checkout, {"a": 1}, retries=2))
    reveal_type(charge)
    app.start(checkout, "not a dict", workflow_id="bad-1")
    app.start(checkout, {"a": 1}, retries="2")
    """
)


def test_start_and_run_are_checked_against_the_workflow(tmp_path: Path) -> None:
    (tmp_path / "sample.py").write_text(SAMPLE)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "sample.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = result.stdout.splitlines()
    revealed = [line.split("Revealed type is ")[1] for line in lines if "Revealed type" in line]
    assert revealed == [
        '"perdure._handle.WorkflowHandle[str]"',
        '"str"',
        '"perdure._handle.WorkflowHandle[str]"',
        '"def (amount: int) -> float"',
    ], result.stdout
    errors = [line for line in lines if ": error:" in line]
    assert any("sample.py:19:" in line for line in errors), result.stdout  # a str, not a dict
    assert any("sample.py:20:" in line for line in errors), result.stdout  # retries="2"
    assert len({line.split(":")[1] for line in errors}) == 2, result.stdout
