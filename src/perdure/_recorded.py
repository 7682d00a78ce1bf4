"""Replay-stable values inside a workflow: its ID, the time, UUIDs and random numbers.

``now()``, ``uuid4()`` and ``random()`` are recorded like steps (one write each the
first time), so that a replay sees the value the first run saw. Outside a
workflow they return fresh values.
"""

from __future__ import annotations

import random as _random
import uuid as _uuid
from datetime import datetime, timezone

from ._clock import Clock
from ._context import current_run, current_workflow_id
from ._errors import ConfigurationError
from ._registry import StepDef
from ._retry import NO_RETRY
from ._runtime import WorkflowRun


def _now_value(clock: Clock) -> datetime:
    return datetime.fromtimestamp(clock.time(), tz=timezone.utc)


def _new_uuid() -> _uuid.UUID:
    return _uuid.uuid4()


def _new_random() -> float:
    return _random.random()


_NOW = StepDef("perdure.now", _now_value, False, NO_RETRY)
_UUID4 = StepDef("perdure.uuid4", _new_uuid, False, NO_RETRY)
_RANDOM = StepDef("perdure.random", _new_random, False, NO_RETRY)


def _run() -> WorkflowRun | None:
    return current_run.get()


def workflow_id() -> str:
    """The ID of the running workflow, in the workflow and in its steps (for idempotency
    keys); raises ``ConfigurationError`` outside a workflow."""
    value = current_workflow_id.get()
    if value is None:
        raise ConfigurationError("perdure.workflow_id() was called outside a workflow")
    return value


def now() -> datetime:
    """The current time (UTC), recorded: a replay returns the time the first run saw."""
    run = _run()
    if run is None:
        return datetime.now(timezone.utc)
    value: datetime = run.call_step(_NOW, (run.clock,), {})
    return value


def uuid4() -> _uuid.UUID:
    """A random UUID, recorded: a replay returns the same UUID (use it as an idempotency key)."""
    run = _run()
    if run is None:
        return _uuid.uuid4()
    value: _uuid.UUID = run.call_step(_UUID4, (), {})
    return value


def random() -> float:
    """A random float in [0, 1), recorded: a replay returns the same number."""
    run = _run()
    if run is None:
        return _random.random()
    value: float = run.call_step(_RANDOM, (), {})
    return value
