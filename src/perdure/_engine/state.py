"""The state of one execution of one workflow, under one lease.

``RunState`` holds what every durable operation reads: the workflow's record and
lease, the store, its history cursor (``history.py``), its signals
(``signals.py``: release, cancel, deadline) and its chain of writes
(``writes.py``). Operations never write directly: they yield effects
(``effects.py``) that a driver runs. ``run.WorkflowRun`` adds the workflow
function's execution on top.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import Callable, Coroutine, Generator
from typing import Any, NoReturn

from .._clock import Clock
from .._error_codec import encode_error
from .._errors import Cancelled, CheckpointFailed, LeaseLost, StoreError, Suspended
from .._model import Lease, StepRecord, StepState, WorkflowRecord
from .._notifier import Notifier
from .._registry import WorkflowDef
from .._serialization import Serializer
from .._telemetry import RunTelemetry
from ..storage import Store
from .bridge import FutureBridge
from .effects import Commit
from .history import History
from .scope import current_scope
from .signals import Signals
from .writes import Writes


class RunState:
    """One execution of one workflow; see the module docstring."""

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
        self.workflow_id = record.id
        self.definition = definition
        self.lease = lease
        self.store = store
        self.serializer = serializer
        self.clock = clock
        self.bridge = bridge
        self.loop = bridge.loop if bridge is not None else None
        self.lease_holds = lease_holds
        #: A wait longer than this suspends the workflow instead of waiting in place.
        self.suspend_after = suspend_after
        #: How often a wait in place looks at the store (for a message).
        self.poll_interval = poll_interval
        #: Tells waits in place that a workflow (a child) finished in this process.
        self.notifier = notifier or Notifier()
        self.signals = Signals(record, clock, self.loop)
        self.history = History(record.id, steps, self.signals)
        self.writes = Writes()
        #: Tasks created inside the workflow: cancelled when the execution ends.
        self.tasks: set[asyncio.Task[Any]] = set()
        #: The executor's timer that interrupts a running async step at the deadline.
        self.deadline_timer: asyncio.TimerHandle | None = None
        #: When the executor dispatched it (monotonic): a heartbeat that began earlier
        #: cannot have seen it.
        self.dispatched_at = time.monotonic()
        #: Its spans and metrics, while it executes; None when none are configured.
        self.observer: RunTelemetry | None = None
        #: (workflow ID, name, executor): the start of its log records' fields.
        self.log_fields = (record.id, definition.name, lease.owner)

    @property
    def unwinding(self) -> BaseException | None:
        """The signal unwinding this execution (suspension, continue_as_new, a lost lease,
        a failed checkpoint). ``finally`` blocks run while it unwinds: a step or wait they
        call raises it again instead of running (only a cancellation runs them)."""
        return self.history.unwinding

    @unwinding.setter
    def unwinding(self, signal: BaseException | None) -> None:
        self.history.unwinding = signal

    # -- what the executor uses ----------------------------------------------------------

    @property
    def recorded(self) -> dict[str, StepRecord]:
        """The recorded steps by position."""
        return self.history.recorded

    @property
    def released(self) -> bool:
        """Whether the executor gave this execution up; nothing new may start."""
        return self.signals.released

    def release(self, why: str = "the executor released it") -> None:
        """Give this execution up: waits end, and the next step attempt raises LeaseLost."""
        self.signals.release(why)

    def request_cancel(self) -> None:
        """Ask this execution to cancel (from any thread): waits in place end, a running
        async step is interrupted, and ``Cancelled`` is raised at the next step or wait."""
        self.signals.request_cancel()

    def interrupt(self) -> None:
        """Make the run look at its signals now (from any thread)."""
        self.signals.interrupt()

    @property
    def deadline(self) -> float | None:
        """When the workflow must have finished, or None."""
        return self.signals.deadline

    @property
    def deadline_delivered(self) -> bool:
        """Whether ``DeadlineExceeded`` was raised in it (so it needs no wake-up for it)."""
        return self.signals.deadline_delivered

    def track(self, task: asyncio.Task[Any]) -> None:
        """Remember a task the workflow created, to cancel it when the execution ends."""
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def cancel_tasks(self) -> None:
        """Cancel the tasks the workflow created that are still running (it returned,
        failed or was suspended without awaiting them)."""
        current = asyncio.current_task()
        for task in list(self.tasks):
            if task is not current and not task.done():
                task.cancel()

    # -- what operations use --------------------------------------------------------------

    def unwind(self, signal: BaseException) -> NoReturn:
        """Raise ``signal`` to end this execution, and remember it (see ``unwinding``)."""
        self.unwinding = signal
        raise signal

    def failed(self, exc: BaseException) -> BaseException:
        """What a failed write or store call ends the execution with: a store failure
        interrupts it, to be resumed from its record (``CheckpointFailed``)."""
        if isinstance(exc, StoreError):
            exc = CheckpointFailed(self.workflow_id, str(exc))
        if isinstance(exc, LeaseLost | CheckpointFailed):
            self.unwinding = exc
        return exc

    def check_released(self) -> None:
        """Raise LeaseLost if this execution was released."""
        if self.signals.released:
            self.unwind(LeaseLost(self.workflow_id, self.lease.epoch, self.signals.released_why))

    def check_lease(self) -> None:
        """Raise LeaseLost if this execution may no longer write: released, or the
        executor could not renew its leases in time (it may have been paused or cut off,
        and another executor may own the workflow now)."""
        if self.signals.released:
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

    def suspend(self, wake_at: float, topic: str | None) -> NoReturn:
        """End this execution until ``wake_at`` (or a message on ``topic``)."""
        self.unwind(Suspended(self.workflow_id, wake_at, topic))

    def accepted(self, ok: object) -> None:
        """The check of a fenced write: refused means the lease is lost."""
        if not ok:
            raise LeaseLost(self.workflow_id, self.lease.epoch)

    def write(self, record: StepRecord) -> Commit:
        """The effect that records ``record`` (fenced)."""
        return Commit(
            functools.partial(self.store.record_step, self.workflow_id, self.lease, record),
            self.accepted,
        )

    def hold(self, record: StepRecord) -> None:
        """Hold a step's final record for the run's next write (see ``writes.py``)."""
        write = functools.partial(self.store.record_step, self.workflow_id, self.lease, record)
        self.writes.hold(record, write, self.accepted)

    def deliver(self, position: str, name: str) -> None:
        """If a cancel or the deadline is due, record it at ``position`` (which holds no
        final record) and raise it. The record is a deferred write: whatever runs next
        (cleanup code's steps, the outcome) waits for it first."""
        signals = self.signals
        if not signals.cancel_requested and signals.deadline is None:
            return  # the common case, without a call: it runs before every attempt
        signal: Cancelled | None = signals.due()
        if signal is None:
            return
        self.signals.delivering(signal)
        record = StepRecord(
            position,
            name,
            StepState.CANCELLED,
            None,
            encode_error(signal, self.serializer),
            0,
            None,
            self.clock.time(),
        )
        self.writes.submit(self.write(record).submit, self.accepted)  # deferred
        raise signal


current_run: contextvars.ContextVar[RunState | None] = contextvars.ContextVar(
    "perdure_run", default=None
)


def task_factory(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
    **kwargs: Any,
) -> asyncio.Task[Any]:
    """The executor loop's task factory: a task created inside a workflow gets the next
    child scope, so the steps it calls get replay-stable positions."""
    parent = current_scope.get()
    run = current_run.get()
    if parent is None or run is None or "context" in kwargs:
        return asyncio.Task(coro, loop=loop, **kwargs)
    # The task copies the current context when it is created, so setting the child
    # scope around its creation hands the child, and only the child, its own scope.
    token = current_scope.set(parent.child())
    try:
        task = asyncio.Task(coro, loop=loop, **kwargs)
    finally:
        current_scope.reset(token)
    run.track(task)
    return task
