"""The primitives every SQL store gives the shared operations (see ``_sql``).

A store supplies:

- ``_dialect``: how its SQL is spelled;
- ``_writer``: the group committer of its hot-path writes (``_batch``);
- ``_starter``: the group committer of new top-level workflows (its ``_writer``, or one
  of its own);
- ``_read(sql, params)``: rows of one query;
- ``_write(fn)``: ``fn(conn)`` in one transaction, waited for;
- ``_notify(conn, event)``: tell listeners in other processes, at commit (or nothing);
- ``_compact()``: drop what an erasure left in the files (or nothing).
"""

from __future__ import annotations

import abc
import functools
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .._errors import StoreError
from .._model import WorkflowState
from . import _statements as q
from . import _statements_compliance as c
from ._base import Lease, NewWorkflow, StepRecord, Store, WorkflowRecord
from ._batch import GroupCommitter, Write
from ._dialect import Dialect
from ._queries import check_versions, workflow_record

T = TypeVar("T")

#: How many times a transaction that loses a race runs (``_write_again_if_raced``, a
#: transactional step), and the pause before the next time (times the attempt's number).
RACE_TRIES = 5
_RACE_BACKOFF = 0.02


def pause_after_race(attempt: int) -> None:
    """Wait before running a transaction that lost a race again: longer after each lost
    one, and at random, so that the two transactions do not meet again in step."""
    time.sleep(random.uniform(0.5, 1.5) * _RACE_BACKOFF * attempt)


# Plain text, not the members: an enum's .value is a Python-level property.
_RUNNING = WorkflowState.RUNNING.value
_PENDING = WorkflowState.PENDING.value


@dataclass(frozen=True)
class HotStatements:
    """The statements of every workflow's start, completion and read, rendered for one
    dialect once per store (``SqlBase._hot``) instead of looked up on every call."""

    #: Inserts a new workflow: its row count says whether it did, or where the row
    #: count comes late (``create_returns``), a returned row.
    create_workflow: str
    #: The same for a child (its root_id read from its parent's row).
    create_child: str
    create_returns: bool
    #: Both with the push of the READY event (a start no executor owns yet), where the
    #: store pushes in SQL.
    create_workflow_and_notify: str
    create_child_and_notify: str
    get_workflow: str
    complete_workflow: str
    complete_and_notify: str
    #: A step record and ``complete_and_notify`` in one statement (where it pushes).
    record_and_complete: str

    @classmethod
    def render(cls, dialect: Dialect) -> HotStatements:
        """The statements as ``dialect`` spells them."""
        returns = not dialect.rowcount_at_once
        return cls(
            dialect.sql(q.CREATE_WORKFLOW_RETURNING if returns else q.CREATE_WORKFLOW),
            dialect.sql(q.CREATE_CHILD_RETURNING if returns else q.CREATE_CHILD),
            returns,
            dialect.sql(q.CREATE_WORKFLOW_AND_NOTIFY),
            dialect.sql(q.CREATE_CHILD_AND_NOTIFY),
            dialect.sql(q.GET_WORKFLOW),
            dialect.sql(q.COMPLETE_WORKFLOW),
            dialect.sql(q.COMPLETE_AND_NOTIFY),
            dialect.sql(q.RECORD_AND_COMPLETE),
        )


def create_params(
    new: NewWorkflow, owner: str | None, lease_expires_at: float | None
) -> tuple[Any, ...]:
    """The parameters of ``CREATE_WORKFLOW`` (``CREATE_CHILD`` for a child) for ``new``:
    RUNNING at epoch 1 when it has an owner, else PENDING. The one place that knows the
    statements' columns (a start and a schedule's tick both insert workflows)."""
    state, epoch = (_RUNNING, 1) if owner else (_PENDING, 0)
    parent = new.parent_id
    # The root: this workflow's ID, or a child's parent's root_id, else the parent's ID.
    root = (new.id,) if parent is None else (parent, parent)
    return (
        new.id,
        new.name,
        state,
        new.inputs,
        new.serializer,
        new.app_version,
        owner,
        epoch,
        lease_expires_at,
        new.created_at,
        new.created_at,
        new.parent_id,
        new.deadline_at,
        new.trace_context,
        *root,
    )


class Creation:
    """What a new workflow's INSERT did (``SqlStore.create_workflow``): whether it
    inserted, and the record to return, the new one's or, when its ID is taken, that of
    the workflow holding it."""

    __slots__ = ("_lease", "_new", "_owner", "_returns", "_select_sql")

    def __init__(
        self,
        new: NewWorkflow,
        owner: str | None,
        lease_expires_at: float | None,
        select_sql: str,
        returns: bool,
    ) -> None:
        self._new, self._owner, self._lease = new, owner, lease_expires_at
        self._select_sql, self._returns = select_sql, returns

    def inserted(self, cursor: Any) -> bool:
        """Whether the INSERT run on ``cursor`` inserted (see ``HotStatements``)."""
        return (cursor.fetchone() is not None) if self._returns else bool(cursor.rowcount == 1)

    def then(self, conn: Any, inserted: bool) -> tuple[WorkflowRecord, bool]:
        """The record and whether it was created, once the INSERT's transaction ended."""
        if inserted:
            return created_record(self._new, self._owner, self._lease), True
        return self.existing(conn)

    def existing(self, conn: Any) -> tuple[WorkflowRecord, bool]:
        """The workflow that holds the ID: a new statement sees it (PostgreSQL's ON
        CONFLICT waited for its transaction)."""
        row = conn.execute(self._select_sql, (self._new.id,)).fetchone()
        if row is None:
            raise StoreError(f"workflow {self._new.id!r} conflicted on insert but is not stored")
        return workflow_record(row), False


