"""Child workflows and fan-out/fan-in, from inside a workflow.

``app.start`` called inside a workflow starts a *child*: its ID is derived from the
parent's ID and the call's position (``parent/3``) unless one is given, and the
start is recorded like a step (the child is created with an idempotent insert, so
a replay or a crash in between never starts it twice). Waiting on a child's handle
(``handle.result()``) is a durable wait: the child's outcome reaches the parent as
a message written in the transaction that records the child's outcome, and the
parent takes it with the same fenced consume-and-record as ``perdure.recv``. A
parent that waits longer than ``suspend_after`` is suspended until its child ends.

Fan-out/fan-in: async workflows ``asyncio.gather`` child results (or steps); sync
workflows start their children first and then ``perdure.gather(*handles)``.
``perdure.first`` / ``first_async`` wait for the first of several children and
record which one it was, so that a replay takes the same branch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ._context import current_run, current_scope
from ._errors import (
    ConfigurationError,
    NonDeterminismError,
    Suspended,
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowNotFoundError,
    WorkflowTimeoutError,
)
from ._registry import StepDef
from ._retry import NO_RETRY
from ._runtime import WorkflowRun
from ._serialization import decode_error, encode_call
from ._waiting import Receive
from .storage import (
    CANCELLED,
    CHILD_TOPIC,
    STEP_CANCELLED,
    STEP_SUCCEEDED,
    STEP_WAITING,
    SUCCEEDED,
    TERMINAL_STATUSES,
    NewWorkflow,
    StepRecord,
)

if TYPE_CHECKING:
    from ._app import App
    from ._handle import WorkflowHandle

_START_CHILD = "perdure.start_child"
_CHILD_RESULT = "perdure.child_result"
_FIRST = "perdure.first"
#: The longest a suspended ``first`` sleeps between looks at its children.
_FIRST_MAX_POLL = 60.0


# -- starting -----------------------------------------------------------------------------


def _created(app: App, new: NewWorkflow, stored: Any) -> str:
    record, created = stored
    app._started(new, record, created)
    executor = app.executor
    if executor is not None:
        executor.wake()  # claim the new child now, not at the next tick
    return new.id


def _create(app: App, new: NewWorkflow) -> str:
    return _created(app, new, app.store.create_workflow(new, None, None).result())


async def _create_async(app: App, new: NewWorkflow) -> str:
    stored = await asyncio.wrap_future(app.store.create_workflow(new, None, None))
    return _created(app, new, stored)


_START = StepDef(_START_CHILD, _create, False, NO_RETRY)
_START_ASYNC = StepDef(_START_CHILD, _create_async, True, NO_RETRY)


def _child(
    app: App,
    run: WorkflowRun,
    fn: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    workflow_id: str | None,
    timeout: float | None,
) -> NewWorkflow:
    definition = app.registry.workflow(fn)
    inputs = encode_call(
        app.serializer, definition.fn, args, kwargs, f"child workflow {definition.name!r}"
    )
    scope = current_scope.get()
    assert scope is not None, "a workflow run always has a scope"
    now = run.clock.time()
    return NewWorkflow(
        # The position the start's record takes: stable across replays.
        id=workflow_id or f"{run.workflow_id}/{scope.peek()}",
        name=definition.name,
        inputs=inputs,
        serializer=app.serializer.name,
        app_version=app.settings.app_version,
        created_at=now,
        parent_id=run.workflow_id,
        deadline_at=None if timeout is None else now + timeout,
    )


def start_child(
    app: App,
    run: WorkflowRun,
    fn: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    workflow_id: str | None,
    timeout: float | None,
) -> WorkflowHandle[Any]:
    """``app.start`` inside a synchronous workflow: start a child, recorded."""
    from ._handle import WorkflowHandle

    new = _child(app, run, fn, args, kwargs, workflow_id, timeout)
    child_id: str = run.call_step(_START, (app, new), {})
    return WorkflowHandle(app, child_id, name=new.name)


async def start_child_async(
    app: App,
    run: WorkflowRun,
    fn: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    workflow_id: str | None,
    timeout: float | None,
) -> WorkflowHandle[Any]:
    """``app.start_async`` inside an async workflow."""
    from ._handle import WorkflowHandle

    new = _child(app, run, fn, args, kwargs, workflow_id, timeout)
    child_id: str = await run.call_step_async(_START_ASYNC, (app, new), {})
    return WorkflowHandle(app, child_id, name=new.name)


# -- waiting for a child --------------------------------------------------------------------


def _wait_for(
    run: WorkflowRun, handle: WorkflowHandle[Any], timeout: float | timedelta | None
) -> Receive:
    return Receive(
        run,
        CHILD_TOPIC + handle.workflow_id,
        timeout,
        name=_CHILD_RESULT,
        in_place=run.suspend_after,
    )


def _first_wait(receive: Receive) -> bool:
    """Whether nothing is recorded for this wait yet (then check that it waits for a
    child: only a child's outcome is delivered to a workflow)."""
    return not receive.done and receive.deadline is None


def _check_child(run: WorkflowRun, handle: WorkflowHandle[Any]) -> None:
    record = run.store.get_workflow(handle.workflow_id)
    if record is None:
        raise WorkflowNotFoundError(handle.workflow_id)
    if record.parent_id != run.workflow_id:
        raise ConfigurationError(
            f"workflow {run.workflow_id!r} waits for workflow {handle.workflow_id!r}, "
            "which is not its child: inside a workflow, wait only for children it "
            "started with app.start(); wait for other workflows from a step"
        )


def _outcome(run: WorkflowRun, handle: WorkflowHandle[Any], receive: Receive) -> Any:
    if receive.payload is None:
        raise WorkflowTimeoutError(handle.workflow_id, receive.timeout or 0.0)
    status, output, error = json.loads(receive.payload)
    if status == SUCCEEDED:
        return run.serializer.loads(output or "null", handle.return_hint())
    if status == CANCELLED:
        raise WorkflowCancelledError(handle.workflow_id)
    raise decode_error(error or "{}", WorkflowFailedError)


def child_result(
    run: WorkflowRun, handle: WorkflowHandle[Any], timeout: float | timedelta | None
) -> Any:
    """``handle.result()`` inside a synchronous workflow: a durable wait for a child."""
    receive = _wait_for(run, handle, timeout)
    if _first_wait(receive):
        _check_child(run, handle)
    receive.run_sync(watch=handle.workflow_id, poll=run.suspend_after)
    return _outcome(run, handle, receive)


async def child_result_async(
    run: WorkflowRun, handle: WorkflowHandle[Any], timeout: float | timedelta | None
) -> Any:
    """``handle.result_async()`` inside an async workflow."""
    receive = _wait_for(run, handle, timeout)
    if _first_wait(receive):
        await asyncio.to_thread(_check_child, run, handle)  # a read: not on the loop
    await receive.run_async(watch=handle.workflow_id, poll=run.suspend_after)
    return _outcome(run, handle, receive)


def gather(*handles: WorkflowHandle[Any]) -> list[Any]:
    """The results of these children, in order: the fan-in of a sync workflow that started
    them (``app.start``) first, so that they run concurrently. Each wait is durable; the
    first child that failed raises its error. Outside a workflow, waits for each result.
    In an async workflow, ``await asyncio.gather(*(h.result_async() for h in handles))``.
    """
    return [handle.result() for handle in handles]


# -- the first of several children -----------------------------------------------------------


class _First:
    """One ``first`` at its position: which child finished first, recorded."""

    def __init__(self, run: WorkflowRun, handles: Sequence[WorkflowHandle[Any]]) -> None:
        if not handles:
            raise ConfigurationError("perdure.first() needs at least one handle")
        self.run = run
        self.handles = handles
        self.position = run.take_position()
        self.index: int | None = None
        self.started_at: float | None = None
        recorded = run.recorded.get(self.position)
        if recorded is None:
            return
        if recorded.status == STEP_CANCELLED:
            raise run.replayed_signal(recorded)
        if recorded.name != _FIRST:
            raise NonDeterminismError(run.workflow_id, self.position, recorded.name, _FIRST)
        if recorded.status == STEP_WAITING:
            self.started_at = recorded.next_attempt_at
        else:
            self.index = int(json.loads(recorded.output or "0"))

    def look(self) -> StepRecord | None:
        """Look at the children once; the record to write when one has finished."""
        for index, handle in enumerate(self.handles):
            record = self.run.store.get_workflow(handle.workflow_id)
            if record is not None and record.status in TERMINAL_STATUSES:
                self.index = index
                return self._record(STEP_SUCCEEDED, json.dumps(index), None)
        return None

    def waiting(self) -> StepRecord | None:
        """The first time, the WAITING record that keeps when the wait began."""
        if self.started_at is not None:
            return None
        self.started_at = self.run.clock.time()
        return self._record(STEP_WAITING, None, self.started_at)

    def wait(self, in_place_until: float) -> float:
        """How long to wait in place; raises ``Suspended`` once the wait is long. A
        suspended ``first`` looks again on a backoff (a tenth of the wait so far)."""
        now = self.run.clock.time()
        if now < in_place_until:
            return in_place_until - now
        waited = now - (self.started_at or now)
        poll = min(max(waited / 10, self.run.suspend_after, 1.0), _FIRST_MAX_POLL)
        self.run.unwind(Suspended(self.run.workflow_id, now + poll, None))

    def _record(self, status: str, output: str | None, started: float | None) -> StepRecord:
        now = self.run.clock.time()
        return StepRecord(self.position, _FIRST, status, output, None, 1, started, now)


@contextlib.contextmanager
def _any_finished(
    run: WorkflowRun, handles: Sequence[WorkflowHandle[Any]]
) -> Iterator[Future[Any]]:
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


def first(*handles: WorkflowHandle[Any]) -> tuple[int, Any]:
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
    choice = _First(run, handles)
    in_place_until = run.clock.time() + run.suspend_after
    while choice.index is None:
        run.deliver(choice.position, _FIRST)
        with _any_finished(run, handles) as finished:
            done = choice.look()
            if done is not None:
                run.write(done)
                break
            waiting = choice.waiting()
            if waiting is not None:
                run.write(waiting)
            pause = choice.wait(in_place_until)
            run.check_lease()
            run.wait_sync(pause, finished)
    assert choice.index is not None
    return choice.index, handles[choice.index].result()


async def first_async(*handles: WorkflowHandle[Any]) -> tuple[int, Any]:
    """``first`` for async workflows."""
    run = current_run.get()
    if run is None:
        return await asyncio.to_thread(_first_outside, handles)
    choice = _First(run, handles)
    in_place_until = run.clock.time() + run.suspend_after
    while choice.index is None:
        await run.deliver_async(choice.position, _FIRST)
        with _any_finished(run, handles) as finished:
            done = await asyncio.to_thread(choice.look)
            if done is not None:
                await run.write_async(done)
                break
            waiting = choice.waiting()
            if waiting is not None:
                await run.write_async(waiting)
            pause = choice.wait(in_place_until)
            run.check_lease()
            await run.wait_async(pause, finished)
    assert choice.index is not None
    return choice.index, await handles[choice.index].result_async()


def _first_outside(handles: Sequence[WorkflowHandle[Any]]) -> tuple[int, Any]:
    if not handles:
        raise ConfigurationError("perdure.first() needs at least one handle")
    app = handles[0]._app
    while True:
        for index, handle in enumerate(handles):
            if handle.status().done:
                return index, handle.result()
        app.clock.sleep(app.wait_interval)
