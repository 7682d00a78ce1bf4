"""Changing a workflow's code under running workflows: ``patched`` and ``deprecate_patch``.

A workflow replays from the top, so new code that calls another step at a position
where an older run recorded something else would not replay that run. ``patched(id)``
lets both coexist: the new code runs under ``if perdure.patched(id):``, the old code in
the ``else`` branch.

- A run that reaches the call for the first time with the new code (nothing recorded
  at its position, and nothing after it) records a marker there, like a step, and
  gets True, on this run and on every replay.
- A run whose history was written before the change holds something else at that
  position (or already continues past it): the call takes no position, records
  nothing and returns False, so the old run's later records still line up.

``deprecate_patch(id)`` is the second stage, once no run that took the old branch is
left: the code keeps only the new branch; the call takes the marker's position when a
run recorded one, and takes nothing otherwise, so runs with and without the marker
both replay. Third stage: remove the call once no run with the marker is left.
"""

from __future__ import annotations

from .._errors import ConfigurationError
from .._model import StepRecord, StepState
from .._validation import check_name
from .drivers import drive_on_loop, drive_sync
from .effects import Op
from .scope import scope
from .state import RunState, current_run

#: The name of a patch's marker record: this prefix and the change ID.
PATCH = "perdure.patch:"


def patch_op(run: RunState, change_id: str) -> Op[bool]:
    """Whether this run takes the new branch of ``change_id`` (see the module)."""
    name = PATCH + change_id
    position = scope().peek()
    recorded = run.history.recorded.get(position)
    if recorded is None:
        if run.history.continues_past(position):
            return False  # recorded by code that took no position here: the old code
    elif recorded.name != name and recorded.status != StepState.CANCELLED:
        return False  # the old code recorded its own step here
    # The marker (or a cancel delivered here) replays through the one history check.
    position, recorded = run.history.take(name)
    if recorded is not None:
        return True
    run.deliver(position, name)
    run.check_lease()
    yield run.write(
        StepRecord(position, name, StepState.SUCCEEDED, None, None, 1, None, run.clock.time())
    )
    return True


def _checked(change_id: str, what: str) -> tuple[RunState, str]:
    run = current_run.get()
    if run is None:
        raise ConfigurationError(f"perdure.{what}({change_id!r}) was called outside a workflow")
    return run, check_name("change ID", change_id)


def patched(change_id: str) -> bool:
    """True when this run of the workflow takes the new code of change ``change_id``:
    it reached this call for the first time with the new code (a marker is recorded
    here, like a step). False when its history was recorded before the change (then
    nothing is recorded and no position is taken). Replay-stable; in sync and async
    workflows alike. Raises ``ConfigurationError`` outside a workflow."""
    run, change_id = _checked(change_id, "patched")
    drive = drive_on_loop if run.definition.is_async else drive_sync
    return drive(run, patch_op(run, change_id))


def deprecate_patch(change_id: str) -> None:
    """The second stage of a change: the code keeps only its new branch. A run that
    recorded the marker of ``change_id`` replays past it; a run without it takes no
    position here; nothing is recorded. Raises ``ConfigurationError`` outside a
    workflow."""
    run, change_id = _checked(change_id, "deprecate_patch")
    name = PATCH + change_id
    recorded = run.history.recorded.get(scope().peek())
    if recorded is not None and recorded.name == name:
        run.history.take(name)