def created_record(
    new: NewWorkflow, owner: str | None, lease_expires_at: float | None
) -> WorkflowRecord:
    """The record that ``CREATE_WORKFLOW`` with ``create_params`` stores, as reading it
    back returns it: the schema's defaults in every other column (NULL, or 0 for the
    counters and the priority), times as floats (REAL and DOUBLE PRECISION columns)."""
    state, epoch = (_RUNNING, 1) if owner else (_PENDING, 0)
    created = float(new.created_at)
    lease = None if lease_expires_at is None else float(lease_expires_at)
    deadline = None if new.deadline_at is None else float(new.deadline_at)
    # In the order of WF_COLUMNS (the reader refuses a tuple of another length).
    return workflow_record(
        (
            new.id,
            new.name,
            state,
            new.inputs,
            None,  # output
            None,  # error
            new.serializer,
            new.app_version,
            owner,
            epoch,
            lease,
            None,  # note
            0,  # recoveries
            created,
            created,  # updated_at
            None,  # finished_at
            None,  # wake_at
            None,  # wait_topic
            new.parent_id,
            None,  # cancel_requested_at
            deadline,
            0,  # generation
            None,  # held_code
            None,  # held_detail
            None,  # forked_from
            None,  # forked_steps
            0,  # resumes
            new.trace_context,
            None,  # queue
            None,  # queue_key
            0,  # priority
            None,  # dequeued_at
        )
    )


class SqlBase(Store):
    """A ``Store`` on a SQL database: how the shared operations reach it."""

    _dialect: Dialect
    _writer: GroupCommitter[Any]
    _starter: GroupCommitter[Any]

    @abc.abstractmethod
    def _read(self, sql: str, params: Any = ()) -> list[Any]:
        """The rows of one query."""

    @abc.abstractmethod
    def _write(self, fn: Callable[[Any], T]) -> T:
        """``fn(conn)`` in one transaction, committed before this returns."""

    @abc.abstractmethod
    def _lost_race(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a lost race that the same transaction may win if run again."""

    def _write_again_if_raced(self, fn: Callable[[Any], T]) -> T:
        """``_write(fn)``, run again (a few times, after a short random pause) while it
        loses a race: a transaction that locks the rows of a whole family of workflows
        (an erasure, a collection) takes a parent's row before its child's, the writer
        completes a child before it delivers to the parent, and PostgreSQL ends one of
        two such transactions as a deadlock. Rolled back whole, it can run again: ``fn``
        only reads and writes through ``conn``."""
        for attempt in range(1, RACE_TRIES + 1):
            try:
                return self._write(fn)
            except StoreError as exc:
                if attempt == RACE_TRIES or not self._lost_race(exc.__cause__ or exc):
                    raise
            pause_after_race(attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    @abc.abstractmethod
    def _step_write(self, workflow_id: str, lease: Lease, step: StepRecord) -> Write:
        """The write of ``record_step`` (its locking differs between the stores), made
        for the writer but not yet submitted: alone, or with a workflow's outcome."""

    def _migrated(self, shipped: list[tuple[int, str]], where: str) -> bool:
        """Whether every shipped migration is applied, found by reading only: a process
        that reads from a replica (a hot standby takes no write, not even a ``CREATE
        TABLE IF NOT EXISTS``) needs nothing more, and neither does every start after
        the first. A version this perdure does not ship is refused here too."""
        if not self.exists():
            return False
        applied = {row[0] for row in self._read("SELECT version FROM perdure_schema")}
        check_versions(applied, shipped, where)
        return all(version in applied for version, _ in shipped)

    def _notify(self, conn: Any, event: str) -> None:
        """Push ``event`` to listeners at commit; stores that cannot push do nothing."""

    def _notify_params(self, event: str) -> tuple[str, str] | None:
        """The parameters of ``COMPLETE_AND_NOTIFY``'s push of ``event``, on a store
        that pushes in SQL; None on the others."""
        return None

    def _compact(self) -> None:
        """After an erasure, leave no copy of the replaced values in the database's files
        where this store can (SQLite rewrites its file); nothing where it cannot."""

    def _sql(self, template: str) -> str:
        return self._dialect.sql(template)

    @functools.cached_property
    def _hot(self) -> HotStatements:
        return HotStatements.render(self._dialect)

    def _tag_subjects(self, conn: Any, workflow_id: str, subjects: Sequence[str]) -> None:
        """Tag a workflow being created with its subjects (in its creating transaction:
        a start, or a start into a queue)."""
        sql = self._sql(c.TAG_SUBJECT)
        for subject in subjects:
            conn.execute(sql, {"subject": subject, "id": workflow_id})

    def _log_action(
        self,
        conn: Any,
        workflow_id: str,
        action: str,
        actor: str,
        details: Any,
        now: float,
        target_id: str | None = None,
    ) -> Any:
        """Append an operator action to the log inside the transaction of the change;
        returns the statement's cursor, whose one row is the entry's sequence number
        (read it only where waiting for it is fine: in PostgreSQL's pipeline it costs a
        round trip)."""
        params = {
            "now": now,
            "actor": actor,
            "action": str(action),
            "id": workflow_id,
            "target": target_id,
            "details": json.dumps(details, sort_keys=True),
        }
        return conn.execute(self._sql(q.LOG_ACTION), params)
