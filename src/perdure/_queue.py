"""Queues: flow control for workflows (limits, a rate, priorities, keys), as values.

A ``Queue`` names a set of workflows and the limits every worker obeys when it takes
them: how many run at once across the fleet (``concurrency``), in one worker process
(``worker_concurrency``) and per key (``key_concurrency``), and how many may start in
any window of time (``rate``). Its limits are stored in the database
(``perdure_queues``): ``app.update_queue`` changes them while workers run, and every
worker reads them at each claim.

A queued workflow *holds a slot* while it runs on a worker (owned, its lease alive).
One that suspends (a long sleep, a wait for a message) gives its slot back, and
queues again when it wakes, ahead of newer ones. One whose worker died holds its
slot until its lease expires (or until its process is seen gone on the same host).

This module imports only the domain below it: the store reads and writes these
records, the client and the worker use them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._display import utc
from ._errors import ConfigurationError, InvalidValueError
from ._model import ACTIVE_STATES, WorkflowRecord, WorkflowState, _TextEnum
from ._validation import check_key, check_name


def _limit(queue: str, what: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidValueError(
            f"{what} of queue {queue!r} must be a positive integer or None (no limit), "
            f"not {value!r}"
        )
    return value


@dataclass(frozen=True)
class Rate:
    """At most ``limit`` starts in any window of ``per`` seconds (a sliding window: the
    starts of the last ``per`` seconds are counted at every claim). Only a workflow's
    first start counts: one that suspended and wakes queues again without using it."""

    limit: int
    per: float

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise InvalidValueError(f"Rate(limit) must be a positive integer, not {self.limit!r}")
        per = self.per
        if isinstance(per, bool) or not isinstance(per, int | float) or not math.isfinite(per):
            raise InvalidValueError(f"Rate(per=) must be a number of seconds, not {per!r}")
        if per <= 0:
            raise InvalidValueError(f"Rate(per=) must be more than 0 seconds, not {per!r}")
        object.__setattr__(self, "per", float(per))


@dataclass(frozen=True)
class Queue:
    """A named queue and its limits (None: no limit).

    ``perdure.Queue("emails", concurrency=20, worker_concurrency=4, key_concurrency=1,
    rate=perdure.Rate(100, per=60))``: at most 20 of its workflows run at once across
    every worker, at most 4 in any one worker process, at most 1 per key, and at most
    100 start in any 60 seconds. Declare it on the app (``App(queues=[...])`` or
    ``app.add_queue``) and start workflows in it with ``app.options(queue="emails")``.
    """

    name: str
    concurrency: int | None = None
    worker_concurrency: int | None = None
    key_concurrency: int | None = None
    rate: Rate | None = None

    def __post_init__(self) -> None:
        check_name("queue name", self.name)
        _limit(self.name, "concurrency", self.concurrency)
        _limit(self.name, "worker_concurrency", self.worker_concurrency)
        _limit(self.name, "key_concurrency", self.key_concurrency)
        if self.rate is not None and not isinstance(self.rate, Rate):
            raise InvalidValueError(
                f"rate of queue {self.name!r} must be perdure.Rate(limit, per=seconds) or None"
            )

    def limits_json(self) -> str:
        """The limits as JSON: what the code declared, compared at each declaration."""
        rate = None if self.rate is None else [self.rate.limit, self.rate.per]
        return json.dumps([self.concurrency, self.worker_concurrency, self.key_concurrency, rate])


#: ``update_queue`` leaves a limit given as this unchanged.
UNCHANGED: Any = object()


def changed(queue: Queue, **changes: Any) -> Queue:
    """``queue`` with the limits given in ``changes`` replaced (``UNCHANGED`` ones kept),
    checked like a new ``Queue``."""
    unknown = set(changes) - {"concurrency", "worker_concurrency", "key_concurrency", "rate"}
    if unknown:
        raise ConfigurationError(f"queues have no limit {sorted(unknown)[0]!r}")
    values = {
        field: getattr(queue, field) if value is UNCHANGED else value
        for field, value in changes.items()
    }
    current = {
        "concurrency": queue.concurrency,
        "worker_concurrency": queue.worker_concurrency,
        "key_concurrency": queue.key_concurrency,
        "rate": queue.rate,
    }
    return Queue(queue.name, **{**current, **values})


@dataclass(frozen=True)
class Enqueue:
    """How a workflow enters a queue or waits before it starts: what the store records
    next to a ``NewWorkflow`` (see ``Store.enqueue_workflow``)."""

    #: The queue (None: no queue, only a delay, deduplication or debounce).
    queue: str | None = None
    key: str | None = None
    priority: int = 0
    #: Not started before this time (seconds since the epoch), or None.
    not_before: float | None = None
    #: Deduplication: while an active workflow of the same queue has it, a start is
    #: that workflow's.
    dedup_id: str | None = None
    #: Debounce: starts of the same workflow, queue and key collapse into one run.
    debounce: bool = False

    def dedup_key(self) -> str | None:
        """What the store keeps unique among active workflows (queue and dedup ID)."""
        if self.dedup_id is None:
            return None
        return json.dumps([self.queue, self.dedup_id])

    def debounce_key(self, name: str) -> str | None:
        """What the store keeps unique among workflows not started yet (name, queue, key)."""
        return json.dumps([name, self.queue, self.key]) if self.debounce else None


class QueueReason(_TextEnum):
    """Why a queued workflow does not run yet."""

    #: Its start was delayed (``delay=``, or a debounce window still open).
    DELAY = "delay"
    #: Its queue runs as many as its ``concurrency`` allows (or more are ahead of it).
    CONCURRENCY = "concurrency"
    #: Its key runs as many as the queue's ``key_concurrency`` allows.
    KEY_LIMIT = "key limit"
    #: Its queue started as many as its ``rate`` allows in the window.
    RATE = "rate"
    #: Nothing in its queue holds it: the next worker with a free slot takes it.
    WORKER = "worker"


@dataclass(frozen=True)
class QueuePlace:
    """Where a waiting workflow stands, as the store counts it (``Store.queue_place``)."""

    queue: Queue | None
    key: str | None
    priority: int
    #: When its delay ends (None: not delayed, or past).
    delayed_until: float | None
    #: 1 for the next to start in its queue (None while delayed or not in a queue).
    position: int | None
    #: Its queue's workflows running now (leases alive), and those of its key.
    running: int
    running_key: int
    #: Starts of its queue within its rate's window.
    recent_starts: int
    #: Whether it never started (a first start uses the rate).
    fresh: bool
    #: While its rate's window is full: when the oldest start in it leaves the window
    #: (a first start may be admitted then); None otherwise.
    rate_frees_at: float | None = None

    def reason(self) -> QueueReason:
        """Why it does not run yet (the first limit that holds it, in this order)."""
        if self.delayed_until is not None:
            return QueueReason.DELAY
        queue = self.queue
        if queue is None:
            return QueueReason.WORKER
        if (
            self.key is not None
            and queue.key_concurrency is not None
            and self.running_key >= queue.key_concurrency
        ):
            return QueueReason.KEY_LIMIT
        if self.fresh and queue.rate is not None and self.recent_starts >= queue.rate.limit:
            return QueueReason.RATE
        if queue.concurrency is not None and self.running + (self.position or 1) > (
            queue.concurrency
        ):
            return QueueReason.CONCURRENCY
        return QueueReason.WORKER


@dataclass(frozen=True)
class QueueDepth:
    """How many of a queue's active workflows run and wait, now (``Store.queue_depths``;
    ``perdure queues``; the dashboard's queues page)."""

    #: Owned by an executor whose lease is alive: what the limits count.
    running: int = 0
    #: Ready to start: unowned and due (or their owner's lease expired).
    waiting: int = 0
    #: Not due yet: delayed, debounced, or suspended until a time.
    delayed: int = 0


