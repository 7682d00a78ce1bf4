"""Starting workflows through queues, and the app's methods for queues.

The client hands a start with flow-control options (a queue, a delay, a deduplication
ID, a debounce) to ``submit``: the workflow is recorded unowned (never run at once in
this process), and a worker's queue claim (``_worker/_queues.py``) starts it within the
queue's limits. ``add_queue``, ``update_queue``, ``queue`` and ``queues`` are bound as
``App`` methods; ``queued_status`` says where a waiting workflow stands.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from ._clock import Clock
from ._errors import ConfigurationError, workflow_id_taken
from ._options import StartOptions
from ._queue import UNCHANGED, Enqueue, Queue, QueueDepth, Rate
from ._registry import Registry
from ._repair import actor_or_default
from .storage import NewWorkflow, Store, WorkflowRecord


class QueueHost(Protocol):
    """What starting through a queue needs of the client."""

    @property
    def store(self) -> Store: ...

    @property
    def registry(self) -> Registry: ...

    @property
    def clock(self) -> Clock: ...

    def wake(self) -> None:
        """Make this process's worker look for work now."""
        ...


class QueueApp(Protocol):
    """What the app's queue methods need of the app: its client."""

    @property
    def client(self) -> QueueHost: ...


def _seconds(value: float | timedelta | None) -> float | None:
    # StartOptions stores seconds already; a timedelta is accepted all the same.
    return value.total_seconds() if isinstance(value, timedelta) else value


def entry(options: StartOptions, now: float) -> Enqueue:
    """What the store records next to a new workflow started with these options."""
    delay, debounce = _seconds(options.delay), _seconds(options.debounce)
    wait = max(delay or 0.0, debounce or 0.0)
    not_before = now + wait if delay is not None or debounce is not None else None
    return Enqueue(
        queue=options.queue,
        key=options.key,
        priority=options.priority,
        not_before=not_before,
        dedup_id=options.dedup_id,
        debounce=debounce is not None,
    )


def submit(
    host: QueueHost, new: NewWorkflow, options: StartOptions
) -> Future[tuple[WorkflowRecord, bool]]:
    """Record ``new`` for flow control (see ``Store.enqueue_workflow``); the queue must be
    declared on this app (``ConfigurationError`` before anything is recorded)."""
    if options.queue is not None and options.queue not in host.registry.queues:
        declared = ", ".join(repr(name) for name in sorted(host.registry.queues)) or "none"
        raise ConfigurationError(
            f"workflow {new.name!r} was started in queue {options.queue!r}, which this app "
            f"does not declare (declared: {declared}): add perdure.Queue({options.queue!r}, "
            "...) to App(queues=[...]) or call app.add_queue"
        )
    return host.store.enqueue_workflow(new, entry(options, new.created_at))


def submitted(host: QueueHost, new: NewWorkflow, record: WorkflowRecord, created: bool) -> str:
    """The ID of the workflow a start resolved to: the new one, the one with its ID, or
    the duplicate or debounce window it joined. Wakes this process's worker."""
    if not created and record.id == new.id and record.name != new.name:
        raise workflow_id_taken(new.id, record.name, new.name)
    host.wake()
    return record.id


def refuse_in_workflow(options: StartOptions) -> None:
    """Children are not started through queues (yet): say so instead of ignoring it."""
    if options.queued:
        raise ConfigurationError(
            "a child workflow cannot be started with queue=, delay=, dedup_id= or debounce= "
            "(not supported inside a workflow yet): start it from outside a workflow, or "
            "without these options"
        )


# -- what the app's methods are --------------------------------------------------------------


def add_queue(app: QueueApp, queue: Queue) -> None:
    """Declare a queue (``perdure.Queue``) on this app: workflows start in it with
    ``app.options(queue=...)``, and this app's workers claim them within its limits. Its
    limits are stored when a worker starts: when they differ from those the code declared
    before, they replace the stored ones; else the stored ones stay (perhaps changed by
    ``update_queue``)."""
    app.client.registry.add_queue(queue)


def update_queue(
    app: QueueApp,
    name: str,
    *,
    concurrency: int | None = UNCHANGED,
    worker_concurrency: int | None = UNCHANGED,
    key_concurrency: int | None = UNCHANGED,
    rate: Rate | None = UNCHANGED,
    actor: str | None = None,
) -> Queue:
    """Change a queue's limits while it runs (those given; None removes a limit). Stored
    in the database: every worker obeys them at its next claim (within its poll
    interval). Workflows already running go on; a lower limit only stops new starts.
    Returns the limits in force. ``ConfigurationError`` when no queue has this name.
    Logged as an operator action (``actor``, default the OS user; the limits before and
    after) in the transaction of the change, under ``perdure.queue:<name>``."""
    client = app.client
    changes: dict[str, Any] = {
        field: value
        for field, value in (
            ("concurrency", concurrency),
            ("worker_concurrency", worker_concurrency),
            ("key_concurrency", key_concurrency),
            ("rate", rate),
        )
        if value is not UNCHANGED
    }
    who, now = actor_or_default(actor), client.clock.time()
    updated = client.store.update_queue(name, changes, now, who)
    if updated is None and name in client.registry.queues:
        client.store.declare_queue(client.registry.queues[name], now)
        updated = client.store.update_queue(name, changes, now, who)
    if updated is None:
        raise ConfigurationError(f"no queue named {name!r} (declare it: app.add_queue)")
    client.wake()
    return updated


def queue(app: QueueApp, name: str) -> Queue:
    """A queue's limits in force: as stored (what workers obey), else as this app
    declares them. ``ConfigurationError`` when neither knows the name."""
    client = app.client
    stored = client.store.get_queue(name)
    if stored is not None:
        return stored
    declared = client.registry.queues.get(name)
    if declared is None:
        raise ConfigurationError(f"no queue named {name!r}")
    return declared


@dataclass(frozen=True)
class QueueStatus:
    """A queue as an operator sees it (``app.queues()``): its limits in force and how
    many of its workflows run, wait and are delayed now."""

    #: The limits in force (as stored; as declared in this app's code until a worker
    #: stored them).
    limits: Queue
    depth: QueueDepth
    #: Whether the store holds its limits (False: only this app's code declares it yet).
    stored: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the name, each limit (``rate`` as ``{"limit", "per"}``), counts."""
        queue = self.limits
        rate = None if queue.rate is None else {"limit": queue.rate.limit, "per": queue.rate.per}
        return {
            "name": queue.name,
            "concurrency": queue.concurrency,
            "worker_concurrency": queue.worker_concurrency,
            "key_concurrency": queue.key_concurrency,
            "rate": rate,
            "running": self.depth.running,
            "waiting": self.depth.waiting,
            "delayed": self.depth.delayed,
            "stored": self.stored,
        }


def queues(app: QueueApp) -> list[QueueStatus]:
    """Every queue, by name: those stored (what workers obey) and those this app declares
    that no worker stored yet, each with its running, waiting and delayed counts (one
    grouped read)."""
    client = app.client
    store = client.store
    depths = store.queue_depths(client.clock.time())
    found = {
        q.name: QueueStatus(q, depths.get(q.name, QueueDepth()), True) for q in store.list_queues()
    }
    for name, declared in client.registry.queues.items():
        if name not in found:
            found[name] = QueueStatus(declared, depths.get(name, QueueDepth()), False)
    return [found[name] for name in sorted(found)]
