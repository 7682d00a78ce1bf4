"""Handles: what ``app.start`` returns, to wait for a workflow's result and see its status."""

from __future__ import annotations

import asyncio
import dataclasses
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Generic, Protocol, TypeVar

from ._clock import Clock
from ._display import error_summary, utc
from ._engine.bridge import loop_bridge
from ._engine.children import child_result, child_result_async
from ._engine.describe import describe_step, describe_wait
from ._engine.state import current_run
from ._engine.timers import timeout_seconds
from ._error_codec import decode_error
from ._errors import (
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowNotFoundError,
    WorkflowTimeoutError,
)
from ._model import Hold, Outcome, WorkflowState
from ._notifier import Notifier as Notifier  # re-exported for older imports
from ._queue import QueuedStatus, queued_of, with_place
from ._registry import Registry
from ._serialization import Serializer, decode_value
from ._settings import Settings
from ._watch import SharedReads, Watcher
from .storage import (
    ACTIVE_STATUSES,
    CANCELLED,
    CHILD_TOPIC,
    FOREVER,
    PENDING,
    SUCCEEDED,
    TERMINAL_STATUSES,
    StepRecord,
    Store,
    WorkflowRecord,
)

R = TypeVar("R")
# Read once: an enum member costs a descriptor lookup on every access.
_SUCCEEDED = WorkflowState.SUCCEEDED


class HandleHost(Protocol):
    """What a handle needs of the client that made it (a ``Protocol``, so that this module
    does not import the client)."""

    @property
    def store(self) -> Store: ...

    @property
    def serializer(self) -> Serializer: ...

    @property
    def registry(self) -> Registry: ...

    @property
    def notifier(self) -> Notifier: ...

    @property
    def watcher(self) -> Watcher: ...

    @property
    def reads(self) -> SharedReads: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def wait_interval(self) -> float: ...

    @property
    def executor_id(self) -> str | None:
        """The ID of this process's executor, None without one."""
        ...

    def owned_here(self, owner: str | None) -> bool:
        """Whether ``owner`` (a workflow's lease holder) is this process's executor."""
        ...

    def runs_here(self, workflow_id: str) -> bool:
        """Whether this process's executor runs the workflow now."""
        ...


def _waiting(record: WorkflowRecord) -> tuple[datetime | None, str | None]:
    """``(wake_at, waiting_for)`` of a suspended workflow, else ``(None, None)``."""
    if record.wake_at is None or record.status not in ACTIVE_STATUSES or record.owner:
        return None, None
    if record.status == PENDING and record.held_code is None:
        return None, None  # not started yet: delayed (``WorkflowStatus.queued``)
    if record.held_code is not None:
        return utc(record.wake_at), "an executor whose code replays its history (held)"
    wake_at = None if record.wake_at >= FOREVER else utc(record.wake_at)
    until = f"until {wake_at.isoformat()}" if wake_at else "with no timeout"
    if record.wait_topic is None:
        return wake_at, f"sleep {until}"
    if record.wait_topic.startswith(CHILD_TOPIC):
        child = record.wait_topic[len(CHILD_TOPIC) :]
        return wake_at, f"child workflow {child!r} to finish {until}"
    condition = describe_wait(record.wait_topic, wake_at.isoformat() if wake_at else "no time")
    if condition is not None:
        return wake_at, condition
    topic = "the default topic" if record.wait_topic == "" else f"topic {record.wait_topic!r}"
    return wake_at, f"message on {topic} {until}"


@dataclass(frozen=True)
class HoldStatus:
    """Why a workflow is held (``WorkflowStatus.held``): its replay met another step than
    the one recorded. At ``position`` the history records step ``recorded`` but the code
    of ``app_version`` (fingerprint ``code``) called ``actual``. An executor with other
    code tries it at once; one with the same code at ``retry_at``."""

    position: str
    recorded: str
    actual: str
    app_version: str
    code: str
    held_at: datetime
    retry_at: datetime

    @classmethod
    def from_record(cls, record: WorkflowRecord) -> HoldStatus | None:
        """The hold of a stored workflow, or None when it is not held."""
        if record.held_code is None or record.held_detail is None:
            return None
        hold = Hold.from_json(record.held_detail)
        return cls(
            hold.position,
            hold.recorded,
            hold.actual,
            hold.app_version,
            hold.code,
            utc(hold.at) or datetime.now(timezone.utc),
            utc(hold.retry_at) or datetime.now(timezone.utc),
        )


