"""Streams: ``perdure.write_stream`` and ``perdure.close_stream``, from a workflow or a step.

From the workflow itself a write is recorded at its position, in the same transaction
as the entry (``Store.write_stream`` with a step record): a replay does not write again,
so each value is in the stream once. Like an event it is a side effect: it goes out only
once the run's earlier writes are durable.

From inside a step a write goes out at once, so that a reader sees it while the step
runs (tokens of a model's answer), fenced by the lease. A step's body may run more than
once (a retry, a crash before its record), and what an attempt wrote stays: writes from
a step are *at least once*, each entry naming the attempt that wrote it
(``"<position>#<attempt>@<epoch>"``: a takeover after a crash runs the attempt again
under a new lease epoch). Inside a transactional step (``@app.transaction``) a
write is part of its transaction instead, and commits exactly when the step's record
does: exactly once. On an event loop the sync form queues the write without waiting;
the attempt waits for it once the step's function has returned (``StepContext.stored``).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future
from typing import Any

from .._errors import ConfigurationError, LeaseLost
from .._model import StepRecord, StepState
from .._serialization import encode_value
from .._validation import check_key
from ..storage import EVENT_STREAM
from .drivers import drive_async, drive_on_loop, drive_sync
from .effects import Commit, Flush, Op
from .inside import StepContext, current_step
from .state import RunState, current_run

log = logging.getLogger("perdure")

WRITE_STREAM = "perdure.write_stream"
CLOSE_STREAM = "perdure.close_stream"


def _encode(run: RunState, key: str, value: Any, close: bool, where: str) -> str | None:
    if close:
        return None
    what = f"the value written to stream {key!r} of workflow {run.workflow_id!r} {where}"
    return encode_value(run.serializer, value, Any, what)


def append(run: RunState, key: str, value: Any, close: bool) -> Op[None]:
    """Append ``value`` (or the close marker) to the run's stream ``key``, once: recorded
    at the next position."""
    name = CLOSE_STREAM if close else WRITE_STREAM
    position, recorded = run.history.take(name)
    if recorded is not None:
        return  # written when this position was recorded
    encoded = _encode(run, key, value, close, f"at position {position}")
    run.check_lease()
    now = run.clock.time()
    record = StepRecord(position, name, StepState.SUCCEEDED, None, None, 1, None, now)

    def written(offset: int | None) -> None:
        if offset is None:
            raise LeaseLost(run.workflow_id, run.lease.epoch)
        run.notifier.poke(EVENT_STREAM + run.workflow_id)

    yield Flush()
    yield Commit(
        lambda: run.store.write_stream(
            run.workflow_id, run.lease, key, encoded, position, now, record
        ),
        written,
        barrier=True,
    )


def _from_step(step: StepContext, key: str, value: Any, close: bool) -> Future[int | None] | None:
    """Write from inside a step: in its transaction (None: done), else submitted to the
    store (its future)."""
    run = step.run
    encoded = _encode(run, key, value, close, f"in the step at position {step.position}")
    writer = f"{step.position}#{step.attempt}@{run.lease.epoch}"
    now = run.clock.time()
    if step.transaction is not None:
        step.transaction.write_stream(key, encoded, writer, now)
        return None
    return run.store.write_stream(run.workflow_id, run.lease, key, encoded, writer, now)


def _written(step: StepContext, offset: int | None) -> None:
    run = step.run
    if offset is None:
        # The lease is gone: another executor owns the workflow now, and runs this step
        # again; this attempt's result would not be recorded either.
        raise LeaseLost(run.workflow_id, run.lease.epoch)
    run.notifier.poke(EVENT_STREAM + run.workflow_id)


def _logged(step: StepContext, future: Future[int | None]) -> None:
    try:
        _written(step, future.result())
    except BaseException as exc:  # noqa: BLE001 - a callback: nothing to raise to
        # Debug only: the attempt waits for this write once the step's function returned
        # and fails with this error (StepContext.stored), which it reports; when the
        # function raised, the attempt failed already and is reported for that.
        log.debug(
            "workflow %s step %s: a stream write was not stored: %r",
            step.run.workflow_id,
            step.position,
            exc,
        )


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _where(function: str) -> tuple[RunState | None, StepContext | None]:
    run = current_run.get()
    if run is not None:
        return run, None
    step = current_step.get()
    if step is not None:
        return None, step
    raise ConfigurationError(
        f"perdure.{function}() was called outside a workflow; read streams with app.read_stream()"
    )


def _write(function: str, key: str, value: Any, close: bool) -> None:
    key = check_key("stream key", key)
    run, step = _where(function)
    if run is not None:
        drive = drive_on_loop if run.definition.is_async else drive_sync
        drive(run, append(run, key, value, close))
        return
    assert step is not None
    future = _from_step(step, key, value, close)
    if future is None:
        return
    if _on_loop():
        # An async step's sync call: the event loop must not wait for the commit. The
        # writer commits writes in the order they were queued, so the stream keeps their
        # order; the attempt waits for them once the step's function returned
        # (``StepContext.stored``), so that one not stored fails the attempt (it runs again).
        if step.unsent is None:
            step.unsent = []
        step.unsent.append(future)
        future.add_done_callback(lambda done: _logged(step, done))
        return
    _written(step, future.result())


async def _write_async(function: str, key: str, value: Any, close: bool) -> None:
    key = check_key("stream key", key)
    run, step = _where(function)
    if run is not None:
        await drive_async(run, append(run, key, value, close))
        return
    assert step is not None
    future = _from_step(step, key, value, close)
    if future is not None:
        _written(step, await asyncio.wrap_future(future))


def write_stream(key: str, value: Any) -> None:
    """Append ``value`` to this workflow's stream ``key``; ``app.read_stream`` reads it
    from outside, in order, live.

    In the workflow it is recorded at its position (a replay does not write again), so
    the value is in the stream exactly once; in an async workflow it does not wait for
    the commit (``await perdure.write_stream_async(...)`` does). Inside a step it is
    written at once, so readers see it while the step runs, and *at least once*: what a
    failed (or crashed) attempt wrote stays, and its retry writes again (each entry
    names its attempt). Inside a transactional step it commits with the step: exactly
    once. A closed stream refuses more values (``ConfigurationError``); a key that
    breaks the rule of ``perdure._validation`` raises ``InvalidValueError``."""
    _write("write_stream", key, value, close=False)


async def write_stream_async(key: str, value: Any) -> None:
    """``write_stream`` for async workflows and async steps."""
    await _write_async("write_stream_async", key, value, close=False)


def close_stream(key: str) -> None:
    """Close this workflow's stream ``key``: its readers stop once they have read every
    value; nothing more can be written to it. Recorded like ``write_stream``. A reader
    also stops when the workflow ends, closed or not."""
    _write("close_stream", key, None, close=True)


async def close_stream_async(key: str) -> None:
    """``close_stream`` for async workflows and async steps."""
    await _write_async("close_stream_async", key, None, close=True)
