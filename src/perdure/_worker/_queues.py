"""The worker's claim of queued workflows: as many as the run table has room for and the
queues' limits allow (``Store.claim_queued`` counts and claims under each queue's lock).

The queues' limits are stored once per process, at the first claim (``Store.declare_queue``);
after that the store's limits rule: ``app.update_queue`` in any process changes what the
next claim of every worker admits.
"""

from __future__ import annotations

import logging
from typing import Protocol

from .._error_codec import encode_error
from .._errors import WorkflowCancelledError
from .._model import Outcome, WorkflowState
from ..storage import HELD_BY_EXECUTOR, StepRecord, WorkflowRecord
from ._host import WorkerHost
from ._table import RunTable, Slot

log = logging.getLogger("perdure")


class QueueRunner(Protocol):
    """What the queue claim needs of the executor."""

    @property
    def id(self) -> str: ...

    def dispatch(self, record: WorkflowRecord, steps: list[StepRecord], slot: Slot) -> bool:
        """Run a workflow we own in a reserved slot."""
        ...


class QueueClaimer:
    """Claims the queued workflows of one worker's app; see the module docstring."""

    def __init__(self, host: WorkerHost, runner: QueueRunner, table: RunTable) -> None:
        self.host = host
        self.runner = runner
        self.table = table
        self._declared: set[str] = set()

    @property
    def active(self) -> bool:
        """Whether the app declares queues (then the worker looks at them every poll)."""
        return bool(self.host.registry.queues)

    def declare(self, now: float) -> None:
        """Store the limits of the queues this process has not declared yet."""
        for name, queue in list(self.host.registry.queues.items()):
            if name not in self._declared:
                stored = self.host.store.declare_queue(queue, now)
                if stored != queue:
                    log.info("queue %r runs with the stored limits %s", name, stored)
                self._declared.add(name)

    def end_cancelled(self, now: float) -> None:
        """End the queued workflows asked to cancel before they started: they would
        otherwise wait for their turn (perhaps long) only to stop at their first step."""
        queues = list(self.host.registry.queues)
        for workflow_id in self.host.store.cancelled_waiting(queues):
            error = encode_error(WorkflowCancelledError(workflow_id))
            if self.host.store.cancel_waiting(workflow_id, error, now):
                self.host.notifier.notify(
                    workflow_id, Outcome(WorkflowState.CANCELLED, None, error)
                )
                log.info("workflow %s cancelled before it left its queue", workflow_id)

    def claim(self) -> bool:
        """Claim and dispatch what the queues admit; returns whether the round was full
        (more may be claimable at once)."""
        if not self.active:
            return False
        # Read now, not at the start of the maintenance round: the time a workflow is
        # recorded to start at is what the rate counts.
        now = self.host.clock.time()
        self.declare(now)
        self.end_cancelled(now)
        settings = self.host.settings
        reserved = self.table.reserve(settings.max_threads)
        if reserved <= 0:
            return False
        used = 0
        try:
            claimed = self.host.store.claim_queued(
                self.runner.id,
                list(self.host.registry.queues),
                list(self.host.registry.workflows),
                settings.app_version,
                now,
                HELD_BY_EXECUTOR,
                limit=reserved,
            )
            for record in claimed:
                if record.recoveries and record.epoch > 1:
                    log.info("recovering queued workflow %s (%s)", record.id, record.name)
                steps = [] if record.epoch == 1 else self.host.store.load_steps(record.id)
                if self.runner.dispatch(record, steps, Slot.CLAIM):
                    used += 1
            return len(claimed) == reserved
        finally:
            self.table.unreserve(reserved - used)
