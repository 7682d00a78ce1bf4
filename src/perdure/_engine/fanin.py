"""Fan-in over children: ``perdure.gather`` and ``perdure.first`` / ``first_async``.

``first`` records which child finished first, so that a replay takes the same
branch even if the others have finished since. A long wait suspends the workflow,
which looks again on a backoff.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from typing import Any, Protocol

from .._errors import ConfigurationError
from .._model import StepRecord, StepState, WorkflowState
from .drivers import drive_async, drive_sync
from .effects import Blocking, Flush, Op, Pause
from .state import RunState, current_run

FIRST = "perdure.first"
#: The longest a suspended ``first`` sleeps between looks at its children.
_FIRST_MAX_POLL = 60.0
#: How often ``first`` outside a workflow looks at the children.
_OUTSIDE_POLL = 0.1


class Status(Protocol):
    """What ``first`` reads of a workflow's status."""

    @property
    def done(self) -> bool:
        """Whether it has its outcome."""
        ...


class Handle(Protocol):
    """What ``gather`` and ``first`` use of a workflow handle."""

    @property
    def workflow_id(self) -> str:
        """The workflow's ID."""
        ...

    def result(self, timeout: float | None = None) -> Any:
        """Its outcome (waiting)."""
        ...

    async def result_async(self, timeout: float | None = None) -> Any:
        """``result`` for coroutines."""
        ...

    def status(self) -> Status:
        """Its status now."""
        ...


def gather(*handles: Handle) -> list[Any]:
    """The results of these children, in order: the fan-in of a sync workflow that started
    them (``app.start``) first, so that they run concurrently. Each wait is durable; the
    first child that failed raises its error. Outside a workflow, waits for each result.
    In an async workflow, ``await asyncio.gather(*(h.result_async() for h in handles))``.
    """
    return [handle.result() for handle in handles]


def _finished(run: RunState, handles: Sequence[Handle]) -> int | None:
    for index, handle in enumerate(handles):
        record = run.store.get_workflow(handle.workflow_id)
        if record is not None and WorkflowState(record.status).terminal:
            return index
    return None


@contextlib.contextmanager
def _any_finished(run: RunState, handles: Sequence[Handle]) -> Iterator[Future[Any]]:
    """A future that resolves when any of these workflows finishes in this process (or the
    store pushes that one did)."""
    merged: Future[Any] = Future()

    def resolve(_: Future[Any]) -> None:
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            merged.set_result(None)

    waiters = [(h.workflow_id, run.notifier.subscribe(h.workflow_id)) for h in handles]
    for _, waiter in waiters:
        waiter.add_done_callback(resolve)
    try:
        yield merged
    finally:
        for workflow_id, waiter in waiters:
            run.notifier.unsubscribe(workflow_id, waiter)


def choose(run: RunState, handles: Sequence[Handle]) -> Op[int]:
    """The index of the first of ``handles`` to finish, recorded."""
    if not handles:
        raise ConfigurationError("perdure.first() needs at least one handle")
    position, recorded = run.history.take(FIRST)
    started_at: float | None = None
    if recorded is not None:
        if recorded.status != StepState.WAITING:
            return int(json.loads(recorded.output or "0"))
        started_at = recorded.next_attempt_at
    clock = run.clock
    in_place_until = clock.time() + run.suspend_after

    def record(status: StepState, output: str | None, started: float | None) -> StepRecord:
        return StepRecord(position, FIRST, status, output, None, 1, started, clock.time())

    yield Flush()
    while True:
        run.deliver(position, FIRST)
        with _any_finished(run, handles) as finished:
            index = yield Blocking(_finished, (run, handles))
            if index is not None:
                yield run.write(record(StepState.SUCCEEDED, json.dumps(index), None))
                return int(index)
            if started_at is None:
                started_at = clock.time()
                yield run.write(record(StepState.WAITING, None, started_at))
            now = clock.time()
            if now >= in_place_until:
                # Suspended, it looks again on a backoff: a tenth of the wait so far.
                waited = now - started_at
                poll = min(max(waited / 10, run.suspend_after, 1.0), _FIRST_MAX_POLL)
                run.suspend(now + poll, None)
            run.check_lease()
            yield Pause(in_place_until - now, finished)


def first(*handles: Handle) -> tuple[int, Any]:
    """Wait for the first of these children to finish: ``(index, result)`` (or its error
    raised). Which one was first is recorded, so a replay takes the same branch even if
    the others have finished since. The others go on (cancel them with ``app.cancel``).
    A long wait suspends the workflow and looks again on a backoff. In an async workflow,
    ``await perdure.first_async(...)``."""
    run = current_run.get()
    if run is None:
        return _first_outside(handles)
    if run.definition.is_async:
        raise ConfigurationError(
            "perdure.first() blocks: in an async workflow, await perdure.first_async()"
        )
    index = drive_sync(run, choose(run, handles))
    return index, handles[index].result()


async def first_async(*handles: Handle) -> tuple[int, Any]:
    """``first`` for async workflows."""
    run = current_run.get()
    if run is None:
        return await asyncio.to_thread(_first_outside, handles)
    index = await drive_async(run, choose(run, handles))
    return index, await handles[index].result_async()


def _first_outside(handles: Sequence[Handle]) -> tuple[int, Any]:
    if not handles:
        raise ConfigurationError("perdure.first() needs at least one handle")
    while True:
        for index, handle in enumerate(handles):
            if handle.status().done:
                return index, handle.result()
        time.sleep(_OUTSIDE_POLL)
