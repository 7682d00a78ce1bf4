"""The storage interface: domain operations that the engine needs, nothing else.

Every method states what it does atomically and what it returns. Callers never
see SQL, a connection or a transaction, and never branch on the database kind.
Timestamps are passed in by the caller (seconds since the epoch, from the app's
clock) so that one injectable clock drives leases, retries and listings.

Write operations on the hot path (creating a workflow, recording a step,
completing a workflow) return a ``concurrent.futures.Future``: the store may
group concurrent writes into one transaction (group commit), and the future
resolves only after that transaction is durable. Synchronous callers wait with
``future.result()``, coroutines with ``asyncio.wrap_future``.

What an operation raises (or its future holds), on every store; nothing from a
database driver ever escapes:

- ``InvalidValueError`` (a ``ConfigurationError`` and ``ValueError``), before anything is
  written: a workflow ID, name, event key, topic or idempotency key that some store
  could not index (over ``MAX_KEY_BYTES`` of UTF-8, a NUL, a lone surrogate);
- ``StoreUnavailableError``: an outage or a lost race (the connection, the server, a
  lock); the same call may succeed later;
- ``StoreRejectedError``: the database refused the statement or its data for good;
  retrying cannot help, and the message names the operation;
- ``StoreError``: anything else (a SQLite file that cannot be used, say which and why).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, Protocol

from .._errors import ConfigurationError
from .._model import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    BreakerState,
    StepState,
    WaitKind,
    WorkflowState,
)
from .._model import ActionRecord as ActionRecord
from .._model import BreakerRecord as BreakerRecord
from .._model import EventRecord as EventRecord
from .._model import ExecutorRecord as ExecutorRecord
from .._model import Hold as Hold
from .._model import Lease as Lease
from .._model import MessageRecord as MessageRecord
from .._model import NewWorkflow as NewWorkflow
from .._model import StepRecord as StepRecord
from .._model import StreamEntry as StreamEntry
from .._model import VersionCount as VersionCount
from .._model import WorkflowRecord as WorkflowRecord
from .._schedules import ScheduleRecord as ScheduleRecord
from .._schedules import ScheduleSpec as ScheduleSpec
from ._base_compliance import ComplianceOperations
from ._base_executors import ExecutorOperations
from ._base_schedules import BreakerOperations, ScheduleOperations
from ._queue_base import QueueOps

#: Workflow statuses (aliases of ``WorkflowState``). A workflow is *active* while
#: PENDING or RUNNING.
PENDING = WorkflowState.PENDING
RUNNING = WorkflowState.RUNNING
SUCCEEDED = WorkflowState.SUCCEEDED
FAILED = WorkflowState.FAILED
CANCELLED = WorkflowState.CANCELLED
ACTIVE_STATUSES = ACTIVE_STATES
TERMINAL_STATUSES = TERMINAL_STATES

#: Step statuses (aliases of ``StepState``, which says what each means).
STEP_SUCCEEDED = StepState.SUCCEEDED
STEP_FAILED = StepState.FAILED
STEP_RETRYING = StepState.RETRYING
STEP_WAITING = StepState.WAITING
STEP_CANCELLED = StepState.CANCELLED

#: The message topic (+ the child's ID) on which a child workflow's outcome reaches its
#: parent, as ``Outcome.to_json()``.
CHILD_TOPIC = WaitKind.CHILD.value

#: The wake time of a workflow that waits with no timeout (9999-12-31): it wakes only
#: when a message arrives.
FOREVER = 253402300799.0

#: The lease expiry a workflow's row is recorded with when an executor takes it: no
#: expiry of its own. The owner's executor row carries the lease, renewed by its
#: heartbeat (one row, whatever the number of workflows it runs); once that lapses, any
#: worker releases the executor's workflows (``Store.release_expired``). A date rather
#: than NULL so that a perdure of before this scheme, during an upgrade, reads such a
#: row as held: it neither takes the workflow over nor counts it out of its queue's
#: running ones.
HELD_BY_EXECUTOR = FOREVER


def lease_expiry(record: WorkflowRecord, executor_leases: Mapping[str, float]) -> float | None:
    """When the lease on a workflow expires: its owner's executor lease (from
    ``executor_leases``, by executor ID) where its row holds ``HELD_BY_EXECUTOR``, or the
    row's own expiry where an older perdure wrote one; None when nobody owns it, or its
    owner is not among ``executor_leases`` (stopped)."""
    if record.owner is None or record.lease_expires_at is None:
        return None
    if record.lease_expires_at < HELD_BY_EXECUTOR:
        return record.lease_expires_at
    return executor_leases.get(record.owner)


#: Events that a store pushes to listeners (see ``Store.listen``): a workflow became
#: claimable; a workflow (``done:`` + its ID) has its outcome; events may have been
#: missed (the listener reconnected), so look again; a workflow (``event:`` + its ID)
#: set an event; a workflow was suspended (``wake`` : the earliest wake time may be
#: earlier now).
EVENT_READY = "ready"
EVENT_DONE = "done:"
EVENT_RESYNC = "resync"
EVENT_EVENT = "event:"
EVENT_WAKE = "wake"
#: Workflows were asked to cancel: executors look up those they own.
EVENT_CANCEL = "cancel"
#: A workflow (``stream:`` + its ID) appended to one of its streams.
EVENT_STREAM = "stream:"


class Transaction(Protocol):
    """The open transaction of a transactional step (see ``Store.transact``)."""

    @property
    def connection(self) -> Any:
        """The DB-API connection the transaction runs on (``sqlite3`` or ``psycopg``)."""
        ...

    def write_stream(self, key: str, value: str | None, writer: str, now: float) -> int:
        """Append to the workflow's stream ``key`` inside this transaction (committed with
        it); the entry's offset (see ``Store.write_stream``)."""
        ...


