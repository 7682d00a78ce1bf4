"""The queues' part of the storage interface (``Store`` inherits it): their limits,
entering a queue, claiming within its limits, and where a waiting workflow stands."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from .._model import NewWorkflow, WorkflowRecord
from .._queue import Enqueue, Queue, QueueDepth, QueuePlace


class QueueOps(abc.ABC):
    """The queues' operations of a store; see ``Store`` for what every operation raises."""

    # -- queues ------------------------------------------------------------------------------

    @abc.abstractmethod
    def declare_queue(self, queue: Queue, now: float) -> Queue:
        """Store the queue's limits as the code declares them, in one transaction: a new
        queue gets them; a stored one gets them only when they differ from those its code
        declared last (a deploy that changes them), else it keeps its limits (perhaps
        changed by ``update_queue`` since). Returns the limits in force."""

    @abc.abstractmethod
    def get_queue(self, name: str) -> Queue | None:
        """The stored limits of the queue, or None when no queue has this name."""

    @abc.abstractmethod
    def list_queues(self) -> list[Queue]:
        """Every stored queue, by name."""

    @abc.abstractmethod
    def queue_depths(self, now: float) -> dict[str, QueueDepth]:
        """How many active workflows of each queue run (owned, lease alive at ``now``),
        wait (unowned and due, or owned with an expired lease) and are delayed (unowned,
        not due before ``now``), by queue name; queues with none are absent. One read."""

    @abc.abstractmethod
    def update_queue(
        self, name: str, changes: dict[str, Any], now: float, actor: str | None = None
    ) -> Queue | None:
        """Change some limits of a stored queue (``changes`` maps ``concurrency``,
        ``worker_concurrency``, ``key_concurrency`` or ``rate`` to its new value, None
        for no limit), in one transaction that locks its row; other executors are told.
        With ``actor`` (an operator), the same transaction logs an ``update_queue``
        action (the limits before and after) under ``perdure.queue:<name>``. Returns the
        limits in force after it, None when no queue has this name."""

    @abc.abstractmethod
    def enqueue_workflow(
        self, new: NewWorkflow, entry: Enqueue
    ) -> Future[tuple[WorkflowRecord, bool]]:
        """Insert a PENDING, unowned workflow in ``entry.queue`` (or in none) with its key,
        priority, and wake time ``entry.not_before``; one transaction. Executors are told.

        Resolves to ``(record, created)``. Not created (nothing inserted) when a workflow
        with the same ID exists (that one), when ``entry.dedup_id`` is set and an active
        workflow of the same queue has it (that one), or when ``entry.debounce`` is set and
        a workflow of the same name, queue and key has not started yet (PENDING, unowned):
        that one, given ``new``'s inputs, deadline and wake time in the same transaction.
        """

    @abc.abstractmethod
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
        """Claim up to ``limit`` workflows of these queues (of these names and this
        version) within each queue's limits. The order comes from a read just before;
        then one transaction locks each queue's row (in name order) while it counts what
        runs and claims: concurrent claims of one queue, from any number of executors,
        count and claim one after the other, and a candidate taken meanwhile is skipped.

        Waiting in a queue: active, unowned and not suspended (a delay or suspension
        that came due joins them), or owned with an expired lease. Running: owned with a
        lease alive at ``now``. A queue admits while fewer than ``concurrency`` of its
        workflows run, fewer than ``worker_concurrency`` run on ``executor_id``, and, for
        a workflow with a key, fewer than ``key_concurrency`` of its key run; a first
        start (``dequeued_at`` not set) also needs fewer than ``rate.limit`` first starts
        after ``now - rate.per``. Order: lower priority first; at equal priority one of
        each key before the second of any (round robin), then oldest first.

        Each claimed workflow is claimed as ``claim_workflows`` claims (RUNNING, owned,
        epoch + 1, wake time, note and hold cleared), ``dequeued_at`` set at its first
        claim; a recovery (an expired lease) counts in ``recoveries``. Returns them.
        """

    @abc.abstractmethod
    def queue_place(self, workflow_id: str, now: float) -> QueuePlace | None:
        """Where a workflow waiting to start stands (in a queue, or delayed): its queue's
        limits, its position (1: the next to start), how many of its queue and of its key
        run, the recent first starts of its queue. None when it does not wait so (it
        runs, is suspended, has finished, or does not exist)."""

    @abc.abstractmethod
    def cancelled_waiting(self, queues: Sequence[str], limit: int = 100) -> list[str]:
        """IDs of the workflows of these queues asked to cancel before they ever started
        (PENDING, unowned), oldest first; an index range."""

    @abc.abstractmethod
    def cancel_waiting(self, workflow_id: str, error: str, now: float) -> bool:
        """End a queued workflow asked to cancel before it ever started: CANCELLED with
        ``error`` (an encoded ``WorkflowCancelledError``), without running; one statement;
        waiters are told. Returns False, changing nothing, when it is no longer such a
        workflow (it started, or finished)."""