@dataclass(frozen=True)
class StepStatus:
    """One recorded step, as ``WorkflowStatus.steps`` lists it."""

    position: str
    name: str
    status: str
    attempts: int
    error: str | None
    next_attempt_at: datetime | None
    updated_at: datetime | None
    #: While a RETRYING step's probe fails: what it waits for, such as
    #: "probe tcp db:5432 to pass (failed 3 time(s))"; the next probe is at
    #: ``next_attempt_at``.
    waiting_for: str | None = None

    @classmethod
    def from_record(cls, step: StepRecord) -> StepStatus:
        """Build from a stored step."""
        return cls(
            step.position,
            step.name,
            step.status,
            step.attempts,
            error_summary(step.error),
            utc(step.next_attempt_at),
            utc(step.updated_at),
            describe_step(step),
        )


@dataclass(frozen=True)
class WorkflowStatus:
    """Where a workflow stands: its status, its recorded steps and who runs it.

    ``note`` says why an active workflow is not progressing (for instance, no
    running executor has its code), ``error`` is "Type: message" of a failure.
    """

    workflow_id: str
    name: str
    status: str
    app_version: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    owner: str | None
    recoveries: int
    note: str | None
    error: str | None
    steps: tuple[StepStatus, ...]
    #: While the workflow is suspended: when it wakes at the latest (None when it waits
    #: for a message with no timeout, or is not suspended).
    wake_at: datetime | None = None
    #: While the workflow is suspended: what it waits for, such as "sleep until
    #: 2026-01-01T00:00:00+00:00" or "message on topic 'approval' until ...".
    waiting_for: str | None = None
    #: The workflow that started this one as its child.
    parent_id: str | None = None
    #: When it was asked to cancel (it is told at its next step or wait).
    cancel_requested_at: datetime | None = None
    #: When it must have finished (started with a timeout).
    deadline: datetime | None = None
    #: How many times it continued as new (``perdure.continue_as_new``).
    generation: int = 0
    #: Set while it is held: its code no longer replays its history (what differed).
    held: HoldStatus | None = None
    #: Set while it waits to start (or start again) in a queue or after a delay: its
    #: queue, key and priority; ``status()`` adds its position and why it waits.
    queued: QueuedStatus | None = None

    @classmethod
    def from_records(cls, record: WorkflowRecord, steps: list[StepRecord]) -> WorkflowStatus:
        """Build from a stored workflow and its steps."""
        return cls(
            record.id,
            record.name,
            record.status,
            record.app_version,
            utc(record.created_at) or datetime.now(timezone.utc),
            utc(record.updated_at) or datetime.now(timezone.utc),
            utc(record.finished_at),
            record.owner,
            record.recoveries,
            record.note,
            error_summary(record.error),
            tuple(StepStatus.from_record(s) for s in steps),
            *_waiting(record),
            record.parent_id,
            utc(record.cancel_requested_at),
            utc(record.deadline_at),
            record.generation,
            HoldStatus.from_record(record),
            queued_of(record),
        )

    @property
    def suspended(self) -> bool:
        """Whether the workflow is suspended, waiting (see ``waiting_for``)."""
        return self.waiting_for is not None

    @property
    def done(self) -> bool:
        """Whether the workflow has its outcome."""
        return self.status in TERMINAL_STATUSES


def _give_up(waiter: asyncio.Future[Outcome | None]) -> None:
    """End a wait for an outcome that was not told in time: read the record again."""
    if not waiter.done():
        waiter.set_result(None)


