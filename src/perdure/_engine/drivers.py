"""The two thin drivers that run a durable operation, and the loop-safe third.

An operation (a generator of effects, see ``effects.py``) is driven by:

- ``drive_sync``: in a synchronous workflow's own thread, blocking it;
- ``drive_async``: in an async workflow's task, awaiting on the event loop;
- ``drive_on_loop``: a sync form (``perdure.now()``, ``app.start``, ``app.send``)
  called inside an async workflow, on the event loop's thread: it must never wait
  for a commit there, so it *defers* its writes (see ``writes.py``) and refuses any
  effect that would block.

The drivers only run effects; every decision is the operation's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from .._errors import CheckpointFailed, ConfigurationError, LeaseLost
from .attempts import attempt_async, attempt_sync
from .effects import FLUSH, Attempt, Await, Commit, Effect, Flush, Op, Pause
from .state import RunState
from .writes import NOTHING_IN_FLIGHT, Writes

T = TypeVar("T")


def drive_sync(run: RunState, op: Op[T]) -> T:
    """Run ``op`` to its end in this thread."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = op.send(value) if error is None else op.throw(error)
        except StopIteration as stop:
            result: T = stop.value
            return result
        value, error = None, None
        try:
            if run.writes.held:
                _write_held(run)  # a held step record goes before whatever comes next
                if type(effect) is Attempt:
                    run.check_lease()  # as the attempt did before its wait for the record
            if not run.writes.clear and type(effect) is Attempt:
                _sync(run, FLUSH)  # a held record the holder submitted (see _write_held)
            # The common cases first, inline (as in drive_async): they run for every step.
            if isinstance(effect, Attempt):
                value = attempt_sync(run, effect)
            elif isinstance(effect, Commit) and not (effect.barrier or effect.only_after_success):
                try:
                    effect.check(effect.submit().result())
                except BaseException as exc:
                    raise run.failed(exc) from exc
                if not run.writes.clear:
                    _seen(run)
            else:
                value = _sync(run, effect)
        except BaseException as exc:  # noqa: BLE001 - thrown into the operation
            error = exc


def _write_held(run: RunState) -> None:
    """Write the run's held step records and wait for them, as their steps used to.

    The holder's thread may have taken them first (``Writes.release``): they are then
    pending writes of the run, which the next effect's write queues behind (one
    connection, one queue: they commit first, or in the same transaction), and which an
    attempt, a side effect of the user's code, waits for (both drivers flush before an
    attempt when the run's writes are not clear: the step looked at ``clear`` before the
    holder let go of its record)."""
    for _, submit, check in run.writes.take_held():
        try:
            check(submit().result())
        except BaseException as exc:
            raise run.failed(exc) from exc


def drive_on_loop(run: RunState, op: Op[T]) -> T:
    """Run ``op``, which may only record, without waiting (on the event loop)."""
    return _drive(run, op, _on_loop)


def _drive(run: RunState, op: Op[T], execute: Callable[[RunState, Effect], Any]) -> T:
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = op.send(value) if error is None else op.throw(error)
        except StopIteration as stop:
            result: T = stop.value
            return result
        value, error = None, None
        if run.writes.held:
            run.writes.release()
        try:
            value = execute(run, effect)
        except BaseException as exc:  # noqa: BLE001 - thrown into the operation
            error = exc


