"""Child workflows and fan-out/fan-in, from inside a workflow.

``app.start`` called inside a workflow starts a *child*: its ID is derived from the
parent's ID and the call's position (``parent/3``) unless one is given, and the
start is recorded like a step (the child is created with an idempotent insert, so
a replay or a crash in between never starts it twice). The child inherits its
parent's deadline when that is earlier than its own timeout. Waiting on a child
(``handle.result()``) is a durable wait: the child's outcome reaches the parent as
a message written in the transaction that records the child's outcome (the JSON
of an ``Outcome``), and the parent takes it with the same fenced consume-and-record
as ``perdure.recv``; when that message is gone (an earlier wait for the same child
took it), the outcome is read from the child's record. A parent that waits longer
than ``suspend_after`` is suspended until its child ends.

Fan-out/fan-in: async workflows ``asyncio.gather`` child results (or steps); sync
workflows start their children first and then ``perdure.gather(*handles)``.
``perdure.first`` / ``first_async`` wait for the first of several children and
record which one it was, so that a replay takes the same branch.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from .._error_codec import decode_error
from .._errors import (
    ConfigurationError,
    StepFailedError,
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowNotFoundError,
    WorkflowTimeoutError,
    workflow_id_taken,
)
from .._model import (
    NewWorkflow,
    Outcome,
    StepRecord,
    StepState,
    WaitKind,
    WaitReason,
    WorkflowState,
)
from .._serialization import decode_value, encode_call, encode_value
from .._telemetry import carrier, started
from .._validation import check_optional_workflow_id, optional_positive_seconds
from .drivers import drive_async, drive_on_loop, drive_sync
from .effects import Commit, Flush, Op
from .host import Host
from .messages import Receive
from .state import RunState

START_CHILD = "perdure.start_child"
CHILD_RESULT = "perdure.child_result"


# -- starting -----------------------------------------------------------------------------


def start(
    host: Host,
    run: RunState,
    fn: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    workflow_id: str | None,
    timeout: float | None,
) -> Op[str]:
    """Start a child of ``run``, recorded; its ID."""
    definition = host.registry.workflow(fn)
    # The rules of app.start outside a workflow, before anything is recorded.
    workflow_id = check_optional_workflow_id(workflow_id)
    what = f"the timeout of child workflow {definition.name!r}"
    timeout = optional_positive_seconds(what, timeout)
    inputs = encode_call(
        host.serializer, definition.fn, args, kwargs, f"child workflow {definition.name!r}"
    )
    position, recorded = run.history.take(START_CHILD)
    what = f"the ID of the child started by workflow {run.workflow_id!r} at position {position}"
    if recorded is not None:
        if recorded.status == StepState.FAILED:
            raise decode_error(recorded.error or "{}", StepFailedError, run.serializer)
        child_id: str = decode_value(run.serializer, recorded.output or '""', str, what)
        return child_id
    run.deliver(position, START_CHILD)
    run.check_lease()
    now = run.clock.time()
    deadline = None if timeout is None else now + timeout
    if run.deadline is not None and not run.deadline_delivered:
        # A deadline reaches the children started before it passed (not those a cleanup
        # starts after it was raised: they must be able to run).
        deadline = run.deadline if deadline is None else min(deadline, run.deadline)
    new = NewWorkflow(
        id=workflow_id or f"{run.workflow_id}/{position}",
        name=definition.name,
        inputs=inputs,
        serializer=host.serializer.name,
        app_version=host.settings.app_version,
        created_at=now,
        parent_id=run.workflow_id,
        deadline_at=deadline,
        # The child continues the trace of the parent's execution that starts it.
        trace_context=carrier(),
    )

    def created(stored: tuple[Any, bool]) -> None:
        existing, was_created = stored
        if not was_created and existing.name != new.name:
            raise workflow_id_taken(new.id, existing.name, new.name)
        if was_created:
            started(new.name)
        host.wake()  # claim the new child now, not at the next tick

    # Starting a child is a side effect: what its arguments may rest on comes first.
    yield Flush()
    yield Commit(lambda: host.store.create_workflow(new, None, None), created, barrier=True)
    output = encode_value(run.serializer, new.id, str, what)
    record = StepRecord(position, START_CHILD, StepState.SUCCEEDED, output, None, 1, None, now)
    yield Commit(run.write(record).submit, run.accepted, only_after_success=True)
    return new.id


def start_child(
    host: Host,
    run: RunState,
    fn: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    workflow_id: str | None,
    timeout: float | None,
) -> str:
    """``app.start`` inside a workflow: start a child, recorded; its ID (wrap it in a
    handle). In an async workflow it does not wait for the commit: the child is
    created once the run's earlier writes are durable, and the workflow's next durable
    operation waits for it (and raises what went wrong)."""
    drive = drive_on_loop if run.definition.is_async else drive_sync
    return drive(run, start(host, run, fn, args, kwargs, workflow_id, timeout))


async def start_child_async(
    host: Host,
    run: RunState,
    fn: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    workflow_id: str | None,
    timeout: float | None,
) -> str:
    """``app.start_async`` inside an async workflow; the child's ID."""
    return await drive_async(run, start(host, run, fn, args, kwargs, workflow_id, timeout))


