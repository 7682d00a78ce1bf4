"""Running one attempt of a step's body: the part of a step that differs between
sync and async, and what a step's code may raise.

A failed attempt is anything the body raises, ``BaseException`` included: a
``KeyboardInterrupt``, a ``SystemExit`` or a user's own ``BaseException`` raised by
step code is recorded as a failed attempt and retried by the step's policy (a
workflow thread never receives a real Ctrl-C: only the main thread does). What keeps
its meaning: perdure's own signals (``Cancelled``, ``Suspended``, ``LeaseLost``,
``CheckpointFailed``, ``ContinueAsNew``), ``GeneratorExit``, and an
``asyncio.CancelledError`` that neither a cancel, the deadline nor the step's
timeout caused (the executor shutting down).

Timeouts. A sync step with ``timeout`` runs in a thread of its own; past its
timeout the workflow records ``StepTimeoutError`` and the thread is *abandoned*
(a thread cannot be stopped): whatever it returns later is discarded, and the
step's next attempt does not start until that thread has ended, so no two attempts
of one step ever run at once in this process. An async step is cancelled at its
timeout; one that catches the cancellation and returns anyway is still recorded as
a ``StepTimeoutError`` failure: an attempt past its timeout records nothing else.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from .._errors import (
    Cancelled,
    CheckpointFailed,
    ContinueAsNew,
    LeaseLost,
    StepTimeoutError,
    Suspended,
)
from .._logfields import log_context
from .._telemetry import AttemptTelemetry
from .effects import Attempt, Attempted
from .inside import StepContext, current_step
from .state import RunState, current_run

#: What a step's body may raise that is not a failed attempt.
KEEPS_MEANING = (Cancelled, Suspended, LeaseLost, CheckpointFailed, ContinueAsNew, GeneratorExit)

_abandoned_lock = threading.Lock()
# Threads of timed-out sync attempts still running, by (workflow ID, position): each
# resolves its future when it ends.
_abandoned: dict[tuple[str, str], Future[Any]] = {}
#: The same dict, for a caller's look without a call: empty (false) in the common case.
ABANDONED: Mapping[tuple[str, str], Future[Any]] = _abandoned


def abandoned(workflow_id: str, position: str) -> Future[Any] | None:
    """The still-running abandoned attempt of the step at ``position``, if any."""
    if not _abandoned:
        return None  # the common case, without the lock (or a key to look up)
    key = (workflow_id, position)
    with _abandoned_lock:
        future = _abandoned.get(key)
        if future is not None and future.done():
            del _abandoned[key]
            return None
        return future


def _abandon(key: tuple[str, str], future: Future[Any]) -> None:
    with _abandoned_lock:
        _abandoned[key] = future

    def ended(_: Future[Any]) -> None:
        with _abandoned_lock:
            if _abandoned.get(key) is future:
                del _abandoned[key]

    future.add_done_callback(ended)


def _observed(run: RunState, effect: Attempt) -> AttemptTelemetry | None:
    observer = run.observer
    if observer is None:
        return None
    return observer.attempt(effect.definition.name, effect.position, effect.attempt)


def _interrupted(watch: AttemptTelemetry | None) -> None:
    if watch is not None:
        watch.end(None, interrupted=True)


def attempt_sync(run: RunState, effect: Attempt) -> Attempted:
    """Run one attempt of a sync step in this thread (in its own with a timeout)."""
    definition = effect.definition
    step = StepContext(run, effect.position, effect.attempt)
    inside = current_step.set(step)
    # A step called inside a step is a plain call: only the outer one is recorded.
    token = current_run.set(None)
    logged = log_context.set((*run.log_fields, definition.name, effect.position, effect.attempt))
    watch = None if run.observer is None else _observed(run, effect)
    try:
        if definition.timeout is None:
            attempted = Attempted(definition.fn(*effect.args, **effect.kwargs))
        else:
            attempted = _with_timeout(run, effect)
        if step.unsent:
            step.stored_sync()  # stream writes it made on an event loop (see attempt_async)
    except KEEPS_MEANING:
        _interrupted(watch)
        raise
    except BaseException as exc:  # noqa: BLE001 - a failed attempt, see the module
        attempted = Attempted(error=exc)
    finally:
        current_step.reset(inside)
        current_run.reset(token)
        log_context.reset(logged)
    if watch is not None:
        watch.end(attempted.error, attempted.interrupted)
    return attempted


def _with_timeout(run: RunState, effect: Attempt) -> Attempted:
    definition = effect.definition
    timeout = definition.timeout or 0.0
    box: Future[Any] = Future()
    context = contextvars.copy_context()

    def body() -> None:
        try:
            box.set_result(context.run(definition.fn, *effect.args, **effect.kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting workflow
            box.set_exception(exc)

    threading.Thread(target=body, name=f"perdure-step-{definition.name}", daemon=True).start()
    try:
        return Attempted(value=box.result(timeout=timeout))
    except concurrent.futures.TimeoutError:
        if not box.done():
            _abandon((run.workflow_id, effect.position), box)
            return Attempted(error=StepTimeoutError(definition.name, timeout))
        return Attempted(value=box.result())  # it ended just now


async def attempt_async(run: RunState, effect: Attempt) -> Attempted:
    """Run one attempt of an async step in this task; a cancel or the deadline
    interrupts it (it sees ``CancelledError``), and so does its timeout."""
    definition, signals = effect.definition, run.signals
    task = asyncio.current_task()
    assert task is not None
    step = StepContext(run, effect.position, effect.attempt)
    inside = current_step.set(step)
    token = current_run.set(None)
    logged = log_context.set((*run.log_fields, definition.name, effect.position, effect.attempt))
    watch = _observed(run, effect)
    timer = None
    if definition.timeout is not None:
        timer = asyncio.get_running_loop().call_later(definition.timeout, signals.time_out, task)
    interruptible = signals.interruptible
    interruptible.add(task)
    try:
        attempted = Attempted(await definition.fn(*effect.args, **effect.kwargs))
        if step.unsent:
            # Stream writes it made with the sync form: stored, or the attempt failed.
            await step.stored()
    except asyncio.CancelledError:
        if signals.ran_out(task):
            attempted = _timed_out(effect)
        elif signals.was_interrupted(task):
            attempted = Attempted(interrupted=True)
        else:
            _interrupted(watch)
            raise  # a real cancellation: the executor's shutdown
    except KEEPS_MEANING:
        _interrupted(watch)
        raise
    except BaseException as exc:  # noqa: BLE001 - a failed attempt, see the module
        attempted = Attempted(error=exc)
    finally:
        current_step.reset(inside)
        interruptible.discard(task)
        if timer is not None:
            timer.cancel()
        current_run.reset(token)
        log_context.reset(logged)
    if timer is not None and signals.ran_out(task):
        # It caught the cancellation and returned (or failed) past its timeout.
        attempted = _timed_out(effect)
    if watch is not None:
        watch.end(attempted.error, attempted.interrupted)
    return attempted


def _timed_out(effect: Attempt) -> Attempted:
    timeout = effect.definition.timeout or 0.0
    return Attempted(error=StepTimeoutError(effect.definition.name, timeout))
