"""The operations whose SQL both stores share, written once.

``SqlStore`` implements every ``Store`` operation that runs the same statements on
SQLite and PostgreSQL (rendered by the store's ``Dialect``); each store adds how it
connects, migrates, and the few operations whose locking differs (recording a step,
heartbeats, claims, suspending, setting an event), and the primitives of ``_sql_base``.
The circuit breakers' operations are in ``_sql_breakers``, the schedules' in
``_sql_schedules``, the queues' in ``_sql_queues``, compliance (retention, erasure,
rekeying) in ``_sql_compliance``, held workflows in ``_sql_holds``.

Keys (IDs, names, topics, event and idempotency keys) are checked before any write
(``_limits``): the same values are refused on every store, with a message that names
them, instead of failing deep inside a workflow on one store only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from .._errors import StoreError
from .._model import OperatorAction, Outcome, WorkflowState
from . import _statements as q
from ._base import (
    CHILD_TOPIC,
    EVENT_CANCEL,
    EVENT_DONE,
    EVENT_READY,
    ActionRecord,
    EventRecord,
    Lease,
    MessageRecord,
    NewWorkflow,
    StepRecord,
    VersionCount,
    WorkflowRecord,
)
from ._batch import Write
from ._limits import check_key, check_topic
from ._queries import list_query, step_record, workflow_record
from ._sql_base import Creation, create_params
from ._sql_breakers import SqlBreakers
from ._sql_compliance import SqlCompliance
from ._sql_executors import SqlExecutors
from ._sql_holds import SqlHolds
from ._sql_queues import SqlQueues
from ._sql_schedules import SqlSchedules

T = TypeVar("T")


class SqlStore(SqlBreakers, SqlSchedules, SqlCompliance, SqlQueues, SqlHolds, SqlExecutors):
    """A ``Store`` on a SQL database; subclasses say how to reach it (see the module)."""

    # -- workflows -----------------------------------------------------------------

    def create_workflow(
        self, new: NewWorkflow, owner: str | None, lease_expires_at: float | None
    ) -> Future[tuple[WorkflowRecord, bool]]:
        check_key("workflow ID", new.id)
        check_key("workflow name", new.name)
        if new.parent_id is not None:
            check_key("parent workflow ID", new.parent_id)
        for subject in new.subjects:
            check_key("data subject", subject)
        params = create_params(new, owner, lease_expires_at)
        hot = self._hot
        top = new.parent_id is None
        insert_sql = hot.create_workflow if top else hot.create_child
        creation = Creation(new, owner, lease_expires_at, hot.get_workflow, hot.create_returns)
        what = f"creating workflow {new.id!r}"
        # A child is one of its parent's writes: on the writer, whose queue keeps their
        # order (a start deferred inside an async workflow commits before its next write).
        writer = self._starter if top else self._writer
        pushed = None if owner is not None else self._notify_params(EVENT_READY)
        if pushed is not None:  # unowned: executors are told in the same statement
            insert_sql = hot.create_workflow_and_notify if top else hot.create_child_and_notify
            params = (*params, *pushed)
        if not new.subjects:
            # Its one write is the INSERT (with its push): alone, it needs no transaction,
            # and among other starts of a batch it goes with them (one statement on
            # PostgreSQL). Whether it inserted is read once the transaction committed: in
            # PostgreSQL's pipeline, reading it before costs a round trip per start.
            def send(conn: Any) -> Callable[[], tuple[WorkflowRecord, bool]]:
                cursor = conn.execute(insert_sql, params)
                return lambda: creation.then(conn, creation.inserted(cursor))

            return writer.submit_deferred(
                send, what, single=True, row=(insert_sql, params), then=creation.then
            )

        def insert(conn: Any) -> tuple[WorkflowRecord, bool]:
            cursor = conn.execute(insert_sql, params)
            if not creation.inserted(cursor):
                return creation.existing(conn)
            self._tag_subjects(conn, new.id, new.subjects)
            return creation.then(conn, True)

        return writer.submit(insert, what)

    def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        rows = self._read(self._hot.get_workflow, (workflow_id,))
        return workflow_record(rows[0]) if rows else None

    def get_workflows(self, workflow_ids: Sequence[str]) -> dict[str, WorkflowRecord]:
        if not workflow_ids:
            return {}
        params = {"ids": self._dialect.text_list(list(workflow_ids))}
        rows = self._read(self._sql(q.GET_WORKFLOWS), params)
        return {record.id: record for record in map(workflow_record, rows)}

    def watch_workflows(
        self, workflow_ids: Sequence[str], watcher: str | None = None
    ) -> dict[str, WorkflowRecord]:
        if not workflow_ids or self._notify_params(EVENT_DONE) is None:
            return self.get_workflows(workflow_ids)  # pushes nothing: nothing to mark
        params = {"ids": self._dialect.text_list(list(workflow_ids)), "watcher": watcher}
        # A write through the read path: the pool's sessions commit each statement, and
        # marking again is harmless if a lost connection makes the read try again.
        rows = self._read(self._sql(q.WATCH_WORKFLOWS), params)
        return {record.id: record for record in map(workflow_record, rows)}

    def unfinished_among(self, workflow_ids: Sequence[str]) -> set[str]:
        if not workflow_ids:
            return set()
        params = {"ids": self._dialect.text_list(list(workflow_ids))}
        return {row[0] for row in self._read(self._sql(q.UNFINISHED_AMONG), params)}

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
        placeholder = "%s" if self._dialect.pyformat else "?"
        status_text = None if status is None else str(status)
        query, params = list_query(
            placeholder,
            status_text,
            name,
            created_after,
            created_before,
            limit,
            newest_first,
            after,
            queue,
            key,
        )
        return [workflow_record(row) for row in self._read(query, params)]

    def record_step(self, workflow_id: str, lease: Lease, step: StepRecord) -> Future[bool]:
        return self._writer.submit_write(self._step_write(workflow_id, lease, step))

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
        outcome = self._completion(workflow_id, lease, status, output, error, now, parent_id)
        if not steps:
            return self._writer.submit_write(outcome)
        writes = [self._step_write(workflow_id, lease, step) for step in steps]
        alone: Callable[[Any], Callable[[], bool]] | None = None
        pushed = self._notify_params(EVENT_DONE + workflow_id)
        if len(steps) == 1 and parent_id is None and pushed is not None:
            # Alone in its batch, the record and the completion are one statement too.
            sql = self._hot.record_and_complete
            done = outcome_params(workflow_id, lease, status, output, error, now)
            params = (*done, *step_values(workflow_id, steps[0]), *pushed)

            def both(conn: Any) -> Callable[[], bool]:
                cursor = conn.execute(sql, params)
                return lambda: bool(cursor.rowcount == 1)  # a row: it completed, and pushed

            alone = both
        return self._writer.submit_together([*writes, outcome], alone)[-1]

    def _completion(
        self,
        workflow_id: str,
        lease: Lease,
        status: str,
        output: str | None,
        error: str | None,
        now: float,
        parent_id: str | None,
    ) -> Write:
        """The write of ``complete_workflow``'s outcome, not yet submitted."""
        params = outcome_params(workflow_id, lease, status, output, error, now)
        what = f"recording the outcome of workflow {workflow_id!r}"
        pushed = self._notify_params(EVENT_DONE + workflow_id)
        if parent_id is None and pushed is not None:
            alone_sql, alone_params = self._hot.complete_and_notify, (*params, *pushed)

            def update_alone(conn: Any) -> Callable[[], bool]:
                cursor = conn.execute(alone_sql, alone_params)
                return lambda: bool(cursor.rowcount == 1)  # a row: it matched, and pushed

            # In a batch, it goes with the batch's other such completions (one row each).
            return Write(update_alone, True, what, single=True, row=(alone_sql, alone_params))
        complete_sql = self._hot.complete_workflow
        if parent_id is not None:
            topic = CHILD_TOPIC + workflow_id
            # Built here, not in SQL: the same bytes on every store.
            delivery = {
                "id": workflow_id,
                "status": status,
                "now": now,
                "parent": parent_id,
                "topic": topic,
                "payload": Outcome(WorkflowState(status), output, error).to_json(),
            }
            wake = {"id": parent_id, "topic": topic, "now": now}
            deliver_sql, wake_sql = self._sql(q.DELIVER_OUTCOME), self._sql(q.WAKE_FOR_MESSAGE)

        def update(conn: Any) -> Callable[[], bool]:
            # Sent without reading a result in between (PostgreSQL pipelines them); the
            # row count is read once the transaction committed.
            cursor = conn.execute(complete_sql, params)
            if parent_id is not None:
                conn.execute(deliver_sql, delivery)
                conn.execute(wake_sql, wake)
                self._notify(conn, EVENT_READY)
            self._notify(conn, EVENT_DONE + workflow_id)
            return lambda: bool(cursor.rowcount == 1)

        return Write(update, True, what)

    def set_note(self, workflow_id: str, note: str | None, now: float) -> None:
        sql = self._sql(q.SET_NOTE)
        self._write(lambda conn: conn.execute(sql, {"note": note, "now": now, "id": workflow_id}))

    def active_versions(self) -> list[VersionCount]:
        rows = self._read(self._sql(q.ACTIVE_VERSIONS))
        return [VersionCount(row[0], int(row[1]), int(row[2]), float(row[3])) for row in rows]

    # -- steps -----------------------------------------------------------------------

    def load_steps(self, workflow_id: str) -> list[StepRecord]:
        rows = self._read(self._sql(q.LOAD_STEPS), {"id": workflow_id})
        return [step_record(row) for row in rows]

    def load_steps_many(self, workflow_ids: Sequence[str]) -> dict[str, list[StepRecord]]:
        found: dict[str, list[StepRecord]] = {workflow_id: [] for workflow_id in workflow_ids}
        if found:
            params = {"ids": self._dialect.text_list(list(found))}
            for workflow_id, *step in self._read(self._sql(q.LOAD_STEPS_MANY), params):
                found[workflow_id].append(step_record(step))
        return found

    # -- claims ------------------------------------------------------------------------

    def unclaimable_workflows(
        self, names: Sequence[str], app_version: str, now: float, limit: int = 100
    ) -> list[WorkflowRecord]:
        params = {
            "now": now,
            "version": app_version,
            "names": self._dialect.text_list(names),
            "limit": limit,
        }
        return [workflow_record(row) for row in self._read(self._sql(q.UNCLAIMABLE), params)]

    # -- waiting: timers, messages, events -------------------------------------------------

    def next_wake_at(self, after: float) -> float | None:
        rows = self._read(self._sql(q.NEXT_WAKE_AT), {"after": after})
        value: float | None = rows[0][0] if rows else None
        return value

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
        check_key("workflow ID", workflow_id)
        check_topic("message topic", topic)
        check_key("idempotency key", idempotency_key)
        params = {
            "id": workflow_id,
            "topic": topic,
            "payload": payload,
            "key": idempotency_key,
            "now": now,
            "trace": trace_context,
        }
        send_sql, why_sql = self._sql(q.SEND_MESSAGE), self._sql(q.WHY_NOT_STORED)
        wake_sql = self._sql(q.WAKE_FOR_MESSAGE)

        def send(conn: Any) -> bool | None:
            if conn.execute(send_sql, params).fetchone() is None:
                # Not stored: a repeated key (also once the workflow finished), or no
                # active workflow to receive it.
                row = conn.execute(why_sql, params).fetchone()
                return None if row is None or not (row[0] or row[1]) else False
            woken = conn.execute(wake_sql, params).fetchone()
            if woken is not None and woken[0]:
                self._notify(conn, EVENT_READY)
            if actor is not None:
                size = len(payload.encode("utf-8", "surrogatepass"))
                details = {"topic": topic, "idempotency_key": idempotency_key, "bytes": size}
                self._log_action(conn, workflow_id, OperatorAction.SEND, actor, details, now)
            return True

        return self._writer.submit(
            send, f"sending a message on topic {topic!r} to workflow {workflow_id!r}"
        )

    def consume_message(
        self, workflow_id: str, lease: Lease, topic: str, step: StepRecord, now: float
    ) -> Future[tuple[bool, str | None, str | None]]:
        check_topic("message topic", topic)
        params = {
            "id": workflow_id,
            "owner": lease.owner,
            "epoch": lease.epoch,
            "position": step.position,
            "topic": topic,
            "now": now,
        }
        fence_sql, take_sql = self._sql(q.FENCE_FREE_POSITION), self._sql(q.TAKE_MESSAGE)
        insert_sql = self._sql(q.INSERT_STEP_RETURNING)

        def consume(conn: Any) -> tuple[bool, str | None, str | None]:
            if conn.execute(fence_sql, params).fetchone() is None:
                return False, None, None
            row = conn.execute(take_sql, params).fetchone()
            if row is None:
                return True, None, None
            payload: str = row[0]
            recorded = StepRecord(
                step.position, step.name, step.status, payload, None, step.attempts, None, now
            )
            if conn.execute(insert_sql, step_params(workflow_id, lease, recorded)).fetchone():
                return True, payload, row[1]
            raise StoreError(f"could not record the message for workflow {workflow_id!r}")

        return self._writer.submit(
            consume, f"receiving a message on topic {topic!r} in workflow {workflow_id!r}"
        )

    def count_suspended(self, now: float) -> dict[str, int]:
        rows = self._read(self._sql(q.COUNT_SUSPENDED), {"now": now})
        return {name: int(count) for name, count in rows}

    def get_event(self, workflow_id: str, key: str) -> str | None:
        rows = self._read(self._sql(q.GET_EVENT), {"id": workflow_id, "key": key})
        return rows[0][0] if rows else None

    # -- cancellation and continue_as_new ---------------------------------------------------

    def cancel_workflow(
        self, workflow_id: str, now: float, actor: str | None = None
    ) -> list[str] | None:
        exists_sql, cancel_sql = self._sql(q.EXISTS), self._sql(q.CANCEL_TREE)
        params = {"id": workflow_id, "now": now}

        def cancel(conn: Any) -> list[str] | None:
            if conn.execute(exists_sql, params).fetchone() is None:
                return None
            rows = conn.execute(cancel_sql, params).fetchall()
            if rows:
                self._notify(conn, EVENT_CANCEL)
                self._notify(conn, EVENT_READY)
            asked = [row[0] for row in rows]
            if actor is not None:
                details = {"asked": asked}
                self._log_action(conn, workflow_id, OperatorAction.CANCEL, actor, details, now)
            return asked

        return self._write(cancel)

    def cancel_requests(self, executor_id: str) -> list[str]:
        rows = self._read(self._sql(q.CANCEL_REQUESTS), {"owner": executor_id})
        return [row[0] for row in rows]

    def continue_workflow(
        self, workflow_id: str, lease: Lease, inputs: str, now: float
    ) -> Future[WorkflowRecord | None]:
        continue_sql, delete_sql = self._sql(q.CONTINUE_WORKFLOW), self._sql(q.DELETE_STEPS)
        params = {
            "id": workflow_id,
            "owner": lease.owner,
            "epoch": lease.epoch,
            "inputs": inputs,
            "now": now,
        }

        def restart(conn: Any) -> WorkflowRecord | None:
            row = conn.execute(continue_sql, params).fetchone()
            if row is None:
                return None
            conn.execute(delete_sql, params)
            return workflow_record(row)

        return self._writer.submit(restart, f"continuing workflow {workflow_id!r} as new")

    # -- operating: repairs, the actions log, inspection ------------------------------------

    def resume_workflow(
        self, workflow_id: str, actor: str, now: float
    ) -> tuple[WorkflowRecord, bool] | None:
        check_key("actor", actor)
        read_sql, resume_sql = self._sql(q.READ_FOR_RESUME), self._sql(q.RESUME_WORKFLOW)
        drop_sql = self._sql(q.DROP_UNDONE_STEPS)
        params = {"id": workflow_id, "now": now}

        def resume(conn: Any) -> tuple[WorkflowRecord, bool] | None:
            row = conn.execute(read_sql, params).fetchone()
            if row is None:
                return None
            before = workflow_record(row)
            row = conn.execute(resume_sql, params).fetchone()
            if row is None:
                return before, False
            removed = [list(step) for step in conn.execute(drop_sql, params).fetchall()]
            replaced = {
                "status": before.status,
                "output": before.output,
                "error": before.error,
                "finished_at": before.finished_at,
                "epoch": before.epoch,
            }
            details = {"replaced": replaced, "removed_steps": removed}
            self._log_action(conn, workflow_id, OperatorAction.RESUME, actor, details, now)
            self._notify(conn, EVENT_READY)
            return workflow_record(row), True

        return self._write(resume)

    def fork_workflow(
        self, source_id: str, new: NewWorkflow, steps: int, action: str, actor: str, now: float
    ) -> tuple[WorkflowRecord, bool] | None:
        check_key("workflow ID", new.id)
        check_key("actor", actor)
        get_sql, fork_sql = self._hot.get_workflow, self._sql(q.FORK_WORKFLOW)
        copy_sql = self._sql(q.COPY_STEPS)
        params = {
            "id": new.id,
            "name": new.name,
            "inputs": new.inputs,
            "serializer": new.serializer,
            "version": new.app_version,
            "now": now,
            "source": source_id,
            "steps": max(0, steps),
        }

        def fork(conn: Any) -> tuple[WorkflowRecord, bool] | None:
            if conn.execute(get_sql, (source_id,)).fetchone() is None:
                return None
            row = conn.execute(fork_sql, params).fetchone()
            if row is None:
                existing = conn.execute(get_sql, (new.id,)).fetchone()
                return workflow_record(existing), False
            copied: int = conn.execute(copy_sql, params).rowcount
            details = {"from_step": steps, "copied_steps": copied}
            self._log_action(conn, source_id, action, actor, details, now, new.id)
            self._notify(conn, EVENT_READY)
            return workflow_record(row), True

        return self._write(fork)

    def log_action(
        self,
        workflow_id: str,
        action: str,
        actor: str,
        details: str,
        now: float,
        target_id: str | None = None,
    ) -> int:
        check_key("actor", actor)
        decoded = json.loads(details)
        seq: int = self._write(
            lambda conn: self._log_action(
                conn, workflow_id, action, actor, decoded, now, target_id
            ).fetchone()[0]
        )
        return seq

    def list_actions(
        self, workflow_id: str | None = None, after: int = 0, limit: int = 100
    ) -> list[ActionRecord]:
        params = {"id": workflow_id, "after": after, "limit": limit}
        sql = q.LIST_ACTIONS if workflow_id is None else q.LIST_WORKFLOW_ACTIONS
        return [ActionRecord(*row) for row in self._read(self._sql(sql), params)]

    def list_events(self, workflow_id: str) -> list[EventRecord]:
        rows = self._read(self._sql(q.LIST_EVENTS), {"id": workflow_id})
        return [EventRecord(*row) for row in rows]

    def list_messages(
        self, workflow_id: str, pending_only: bool = False, limit: int = 100
    ) -> list[MessageRecord]:
        sql = q.LIST_PENDING_MESSAGES if pending_only else q.LIST_MESSAGES
        rows = self._read(self._sql(sql), {"id": workflow_id, "limit": limit})
        return [MessageRecord(*row) for row in rows]

    def list_children(self, workflow_id: str, limit: int = 100) -> list[WorkflowRecord]:
        rows = self._read(self._sql(q.LIST_CHILDREN), {"id": workflow_id, "limit": limit})
        return [workflow_record(row) for row in rows]


def outcome_params(
    workflow_id: str, lease: Lease, status: str, output: str | None, error: str | None, now: float
) -> tuple[Any, ...]:
    """The parameters of ``COMPLETE_WORKFLOW``, in order (updated and finished now)."""
    return (status, output, error, now, now, workflow_id, lease.owner, lease.epoch)


_NO_LEASE = Lease("", 0)


def step_values(workflow_id: str, step: StepRecord) -> tuple[Any, ...]:
    """The values of a step's row, in the order of the statements that insert it."""
    return step_params(workflow_id, _NO_LEASE, step)[:10]


def step_params(workflow_id: str, lease: Lease, step: StepRecord) -> tuple[Any, ...]:
    """The parameters of ``INSERT_STEP``, in order: ``step_values``, then its fence
    (one tuple built, not two: it is on every step's path)."""
    return (
        workflow_id,
        step.position,
        step.name,
        step.status,
        step.output,
        step.error,
        step.attempts,
        step.next_attempt_at,
        step.updated_at,
        step.started_at,
        workflow_id,
        lease.owner,
        lease.epoch,
    )
