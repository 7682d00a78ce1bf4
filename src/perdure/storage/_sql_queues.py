"""The queues' operations, on both SQL stores (see ``_queue_statements``).

A queue's claim is one transaction that first locks the queue's row (PostgreSQL's
``FOR UPDATE``; SQLite has one writer at a time): claims of one queue never overlap,
and each counts, under the lock, what the ones before it admitted. Workflows outside
queues are claimed as before (``claim_workflows``), whose statement leaves queued
workflows out.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from .._errors import StoreError
from .._model import QUEUE_SUBJECT, OperatorAction, subject_of
from .._queue import Enqueue, Queue, QueueDepth, QueuePlace, Rate, changed
from . import _queue_statements as q
from ._base import CANCELLED, EVENT_DONE, EVENT_READY, NewWorkflow, WorkflowRecord
from ._limits import check_key
from ._queries import workflow_record
from ._sql_base import SqlBase

#: A key limit that never binds (the statement compares with a number, never NULL).
_NO_LIMIT = 2**31 - 1
#: How often a start retries when what it conflicted with went away meanwhile.
_ENQUEUE_TRIES = 5


def _queue(row: Any) -> Queue:
    name, concurrency, worker, key, rate_limit, rate_period = row
    rate = None if rate_limit is None else Rate(int(rate_limit), float(rate_period))
    return Queue(name, concurrency, worker, key, rate)


def _limits(queue: Queue) -> dict[str, Any]:
    # What an update_queue action logs: the limits before and after it.
    rate = None if queue.rate is None else {"limit": queue.rate.limit, "per": queue.rate.per}
    return {
        "concurrency": queue.concurrency,
        "worker_concurrency": queue.worker_concurrency,
        "key_concurrency": queue.key_concurrency,
        "rate": rate,
    }


def _queue_params(queue: Queue, now: float) -> dict[str, Any]:
    return {
        "name": queue.name,
        "concurrency": queue.concurrency,
        "worker_concurrency": queue.worker_concurrency,
        "key_concurrency": queue.key_concurrency,
        "rate_limit": None if queue.rate is None else queue.rate.limit,
        "rate_period": None if queue.rate is None else queue.rate.per,
        "declared": queue.limits_json(),
        "now": now,
    }


class SqlQueues(SqlBase):
    """The queues' operations of a SQL store."""

    # -- limits ------------------------------------------------------------------------

    def declare_queue(self, queue: Queue, now: float) -> Queue:
        declare_sql, get_sql = self._sql(q.DECLARE_QUEUE), self._sql(q.GET_QUEUE)

        def declare(conn: Any) -> Queue:
            conn.execute(declare_sql, _queue_params(queue, now))
            return _queue(conn.execute(get_sql, {"name": queue.name}).fetchone())

        return self._write(declare)

    def get_queue(self, name: str) -> Queue | None:
        rows = self._read(self._sql(q.GET_QUEUE), {"name": name})
        return _queue(rows[0]) if rows else None

    def list_queues(self) -> list[Queue]:
        return [_queue(row) for row in self._read(self._sql(q.LIST_QUEUES))]

    def queue_depths(self, now: float) -> dict[str, QueueDepth]:
        rows = self._read(self._sql(q.QUEUE_DEPTHS), {"now": now})
        return {row[0]: QueueDepth(int(row[1]), int(row[2]), int(row[3])) for row in rows}

    def update_queue(
        self, name: str, changes: dict[str, Any], now: float, actor: str | None = None
    ) -> Queue | None:
        lock_sql, update_sql = self._sql(q.LOCK_QUEUE), self._sql(q.UPDATE_QUEUE)

        def update(conn: Any) -> Queue | None:
            row = conn.execute(lock_sql, {"name": name}).fetchone()
            if row is None:
                return None
            new = changed(_queue(row), **changes)
            params = _queue_params(new, now)
            del params["declared"]  # still what the code declared last
            conn.execute(update_sql, params)
            if actor is not None:
                details = {"before": _limits(_queue(row)), "after": _limits(new)}
                subject = subject_of(QUEUE_SUBJECT, name)
                self._log_action(conn, subject, OperatorAction.UPDATE_QUEUE, actor, details, now)
            # Wider limits may make queued workflows claimable now.
            self._notify(conn, EVENT_READY)
            return new

        return self._write(update)

    # -- entering a queue ----------------------------------------------------------------

    def enqueue_workflow(
        self, new: NewWorkflow, entry: Enqueue
    ) -> Future[tuple[WorkflowRecord, bool]]:
        check_key("workflow ID", new.id)
        check_key("workflow name", new.name)
        check_key("queue name", entry.queue)
        check_key("queue key", entry.key)
        check_key("deduplication ID", entry.dedup_id)
        for subject in new.subjects:
            check_key("data subject", subject)
        debounce = entry.debounce_key(new.name)
        params = {
            "id": new.id,
            "name": new.name,
            "inputs": new.inputs,
            "serializer": new.serializer,
            "version": new.app_version,
            "created": new.created_at,
            "now": new.created_at,
            "deadline": new.deadline_at,
            "wake": entry.not_before,
            "queue": entry.queue,
            "key": entry.key,
            "priority": entry.priority,
            "dedup": entry.dedup_key(),
            "debounce": debounce,
            "trace": new.trace_context,
        }
        debounce_sql, insert_sql = self._sql(q.DEBOUNCE), self._sql(q.ENQUEUE)
        get_sql, dedup_sql = self._hot.get_workflow, self._sql(q.DEDUPLICATED)

        def enqueue(conn: Any) -> tuple[WorkflowRecord, bool]:
            for _ in range(_ENQUEUE_TRIES):
                if debounce is not None:
                    row = conn.execute(debounce_sql, params).fetchone()
                    if row is not None:
                        record = workflow_record(row)
                        if new.subjects:  # it runs with these arguments now
                            self._tag_subjects(conn, record.id, new.subjects)
                        self._notify(conn, EVENT_READY)
                        return record, False
                row = conn.execute(insert_sql, params).fetchone()
                if row is not None:
                    if new.subjects:
                        self._tag_subjects(conn, new.id, new.subjects)
                    self._notify(conn, EVENT_READY)
                    return workflow_record(row), True
                # A new statement sees the row it conflicted with (which PostgreSQL's
                # ON CONFLICT waited for): the same ID, or an active duplicate.
                row = conn.execute(get_sql, (new.id,)).fetchone()
                if row is None and params["dedup"] is not None:
                    row = conn.execute(dedup_sql, params).fetchone()
                if row is not None:
                    return workflow_record(row), False
                # What it conflicted with has just started (debounce) or finished: again.
            raise StoreError(f"workflow {new.id!r} kept conflicting on insert; start it again")

        return self._writer.submit(enqueue, f"starting workflow {new.id!r} in a queue")

    # -- claiming --------------------------------------------------------------------------

    def claim_queued(
        self,
        executor_id: str,
        queues: Sequence[str],
        names: Sequence[str],
        app_version: str,
        now: float,
        lease_expires_at: float,
        limit: int = 100,
    ) -> list[WorkflowRecord]:
        base = {
            "me": executor_id,
            "now": now,
            "lease": lease_expires_at,
            "version": app_version,
            "names": self._dialect.text_list(names),
            "key": None,
        }
        # Before the locking transaction, reads only: which queues have work, and in each
        # the candidates in the order they start (a proposal). The transaction then
        # holds the queue's lock only to count what runs and admit from the proposal: the
        # counts decide, and the admission checks each candidate again.
        proposals: dict[str, list[tuple[str, bool, str | None]]] = {}
        for name in sorted(set(queues)):
            params = {**base, "queue": name}
            waiting, due = self._read(self._sql(q.QUEUE_HAS_WORK), params)[0]
            if due:
                # Delayed or suspended ones whose time came: waiting in the queue now.
                self._wake_due(params)
            queue = self.get_queue(name) if waiting or due else None
            if queue is None:
                continue
            fresh_ok = queue.rate is None or self._starts(name, queue.rate, now) < queue.rate.limit
            proposal = self._read(
                self._sql(q.QUEUE_CANDIDATES),
                {
                    **params,
                    "key_limit": queue.key_concurrency or _NO_LIMIT,
                    "fresh_ok": int(fresh_ok),
                    "limit": limit,
                },
            )
            if proposal:
                proposals[name] = [(row[0], bool(row[1]), row[2]) for row in proposal]
        if not proposals:
            return []

        def claim(conn: Any) -> list[WorkflowRecord]:
            claimed: list[WorkflowRecord] = []
            # One queue after the other, in name order: two claims never wait for each
            # other's queue locks in opposite orders.
            for name, proposal in proposals.items():
                if len(claimed) >= limit:
                    break
                room = limit - len(claimed)
                claimed.extend(self._admit(conn, {**base, "queue": name}, proposal, room))
            return sorted(claimed, key=lambda r: (r.priority, r.created_at))

        return self._write(claim)

    def cancelled_waiting(self, queues: Sequence[str], limit: int = 100) -> list[str]:
        params = {"names": self._dialect.text_list(queues), "limit": limit}
        return [row[0] for row in self._read(self._sql(q.CANCELLED_WAITING), params)]

    def cancel_waiting(self, workflow_id: str, error: str, now: float) -> bool:
        sql = self._sql(q.CANCEL_WAITING)
        params = {"id": workflow_id, "error": error, "now": now, "cancelled": CANCELLED.value}

        def cancel(conn: Any) -> bool:
            if conn.execute(sql, params).fetchone() is None:
                return False
            self._notify(conn, EVENT_DONE + workflow_id)
            return True

        return self._write(cancel)

    def _wake_due(self, params: dict[str, Any]) -> None:
        """Delayed or suspended workflows of the queue whose time came: waiting now. Safe
        without the queue's lock: it only clears the wake time of unowned, due ones."""
        sql = self._sql(q.QUEUE_WAKE_DUE)
        self._write(lambda conn: conn.execute(sql, params))

    def _starts(self, queue: str, rate: Rate, now: float, conn: Any = None) -> int:
        """First starts of the queue within its rate's window before ``now``."""
        params = {"queue": queue, "since": now - rate.per}
        sql = self._sql(q.QUEUE_STARTS)
        rows = self._read(sql, params) if conn is None else conn.execute(sql, params).fetchall()
        return int(rows[0][0])

    def _admit(
        self,
        conn: Any,
        params: dict[str, Any],
        proposal: list[tuple[str, bool, str | None]],
        room: int,
    ) -> list[WorkflowRecord]:
        """Under the queue's lock: count what runs, and admit from the proposal, in its
        order, what every limit allows."""
        row = conn.execute(self._sql(q.LOCK_QUEUE), {"name": params["queue"]}).fetchone()
        if row is None:
            return []
        queue = _queue(row)  # as locked: a change committed since the proposal counts
        by_key: dict[str | None, int] = {}
        running = mine = 0
        for key, count, own in conn.execute(self._sql(q.QUEUE_RUNNING_BY_KEY), params):
            by_key[key] = int(count)
            running += int(count)
            mine += int(own)
        wanted = room
        if queue.concurrency is not None:
            wanted = min(wanted, queue.concurrency - running)
        if queue.worker_concurrency is not None:
            wanted = min(wanted, queue.worker_concurrency - mine)
        if wanted <= 0:
            return []
        fresh = wanted
        if queue.rate is not None:
            fresh = queue.rate.limit - self._starts(
                params["queue"], queue.rate, params["now"], conn
            )
        key_limit = queue.key_concurrency or _NO_LIMIT
        chosen: list[str] = []
        for workflow_id, first_start, key in proposal:
            if len(chosen) >= wanted:
                break
            if key is not None and by_key.get(key, 0) >= key_limit:
                continue
            if first_start:
                if fresh <= 0:
                    continue  # the rate is spent: only those that started before
                fresh -= 1
            by_key[key] = by_key.get(key, 0) + 1
            chosen.append(workflow_id)
        if not chosen:
            return []
        ids = self._dialect.text_list(chosen)
        admitted = conn.execute(self._sql(q.QUEUE_ADMIT), {**params, "ids": ids}).fetchall()
        return [workflow_record(row) for row in admitted]

    def queue_place(self, workflow_id: str, now: float) -> QueuePlace | None:
        rows = self._read(self._hot.get_workflow, (workflow_id,))
        if not rows:
            return None
        record = workflow_record(rows[0])
        if record.status not in ("PENDING", "RUNNING"):
            return None
        owned = record.owner is not None and (record.lease_expires_at or 0.0) >= now
        delayed = record.status == "PENDING" and record.wake_at is not None
        if owned or (record.queue is None and not delayed):
            return None
        if record.wake_at is not None and not delayed:
            return None  # suspended: it waits for its own wake-up, not for its queue
        delayed_until = record.wake_at if delayed and (record.wake_at or 0.0) > now else None
        if record.queue is None:  # only delayed
            fresh = record.dequeued_at is None
            return QueuePlace(None, None, 0, delayed_until, None, 0, 0, 0, fresh)
        # Its queue's stored limits: None until a worker of the queue declared them.
        queue = self.get_queue(record.queue)
        params = {"queue": record.queue, "now": now, "me": "", "key": record.queue_key}
        running, _, running_key = self._read(self._sql(q.QUEUE_RUNNING), params)[0]
        starts, frees_at = 0, None
        if queue is not None and queue.rate is not None:
            since = now - queue.rate.per
            window = self._read(self._sql(q.QUEUE_WINDOW), {**params, "since": since})[0]
            starts = int(window[0])
            if starts >= queue.rate.limit and window[1] is not None:
                frees_at = float(window[1]) + queue.rate.per
        position = None
        if delayed_until is None:
            found = self._read(self._sql(q.QUEUE_POSITION), {**params, "id": workflow_id})
            position = int(found[0][0]) if found else None
        return QueuePlace(
            queue,
            record.queue_key,
            record.priority,
            delayed_until,
            position,
            int(running),
            int(running_key),
            starts,
            record.dequeued_at is None,
            frees_at,
        )
