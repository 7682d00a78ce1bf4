"""``app.cancel`` from inside a workflow, recorded like a step.

Its answer (whether the workflow was newly asked) comes from the database, so it
cannot be deferred: in an async workflow only ``await app.cancel_async(...)`` may
ask, never the sync form on the event loop.
"""

from __future__ import annotations

import json

from .._error_codec import decode_error, encode_error
from .._errors import ConfigurationError, StepFailedError, WorkflowNotFoundError
from .._model import StepRecord, StepState
from .._validation import check_workflow_id
from .drivers import drive_async, drive_sync
from .effects import Blocking, Flush, Op
from .host import Host
from .state import RunState

CANCEL = "perdure.cancel"


def cancel(host: Host, run: RunState, workflow_id: str) -> Op[bool]:
    """Ask ``workflow_id`` and its active descendants to cancel; whether it was newly
    asked (False: it had finished, or was asked before)."""
    position, recorded = run.history.take(CANCEL)
    if recorded is not None:
        if recorded.status == StepState.FAILED:
            raise decode_error(recorded.error or "{}", StepFailedError, run.serializer)
        return bool(json.loads(recorded.output or "false"))
    run.deliver(position, CANCEL)
    run.check_lease()
    yield Flush()
    asked = yield Blocking(host.store.cancel_workflow, (workflow_id, host.clock.time()))
    now = host.clock.time()
    if asked is None:
        error = WorkflowNotFoundError(workflow_id)
        yield run.write(
            StepRecord(
                position,
                CANCEL,
                StepState.FAILED,
                None,
                encode_error(error, run.serializer),
                1,
                None,
                now,
            )
        )
        raise error
    if asked:
        host.cancel_local(asked)
        host.wake()  # suspended ones were woken: claim them now
    output = json.dumps(bool(asked))
    yield run.write(StepRecord(position, CANCEL, StepState.SUCCEEDED, output, None, 1, None, now))
    return bool(asked)


def cancel_from_workflow(host: Host, run: RunState, workflow_id: str) -> bool:
    """``app.cancel`` inside a synchronous workflow."""
    check_workflow_id(workflow_id)
    if run.definition.is_async:
        raise ConfigurationError(
            f"app.cancel() waits for the database: in async workflow {run.workflow_id!r}, "
            "await app.cancel_async(...)"
        )
    return drive_sync(run, cancel(host, run, workflow_id))


async def cancel_from_workflow_async(host: Host, run: RunState, workflow_id: str) -> bool:
    """``app.cancel_async`` inside an async workflow."""
    check_workflow_id(workflow_id)
    return await drive_async(run, cancel(host, run, workflow_id))