async def drive_async(run: RunState, op: Op[T]) -> T:
    """Run ``op`` to its end in this task."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = op.send(value) if error is None else op.throw(error)
        except StopIteration as stop:
            result: T = stop.value
            return result
        value, error = None, None
        try:
            # The common cases first, inline: they run for every step.
            kind = type(effect)
            writes = run.writes
            if writes.held or writes.in_flight:
                # A held step record (this task's, or another task's of the run) goes
                # before whatever comes next.
                await _write_held_async(run)
                if kind is Attempt:
                    run.check_lease()  # as the attempt did before its wait for the record
            if not writes.clear and kind is Attempt:
                await _async(run, FLUSH)  # a held record the holder submitted (as above)
            if kind is Attempt:
                value = await attempt_async(run, effect)  # type: ignore[arg-type]
                continue
            if (
                kind is Commit
                and not (effect.barrier or effect.only_after_success)  # type: ignore[union-attr]
                and run.writes.clear
            ):
                check, future = effect.check, effect.submit()  # type: ignore[union-attr]
                # Not held across the wait: thousands of steps may be in flight, and every
                # object they keep alive is walked by the garbage collector again and again.
                del effect
                bridge = run.bridge
                try:
                    check(await (bridge.wait(future) if bridge else asyncio.wrap_future(future)))
                except BaseException as exc:
                    raise run.failed(exc) from exc
                continue
            if kind is Flush and run.writes.clear:
                continue  # nothing pending: nothing to await
            value = await _async(run, effect)
        except BaseException as exc:  # noqa: BLE001 - thrown into the operation
            error = exc


async def _write_held_async(run: RunState) -> None:
    """Write the run's held step records and wait for them, and for those another task
    of the run is writing (``Writes.in_flight``): as ``_write_held``, on the loop."""
    writes = run.writes
    held = writes.take_held()
    if held:
        if writes.in_flight is NOTHING_IN_FLIGHT:
            writes.in_flight = []  # the run's own, made once
        writes.in_flight.extend([(submit(), check) for _, submit, check in held])
        del held
    for write in writes.in_flight[:]:
        future, check = write
        try:
            # Cancelled (the task, not the write), it stays in flight for the others.
            result = await _bridged(run, future)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            _landed(writes, write)
            raise run.failed(exc) from exc
        _landed(writes, write)
        try:
            check(result)
        except BaseException as exc:
            raise run.failed(exc) from exc


def _landed(writes: Writes, write: tuple[Future[Any], Callable[[Any], None]]) -> None:
    if write in writes.in_flight:  # another task may have waited for it first
        writes.in_flight.remove(write)


# -- the sync driver's effects ------------------------------------------------------------


def _sync(run: RunState, effect: Effect) -> Any:
    # Every effect (drive_sync runs an attempt and a plain record inline, the same way).
    if isinstance(effect, Attempt):
        return attempt_sync(run, effect)
    if isinstance(effect, Commit):
        if not (effect.barrier or effect.only_after_success):
            try:
                effect.check(effect.submit().result())
            except BaseException as exc:
                raise run.failed(exc) from exc
        else:
            concurrent.futures.wait([_submit(run, effect)])
        return None if run.writes.clear else _seen(run)
    if isinstance(effect, Flush):
        pending = run.writes.pending()
        if pending:
            concurrent.futures.wait(pending)
        return _seen(run)
    if isinstance(effect, Await):
        try:
            return effect.future.result()
        except BaseException as exc:
            raise run.failed(exc) from exc
    if isinstance(effect, Pause):
        run.signals.wait_sync(effect.seconds, effect.wake)
        return None
    return effect.fn(*effect.args)


def _direct(effect: Commit) -> bool:
    """Whether a write the driver waits for may skip the run's pending writes: a plain
    record can (the value it holds reaches the workflow only once it committed, so
    nothing can rest on it before); a side effect goes after the deferred writes."""
    return not (effect.barrier or effect.only_after_success)


def _submit(run: RunState, effect: Commit) -> Future[None]:
    return run.writes.submit(
        effect.submit,
        effect.check,
        barrier=effect.barrier,
        only_after_success=effect.only_after_success,
    )


def _seen(run: RunState) -> None:
    error = run.writes.seen()
    if error is not None:
        raise run.failed(error)


def _on_loop(run: RunState, effect: Effect) -> Any:
    if isinstance(effect, Commit):
        _submit(run, effect)
        # A failure seen already is raised now; the others at the next flush.
        return _seen(run)
    if isinstance(effect, Flush):
        # Nothing to wait for: a side effect this operation makes is a barrier (it goes
        # out after the pending writes) anyway.
        return _seen(run)
    raise ConfigurationError(
        f"workflow {run.workflow_id!r} is async: this call would block its event loop; "
        "use the call's async form (await ..._async())"
    )


# -- the async driver's effects -----------------------------------------------------------


async def _async(run: RunState, effect: Effect) -> Any:
    if isinstance(effect, Attempt):
        return await attempt_async(run, effect)
    if isinstance(effect, Commit):
        if _direct(effect):
            try:
                effect.check(await _bridged(run, effect.submit()))
            except BaseException as exc:
                raise run.failed(exc) from exc
        else:
            await _settle(run, [_submit(run, effect)])
        return _seen(run)
    if isinstance(effect, Flush):
        pending = run.writes.pending()
        if pending:
            await _settle(run, pending)
        return _seen(run)
    if isinstance(effect, Await):
        try:
            return await _bridged(run, effect.future)
        except BaseException as exc:
            raise run.failed(exc) from exc
    if isinstance(effect, Pause):
        return await _pause(run, effect)
    return await _off_loop(run, effect.fn, *effect.args)


def _bridged(run: RunState, future: Future[T]) -> asyncio.Future[T]:
    return run.bridge.wait(future) if run.bridge is not None else asyncio.wrap_future(future)


async def _settle(run: RunState, futures: list[Future[None]]) -> None:
    # Their failures are reported by ``_seen``, once.
    if len(futures) > 1:
        await asyncio.wait({_bridged(run, future) for future in futures})
        return
    with contextlib.suppress(Exception, LeaseLost, CheckpointFailed):
        await _bridged(run, futures[0])


async def _pause(run: RunState, effect: Pause) -> None:
    signals = run.signals
    if signals.released or signals.due() is not None:
        return
    seconds = signals.cap(effect.seconds)
    task = asyncio.current_task()
    assert task is not None
    wrapped = None if effect.wake is None else asyncio.wrap_future(effect.wake)
    signals.guard(task)
    try:
        if wrapped is None:
            await asyncio.sleep(seconds)
        else:
            await asyncio.wait({wrapped}, timeout=seconds)
    except asyncio.CancelledError:
        if not signals.was_interrupted(task):
            raise  # a real cancellation: the executor's shutdown
    finally:
        signals.unguard(task)
        if wrapped is not None:
            wrapped.cancel()


async def _off_loop(run: RunState, fn: Callable[..., T], *args: Any) -> T:
    """Run blocking ``fn`` (a probe, a store call) in a daemon thread of its own: the
    event loop goes on meanwhile, and a probe that hangs cannot keep the process from
    exiting."""
    future: Future[T] = Future()

    def work() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting workflow
            future.set_exception(exc)

    threading.Thread(target=work, name="perdure-blocking", daemon=True).start()
    return await _bridged(run, future)
