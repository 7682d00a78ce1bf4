"""The primitives every SQL store gives the shared operations (see ``_sql``).

A store supplies:

- ``_dialect``: how its SQL is spelled;
- ``_writer``: the group committer of its hot-path writes (``_batch``);
- ``_read(sql, params)``: rows of one query;
- ``_write(fn)``: ``fn(conn)`` in one transaction, waited for;
- ``_notify(conn, event)``: tell listeners in other processes, at commit (or nothing);
- ``_compact()``: drop what an erasure left in the files (or nothing).
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .._model import WorkflowState
from . import _statements as q
from . import _statements_compliance as c
from ._base import NewWorkflow, Store
from ._batch import GroupCommitter
from ._dialect import Dialect

T = TypeVar("T")


def create_params(
    new: NewWorkflow, owner: str | None, lease_expires_at: float | None
) -> tuple[Any, ...]:
    """The parameters of ``CREATE_WORKFLOW`` for ``new``: RUNNING at epoch 1 when it has
    an owner, else PENDING. The one place that knows the statement's columns (a start
    and a schedule's tick both insert workflows)."""
    state, epoch = (WorkflowState.RUNNING, 1) if owner else (WorkflowState.PENDING, 0)
    return (
        new.id,
        new.name,
        state.value,
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
    )


class SqlBase(Store):
    """A ``Store`` on a SQL database: how the shared operations reach it."""

    _dialect: Dialect
    _writer: GroupCommitter[Any]

    @abc.abstractmethod
    def _read(self, sql: str, params: Any = ()) -> list[Any]:
        """The rows of one query."""

    @abc.abstractmethod
    def _write(self, fn: Callable[[Any], T]) -> T:
        """``fn(conn)`` in one transaction, committed before this returns."""

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

    def _tag_subjects(self, conn: Any, workflow_id: str, subjects: Sequence[str]) -> None:
        """Tag a workflow being created with its subjects (in its creating transaction:
        a start, or a start into a queue)."""
        sql = self._sql(c.TAG_SUBJECT)
        for subject in subjects:
            conn.execute(sql, {"subject": subject, "id": workflow_id})

    def _log_action(
        self, conn: Any, workflow_id: str, action: str, actor: str, details: Any, now: float
    ) -> None:
        """Append an operator action to the log inside the transaction of the change."""
        params = {
            "now": now,
            "actor": actor,
            "action": str(action),
            "id": workflow_id,
            "target": None,
            "details": json.dumps(details, sort_keys=True),
        }
        conn.execute(self._sql(q.LOG_ACTION), params)
