"""Events: ``perdure.set_event`` publishes a value that ``app.get_event`` reads.

Publishing is recorded at its position (a replay does not publish again), and the
value is written in the same transaction as its record, replacing any earlier
value. Steps can't publish events: a step's body may run more than once (retries,
a crash before its record), so an event it set would not be published exactly
once; return the value from the step and publish it from the workflow.
"""

from __future__ import annotations

from typing import Any

from .._errors import ConfigurationError
from .._model import StepRecord, StepState
from .._serialization import encode_value
from .._validation import check_key
from .drivers import drive_async, drive_on_loop, drive_sync
from .effects import Commit, Flush, Op
from .scope import current_workflow_id
from .state import RunState, current_run

SET_EVENT = "perdure.set_event"


def publish(run: RunState, key: str, value: Any) -> Op[None]:
    """Publish ``value`` as the run's event ``key``, once."""
    position, recorded = run.history.take(SET_EVENT)
    if recorded is not None:
        return
    what = f"the value of event {key!r} of workflow {run.workflow_id!r} at position {position}"
    output = encode_value(run.serializer, value, Any, what)
    run.check_lease()
    record = StepRecord(
        position, SET_EVENT, StepState.SUCCEEDED, output, None, 1, None, run.clock.time()
    )
    yield Flush()
    yield Commit(
        lambda: run.store.set_event(run.workflow_id, run.lease, record, key),
        run.accepted,
        barrier=True,
    )


def _event_run(function: str) -> RunState:
    run = current_run.get()
    if run is not None:
        return run
    if current_workflow_id.get() is not None:
        raise ConfigurationError(
            f"perdure.{function}() was called inside a step of workflow "
            f"{current_workflow_id.get()!r}: steps can't publish events (a step may run "
            "more than once); return the value from the step and publish it from the workflow"
        )
    raise ConfigurationError(f"perdure.{function}() was called outside a workflow")


def set_event(key: str, value: Any) -> None:
    """Publish ``value`` as this workflow's event ``key``; ``app.get_event`` reads it from
    outside. Recorded at its position: a replay does not set it again. The value is
    written in the same transaction as its record, replacing any earlier value. In an
    async workflow it does not wait for that commit (the event loop must not block):
    the workflow's next durable operation does; ``await perdure.set_event_async(...)``
    waits for it. Steps can't publish events (``ConfigurationError``): publish what the
    step returns from the workflow. A key that breaks the rule of ``perdure._validation``
    (not a ``str``, over 1,000 bytes, a NUL) raises ``InvalidValueError`` and records
    nothing."""
    key = check_key("event key", key)
    run = _event_run("set_event")
    drive = drive_on_loop if run.definition.is_async else drive_sync
    drive(run, publish(run, key, value))


async def set_event_async(key: str, value: Any) -> None:
    """``set_event`` for async workflows."""
    key = check_key("event key", key)
    run = _event_run("set_event_async")
    await drive_async(run, publish(run, key, value))
