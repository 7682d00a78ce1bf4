"""Transactional steps: the user's function and the step's record in one transaction (a
layer over the streams' store; each store says how to open such a transaction).

Not group-committed: the transaction runs on a connection of its own (a pooled one on
PostgreSQL, a new one on SQLite), because the user's function runs inside it, for as
long as it takes, and its failure must roll back its own writes only. The fence comes
first and locks the workflow's row (PostgreSQL: ``FOR KEY SHARE``, which a claim waits
for; SQLite: the write lock of ``BEGIN IMMEDIATE``), so no other executor can take the
workflow over and record the same step while the function runs.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from .._errors import ConfigurationError, StoreError, StoreUnavailableError
from ._base import Lease, StepRecord, Transaction
from ._sql import step_params
from ._sql_base import RACE_TRIES, pause_after_race
from ._sql_streams import SqlStreams
from ._statements import FENCE_FREE_POSITION, INSERT_STEP_RETURNING


class _Open:
    """The open transaction handed to the step's body (``Transaction``)."""

    def __init__(self, store: SqlTransactions, conn: Any, workflow_id: str) -> None:
        self._store = store
        self._conn = conn
        self._workflow_id = workflow_id

    @property
    def connection(self) -> Any:
        return self._conn

    def write_stream(self, key: str, value: str | None, writer: str, now: float) -> int:
        # The fence was checked when the transaction began, and its lock is held.
        store = self._store
        with store._own_view(self._conn):
            return store.append_entry(self._conn, self._workflow_id, key, value, writer, now)


class SqlTransactions(SqlStreams):
    """Transactional steps on a SQL store."""

    @abc.abstractmethod
    def _own_transaction(self) -> contextlib.AbstractContextManager[Any]:
        """A connection of its own inside a new transaction: committed when the block
        ends, rolled back when it raises (the driver's errors untranslated)."""

    @abc.abstractmethod
    def _translate_error(self, exc: Exception) -> Exception:
        """The store's error for a driver error (anything else unchanged)."""

    @abc.abstractmethod
    def _still_open(self, conn: Any) -> bool:
        """Whether the connection is still inside the transaction (the user's function
        neither committed nor rolled it back)."""

    @contextlib.contextmanager
    def _user_view(self, conn: Any) -> Iterator[None]:
        """Around the user's function: what it sees of the database (PostgreSQL: its own
        search path, not perdure's schema)."""
        yield

    @contextlib.contextmanager
    def _own_view(self, conn: Any) -> Iterator[None]:
        """Around perdure's statements inside the user's function (a stream write)."""
        yield

    def transact(
        self,
        workflow_id: str,
        lease: Lease,
        step: StepRecord,
        body: Callable[[Transaction], str],
    ) -> bool:
        fence = {
            "id": workflow_id,
            "owner": lease.owner,
            "epoch": lease.epoch,
            "position": step.position,
        }
        fence_sql, insert_sql = self._sql(FENCE_FREE_POSITION), self._sql(INSERT_STEP_RETURNING)
        for attempt in range(1, RACE_TRIES + 1):
            raised: BaseException | None = None
            try:
                with self._own_transaction() as conn:
                    if conn.execute(fence_sql, fence).fetchone() is None:
                        return False
                    try:
                        with self._user_view(conn):
                            output = body(_Open(self, conn, workflow_id))
                    except BaseException as exc:
                        raised = exc
                        raise
                    if not self._still_open(conn):
                        raised = ConfigurationError(
                            f"transactional step {step.name!r} of workflow {workflow_id!r} "
                            "ended the transaction itself (commit(), rollback(), or a failed "
                            "statement it caught): perdure commits it together with the step's "
                            "record; don't"
                        )
                        raise raised
                    recorded = StepRecord(
                        step.position,
                        step.name,
                        step.status,
                        output,
                        None,
                        step.attempts,
                        None,
                        step.updated_at,
                        step.started_at,
                    )
                    if conn.execute(
                        insert_sql, step_params(workflow_id, lease, recorded)
                    ).fetchone():
                        return True
                    raise StoreError(
                        f"could not record transactional step {step.name!r} of workflow "
                        f"{workflow_id!r}"
                    )
            except BaseException as exc:
                if self._lost_race(exc):
                    if attempt < RACE_TRIES:
                        pause_after_race(attempt)
                        continue
                    if raised is not exc:
                        raise StoreUnavailableError(
                            f"transactional step {step.name!r} of workflow {workflow_id!r} "
                            f"lost {RACE_TRIES} races in a row: {exc}"
                        ) from exc
                if raised is exc or not isinstance(exc, Exception):
                    raise  # the function's own failure (or a signal), unchanged
                raise self._translate_error(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover
