"""The worker's maintenance thread: heartbeats, claims, wake-ups, recoveries, reports,
schedules, retention.

It renews this executor's lease (its row, which stands for every workflow it runs),
releases the workflows of executors whose process is gone or whose lease lapsed, fires
the due ticks of schedules (``_scheduler``), claims workflows that nobody runs (new ones
started unowned, ticks, those released, suspended ones that woke) as far as the run
table has room, runs again the workflows that a store failure interrupted, and
reports workflows that no executor can run. A failure of any kind
in one round is logged and retried with backoff: the thread never ends before the
worker stops, or heartbeats, claims and wake-ups would stop with it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from .._errors import PerdureError
from .._fingerprint import fingerprints
from ..storage import HELD_BY_EXECUTOR, StepRecord, WorkflowRecord
from ._host import WorkerHost
from ._queues import QueueClaimer
from ._retention import apply_retention
from ._scheduler import Scheduler
from ._table import RunTable, Slot

log = logging.getLogger("perdure")

#: Seconds the maintenance thread sleeps past a wake time before claiming.
_WAKE_MARGIN = 0.005


def process_gone(pid: int) -> bool:
    """Whether no live process has this PID on this host (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("Z", "X")


class Runner(Protocol):
    """What maintenance needs of the executor it maintains."""

    @property
    def id(self) -> str: ...

    @property
    def host_name(self) -> str: ...

    @property
    def pid(self) -> int: ...

    def lease_expiry(self) -> float:
        """When our lease, renewed now, expires."""
        ...

    def renewed(self, valid_until: float) -> None:
        """The store confirmed our leases until ``valid_until``."""
        ...

    def dispatch(self, record: WorkflowRecord, steps: list[StepRecord], slot: Slot) -> bool:
        """Run a workflow we own; False when it runs here already or has no slot."""
        ...

    def thread_room(self) -> int:
        """How many more synchronous workflows to take now."""
        ...

    def want_threads(self) -> None:
        """Wake maintenance once half a pool's room is back (a claim was bound by it)."""
        ...

    def adopt(self, workflow_id: str) -> bool:
        """Run a workflow the store says we own, if still ours and active."""
        ...

    def cancel_local(self, workflow_ids: list[str]) -> None:
        """Tell the runs of these workflows here that they were asked to cancel."""
        ...


class Maintenance:
    """The maintenance thread of one worker; see the module docstring."""

    def __init__(self, host: WorkerHost, runner: Runner, table: RunTable) -> None:
        self.host = host
        self.runner = runner
        self.table = table
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="perdure-maintenance", daemon=True)
        self._reported: set[str] = set()
        self.scheduler = Scheduler(host, runner.id)
        self.queues = QueueClaimer(host, runner, table)
        # Set when the store pushed that workflows were asked to cancel.
        self._cancels_pushed = False

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for its round to end."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def stopping(self) -> bool:
        """Whether the worker is shutting down."""
        return self._stop.is_set()

    def wake(self) -> None:
        """Look for work now."""
        self._wake.set()

    def cancel_pushed(self) -> None:
        """The store pushed that workflows were asked to cancel: look up ours now."""
        self._cancels_pushed = True
        self._wake.set()

    def _loop(self) -> None:
        settings = self.host.settings
        next_heartbeat = 0.0
        next_report = 0.0
        next_retention = 0.0
        failures = 0
        next_look: float | None = None
        while not self._stop.is_set():
            now = self.host.clock.time()
            next_wake: float | None = None
            try:
                if now >= next_heartbeat:
                    self.heartbeat()  # and runs what it finds ours but not running here
                    next_heartbeat = now + settings.lease_seconds / 3
                    self.check_cancels()
                elif self._cancels_pushed:
                    self.check_cancels()
                self.retry_stranded(now)
                # Before the claim: the ticks it starts are claimed in the same round.
                next_look, _ = self.scheduler.run(now)
                self.claim(now)
                if self.queues.claim():
                    self.wake()
                if now >= next_report:
                    self.release_holds(now)
                    self.report_unclaimable(now)
                    next_report = now + settings.report_interval
                retention = settings.retention
                if retention is not None and now >= next_retention:
                    more = apply_retention(
                        self.host.store, retention, self.runner.id, now, settings.lease_seconds
                    )
                    # A full batch: the next one at the next pass, not an interval later.
                    next_retention = now if more else now + retention.interval
                failures = 0
                next_wake = self.host.store.next_wake_at(after=now)
            except PerdureError as exc:
                failures += 1
                log.warning("executor %s maintenance failed (%s); retrying", self.runner.id, exc)
            except Exception:  # noqa: BLE001 - a bug must not end heartbeats and claims
                failures += 1
                log.exception(
                    "executor %s maintenance failed unexpectedly; retrying", self.runner.id
                )
            # A failing pass backs off (the exponent capped: it only has to pass the lease
            # bound) and is not cut short by a due time, which would retry in a tight loop.
            backoff = 2 ** min(failures, 16)
            delay = min(self.host.wait_interval * backoff, settings.lease_seconds / 3)
            if self.queues.active:
                # A slot freed by another worker is not pushed: look at the queues every
                # poll, so that a freed slot or a changed limit is seen within it.
                delay = min(delay, settings.poll_interval * backoff)
            for due in (next_wake, next_look):
                if due is not None and not failures:
                    # Wake when the next suspended workflow does, or the next tick comes (a
                    # hair after, so that the claim or the firing finds it due).
                    delay = min(delay, max(due - self.host.clock.time(), 0.0) + _WAKE_MARGIN)
            self._wake.wait(delay)
            self._wake.clear()

    def check_cancels(self) -> None:
        """Tell our runs that were asked to cancel."""
        self._cancels_pushed = False
        self.runner.cancel_local(self.host.store.cancel_requests(self.runner.id))

    def heartbeat(self) -> None:
        """Renew our leases; release the runs the store no longer confirms as ours, and
        run those it says are ours that do not run here (``adopt_orphans``, from the same
        read: the heartbeat reads what we own anyway)."""
        began = time.monotonic()
        expires = self.runner.lease_expiry()
        with self.table.tracking() as busy:
            renewed = self.host.store.heartbeat(self.runner.id, self.host.clock.time(), expires)
        # Runs the store no longer confirms as ours (taken over while we were paused or cut
        # off) start nothing more; only then may the renewed ones go on.
        for run in self.table.runs():
            if run.workflow_id not in renewed and run.dispatched_at < began:
                run.release("its lease was not renewed: another executor may own it now")
        self.runner.renewed(expires)
        self._run_orphans(renewed, busy)

    def claim(self, now: float) -> None:
        """Claim as many runnable workflows as the run table has room for (at most a
        thread pool's worth per round), and of synchronous ones no more than the thread
        pool can start soon: what this worker could not run for a while is left to other
        executors, and is not stranded with it if it dies."""
        settings = self.host.settings
        reserved = self.table.reserve(settings.max_threads)
        if reserved <= 0:
            return
        used = 0
        try:
            # Dead executors' workflows are released even when we claim none of them:
            # another executor of this host may.
            dead = self.dead_owners()
            names, limit, sync_left = self._claimable(reserved)
            if not names:
                if sync_left:
                    self.runner.want_threads()
                return
            claimed = self.host.store.claim_workflows(
                self.runner.id,
                names,
                settings.app_version,
                now,
                HELD_BY_EXECUTOR,
                dead_owners=dead,
                limit=limit,
            )
            # A full claim: there may be more, so claim again after this round; but not
            # when the thread pool's room bounded it, or each next round would claim the
            # few threads freed meanwhile (measured: ~120 rounds of ~12 workflows, each
            # ~11 ms under load, while threads went idle between them). The pool calls
            # for the next round once half a pool's room is back (want_threads below).
            room_bound = sync_left and limit < reserved
            if len(claimed) == limit and not room_bound and self.table.free() > 0:
                self.wake()
            if sync_left and (len(claimed) == limit or limit == reserved):
                # Synchronous workflows may wait that the pool had no room for: claim
                # again once half a pool's room is back.
                self.runner.want_threads()
            # Epoch 1 after a claim: never owned before, so no steps. The others' steps in
            # one query: one each would cost a round trip per recovered workflow, in turn.
            ran_before = [record.id for record in claimed if record.epoch != 1]
            histories = self.host.store.load_steps_many(ran_before) if ran_before else {}
            for record in claimed:
                if record.recoveries:
                    log.info("recovering workflow %s (%s)", record.id, record.name)
                if self.runner.dispatch(record, histories.get(record.id, []), Slot.CLAIM):
                    used += 1
        finally:
            self.table.unreserve(reserved - used)

    def _claimable(self, reserved: int) -> tuple[list[str], int, bool]:
        """The workflow names to claim, how many, and whether synchronous workflows may
        be left out for lack of the thread pool's room (it bounds the claim, or only
        asynchronous ones are claimed), for ``reserved`` slots of the run table. A synchronous
        workflow also needs a thread: with the pool's room used up (threads busy, a
        pool's worth waiting), only asynchronous ones are claimed; with some room, at
        most that many of any kind (an asynchronous one among them takes no thread, so
        the bound is cautious, and the next round claims the rest)."""
        workflows = self.host.registry.workflows
        if all(definition.is_async for definition in workflows.values()):
            return list(workflows), reserved, False
        room = self.runner.thread_room()
        if room >= reserved:
            return list(workflows), reserved, False
        if room > 0:
            return list(workflows), room, True
        return [name for name, wf in workflows.items() if wf.is_async], reserved, True

    def dead_owners(self) -> list[str]:
        """Release the workflows of the executors of this host whose process is gone, and
        of those of any host whose lease lapsed (it stopped renewing it: dead, frozen or
        cut off from the store); returns the first ones, whose rows the claim may also
        take. Not the others: one that renews its lease again after its release owns
        what it claims from then on, like any executor."""
        store, now = self.host.store, self.host.clock.time()
        gone = []
        for executor in store.list_executors():
            if executor.id == self.runner.id:
                continue
            # Its workflows go to whoever claims next, and it is marked stopped, so the
            # list of executors to check does not grow with every crash.
            if (
                executor.host == self.runner.host_name
                and executor.pid != self.runner.pid
                and process_gone(executor.pid)
            ):
                gone.append(executor.id)
                count: int | None = store.release_workflows(executor.id, now)
                why = "is gone (its process died)"
            elif executor.lease_expires_at < now:
                # None: it renewed its lease meanwhile, or another worker released it.
                count = store.release_expired(executor.id, now)
                since = now - executor.heartbeat_at
                why = f"let its lease lapse (no heartbeat for {since:.1f} s)"
            else:
                continue
            if count is not None:
                # Quiet when there was nothing: a process whose clock runs a lease behind
                # ours would be found so at every round.
                level = logging.INFO if count else logging.DEBUG
                log.log(level, "executor %s %s; released %d workflow(s)", executor.id, why, count)
        return gone

    def retry_stranded(self, now: float) -> None:
        """Run again the workflows a store failure interrupted, once due; those that find
        no room wait another second."""
        for workflow_id in self.table.take_stranded(now):
            if not self.runner.adopt(workflow_id) and not self.table.free():
                self.table.strand(workflow_id, now + 1.0)

    def adopt_orphans(self) -> None:
        """Run the workflows the store says we own but that do not run here."""
        # A claim or a start can commit while its caller sees an error (the connection
        # died at COMMIT): the store then says we own a workflow that we do not run.
        # Without this, our heartbeats would keep its lease alive and nobody would run it.
        # One that ran or started here while the store was read may have ended since (the
        # read saw it unfinished): not an orphan. A real one is seen at the next look.
        with self.table.tracking() as busy:
            owned = self.host.store.owned_workflows(self.runner.id)
        self._run_orphans(owned, busy)

    def _run_orphans(self, owned: Iterable[str], busy: set[str]) -> None:
        """Run the workflows of ``owned`` (read while ``busy`` was tracked) that do not
        run here and did not run here while they were read."""
        for workflow_id in owned:
            if workflow_id not in busy and self.runner.adopt(workflow_id):
                log.warning("workflow %s was ours but not running; resumed it", workflow_id)

    def release_holds(self, now: float) -> None:
        """Make due the held workflows of our version that other code failed to replay:
        ours may replay them (a rollback, a fix). Those our code held wait for their
        recheck time (``_holding``)."""
        registry = self.host.registry
        count = self.host.store.release_holds(
            list(registry.workflows), self.host.settings.app_version, fingerprints(registry), now
        )
        if count:
            log.info("trying %d held workflow(s) again with this executor's code", count)
            self.wake()

    def report_unclaimable(self, now: float) -> None:
        """Note, once each, the workflows that no executor like this one can run."""
        known = list(self.host.registry.workflows)
        version = self.host.settings.app_version
        for record in self.host.store.unclaimable_workflows(known, version, now):
            if record.id in self._reported:
                continue
            self._reported.add(record.id)
            if record.app_version != version:
                note = (
                    f"waiting for an executor of version {record.app_version!r} "
                    f"(executor {self.runner.id} runs version {version!r})"
                )
            else:
                note = (
                    f"workflow {record.name!r} is not registered in executor "
                    f"{self.runner.id}; it stays recoverable: deploy code that registers it "
                    "under this name"
                )
            log.warning("workflow %s: %s", record.id, note)
            if record.note != note:
                self.host.store.set_note(record.id, note, now)
