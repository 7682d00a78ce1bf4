"""What may stop a workflow between its steps: release, cancellation and its deadline.

``WorkflowRun`` inherits this. A cancel request (``app.cancel``) or a passed
deadline is *delivered* once: at the next step attempt or wait that has no record
yet, a CANCELLED record is written at that position and ``Cancelled`` (or
``DeadlineExceeded``) is raised there. Replay meets the record at the same
position and raises it again, so a workflow's cleanup code (``finally``,
compensation steps, which run and are recorded normally) replays like any other
code. Waits in place are interruptible: a sync wait wakes on an event, an async
step or wait is interrupted by cancelling the task that awaits it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Awaitable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, NoReturn

from ._context import current_scope
from ._errors import Cancelled, DeadlineExceeded, LeaseLost
from ._serialization import encode_error
from .storage import STEP_CANCELLED, StepRecord

if TYPE_CHECKING:
    from ._clock import Clock
    from .storage import Lease, WorkflowRecord


class Interrupts:
    """The release, cancel and deadline state of one workflow execution."""

    workflow_id: str
    record: WorkflowRecord
    lease: Lease
    clock: Clock
    loop: asyncio.AbstractEventLoop | None

    def _init_interrupts(self) -> None:
        # Set when the executor gives the workflow up (shutdown): waits end at once and no
        # new attempt starts.
        self._released = threading.Event()
        self.released_why = ""
        #: Wakes a synchronous wait in place: release, cancel, or what it waits for.
        self._wakeup = threading.Event()
        self.cancel_requested = self.record.cancel_requested_at is not None
        self.cancel_delivered = False
        #: When the workflow must have finished (``app.start(..., timeout=)``), or None.
        self.deadline = self.record.deadline_at
        self.deadline_delivered = False
        # Tasks of an async workflow now awaiting something interruptible (a step's body,
        # a wait), and those of them that a cancel or the deadline interrupted.
        self._interruptible: set[asyncio.Task[Any]] = set()
        self._interrupted: set[asyncio.Task[Any]] = set()
        #: Tasks created inside the workflow: cancelled when the execution ends.
        self.tasks: set[asyncio.Task[Any]] = set()
        #: The signal unwinding this execution (suspension, continue_as_new, a lost lease,
        #: a failed checkpoint). ``finally`` blocks run while it unwinds: a step or wait
        #: they call raises it again instead of running (only a cancellation runs them).
        self.unwinding: BaseException | None = None
        #: The executor's timer that interrupts a running async step at the deadline.
        self.deadline_timer: asyncio.TimerHandle | None = None

    # -- release (shutdown) -----------------------------------------------------------------

    @property
    def released(self) -> bool:
        """Whether the executor gave this execution up; nothing new may start."""
        return self._released.is_set()

    def release(self, why: str = "the executor released it") -> None:
        """Give this execution up: waits end, and the next step attempt raises LeaseLost."""
        self.released_why = why
        self._released.set()
        self._wakeup.set()

    def unwind(self, signal: BaseException) -> NoReturn:
        """Raise ``signal`` to end this execution, and remember it (see ``unwinding``)."""
        self.unwinding = signal
        raise signal

    def take_position(self) -> str:
        """The position of the next step or wait in the current scope; raises the
        unwinding signal instead while the execution unwinds."""
        if self.unwinding is not None:
            raise self.unwinding
        scope = current_scope.get()
        assert scope is not None, "a workflow run always has a scope"
        return scope.take_position()

    # -- requests -----------------------------------------------------------------------------

    def request_cancel(self) -> None:
        """Ask this execution to cancel (from any thread): waits in place end, a running
        async step is interrupted, and ``Cancelled`` is raised at the next step or wait."""
        if self.cancel_requested:
            return  # asked before: it is delivered (or will be) at most once
        self.cancel_requested = True
        self.interrupt()

    def interrupt(self) -> None:
        """Wake what waits in place, and interrupt what an async workflow awaits, so that
        the run looks at its signals now (from any thread)."""
        self._wakeup.set()
        if self.loop is not None and not self.loop.is_closed():
            # The loop may close meanwhile: then nothing awaits any more.
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._interrupt_tasks)

    def _interrupt_tasks(self) -> None:
        for task in list(self._interruptible):
            if not task.done():
                self._interrupted.add(task)
                task.cancel()

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

    # -- delivery ---------------------------------------------------------------------------

    def due_signal(self) -> Cancelled | None:
        """The cancellation or deadline to deliver now, if any."""
        if self.cancel_requested and not self.cancel_delivered:
            return Cancelled(self.workflow_id)
        if (
            self.deadline is not None
            and not self.deadline_delivered
            and self.clock.time() >= self.deadline
        ):
            return DeadlineExceeded(self.workflow_id, self.deadline - self.record.created_at)
        return None

    def _delivering(self, signal: Cancelled, position: str, name: str) -> StepRecord:
        if isinstance(signal, DeadlineExceeded):
            self.deadline_delivered = True
        else:
            self.cancel_delivered = True
        error = encode_error(signal)
        return StepRecord(position, name, STEP_CANCELLED, None, error, 0, None, self.clock.time())

    def deliver(self, position: str, name: str) -> None:
        """If a signal is due, record it at ``position`` (which holds no final record) and
        raise it."""
        signal = self.due_signal()
        if signal is not None:
            self.write(self._delivering(signal, position, name))
            raise signal

    async def deliver_async(self, position: str, name: str) -> None:
        """``deliver`` for async workflows."""
        signal = self.due_signal()
        if signal is not None:
            await self.write_async(self._delivering(signal, position, name))
            raise signal

    def replayed_signal(self, record: StepRecord) -> Cancelled:
        """The signal a CANCELLED record holds, marked delivered; raise it."""
        try:
            type_name = str(json.loads(record.error or "{}").get("type", ""))
        except (ValueError, AttributeError):
            type_name = ""
        if type_name.endswith(":DeadlineExceeded"):
            self.deadline_delivered = True
            timeout = (self.deadline or self.record.created_at) - self.record.created_at
            return DeadlineExceeded(self.workflow_id, timeout)
        self.cancel_delivered = True
        return Cancelled(self.workflow_id)

    # -- waiting in place ------------------------------------------------------------------

    def _cap(self, seconds: float) -> float:
        """``seconds``, shortened to end at the deadline."""
        if self.deadline is not None and not self.deadline_delivered:
            seconds = min(seconds, self.deadline - self.clock.time())
        return max(seconds, 0.0)

    def wait_sync(self, seconds: float, future: Future[Any] | None = None) -> None:
        """Wait up to ``seconds`` in this thread; released, cancelled, the deadline, or
        ``future`` resolving ends it early."""
        self._wakeup.clear()
        if future is not None:
            future.add_done_callback(lambda _: self._wakeup.set())
        if self.released or self.due_signal() is not None:
            return
        self._wakeup.wait(self._cap(seconds))

    async def _interruptible_wait(self, awaitable: Awaitable[Any]) -> None:
        """Await a wait, which a cancel or the deadline may end early (a signal is then
        due). The step driver guards a step's body the same way, inline."""
        task = asyncio.current_task()
        assert task is not None
        self._interruptible.add(task)
        try:
            await awaitable
        except asyncio.CancelledError:
            if not self.was_interrupted(task):
                raise  # a real cancellation: the executor's shutdown
        finally:
            self._interruptible.discard(task)

    def was_interrupted(self, task: asyncio.Task[Any]) -> bool:
        """Whether the CancelledError that ``task`` caught came from a cancel or the
        deadline (then it is forgotten, and the task may await again)."""
        if task not in self._interrupted:
            return False
        self._interrupted.discard(task)
        uncancel = getattr(task, "uncancel", None)  # Python 3.11+
        if uncancel is not None:
            uncancel()
        return True

    async def wait_async(self, seconds: float, future: Future[Any] | None = None) -> None:
        """``wait_sync`` for async workflows."""
        if self.due_signal() is not None:
            return
        seconds = self._cap(seconds)
        if future is None:
            await self._interruptible_wait(asyncio.sleep(seconds))
            return
        wrapped = asyncio.wrap_future(future)
        try:
            await self._interruptible_wait(asyncio.wait({wrapped}, timeout=seconds))
        finally:
            wrapped.cancel()

    def check_released(self) -> None:
        """Raise LeaseLost if this execution was released."""
        if self.released:
            self.unwind(LeaseLost(self.workflow_id, self.lease.epoch, self.released_why))

    # Provided by WorkflowRun.
    def write(self, record: StepRecord) -> None:
        raise NotImplementedError

    async def write_async(self, record: StepRecord) -> None:
        raise NotImplementedError