class Store(
    ComplianceOperations, BreakerOperations, ScheduleOperations, QueueOps, ExecutorOperations
):
    """A database that holds workflows, their steps and the executors running them."""

    #: The URL scheme this store serves, such as "sqlite" or "postgresql".
    kind: str

    # -- lifecycle -----------------------------------------------------------------

    @abc.abstractmethod
    def migrate(self) -> None:
        """Create or upgrade the schema to the newest version; safe to call at every start
        and from many processes at once."""

    @abc.abstractmethod
    def close(self) -> None:
        """Finish pending writes and release every connection. Idempotent."""

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether this database holds perdure's schema (at any version), found without
        creating or changing anything: False on a database ``migrate`` has not set up.
        A store opened with ``open_store(url, create=False)`` has already checked it."""

    def listen(self, on_event: Callable[[str], None]) -> bool:
        """Push events (``EVENT_*``) from any process to ``on_event``, called from a
        background thread, until the store closes. Returns False when this store cannot
        push events: the caller then polls. May be called more than once."""
        return False

    # -- workflows -----------------------------------------------------------------

    @abc.abstractmethod
    def create_workflow(
        self, new: NewWorkflow, owner: str | None, lease_expires_at: float | None
    ) -> Future[tuple[WorkflowRecord, bool]]:
        """Insert a workflow unless one with the same ID exists; one transaction.

        With ``owner`` the new workflow is created RUNNING and already claimed by it
        (epoch 1), so starting and claiming cost one commit; without, it is PENDING
        and unowned. Resolves to ``(record, created)``: the stored record (the
        existing one when ``created`` is false, which is then left untouched).
        """

    @abc.abstractmethod
    def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        """The workflow with this ID, or None."""

    @abc.abstractmethod
    def get_workflows(self, workflow_ids: Sequence[str]) -> dict[str, WorkflowRecord]:
        """``get_workflow`` of several workflows in one query (what waiters that look at
        once share, see ``_watch``): those that exist, by ID."""

    def watch_workflows(
        self, workflow_ids: Sequence[str], watcher: str | None = None
    ) -> dict[str, WorkflowRecord]:
        """``get_workflows`` for a waiter of workflows that may end in another process: a
        store that pushes events (``listen``) marks them first, so that their outcomes
        push ``EVENT_DONE`` (an outcome nobody waits for elsewhere pushes nothing).
        ``watcher``: the ID of the executor of the waiter's process, if it has one; an
        outcome that executor records then pushes nothing for this waiter (its process
        hears it from its own executor)."""
        return self.get_workflows(workflow_ids)

    @abc.abstractmethod
    def unfinished_among(self, workflow_ids: Sequence[str]) -> set[str]:
        """Those of these workflows that exist and have no outcome yet, in one query
        (what the waiters of workflows running elsewhere share, see ``_watch``)."""

    @abc.abstractmethod
    def list_workflows(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        limit: int = 100,
        newest_first: bool = True,
        after: tuple[float, str] | None = None,
        queue: str | None = None,
        key: str | None = None,
    ) -> list[WorkflowRecord]:
        """Up to ``limit`` workflows matching every given filter, ordered by
        ``(created_at, id)``; with ``after`` (the ``(created_at, id)`` of the last row of
        the previous page), those past it in that order. ``queue`` keeps those started
        in that queue, ``key`` (given with ``queue``) those of that queue key. Each page
        is one index range, whatever its depth and the table's size."""

    @abc.abstractmethod
    def complete_workflow(
        self,
        workflow_id: str,
        lease: Lease,
        status: str,
        output: str | None,
        error: str | None,
        now: float,
        parent_id: str | None = None,
        steps: Sequence[StepRecord] = (),
    ) -> Future[bool]:
        """Record a workflow's outcome (a terminal status) and drop its lease; atomic.
        ``steps``: step records to write first in the same transaction, each as
        ``record_step`` would (the run's last ones, held for its outcome).

        With ``parent_id`` (the workflow is a child), the same transaction delivers the
        outcome to the parent as a message on ``CHILD_TOPIC + workflow_id`` (payload
        ``Outcome(status, output, error).to_json()``, the same bytes on every store, at
        most once) and wakes the parent if it is
        suspended waiting for it. Resolves to False, recording nothing, when the lease
        is no longer current or the workflow already has an outcome: an outcome is
        recorded exactly once.
        """

    @abc.abstractmethod
    def set_note(self, workflow_id: str, note: str | None, now: float) -> None:
        """Attach an operator-facing note (why an active workflow is not progressing)."""

    @abc.abstractmethod
    def active_versions(self) -> list[VersionCount]:
        """For each app version with active workflows: how many, how many of them are held,
        and the creation time of the oldest; oldest version first. One query."""

    # -- held workflows ------------------------------------------------------------

    @abc.abstractmethod
    def hold_workflow(
        self, workflow_id: str, lease: Lease, hold: Hold, note: str, now: float
    ) -> Future[bool]:
        """Hold a running workflow whose replay met another step than the one recorded,
        fenced by the lease; one statement.

        It stays active (RUNNING: messages sent to it are stored) and keeps its history;
        its owner, lease and wait topic are dropped, ``held_code`` becomes ``hold.code``,
        ``held_detail`` ``hold.to_json()``, ``note`` ``note`` and ``wake_at``
        ``hold.retry_at``: no executor claims it before then, unless ``release_holds``
        makes it due. A claim clears ``held_code`` and ``held_detail``. Resolves to False,
        changing nothing, when the lease is not current.
        """

    @abc.abstractmethod
    def release_holds(
        self, names: Sequence[str], app_version: str, codes: Sequence[str], now: float
    ) -> int:
        """Make due now (``wake_at = now``) every unowned held workflow of these names and
        this version whose ``held_code`` is not in ``codes`` (the caller's code of each
        of its workflows, a fingerprint that names its workflow): an executor whose
        code differs from the code that failed to replay them may try; returns how
        many."""

    @abc.abstractmethod
    def retry_held(self, workflow_id: str, now: float) -> bool:
        """Make a held, unowned workflow due now (``wake_at = now``), whatever code held
        it: an operator's "try again" after a fix that the code fingerprint cannot see.
        Returns whether the workflow was held (False, changing nothing, otherwise). One
        statement; other executors are told."""

    # -- steps ---------------------------------------------------------------------

    @abc.abstractmethod
    def load_steps(self, workflow_id: str) -> list[StepRecord]:
        """Every recorded step of the workflow in the order they were first recorded;
        one query."""

    @abc.abstractmethod
    def load_steps_many(self, workflow_ids: Sequence[str]) -> dict[str, list[StepRecord]]:
        """``load_steps`` of several workflows in one query (what a claim of workflows
        that ran before needs): every given ID is a key, with ``[]`` when it has no
        steps (or no such workflow)."""

    @abc.abstractmethod
    def record_step(self, workflow_id: str, lease: Lease, step: StepRecord) -> Future[bool]:
        """Insert the step at its position, or update a RETRYING or WAITING record there;
        one statement, fenced by the lease, no read before it.

        Resolves to False, recording nothing, when the lease is not current (a
        stale owner) or the position already holds a final record.
        """

    # -- claims ----------------------------------------------------------------------

    @abc.abstractmethod
    def claim_workflows(
        self,
        executor_id: str,
        names: Sequence[str],
        app_version: str,
        now: float,
        lease_expires_at: float,
        dead_owners: Sequence[str] = (),
        limit: int = 100,
    ) -> list[WorkflowRecord]:
        """Claim up to ``limit`` active workflows of these names and this version that
        nobody owns, whose lease expired before ``now``, or whose owner is in
        ``dead_owners``, and that are not suspended past ``now`` (``wake_at`` NULL or
        <= ``now``); oldest first, atomically.

        Each claimed workflow becomes RUNNING, owned by ``executor_id``, with its epoch
        incremented (which fences out the previous owner), its note and its wake time
        cleared. Waking a suspended workflow does not count as a recovery.
        Returns the claimed records as they are after the claim.
        """

    @abc.abstractmethod
    def unclaimable_workflows(
        self, names: Sequence[str], app_version: str, now: float, limit: int = 100
    ) -> list[WorkflowRecord]:
        """Active, unowned-or-expired workflows not suspended past ``now`` that no executor
        with these names and version can run (an unregistered name or another version),
        for reporting."""

    # -- waiting: timers, suspension, messages, events -------------------------------------

    @abc.abstractmethod
    def suspend_workflow(
        self,
        workflow_id: str,
        lease: Lease,
        wake_at: float,
        wait_topic: str | None,
        now: float,
        cancel_delivered: bool = False,
    ) -> Future[bool]:
        """Suspend a running workflow until ``wake_at``, fenced by the lease; atomic.

        The workflow stays active, its owner and lease are dropped and ``wake_at`` and
        ``wait_topic`` are set, so that no executor claims it before ``wake_at``. When
        ``wait_topic`` is given and a message on that topic is already pending (sent
        after the waiting ``recv`` last looked), ``wake_at`` becomes ``now`` instead: a
        message is never left waiting for the timeout. Likewise when ``wait_topic`` is
        ``BREAKER_TOPIC + name`` (a workflow parked on a circuit breaker) and that breaker
        is CLOSED: a breaker that closes while a workflow is being parked on it wakes it,
        whichever commits first. And when the workflow was asked to cancel (a cancel that
        came while it ran, and so woke nothing): it is told at once, not at ``wake_at``,
        unless ``cancel_delivered`` (the run already raised the cancel, and now waits in
        its cleanup: waking it at once would replay it again and again until the wait
        ends).
        Resolves to False, changing nothing, when the lease is not current.
        """

    @abc.abstractmethod
    def next_wake_at(self, after: float) -> float | None:
        """The earliest ``wake_at`` later than ``after`` of any suspended workflow, or
        None; one index lookup."""

    @abc.abstractmethod
    def send_message(
        self,
        workflow_id: str,
        topic: str,
        payload: str,
        idempotency_key: str | None,
        now: float,
        actor: str | None = None,
        trace_context: str | None = None,
    ) -> Future[bool | None]:
        """Append a message for the workflow on ``topic`` (after every message sent
        before it); one transaction. With ``actor`` (an operator) the same transaction
        logs a ``send`` action (its topic, key and size, not the payload) when stored.
        ``trace_context`` (the sender's, see ``NewWorkflow``) is kept with it.

        With an ``idempotency_key`` already used for this workflow nothing is stored.
        A workflow suspended on ``recv`` of this topic gets ``wake_at = now`` (it is
        claimable at once). Resolves to True when stored, False for a repeated key,
        None when no active workflow has this ID (none, or it has finished: nothing is
        stored, since nobody would receive it).
        """

    @abc.abstractmethod
    def consume_message(
        self, workflow_id: str, lease: Lease, topic: str, step: StepRecord, now: float
    ) -> Future[tuple[bool, str | None, str | None]]:
        """Take the oldest pending message of the workflow on ``topic`` and record its
        payload as ``step``'s output (``step.output`` is ignored), in one transaction
        fenced by the lease: a message is consumed exactly when its record is written.

        Resolves to ``(False, None, None)`` when the lease is not current or the step's
        position already holds a final record (nothing changes), ``(True, None, None)``
        when no message is pending (nothing is written), ``(True, payload,
        trace_context)`` otherwise (the trace context the message was sent with).
        """

    @abc.abstractmethod
    def count_suspended(self, now: float) -> dict[str, int]:
        """How many workflows are suspended, by workflow name: active, owned by no
        executor, waiting until a time after ``now`` (a sleep, a message, a retry's
        backoff, a child, a breaker), not held. One read; names without any are left
        out."""

    @abc.abstractmethod
    def set_event(self, workflow_id: str, lease: Lease, step: StepRecord, key: str) -> Future[bool]:
        """Record ``step`` (fenced, like ``record_step``) and, in the same transaction and
        only if it was recorded, set the workflow's event ``key`` to ``step.output``
        (insert or replace). Resolves to whether the step was recorded."""

    @abc.abstractmethod
    def get_event(self, workflow_id: str, key: str) -> str | None:
        """The value of the workflow's event ``key``, or None if it is not set."""

    # -- streams and transactional steps ---------------------------------------------------

    @abc.abstractmethod
    def write_stream(
        self,
        workflow_id: str,
        lease: Lease,
        key: str,
        value: str | None,
        writer: str,
        now: float,
        step: StepRecord | None = None,
    ) -> Future[int | None]:
        """Append an entry to the workflow's stream ``key`` (``value`` None: the close
        marker, its last entry), fenced by the lease, in one transaction; its offset is
        the stream's next (0, 1, 2 ...). With ``step`` (a write from the workflow itself),
        the same transaction records ``step`` (its output the entry's offset), and
        nothing is written when its position already holds a final record.

        Resolves to the offset, or None (nothing written) when the lease is not current
        or the position is final; raises ``ConfigurationError`` (nothing written) when
        the stream is closed already. Listeners get ``EVENT_STREAM + workflow_id``.
        """

    @abc.abstractmethod
    def read_stream(
        self, workflow_id: str, key: str, start: int = 0, limit: int = 1000
    ) -> list[StreamEntry]:
        """Up to ``limit`` entries of the stream from offset ``start`` on, in order;
        committed entries only, so an entry never appears before one with a smaller
        offset. One index range."""

    def transact(
        self,
        workflow_id: str,
        lease: Lease,
        step: StepRecord,
        body: Callable[[Transaction], str],
    ) -> bool:
        """Run ``body`` inside a transaction on a connection of its own and record
        ``step`` (a SUCCEEDED record; its output is what ``body`` returns) in that same
        transaction: what ``body`` writes commits exactly when the step's record does.

        The fence (the lease current, the position free) is checked and the workflow's
        row locked first: returns False, running nothing, when it fails; True once
        committed. A lease dropped while ``body`` runs (the executor released it) fails the
        record, and nothing commits (``StoreError``). Whatever ``body`` raises rolls
        everything back and is raised again unchanged, except a lost race (a
        serialization failure, a deadlock, a busy database), after which ``body`` runs
        again in a new transaction, a few times.
        A store that cannot run transactions raises ``ConfigurationError``.
        """
        raise ConfigurationError(
            f"this {self.kind} store can't run transactional steps (@app.transaction): "
            "use SQLite or PostgreSQL"
        )

    # -- cancellation and continue_as_new ---------------------------------------------

    @abc.abstractmethod
    def cancel_workflow(
        self, workflow_id: str, now: float, actor: str | None = None
    ) -> list[str] | None:
        """Ask the workflow and all its active descendants (children, their children...)
        to cancel, in one transaction: set ``cancel_requested_at`` where it is not set
        yet and wake those that are suspended (``wake_at = now``). Returns the IDs newly
        asked (empty when the workflow has finished or was asked before), None when no
        workflow has this ID. With ``actor`` (an operator, not a workflow) the same
        transaction logs a ``cancel`` action naming the IDs asked."""

    @abc.abstractmethod
    def cancel_requests(self, executor_id: str) -> list[str]:
        """IDs of the active workflows this executor owns that were asked to cancel."""

    @abc.abstractmethod
    def continue_workflow(
        self, workflow_id: str, lease: Lease, inputs: str, now: float
    ) -> Future[WorkflowRecord | None]:
        """Continue a running workflow as new, fenced by the lease, in one transaction:
        delete its recorded steps, replace its inputs and count a generation; it keeps
        its ID, lease, events, pending messages, parent, cancel request and deadline.
        Resolves to the updated record, or None (nothing changes) when the lease is not
        current."""

    # -- operating: repairs, the actions log, inspection ------------------------------------

    @abc.abstractmethod
    def resume_workflow(
        self, workflow_id: str, actor: str, now: float
    ) -> tuple[WorkflowRecord, bool] | None:
        """Take a FAILED or CANCELLED workflow up again, in one transaction.

        It becomes PENDING and unowned with its epoch incremented (a writer holding an
        older lease is fenced out; executors claim it like a new workflow), its outcome,
        note, wait, cancel request and deadline cleared and ``resumes`` counted; its FAILED,
        CANCELLED and RETRYING step records are removed (those steps run afresh, with a new
        attempt budget); every other record stays. The same transaction logs a ``resume``
        action whose details hold the outcome it replaced and the records it removed.
        Returns ``(record, True)`` after a resume, ``(record, False)`` untouched when the
        workflow is not FAILED or CANCELLED (of concurrent resumes exactly one resumes),
        None when no workflow has this ID.
        """

    @abc.abstractmethod
    def fork_workflow(
        self, source_id: str, new: NewWorkflow, steps: int, action: str, actor: str, now: float
    ) -> tuple[WorkflowRecord, bool] | None:
        """Create ``new`` (PENDING, unowned; name, inputs and serializer as given) as a fork
        of ``source_id`` holding copies of the source's first ``steps`` recorded steps (in
        recorded order; all of them when it has fewer), ``forked_from``/``forked_steps``
        set, at epoch 1 (a claim then reads its steps); one transaction that also logs
        ``action`` (fork or restart) on the source with the new ID as target. Returns
        ``(record, True)``; ``(existing, False)`` (nothing copied or logged) when a
        workflow with the new ID exists; None when no workflow has ``source_id``."""

    @abc.abstractmethod
    def log_action(
        self,
        workflow_id: str,
        action: str,
        actor: str,
        details: str,
        now: float,
        target_id: str | None = None,
    ) -> int:
        """Append an operator action (``details`` is JSON) to the actions log, which
        perdure never updates nor deletes; returns its sequence number (increasing)."""

    @abc.abstractmethod
    def list_actions(
        self, workflow_id: str | None = None, after: int = 0, limit: int = 100
    ) -> list[ActionRecord]:
        """Logged actions with a sequence number above ``after``, oldest first (of one
        workflow when ``workflow_id`` is given, the source of a fork for a fork);
        indexed."""

    @abc.abstractmethod
    def list_events(self, workflow_id: str) -> list[EventRecord]:
        """Every event the workflow set, by key, with its latest value."""

    @abc.abstractmethod
    def list_messages(
        self, workflow_id: str, pending_only: bool = False, limit: int = 100
    ) -> list[MessageRecord]:
        """The workflow's messages in the order they were sent (only those not consumed
        yet with ``pending_only``), at most ``limit``."""

    @abc.abstractmethod
    def list_children(self, workflow_id: str, limit: int = 100) -> list[WorkflowRecord]:
        """The workflows the workflow started as children, oldest first; indexed."""


#: Breaker states (aliases of ``BreakerState``).
BREAKER_CLOSED = BreakerState.CLOSED
BREAKER_OPEN = BreakerState.OPEN
BREAKER_HALF_OPEN = BreakerState.HALF_OPEN

#: The ``wait_topic`` of a workflow parked on the breaker ``name``: ``BREAKER_TOPIC + name``.
BREAKER_TOPIC = WaitKind.BREAKER.value
