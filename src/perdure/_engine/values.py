"""Replay-stable values inside a workflow: its ID, the time, UUIDs and random numbers.

``now()``, ``uuid4()`` and ``random()`` are recorded like steps, so that a replay
sees the value the first run saw. The value is known before its record commits,
so in an async workflow (where these sync calls run on the event loop's thread)
the write is deferred instead of awaited: every later durable operation of the
run waits for it first (see ``writes.py``). Outside a workflow they return fresh
values.
"""

from __future__ import annotations

import random as _random
import uuid as _uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from .._entropy import random_bytes
from .._errors import ConfigurationError
from .._model import StepRecord, StepState
from .._serialization import decode_value, encode_value
from .drivers import drive_on_loop, drive_sync
from .effects import Op
from .scope import current_workflow_id
from .state import RunState, current_run

T = TypeVar("T")

NOW = "perdure.now"
UUID4 = "perdure.uuid4"
RANDOM = "perdure.random"


def record_value(run: RunState, name: str, make: Callable[[], T], hint: Any) -> Op[T]:
    """The value ``make()`` gave the first time at this position, recorded."""
    position, recorded = run.history.take(name)
    what = f"the value of {name}() in workflow {run.workflow_id!r} at position {position}"
    if recorded is not None:
        assert recorded.output is not None
        replayed: T = decode_value(run.serializer, recorded.output, hint, what)
        return replayed
    run.deliver(position, name)
    run.check_lease()
    output = encode_value(run.serializer, make(), hint, what)
    # Hand the workflow the decoded value: the same thing as on every replay.
    value: T = decode_value(run.serializer, output, hint, what)
    now = run.clock.time()
    yield run.write(StepRecord(position, name, StepState.SUCCEEDED, output, None, 1, None, now))
    return value


def recorded(run: RunState, name: str, make: Callable[[], T], hint: Any) -> T:
    """``record_value`` driven in place: waited for in a sync workflow, deferred on an
    async workflow's event loop."""
    drive = drive_on_loop if run.definition.is_async else drive_sync
    return drive(run, record_value(run, name, make, hint))


def workflow_id() -> str:
    """The ID of the running workflow, in the workflow and in its steps (for idempotency
    keys); raises ``ConfigurationError`` outside a workflow."""
    value = current_workflow_id.get()
    if value is None:
        raise ConfigurationError("perdure.workflow_id() was called outside a workflow")
    return value


def now() -> datetime:
    """The current time (UTC), recorded: a replay returns the time the first run saw.
    Never waits for a commit on an async workflow's event loop."""
    run = current_run.get()
    if run is None:
        return datetime.now(timezone.utc)
    clock = run.clock
    return recorded(
        run, NOW, lambda: datetime.fromtimestamp(clock.time(), tz=timezone.utc), datetime
    )


def _new_uuid4() -> _uuid.UUID:
    # uuid.uuid4() without its system call per UUID (``_entropy``): on an async
    # workflow's event loop that call would release the interpreter lock and wait for it.
    return _uuid.UUID(bytes=random_bytes(16), version=4)


def uuid4() -> _uuid.UUID:
    """A random UUID, recorded: a replay returns the same UUID (use it as an idempotency
    key)."""
    run = current_run.get()
    if run is None:
        return _new_uuid4()
    return recorded(run, UUID4, _new_uuid4, _uuid.UUID)


def random() -> float:
    """A random float in [0, 1), recorded: a replay returns the same number."""
    run = current_run.get()
    if run is None:
        return _random.random()
    return recorded(run, RANDOM, _random.random, float)
