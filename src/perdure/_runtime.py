"""One execution of one workflow: replaying recorded steps and recording new ones.

A workflow function runs from the top every time it (re)starts. Its recorded
steps are loaded once, up front; a step whose position holds a final record
returns (or raises) what was recorded without running, and a new step runs and
is recorded with one fenced write. The sync and async drivers share every
decision through ``_StepCall`` and ``WorkflowRun.outcome``; they differ only in
how they wait.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from . import _conditions as conditions
from ._bridge import FutureBridge
from ._clock import Clock
from ._context import Scope, current_run, current_scope, current_workflow_id
from ._errors import (
    Cancelled,
    CheckpointFailed,
    DeadlineExceeded,
    DeadlineExceededError,
    LeaseLost,
    NonDeterminismError,
    SerializationError,
    StepFailedError,
    StepTimeoutError,
    StoreError,
    Suspended,
    WorkflowCancelledError,
)
from ._interrupts import Interrupts
from ._model import Outcome, WorkflowState
from ._notifier import Notifier
from ._registry import StepDef, WorkflowDef
from ._serialization import Serializer, decode_call, decode_error, encode_error
from .storage import (
    STEP_CANCELLED,
    STEP_FAILED,
    STEP_RETRYING,
    STEP_SUCCEEDED,
    Lease,
    StepRecord,
    Store,
    WorkflowRecord,
)

log = logging.getLogger("perdure")

T = TypeVar("T")


@dataclass
class _Attempt:
    """What one attempt of a step leads to: a record to write, then a value, an error
    to raise, or another attempt."""

    record: StepRecord
    value: Any = None
    error: BaseException | None = None
    retry: bool = False
    #: What the step function raised (None when it returned), for its circuit breaker.
    raised: BaseException | None = None


class _StepCall:
    """One call of a step at its position."""

    __slots__ = (
        "attempts",
        "definition",
        "last_error",
        "next_attempt_at",
        "position",
        "probe_failures",
        "prober",
        "run",
        "wait_topic",
    )

    def __init__(self, run: WorkflowRun, definition: StepDef, position: str) -> None:
        self.run = run
        self.definition = definition
        self.position = position
        self.attempts = 0
        self.next_attempt_at: float | None = None
        # What the wait until next_attempt_at is for (a retry, a probe, a breaker), the
        # wait topic of a suspension; see _conditions.
        self.wait_topic: str | None = None
        self.last_error: str | None = None
        self.probe_failures = 0
        #: The breaker probe this call holds ("<workflow>#<position>"), if it runs one.
        self.prober: str | None = None

    def replay(self) -> tuple[bool, Any]:
        """``(True, value)`` when the position holds a final record (raising a recorded
        error), else ``(False, None)`` with the attempt count restored."""
        recorded = self.run.recorded.get(self.position)
        if recorded is None:
            return False, None
        if recorded.status == STEP_CANCELLED:
            raise self.run.replayed_signal(recorded)
        if recorded.name != self.definition.name:
            raise NonDeterminismError(
                self.run.workflow_id, self.position, recorded.name, self.definition.name
            )
        if recorded.status == STEP_SUCCEEDED:
            assert recorded.output is not None
            return True, self.run.serializer.loads(recorded.output, self.definition.return_hint)
        if recorded.status == STEP_FAILED:
            assert recorded.error is not None
            raise decode_error(recorded.error, StepFailedError)
        # RETRYING: go on counting from the recorded attempts, after the recorded wait.
        self.attempts = recorded.attempts
        self.next_attempt_at = recorded.next_attempt_at
        conditions.restore(self, recorded)
        return False, None

    def wait_seconds(self) -> float:
        """How long to wait before the next attempt."""
        if self.next_attempt_at is None:
            return 0.0
        return self.next_attempt_at - self.run.clock.time()

    def start_attempt(self) -> None:
        """Count an attempt; refuse to start it if this execution was released meanwhile,
        or if the executor could not renew its leases in time (it may have been paused or
        cut off, and another executor may own the workflow now)."""
        self.run.check_lease()
        self.attempts += 1

    def after(self, result: Any, exc: BaseException | None) -> _Attempt:
        """The record and consequence of the attempt that returned ``result`` or raised."""
        now = self.run.clock.time()
        name, position = self.definition.name, self.position
        raised = exc
        if exc is None:
            try:
                output = self.run.serializer.dumps(result, self.definition.return_hint)
                # Hand the workflow the decoded value, so that it sees the same thing on
                # the first run as on every replay.
                value = self.run.serializer.loads(output, self.definition.return_hint)
            except SerializationError as error:
                exc = SerializationError(
                    f"step {name!r} (position {position}) of workflow "
                    f"{self.run.workflow_id!r} returned a value that can't be recorded: {error}"
                )
            else:
                record = StepRecord(
                    position, name, STEP_SUCCEEDED, output, None, self.attempts, None, now
                )
                return _Attempt(record, value=value)
        retry = self.definition.retry
        error_text = encode_error(exc)
        if not isinstance(exc, SerializationError) and retry.should_retry(exc, self.attempts):
            self.next_attempt_at = now + retry.delay(self.attempts)
            log.warning(
                "workflow %s step %s (%s) attempt %d failed: %r; next attempt in %.1fs",
                self.run.workflow_id,
                position,
                name,
                self.attempts,
                exc,
                self.next_attempt_at - now,
            )
            record = StepRecord(
                position,
                name,
                STEP_RETRYING,
                None,
                error_text,
                self.attempts,
                self.next_attempt_at,
                now,
            )
            conditions.retrying(self, record)
            return _Attempt(record, retry=True, raised=raised)
        record = StepRecord(position, name, STEP_FAILED, None, error_text, self.attempts, None, now)
        return _Attempt(record, error=exc, raised=raised)


class WorkflowRun(Interrupts):
    """The state of one execution of one workflow, under one lease."""

    def __init__(
        self,
        *,
        record: WorkflowRecord,
        definition: WorkflowDef,
        lease: Lease,
        steps: list[StepRecord],
        store: Store,
        serializer: Serializer,
        clock: Clock,
        bridge: FutureBridge | None = None,
        lease_holds: Callable[[], bool] = lambda: True,
        suspend_after: float = 1.0,
        poll_interval: float = 0.2,
        notifier: Notifier | None = None,
    ) -> None:
        self.record = record
        #: Tells waits in place that a workflow (a child) finished in this process.
        self.notifier = notifier or Notifier()
        self.loop = bridge.loop if bridge is not None else None
        #: A wait longer than this suspends the workflow instead of waiting in place.
        self.suspend_after = suspend_after
        #: How often a wait in place looks at the store (for a message).
        self.poll_interval = poll_interval
        self.lease_holds = lease_holds
        self.bridge = bridge
        self.workflow_id = record.id
        self.definition = definition
        self.lease = lease
        self.recorded = {step.position: step for step in steps}
        self.store = store
        self.serializer = serializer
        self.clock = clock
        self._init_interrupts()
        #: When the executor dispatched it (monotonic): a heartbeat that began earlier
        #: cannot have seen it.
        self.dispatched_at = time.monotonic()

    # -- steps ---------------------------------------------------------------------------

    def _begin(self, definition: StepDef) -> tuple[_StepCall, bool, Any]:
        call = _StepCall(self, definition, self.take_position())
        done, value = call.replay()
        return call, done, value

    def call_step(self, definition: StepDef, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run (or replay) a synchronous step in the calling thread."""
        call, done, value = self._begin(definition)
        if done:
            return value
        while True:
            if not self._ready(call):
                continue
            call.start_attempt()
            # A step called inside a step is a plain call: only the outer one is recorded.
            token = current_run.set(None)
            try:
                if definition.timeout is None:
                    result = definition.fn(*args, **kwargs)
                else:
                    result = _call_with_timeout(definition, args, kwargs)
                attempt = call.after(result, None)
            except Exception as exc:
                attempt = call.after(None, exc)
            finally:
                current_run.reset(token)
            if conditions.reports(call, attempt.raised):
                conditions.report(call, attempt.raised)
            self.write(attempt.record)
            if attempt.retry:
                continue
            if attempt.error is not None:
                raise attempt.error
            return attempt.value

    def call_step_async(
        self, definition: StepDef, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Coroutine[Any, Any, Any]:
        """Take the step's position now, at the call, and return the coroutine that runs
        (or replays) it."""
        call, done, value = self._begin(definition)
        return self._drive_async(call, done, value, args, kwargs)

    async def _drive_async(
        self, call: _StepCall, done: bool, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if done:
            return value
        definition = call.definition
        while True:
            # The common case (no wait, nothing due, no condition) costs no await here.
            if (
                call.wait_seconds() > 0 or self.due_signal() is not None or conditions.gated(call)
            ) and not await self._ready_async(call):
                continue
            call.start_attempt()
            token = current_run.set(None)
            attempt: _Attempt | None = None
            # A cancel or the deadline interrupts the body (it sees CancelledError); this is
            # ``_interruptible_wait`` inlined, as it runs for every async step.
            task = asyncio.current_task()
            assert task is not None
            self._interruptible.add(task)
            try:
                body = definition.fn(*args, **kwargs)
                if definition.timeout is not None:
                    body = asyncio.wait_for(body, definition.timeout)
                attempt = call.after(await body, None)
            except asyncio.CancelledError:
                if not self.was_interrupted(task):
                    raise  # a real cancellation: the executor's shutdown
            except asyncio.TimeoutError as timed_out:
                failure: Exception = timed_out
                if definition.timeout is not None:
                    failure = StepTimeoutError(definition.name, definition.timeout)
                attempt = call.after(None, failure)
            except Exception as exc:
                attempt = call.after(None, exc)
            finally:
                self._interruptible.discard(task)
                current_run.reset(token)
            if attempt is None:
                # Interrupted: record and raise what is due (if nothing is any more, the
                # attempt runs again).
                await self.deliver_async(call.position, definition.name)
                continue
            if conditions.reports(call, attempt.raised):
                await self._off_loop(conditions.report, call, attempt.raised)
            await self.write_async(attempt.record)
            if attempt.retry:
                continue
            if attempt.error is not None:
                raise attempt.error
            return attempt.value

    def _suspend_for(self, call: _StepCall) -> NoReturn:
        """Suspend the workflow until the step's next attempt (or its next look at a
        condition): the wait is longer than ``suspend_after``."""
        assert call.next_attempt_at is not None
        self.unwind(Suspended(self.workflow_id, call.next_attempt_at, call.wait_topic))

    def _ready(self, call: _StepCall) -> bool:
        """Wait for the step's next attempt (suspending the workflow for a long wait),
        deliver a due cancel or deadline, then check the attempt's conditions (a probe, a
        circuit breaker); False when it must wait again."""
        # Release, a cancel or the deadline ends the wait early (and is not suspended).
        while (wait := call.wait_seconds()) > 0 and not self.released:
            if self.due_signal() is not None:
                break
            if wait > self.suspend_after:
                self._suspend_for(call)
            self.wait_sync(wait)
        self.deliver(call.position, call.definition.name)
        if not conditions.gated(call):
            return True
        self.check_lease()
        go, record = conditions.gate(call)
        if record is not None:
            self.write(record)
        return go

    async def _ready_async(self, call: _StepCall) -> bool:
        """``_ready`` for async steps: probes and breaker checks run off the event loop."""
        # A cancel or the deadline interrupts the wait (then a signal is due).
        while (wait := call.wait_seconds()) > 0 and self.due_signal() is None:
            if wait > self.suspend_after:
                self._suspend_for(call)
            await self.wait_async(wait)
        await self.deliver_async(call.position, call.definition.name)
        if not conditions.gated(call):
            return True
        self.check_lease()
        go, record = await self._off_loop(conditions.gate, call)
        if record is not None:
            await self.write_async(record)
        return go

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking ``fn`` (a probe, a store call) in a daemon thread of its own: the
        event loop goes on meanwhile, and a probe that hangs cannot keep the process from
        exiting."""
        future: Future[T] = Future()

        def work() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting workflow
                future.set_exception(exc)

        threading.Thread(target=work, name="perdure-condition", daemon=True).start()
        return await (self.bridge.wait(future) if self.bridge else asyncio.wrap_future(future))

    def write(self, record: StepRecord) -> None:
        """Record ``record`` (fenced); raises LeaseLost if the store refused it."""
        if not self.settle(self.store.record_step(self.workflow_id, self.lease, record)):
            self.unwind(LeaseLost(self.workflow_id, self.lease.epoch))

    async def write_async(self, record: StepRecord) -> None:
        """``write`` for async workflows."""
        future = self.store.record_step(self.workflow_id, self.lease, record)
        if not await self.settle_async(future):
            self.unwind(LeaseLost(self.workflow_id, self.lease.epoch))

    # -- helpers of the other recorded operations (timers, messages, events) -------------

    def settle(self, future: Future[T]) -> T:
        """The value of a store write; a failed write raises CheckpointFailed."""
        try:
            return future.result()
        except StoreError as exc:
            self.unwinding = CheckpointFailed(self.workflow_id, str(exc))
            raise self.unwinding from exc

    async def settle_async(self, future: Future[T]) -> T:
        """``settle`` for async workflows."""
        try:
            return await (self.bridge.wait(future) if self.bridge else asyncio.wrap_future(future))
        except StoreError as exc:
            self.unwinding = CheckpointFailed(self.workflow_id, str(exc))
            raise self.unwinding from exc

    def check_lease(self) -> None:
        """Raise LeaseLost if this execution may no longer write (see ``start_attempt``)."""
        self.check_released()
        if not self.lease_holds():
            self.unwind(
                LeaseLost(
                    self.workflow_id,
                    self.lease.epoch,
                    "this executor could not renew its leases in time (paused, or the database "
                    "was unreachable); another executor may own it now",
                )
            )

    # -- the workflow function -------------------------------------------------------------

    def _enter(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        current_run.set(self)
        current_workflow_id.set(self.workflow_id)
        current_scope.set(Scope())
        return decode_call(
            self.serializer,
            self.definition.fn,
            self.record.inputs,
            f"workflow {self.definition.name!r}",
        )

    def execute(self) -> Outcome:
        """Run a synchronous workflow function to its outcome (in a fresh context)."""
        try:
            args, kwargs = self._enter()
            return self.outcome(self.definition.fn(*args, **kwargs), None)
        except (Exception, Cancelled) as exc:
            return self.outcome(None, exc)

    async def execute_async(self) -> Outcome:
        """Run an async workflow function to its outcome (inside its own task)."""
        try:
            args, kwargs = self._enter()
            return self.outcome(await self.definition.fn(*args, **kwargs), None)
        except (Exception, Cancelled) as exc:
            return self.outcome(None, exc)

    def outcome(self, result: Any, exc: BaseException | None) -> Outcome:
        """``(status, output, error)`` to record for a workflow that returned or raised."""
        if exc is None:
            try:
                output = self.serializer.dumps(result, self.definition.return_hint)
                return Outcome(WorkflowState.SUCCEEDED, output)
            except SerializationError as error:
                exc = SerializationError(
                    f"workflow {self.workflow_id!r} ({self.definition.name}) returned a value "
                    f"that can't be recorded: {error}"
                )
        if isinstance(exc, DeadlineExceeded):
            exc = DeadlineExceededError(self.workflow_id, exc.timeout)
            log.warning("%s", exc)
        elif isinstance(exc, Cancelled):
            log.info("workflow %s cancelled", self.workflow_id)
            cancelled = encode_error(WorkflowCancelledError(self.workflow_id))
            return Outcome(WorkflowState.CANCELLED, None, cancelled)
        if isinstance(exc, NonDeterminismError):
            log.error("%s", exc)
        return Outcome(WorkflowState.FAILED, None, encode_error(exc))


def _call_with_timeout(definition: StepDef, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run a synchronous step with a timeout: in a thread of its own, so that the workflow
    can stop waiting for it. A thread cannot be stopped: one that overruns goes on in the
    background, and its result is discarded."""
    timeout = definition.timeout or 0.0
    box: Future[Any] = Future()
    context = contextvars.copy_context()

    def body() -> None:
        try:
            box.set_result(context.run(definition.fn, *args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting workflow
            box.set_exception(exc)

    threading.Thread(target=body, name=f"perdure-step-{definition.name}", daemon=True).start()
    done, _ = concurrent.futures.wait([box], timeout=timeout)
    if not done:
        raise StepTimeoutError(definition.name, timeout)
    return box.result()
