"""Running a step: its attempts, retries, timeouts and conditions, written once.

A step takes its position when it is *called* (for an async step: at the call,
not when it is awaited), so that positions do not depend on timing. A position
holding a final record returns (or raises) what was recorded without running; a
new step runs attempt after attempt until one succeeds, the retry policy gives
up, or the workflow is suspended for a long wait; each attempt's outcome is
recorded with one fenced write, a retry's before the next attempt, the final one
before the run's next durable operation or with its outcome (``writes.py``). See ``attempts.py``
for timeouts and for what counts as a failed attempt.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from .._error_codec import decode_error
from .._errors import StepFailedError
from .._model import StepRecord, StepState
from .._registry import StepDef
from . import conditions
from .attempts import ABANDONED, abandoned
from .call import StepCall
from .drivers import drive_async, drive_sync
from .effects import FLUSH, Attempt, Blocking, Op, Pause
from .state import RunState
from .transactions import transaction_attempt

# Read once: an enum member costs a descriptor lookup on every access (replay reads one
# per recorded step).
_SUCCEEDED, _FAILED = StepState.SUCCEEDED, StepState.FAILED


def call_step(
    run: RunState, definition: StepDef, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Run (or replay) a synchronous step in the calling thread."""
    position, recorded = run.history.take(definition.name)
    return drive_sync(run, step(StepCall(run, definition, position), recorded, args, kwargs))


def call_step_async(
    run: RunState, definition: StepDef, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Coroutine[Any, Any, Any]:
    """Take the step's position now, at the call, and return the coroutine that runs
    (or replays) it."""
    position, recorded = run.history.take(definition.name)
    return drive_async(run, step(StepCall(run, definition, position), recorded, args, kwargs))


def step(
    call: StepCall, recorded: StepRecord | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Op[Any]:
    """The step at ``call``'s position, whose record there is ``recorded``."""
    run, definition = call.run, call.definition
    if recorded is not None:
        if recorded.status == _SUCCEEDED:
            assert recorded.output is not None
            return run.serializer.loads(recorded.output, definition.return_hint)
        if recorded.status == _FAILED:
            assert recorded.error is not None
            raise decode_error(recorded.error, StepFailedError, run.serializer)
        # RETRYING: go on counting from the recorded attempts, after the recorded wait.
        call.attempts = recorded.attempts
        call.next_attempt_at = recorded.next_attempt_at
        conditions.restore(call, recorded)
    # An attempt is a side effect: what it may rest on must be durable first. (The
    # previous step's held record needs no flush: the driver writes it before any effect,
    # this step's attempt too, and checks the lease again after it.)
    if not run.writes.clear:
        yield FLUSH
    # Whether attempts may have conditions (a breaker, a probe): most steps have none, and
    # then neither the gate nor the breaker's report is asked, attempt after attempt.
    conditional = definition.breaker is not None or definition.retry.wait_for is not None
    while True:
        if call.next_attempt_at is not None or (conditional and conditions.gated(call)):
            if not (yield from _ready(call)):
                continue
        else:
            run.deliver(call.position, definition.name)  # what _ready comes down to
        if ABANDONED and abandoned(run.workflow_id, call.position) is not None:
            yield from _abandoned_ended(call)
        call.start_attempt()
        if definition.transaction:
            attempted = yield from transaction_attempt(call, args, kwargs)
            if attempted.recorded:
                return attempted.value
        else:
            attempted = yield Attempt(definition, args, kwargs, call.position, call.attempts)
        if attempted.interrupted:
            # Record and raise what is due (if nothing is any more, it runs again).
            run.deliver(call.position, definition.name)
            continue
        result = call.after(attempted.value, attempted.error)
        if conditional and conditions.reports(call, result.raised):
            yield Blocking(conditions.report, (call, result.raised))
        # Only what comes next is held across the commit's wait: thousands of steps may be
        # in flight, and every object they keep alive is walked by the garbage collector.
        record, retry, error, value = result.record, result.retry, result.error, result.value
        del attempted, result
        if retry:
            yield run.write(record)
            continue
        # Final: written before whatever the run does next, or with its outcome.
        run.hold(record)
        if error is not None:
            raise error
        return value


def _ready(call: StepCall) -> Op[bool]:
    """Wait for the step's next attempt (suspending the workflow for a long wait),
    deliver a due cancel or deadline, then check the attempt's conditions (a probe, a
    circuit breaker); False when it must wait again."""
    run = call.run
    # Release, a cancel or the deadline ends the wait early (and is not suspended).
    while (wait := call.wait_seconds()) > 0 and not run.released:
        if run.signals.due() is not None:
            break
        if wait > run.suspend_after:
            assert call.next_attempt_at is not None
            run.suspend(call.next_attempt_at, call.wait_topic)
        yield Pause(wait)
    run.deliver(call.position, call.definition.name)
    if not conditions.gated(call):
        return True
    run.check_lease()
    go, record = yield Blocking(conditions.gate, (call,))
    if record is not None:
        yield run.write(record)
    return bool(go)


def _abandoned_ended(call: StepCall) -> Op[None]:
    """Wait until the step's timed-out attempt, abandoned in its thread, has ended: no
    two attempts of one step run at once."""
    run = call.run
    while (straggler := abandoned(run.workflow_id, call.position)) is not None:
        run.check_lease()
        run.deliver(call.position, call.definition.name)
        yield Pause(run.poll_interval, straggler)
