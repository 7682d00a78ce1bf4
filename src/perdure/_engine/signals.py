"""What may stop a workflow between its steps: release, cancellation and its deadline.

A run *holds* one ``Signals``. A cancel request (``app.cancel``) or a passed
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
from concurrent.futures import Future
from typing import Any

from .._clock import Clock
from .._errors import Cancelled, DeadlineExceeded
from .._model import WorkflowRecord


class Signals:
    """The release, cancel and deadline state of one workflow execution."""

    def __init__(
        self, record: WorkflowRecord, clock: Clock, loop: asyncio.AbstractEventLoop | None
    ) -> None:
        self.workflow_id = record.id
        self.created_at = record.created_at
        self.clock = clock
        self.loop = loop
        #: Set when the executor gives the workflow up (shutdown): waits end at once and
        #: no new attempt starts. A plain flag, read before every attempt (an Event per
        #: run cost a lock and a condition to build, and a call to read).
        self.released = False
        self.released_why = ""
        #: Wakes a synchronous wait in place: release, cancel, or what it waits for.
        self._wakeup = threading.Event()
        self.cancel_requested = record.cancel_requested_at is not None
        self.cancel_delivered = False
        #: When the workflow must have finished (``app.start(..., timeout=)``), or None.
        self.deadline = record.deadline_at
        self.deadline_delivered = False
        #: Tasks of an async workflow now awaiting something interruptible (a step's
        #: body, a wait): a cancel or the deadline cancels them.
        self.interruptible: set[asyncio.Task[Any]] = set()
        # Those of them that a cancel or the deadline interrupted, and those whose step
        # attempt ran out of time.
        self._interrupted: set[asyncio.Task[Any]] = set()
        self._timed_out: set[asyncio.Task[Any]] = set()

    # -- release (shutdown) -----------------------------------------------------------------

    def release(self, why: str) -> None:
        """Give this execution up: waits end, and the next step attempt raises LeaseLost."""
        self.released_why = why
        self.released = True  # before the wake-up: whoever wakes must see it
        self._wakeup.set()

    # -- requests -----------------------------------------------------------------------------

    def request_cancel(self) -> None:
        """Ask this execution to cancel (from any thread)."""
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
        for task in list(self.interruptible):
            if not task.done():
                self._interrupted.add(task)
                task.cancel()

    # -- delivery ---------------------------------------------------------------------------

    def due(self) -> Cancelled | None:
        """The cancellation or deadline to deliver now, if any."""
        if not self.cancel_requested and self.deadline is None:
            return None  # the common case
        if self.cancel_requested and not self.cancel_delivered:
            return Cancelled(self.workflow_id)
        if (
            self.deadline is not None
            and not self.deadline_delivered
            and self.clock.time() >= self.deadline
        ):
            return DeadlineExceeded(self.workflow_id, self.deadline - self.created_at)
        return None

    def delivering(self, signal: Cancelled) -> None:
        """Mark ``signal`` delivered (its CANCELLED record is being written)."""
        if isinstance(signal, DeadlineExceeded):
            self.deadline_delivered = True
        else:
            self.cancel_delivered = True

    def replayed(self, error: str | None) -> Cancelled:
        """The signal a CANCELLED record (its ``error``) holds, marked delivered."""
        try:
            type_name = str(json.loads(error or "{}").get("type", ""))
        except (ValueError, AttributeError):
            type_name = ""
        if type_name.endswith(":DeadlineExceeded"):
            self.deadline_delivered = True
            timeout = (self.deadline or self.created_at) - self.created_at
            return DeadlineExceeded(self.workflow_id, timeout)
        self.cancel_delivered = True
        return Cancelled(self.workflow_id)

    # -- waiting in place ------------------------------------------------------------------

    def cap(self, seconds: float) -> float:
        """``seconds``, shortened to end at the deadline."""
        if self.deadline is not None and not self.deadline_delivered:
            seconds = min(seconds, self.deadline - self.clock.time())
        return max(seconds, 0.0)

    def wait_sync(self, seconds: float, wake: Future[Any] | None) -> None:
        """Wait up to ``seconds`` in this thread; released, cancelled, the deadline, or
        ``wake`` resolving ends it early."""
        self._wakeup.clear()
        if wake is not None:
            wake.add_done_callback(lambda _: self._wakeup.set())
        if self.released or self.due() is not None:
            return
        self._wakeup.wait(self.cap(seconds))

    def guard(self, task: asyncio.Task[Any]) -> None:
        """Let a cancel or the deadline interrupt what ``task`` awaits from now on."""
        self.interruptible.add(task)

    def unguard(self, task: asyncio.Task[Any]) -> None:
        """End ``guard``."""
        self.interruptible.discard(task)

    def time_out(self, task: asyncio.Task[Any]) -> None:
        """Interrupt ``task``'s step attempt: it ran out of time (on the loop's thread)."""
        if not task.done():
            self._timed_out.add(task)
            task.cancel()

    def ran_out(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``time_out`` hit ``task`` (then forgotten, its cancel withdrawn)."""
        if task not in self._timed_out:
            return False
        self._timed_out.discard(task)
        self._interrupted.discard(task)
        _uncancel(task)
        return True

    def was_interrupted(self, task: asyncio.Task[Any]) -> bool:
        """Whether the CancelledError that ``task`` caught came from a cancel or the
        deadline (then it is forgotten, and the task may await again)."""
        if task not in self._interrupted:
            return False
        self._interrupted.discard(task)
        _uncancel(task)
        return True


def _uncancel(task: asyncio.Task[Any]) -> None:
    uncancel = getattr(task, "uncancel", None)  # Python 3.11+
    if uncancel is not None:
        uncancel()