@dataclass(frozen=True)
class QueuedStatus:
    """A workflow that waits to start, or to start again, in a queue or after a delay
    (``WorkflowStatus.queued``)."""

    #: Its queue (None when it only waits for its delay).
    queue: str | None
    key: str | None
    priority: int
    #: When its delay (or debounce window) ends, while it is delayed.
    delayed_until: datetime | None = None
    #: 1 for the next to start in its queue; None while delayed, or when not looked up
    #: (``perdure list`` and ``list_workflows`` show the queue only).
    position: int | None = None
    #: Why it does not run yet; None when not looked up.
    reason: QueueReason | None = None

    def describe(self) -> str:
        """One line for people, such as "queued in 'emails' (key 'c-42'): position 3,
        waiting for: concurrency"."""
        where = "delayed" if self.queue is None else f"queued in {self.queue!r}"
        if self.key is not None:
            where += f" (key {self.key!r})"
        if self.priority:
            where += f", priority {self.priority}"
        if self.delayed_until is not None:
            where += f", until {self.delayed_until.isoformat()}"
        if self.position is not None:
            where += f": position {self.position}"
        if self.reason is not None:
            where += f", waiting for: {self.reason.value}"
        return where


def check_priority(value: object) -> int:
    """A priority: an integer (lower runs first), within what both databases store."""
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) >= 2**31:
        raise InvalidValueError(f"priority must be an integer (lower runs first), not {value!r}")
    return value


def check_queue_key(kind: str, value: object) -> str | None:
    """A key or a deduplication ID: None, or text that every store can index."""
    return None if value is None else check_key(kind, value)


def queued_of(record: WorkflowRecord) -> QueuedStatus | None:
    """Where a workflow waiting to start (or to start again) waits, from its record alone:
    its queue, or its delay; no position nor reason (``with_place`` adds them)."""
    if record.status not in ACTIVE_STATES or record.owner is not None:
        return None
    delayed = record.status == WorkflowState.PENDING and record.wake_at is not None
    if not delayed and (record.queue is None or record.wake_at is not None):
        return None  # not queued, or suspended (it waits for its own wake-up)
    until = utc(record.wake_at) if delayed else None
    return QueuedStatus(record.queue, record.queue_key, record.priority, until)


def with_place(queued: QueuedStatus, place: QueuePlace | None) -> QueuedStatus:
    """``queued`` with the position and the reason that ``place`` (read now) gives."""
    if place is None:
        return queued
    return dataclasses.replace(
        queued,
        delayed_until=utc(place.delayed_until),
        position=place.position,
        reason=place.reason(),
    )
