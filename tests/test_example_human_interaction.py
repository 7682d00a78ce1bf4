"""examples/human_interaction: an approval that comes in time; one that times out, is
escalated to the manager and approved; one that nobody gives."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from example_loader import load_example, run_script


@pytest.fixture
def main(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The example's main module, its app launched on the test's database."""
    monkeypatch.setenv("PERDURE_DATABASE_URL", database_url)
    monkeypatch.chdir(tmp_path)
    with load_example("human_interaction") as module, module.app:
        yield module


def outbox(main: ModuleType) -> list[dict[str, str]]:
    """What ``notify`` delivered, in order."""
    lines = Path(main.approval.OUTBOX).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def recipients(main: ModuleType) -> list[str]:
    return [message["to"] for message in outbox(main)]


def test_approved_in_time(main: ModuleType) -> None:
    decision = main.approved_in_time(main.expense(1), main.Outbox())
    assert decision == main.approval.Decision(approved=True, by="ada", escalated=False)
    assert recipients(main) == ["ada", "sam"]


def test_timed_out_escalated_then_approved(main: ModuleType) -> None:
    decision = main.escalated_then_approved(main.expense(2), main.Outbox(), answer_within=0.5)
    assert decision == main.approval.Decision(approved=True, by="grace", escalated=True)
    assert recipients(main) == ["ada", "grace", "sam"]


def test_nobody_answers_and_it_expires(main: ModuleType) -> None:
    claim = main.expense(3)
    handle = main.app.start(main.approval.expense_approval, claim, 0.3, 0.3, workflow_id=claim.id)
    decision = handle.result(timeout=30)
    assert decision == main.approval.Decision(approved=False, by=None, escalated=True)
    assert recipients(main) == ["ada", "grace", "sam"]
    assert outbox(main)[-1]["text"] == f"{claim.id} expired: nobody decided in time"


@pytest.mark.slow
def test_script_runs() -> None:
    out = run_script("human_interaction")
    assert re.search(r"expense-1-\w{6}: Decision\(approved=True, by='ada', escalated=False\)", out)
    assert re.search(r"expense-2-\w{6}: Decision\(approved=True, by='grace', escalated=True\)", out)


@pytest.mark.slow
def test_script_runs_again_on_the_same_database(database_url: str) -> None:
    # A workflow ID names one workflow for good: a second run that reused the first run's
    # IDs found those workflows finished, and waited in vain for them to start waiting.
    first = run_script("human_interaction", database_url=database_url)
    second = run_script("human_interaction", database_url=database_url)
    runs = [re.search(r"workflow IDs end in -(\w{6})", out) for out in (first, second)]
    assert runs[0] and runs[1] and runs[0].group(1) != runs[1].group(1), (first, second)
    for out, run in zip((first, second), runs, strict=True):
        assert (
            f"expense-2-{run.group(1)}: Decision(approved=True, by='grace', escalated=True)" in out
        )
