"""The run table: every workflow this process runs, starts or must retry, behind ONE lock.

It is also what bounds ``Settings.max_workflows``: a workflow runs here only in a slot,
and a slot is taken under the lock before the workflow is owned: by a claim round
(``reserve``), by a start in this process (``begin_start``), or by an adoption
(``add`` with no reservation). A start that finds no free slot records its workflow
unowned, for a later claim; a claim round claims no more than it reserved.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from enum import Enum

from .._engine.run import WorkflowRun


class Slot(Enum):
    """Where the slot of a run being added comes from."""

    #: One of the slots that a claim round reserved.
    CLAIM = "claim"
    #: The slot that a start in this process reserved for its workflow.
    START = "start"
    #: None reserved: take a free one now, or refuse.
    FREE = "free"


class RunTable:
    """The runs of one worker, the starts under way, the reserved slots and the stranded
    workflows (interrupted by a store failure, to run again), all behind one lock."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._runs: dict[str, WorkflowRun] = {}
        self._reserved = 0
        # Workflow ID -> whether its start holds a reserved slot.
        self._starting: dict[str, bool] = {}
        # Workflow ID -> when to run it again.
        self._stranded: dict[str, float] = {}
        # The sets of ``tracking`` under way: each collects the workflows busy here.
        self._tracking: list[set[str]] = []
        # Counts every run added, start begun and slot reserved: lets a watcher (the test
        # kit's time skipping) know that nothing began between two of its looks (while
        # nothing runs, nothing can end).
        self._changes = 0

    # -- slots ----------------------------------------------------------------------------

    def _free(self) -> int:
        return self.capacity - len(self._runs) - self._reserved

    def free(self) -> int:
        """Slots neither running nor reserved."""
        with self._lock:
            return self._free()

    def reserve(self, wanted: int) -> int:
        """Reserve up to ``wanted`` slots for a claim round; returns how many it got."""
        with self._lock:
            granted = max(0, min(wanted, self._free()))
            self._reserved += granted
            self._changes += 1
            return granted

    def unreserve(self, count: int) -> None:
        """Give back reserved slots that a claim round did not fill."""
        with self._lock:
            self._reserved -= count
            self._changed.notify_all()

    def begin_start(self, workflow_id: str) -> bool:
        """Mark a workflow this process is starting, reserving it a slot if one is free;
        returns whether it got one (else it is to be recorded unowned)."""
        with self._lock:
            slot = self._free() > 0 and workflow_id not in self._starting
            if slot:
                self._reserved += 1
            self._starting.setdefault(workflow_id, slot)
            for seen in self._tracking:
                seen.add(workflow_id)
            self._changes += 1
            return slot

    def end_start(self, workflow_id: str) -> None:
        """The start is over: give back its slot unless its run took it."""
        with self._lock:
            if self._starting.pop(workflow_id, False):
                self._reserved -= 1
                self._changed.notify_all()

    def is_starting(self, workflow_id: str) -> bool:
        """Whether a start in this process is under way for this workflow."""
        with self._lock:
            return workflow_id in self._starting

    # -- runs -----------------------------------------------------------------------------

    def add(self, run: WorkflowRun, slot: Slot) -> bool:
        """Add a run in a slot; False (and nothing taken) when the workflow already runs
        here, or when ``slot`` is FREE and none is."""
        workflow_id = run.workflow_id
        with self._lock:
            if workflow_id in self._runs:
                return False
            if slot is Slot.CLAIM:
                self._reserved -= 1
            elif slot is Slot.START and self._starting.get(workflow_id):
                self._starting[workflow_id] = False
                self._reserved -= 1
            elif self._free() <= 0:
                return False
            self._runs[workflow_id] = run
            for seen in self._tracking:
                seen.add(workflow_id)
            self._changes += 1
            return True

    def replace(self, old: WorkflowRun, new: WorkflowRun) -> bool:
        """Put ``new`` in the slot of ``old`` (the same workflow, continued as new)."""
        with self._lock:
            if self._runs.get(old.workflow_id) is not old:
                return False
            self._runs[new.workflow_id] = new
            return True

    def remove(self, run: WorkflowRun) -> tuple[int, int]:
        """Remove a run that ended; returns (slots free now, runs left)."""
        with self._lock:
            if self._runs.get(run.workflow_id) is run:
                del self._runs[run.workflow_id]
            self._changed.notify_all()
            return self._free(), len(self._runs)

    def runs_here(self, workflow_id: str) -> bool:
        """Whether this workflow runs here now."""
        with self._lock:
            return workflow_id in self._runs

    def busy(self, workflow_id: str) -> bool:
        """Whether this workflow runs here or is being started here."""
        with self._lock:
            return workflow_id in self._runs or workflow_id in self._starting

    @contextlib.contextmanager
    def tracking(self) -> Iterator[set[str]]:
        """The workflows busy here now, and those that become busy until the block ends:
        what a look at the store made meanwhile may have seen unfinished although it ran
        (or started) here and has ended since."""
        with self._lock:
            seen = set(self._runs) | set(self._starting)
            self._tracking.append(seen)
        try:
            yield seen
        finally:
            with self._lock:
                self._tracking = [other for other in self._tracking if other is not seen]

    def __len__(self) -> int:
        with self._lock:
            return len(self._runs)

    def runs(self, workflow_ids: list[str] | None = None) -> list[WorkflowRun]:
        """The runs of these workflows that run here (all of them when None)."""
        with self._lock:
            if workflow_ids is None:
                return list(self._runs.values())
            return [self._runs[wid] for wid in workflow_ids if wid in self._runs]

    def wait_empty(self, timeout: float) -> list[WorkflowRun]:
        """Wait up to ``timeout`` seconds for every run to end; returns those left."""
        with self._changed:
            self._changed.wait_for(lambda: not self._runs, timeout=timeout)
            return list(self._runs.values())

    def quiet(self) -> int | None:
        """When nothing runs, starts or is reserved here: a token that ``if_quiet`` checks
        (it changes with every run added, start begun and claim); None otherwise."""
        with self._lock:
            if self._runs or self._starting or self._reserved:
                return None
            return self._changes

    def if_quiet(self, token: int, action: Callable[[], None]) -> bool:
        """Call ``action`` under the table's lock if nothing changed since ``quiet()``
        returned ``token`` (so that no run, start or claim can begin meanwhile)."""
        with self._lock:
            if self._changes != token or self._runs or self._starting or self._reserved:
                return False
            action()
            return True

    # -- stranded -------------------------------------------------------------------------

    def strand(self, workflow_id: str, retry_at: float) -> None:
        """Remember a workflow to run again at ``retry_at`` (its store failed under it)."""
        with self._lock:
            self._stranded[workflow_id] = retry_at

    def take_stranded(self, now: float) -> list[str]:
        """Forget and return the stranded workflows due by ``now``."""
        with self._lock:
            due = [wid for wid, when in self._stranded.items() if when <= now]
            for workflow_id in due:
                del self._stranded[workflow_id]
            return due

    def stranded(self) -> dict[str, float]:
        """A copy of the stranded workflows and when each is due."""
        with self._lock:
            return dict(self._stranded)