# -- waiting for a child --------------------------------------------------------------------


def _look(run: RunState, child_id: str, first: bool) -> str | None:
    """The child's outcome read from its record (the JSON of an ``Outcome``) when it has
    finished; checks the first time that it is a child of ``run``."""
    record = run.store.get_workflow(child_id)
    if record is None:
        raise WorkflowNotFoundError(child_id)
    if first and record.parent_id != run.workflow_id:
        raise ConfigurationError(
            f"workflow {run.workflow_id!r} waits for workflow {child_id!r}, "
            "which is not its child: inside a workflow, wait only for children it "
            "started with app.start(); wait for other workflows from a step"
        )
    if WorkflowState(record.status).terminal:
        return Outcome.of(record).to_json()
    return None


def result(
    run: RunState, child_id: str, return_hint: Any, timeout: float | timedelta | None
) -> Op[Any]:
    """Wait for the child's outcome: its value, or raise its error."""
    topic = WaitReason(WaitKind.CHILD, child_id).topic
    looks = [0]

    def look() -> str | None:
        looks[0] += 1
        return _look(run, child_id, first and looks[0] == 1)

    wait = Receive(run, topic, timeout, CHILD_RESULT, in_place=run.suspend_after, look=look)
    first = wait.first
    payload = yield from wait.wait(watch=child_id, poll=run.suspend_after)
    if payload is None:
        raise WorkflowTimeoutError(child_id, wait.timeout or 0.0)
    outcome = Outcome.from_json(payload)
    if outcome.state == WorkflowState.SUCCEEDED:
        what = (
            f"the result of child workflow {child_id!r} awaited by workflow "
            f"{run.workflow_id!r} at position {wait.position}"
        )
        return decode_value(run.serializer, outcome.output or "null", return_hint, what)
    if outcome.state == WorkflowState.CANCELLED:
        raise WorkflowCancelledError(child_id)
    raise decode_error(outcome.error or "{}", WorkflowFailedError, run.serializer)


def child_result(
    run: RunState, child_id: str, return_hint: Any, timeout: float | timedelta | None
) -> Any:
    """``handle.result()`` inside a synchronous workflow: a durable wait for a child."""
    if run.definition.is_async:
        raise ConfigurationError(
            f"handle.result() blocks: in async workflow {run.workflow_id!r}, "
            "await handle.result_async()"
        )
    return drive_sync(run, result(run, child_id, return_hint, timeout))


async def child_result_async(
    run: RunState, child_id: str, return_hint: Any, timeout: float | timedelta | None
) -> Any:
    """``handle.result_async()`` inside an async workflow."""
    return await drive_async(run, result(run, child_id, return_hint, timeout))
