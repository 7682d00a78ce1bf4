"""Testing workflows: replay of recorded histories.

``perdure history ID --json > order-42.json`` (or ``history(app, "order-42")``) exports
a workflow's history: its record and its recorded steps. ``replay(app, "order-42.json")``
runs the app's current code against it and raises ``AssertionError`` with the
difference if the code no longer replays it. Keep histories of real workflows next to
the tests: CI then catches a change that would hold in-flight workflows (see
docs/changing-code.md) before it is deployed.

A replay runs the workflow function from the top, like a worker resuming it, but
never runs a step, never waits and writes to no real database: each step, wait or
recorded value returns what the history holds, and the replay stops at the first
position the history has no final record for (the point where the recorded run was,
or would go on). The store it runs against is a temporary SQLite file, deleted
afterwards.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .._app import App
from .._engine.bridge import FutureBridge
from .._engine.history import History
from .._engine.run import WorkflowRun
from .._engine.state import task_factory
from .._errors import NonDeterminismError, PerdureError, Suspended
from .._model import (
    Lease,
    NewWorkflow,
    Outcome,
    StepRecord,
    StepState,
    WorkflowRecord,
    WorkflowState,
)
from .._regions import store_holding
from ..storage import Store, open_store

__all__ = ["FORMAT", "ReplayResult", "history", "replay"]

#: The ``format`` of an exported history.
FORMAT = "perdure.history/1"
#: The owner of the lease a replay runs under (in its temporary store only).
_REPLAYER = "perdure.testing.replay"


def history(app: App, workflow_id: str) -> dict[str, Any]:
    """The history of workflow ``workflow_id`` in the app's database, as JSON-ready data:
    ``{"format": FORMAT, "workflow": {...}, "steps": [...]}`` (what ``perdure history ID
    --json`` prints). Raises ``WorkflowNotFoundError`` when there is no such workflow."""
    store = store_holding(app, workflow_id)  # with regions, the one holding it
    record = store.get_workflow(workflow_id)
    assert record is not None
    return {
        "format": FORMAT,
        "workflow": dataclasses.asdict(record),
        "steps": [dataclasses.asdict(step) for step in store.load_steps(workflow_id)],
    }


@dataclasses.dataclass(frozen=True)
class ReplayResult:
    """What a replay that matched found: how many recorded positions the code took, and
    whether it ran to its end (then ``outcome`` is what it returned or raised) or stopped
    at ``stopped_at``, the first position without a final record."""

    workflow_id: str
    replayed: int
    outcome: Outcome | None
    stopped_at: str | None


class _EndOfHistory(Suspended):  # noqa: N818 - a signal
    """The replay reached a position the history holds no final record for: it unwinds
    the run like a suspension (a signal that the workflow's code cannot catch as an
    ``Exception``, and that ends the run without an outcome)."""

    def __init__(self, workflow_id: str, position: str) -> None:
        super().__init__(workflow_id, 0.0, None)
        self.position = position


class _ReplayHistory(History):
    """A history that stops the run where the recorded one ends, instead of running."""

    def __init__(self, run: WorkflowRun, steps: list[StepRecord]) -> None:
        super().__init__(run.workflow_id, steps, run.signals)
        self._run = run
        self.taken: set[str] = set()
        self.end: str | None = None

    def take(self, name: str) -> tuple[str, StepRecord | None]:
        position, recorded = super().take(name)
        if recorded is None or not StepState(recorded.status).final:
            self.end = position
            self._run.unwind(_EndOfHistory(self.workflow_id, position))
        self.taken.add(position)
        return position, recorded


def _load(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(source, Mapping):
        data = dict(source)
    else:
        data = json.loads(Path(source).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(
            f"not a perdure history (expected format {FORMAT!r}): export one with "
            "'perdure history ID --json'"
        )
    return data


def _records(data: dict[str, Any]) -> tuple[WorkflowRecord, list[StepRecord]]:
    fields = {field.name for field in dataclasses.fields(WorkflowRecord)}
    workflow = {key: value for key, value in data["workflow"].items() if key in fields}
    step_fields = {field.name for field in dataclasses.fields(StepRecord)}
    steps = [
        StepRecord(**{key: value for key, value in step.items() if key in step_fields})
        for step in data["steps"]
    ]
    return WorkflowRecord(**workflow), steps


def _seed(store: Store, record: WorkflowRecord, steps: list[StepRecord]) -> WorkflowRecord:
    """The workflow and its steps in the temporary store, owned by the replayer, with
    no cancel request or deadline (nothing may be delivered during a replay)."""
    new = NewWorkflow(
        record.id, record.name, record.inputs, record.serializer, record.app_version, 0.0
    )
    seeded, _ = store.create_workflow(new, _REPLAYER, None).result()
    for step in steps:
        store.record_step(seeded.id, Lease(_REPLAYER, seeded.epoch), step).result()
    return seeded


def _execute(run: WorkflowRun) -> Outcome:
    if not run.definition.is_async:
        return contextvars.Context().run(run.execute)
    assert run.loop is not None
    # A fresh context, as the executor gives each run: the task copies it.
    task = contextvars.Context().run(run.loop.create_task, run.execute_async())
    return run.loop.run_until_complete(task)


def replay(app: App, source: str | os.PathLike[str] | Mapping[str, Any]) -> ReplayResult:
    """Run ``app``'s current code against a recorded history (a file written by
    ``perdure history ID --json``, or the data ``history()`` returns).

    Raises ``AssertionError`` saying what differs when the code no longer replays it:
    at a position it calls another step than the one recorded, it ends without
    reaching recorded positions, or it ends with another outcome than the recorded
    one. Returns a ``ReplayResult`` otherwise. Runs no step, waits for nothing and
    writes to no real database."""
    record, steps = _records(_load(source))
    definition = app.registry.workflows.get(record.name)
    if definition is None:
        raise AssertionError(
            f"workflow {record.id!r} is a {record.name!r}, which this app does not register"
        )
    with tempfile.TemporaryDirectory(prefix="perdure-replay-") as folder:
        store = open_store(f"sqlite:///{folder}/replay.db")
        loop = asyncio.new_event_loop() if definition.is_async else None
        try:
            store.migrate()
            seeded = _seed(store, record, steps)
            if loop is not None:
                loop.set_task_factory(task_factory)
            run = WorkflowRun(
                record=seeded,
                definition=definition,
                lease=Lease(_REPLAYER, seeded.epoch),
                steps=steps,
                store=store,
                serializer=app.serializer,
                clock=app.clock,
                bridge=FutureBridge(loop) if loop is not None else None,
                suspend_after=0.0,
            )
            cursor = _ReplayHistory(run, steps)
            run.history = cursor
            return _judge(record, steps, run, cursor)
        finally:
            if loop is not None:
                loop.close()
            store.close()


def _judge(
    record: WorkflowRecord, steps: list[StepRecord], run: WorkflowRun, cursor: _ReplayHistory
) -> ReplayResult:
    try:
        outcome: Outcome | None = _execute(run)
    except NonDeterminismError as error:
        raise AssertionError(
            f"the code no longer replays workflow {record.id!r} ({record.name}): at position "
            f"{error.position} the history records step {error.recorded!r} but the code now "
            f"calls {error.actual!r}"
        ) from None
    except Suspended:  # the end of the history, or a wait whose time is not up
        outcome = None
    if cursor.end is not None or outcome is None:
        return ReplayResult(record.id, len(cursor.taken), None, cursor.end)
    missed = [step for step in steps if step.position not in cursor.taken]
    if missed:
        shown = ", ".join(f"{step.position} ({step.name!r})" for step in missed)
        raise AssertionError(
            f"the code no longer replays workflow {record.id!r} ({record.name}): it ended "
            f"({outcome.state}) without reaching the recorded position(s) {shown}"
        )
    _compare_outcome(record, outcome, run.serializer.loads, run.definition.return_hint)
    return ReplayResult(record.id, len(cursor.taken), outcome, None)


def _compare_outcome(
    record: WorkflowRecord, outcome: Outcome, loads: Callable[[str, Any], Any], hint: Any
) -> None:
    if record.status not in (state.value for state in WorkflowState if state.terminal):
        return  # the recorded run had not ended: any ending of the code is new
    if outcome.state != record.status:
        raise AssertionError(
            f"the code no longer replays workflow {record.id!r} ({record.name}): it ended "
            f"{outcome.state} where the recorded run ended {record.status}"
        )
    if outcome.state == WorkflowState.SUCCEEDED and record.output is not None:
        try:
            same = loads(outcome.output or "null", hint) == loads(record.output, hint)
        except PerdureError:
            same = outcome.output == record.output
        if not same:
            raise AssertionError(
                f"the code no longer replays workflow {record.id!r} ({record.name}): it "
                f"returned {outcome.output} where the recorded run returned {record.output}"
            )