class WorkflowHandle(Generic[R]):
    """A reference to one workflow by ID; cheap, and valid in any process."""

    def __init__(
        self,
        app: HandleHost,
        workflow_id: str,
        name: str | None = None,
        heard: Future[Outcome | None] | None = None,
        unowned: bool = False,
    ) -> None:
        self._app = app
        self.workflow_id = workflow_id
        # The workflow's registered name when known (it types the result).
        self._name = name
        # For a workflow this process started and runs: resolved by the executor with the
        # outcome its run recorded (None if the run ended without one), so that a result()
        # after the end needs no read of the store (a loop of starts, then of results).
        self._heard = heard
        # Whether this handle marked the workflow as waited for (``_watched``).
        self._marked = False
        # Just created here with no owner (a client's start, or past max_workflows): it
        # will run elsewhere or later, so the first look marks it rather than read it.
        self._unowned = unowned

    def _outcome_heard(self) -> tuple[str, Outcome] | None:
        """The name and outcome of the run this handle's start began here, once it has
        succeeded. Only a success: it is final, whereas a FAILED or CANCELLED workflow may
        be resumed (by anyone, from any process), and its handle must then follow it."""
        heard, name = self._heard, self._name
        if heard is None or name is None or not heard.done():
            return None
        outcome = heard.result()
        if outcome is None or outcome.state is not _SUCCEEDED:
            return None
        return name, outcome

    def __repr__(self) -> str:
        return f"WorkflowHandle({self.workflow_id!r})"

    def _record(self) -> WorkflowRecord:
        record = self._app.store.get_workflow(self.workflow_id)
        if record is None:
            raise WorkflowNotFoundError(self.workflow_id)
        return record

    async def _record_async(self, watch: bool = False) -> WorkflowRecord:
        # Shared with the other waiters that look now: one query for all of them.
        record = await loop_bridge().wait(self._app.reads.read(self.workflow_id, watch))
        if record is None:
            raise WorkflowNotFoundError(self.workflow_id)
        self._marked = self._marked or watch
        return record

    def _unwatched(self, record: WorkflowRecord) -> bool:
        """Whether the workflow's end must be pushed to this process and is not yet
        asked for: it is unfinished and no executor of this process runs it (its end
        pushes ``done`` only for a waiter that marked it: ``Store.watch_workflows``)."""
        return (
            not self._marked
            and record.status not in TERMINAL_STATUSES
            and not self._app.owned_here(record.owner)
        )

    def _watched(self) -> WorkflowRecord:
        """The record, the workflow marked as waited for first (see ``_unwatched``)."""
        found = self._app.store.watch_workflows([self.workflow_id], self._app.executor_id)
        record = found.get(self.workflow_id)
        if record is None:
            raise WorkflowNotFoundError(self.workflow_id)
        self._marked = True
        return record

    def return_hint(self) -> Any:
        """The type the workflow's result decodes to (its annotated return type)."""
        name = self._name or self._record().name
        definition = self._app.registry.workflows.get(name)
        return definition.return_hint if definition else Any

    def _decode(self, name: str, outcome: Outcome) -> R:
        if outcome.state == SUCCEEDED:
            self._name = name
            what = f"the result of workflow {self.workflow_id!r}"
            output = outcome.output or "null"
            value: R = decode_value(self._app.serializer, output, self.return_hint(), what)
            return value
        if outcome.state == CANCELLED:
            raise WorkflowCancelledError(self.workflow_id)
        raise decode_error(outcome.error or "{}", WorkflowFailedError, self._app.serializer)

    def status(self) -> WorkflowStatus:
        """The workflow's status and recorded steps, read from the store now."""
        record = self._record()
        status = WorkflowStatus.from_records(record, self._app.store.load_steps(record.id))
        if status.queued is not None:
            place = self._app.store.queue_place(record.id, self._app.clock.time())
            status = dataclasses.replace(status, queued=with_place(status.queued, place))
        return status

    def retry_hold(self) -> bool:
        """If the workflow is held (``status().held``), make it due now: any executor of its
        version claims it and replays it (after a fix the code fingerprint cannot see,
        such as one in a helper function). Returns whether it was held. A held workflow is
        retried by itself when code with another fingerprint runs, see
        docs/changing-code.md."""
        return self._app.store.retry_held(self.workflow_id, self._app.clock.time())

    def result(self, timeout: float | None = None) -> R:
        """Wait for the workflow's outcome: its return value, or raise its error.

        Raises ``WorkflowTimeoutError`` after ``timeout`` seconds (the workflow goes
        on), ``WorkflowCancelledError`` if it was cancelled. A workflow that finishes in
        this process wakes the wait at once, one that finishes elsewhere through the
        store's pushed events (PostgreSQL) or polling. Inside a workflow, waiting for a
        child is durable: recorded, and a long wait suspends the parent. ``timeout`` is
        a finite number of seconds, 0 meaning "look once", or None (``InvalidValueError``
        otherwise).
        """
        timeout = timeout_seconds("the timeout of handle.result()", timeout)
        run = current_run.get()
        if run is not None:
            # Inside a workflow: a durable wait for a child (the engine's).
            child: R = child_result(run, self.workflow_id, self.return_hint(), timeout)
            return child
        if (heard := self._outcome_heard()) is not None:
            return self._decode(*heard)
        deadline = None if timeout is None else self._app.clock.time() + timeout
        notifier = self._app.notifier
        first = True
        while True:
            # Subscribe before reading, so that a finish between the two is not missed.
            waiter = notifier.subscribe(self.workflow_id)
            try:
                name = self._running_here(first)
                first = False
                if name is not None:
                    outcome = self._await(waiter, None, deadline, timeout)
                else:
                    first_look = self._unowned and not self._marked
                    record = self._watched() if first_look else self._record()
                    if self._unwatched(record):
                        record = self._watched()
                    if record.status in TERMINAL_STATUSES:
                        return self._decode(record.name, Outcome.of(record))
                    name = record.name
                    outcome = self._await(waiter, record, deadline, timeout)
                if outcome is not None:
                    return self._decode(name, outcome)
            finally:
                notifier.unsubscribe(self.workflow_id, waiter)

    def _running_here(self, first: bool) -> str | None:
        """The workflow's name if it runs in this process now (call it subscribed): its
        end then tells the waiter its outcome, so the store need not be read. Only at the
        first look: a run still here after a long wait may have lost its lease to another
        executor (frozen, or stuck in a step), and only the store says so."""
        if first and self._name is not None and self._app.runs_here(self.workflow_id):
            return self._name
        return None

    def _await(
        self,
        waiter: Future[Outcome | None],
        record: WorkflowRecord | None,
        deadline: float | None,
        timeout: float | None,
    ) -> Outcome | None:
        """The outcome the waiter is told, or None when the record must be read again."""
        wait = self._wait(deadline, timeout)
        elsewhere = self._watch(record)
        try:
            try:
                return waiter.result(timeout=wait)
            except FutureTimeout:  # also builtins.TimeoutError: keep _wait's out of here
                return None
        finally:
            if elsewhere:
                self._app.watcher.unwatch(self.workflow_id)

    async def result_async(self, timeout: float | None = None) -> R:
        """``result()`` for coroutines: waits without holding a thread."""
        timeout = timeout_seconds("the timeout of handle.result_async()", timeout)
        run = current_run.get()
        if run is not None:
            hint = self.return_hint() if self._name else Any
            child: R = await child_result_async(run, self.workflow_id, hint, timeout)
            return child
        if (heard := self._outcome_heard()) is not None:
            return self._decode(*heard)
        deadline = None if timeout is None else self._app.clock.time() + timeout
        notifier = self._app.notifier
        # The waits of a gather of thousands end in batches (the executor's outcomes):
        # the loop wakes once per batch, not once per waiter (asyncio.wrap_future).
        bridge = loop_bridge()
        first = True
        while True:
            waiter = notifier.subscribe(self.workflow_id)
            wrapped = bridge.wait(waiter)
            try:
                name = self._running_here(first)
                first = False
                if name is not None:
                    outcome = await self._await_async(wrapped, None, deadline, timeout)
                else:
                    record = await self._record_async(watch=self._unowned and not self._marked)
                    if self._unwatched(record):
                        record = await self._record_async(watch=True)
                    if record.status in TERMINAL_STATUSES:
                        return self._decode(record.name, Outcome.of(record))
                    name = record.name
                    outcome = await self._await_async(wrapped, record, deadline, timeout)
                if outcome is not None:
                    return self._decode(name, outcome)
            finally:
                notifier.unsubscribe(self.workflow_id, waiter)
                bridge.forget(waiter)  # an unsubscribed waiter may never be told
                wrapped.cancel()

    async def _await_async(
        self,
        wrapped: asyncio.Future[Outcome | None],
        record: WorkflowRecord | None,
        deadline: float | None,
        timeout: float | None,
    ) -> Outcome | None:
        """``_await`` for coroutines."""
        wait = self._wait(deadline, timeout)
        elsewhere = self._watch(record)
        try:
            if wrapped.done():
                return wrapped.result()
            # A timer that gives up on the waiter (resolves it with None, which the bridge
            # then leaves alone), rather than asyncio.wait: a set, a future and callbacks
            # more per waiter, twice the loop's CPU of such a wait.
            timer = wrapped.get_loop().call_later(wait, _give_up, wrapped)
            try:
                return await wrapped
            finally:
                timer.cancel()
        finally:
            if elsewhere:
                self._app.watcher.unwatch(self.workflow_id)

    def _watch(self, record: WorkflowRecord | None) -> bool:
        """Have the watcher look for the workflow if it runs elsewhere (or waits to be
        claimed): whether it does. One that runs here (no record read: it ran here when
        looked at) tells its waiters itself."""
        if record is None or self._app.owned_here(record.owner):
            return False
        self._app.watcher.watch(self.workflow_id)
        return True

    def _wait(self, deadline: float | None, timeout: float | None) -> float:
        # Its end wakes the waiter at once (the executor, the watcher or a pushed event
        # pokes it): read the record again only rarely, in case of a takeover.
        wait = max(self._app.wait_interval, self._app.settings.lease_seconds / 3)
        if deadline is not None:
            wait = min(wait, deadline - self._app.clock.time())
            if wait <= 0:
                raise WorkflowTimeoutError(self.workflow_id, timeout or 0.0)
        return wait

    async def status_async(self) -> WorkflowStatus:
        """``status()`` for coroutines."""
        return await asyncio.to_thread(self.status)
