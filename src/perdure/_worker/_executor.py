"""The executor: the part of a process that runs workflows.

It owns a pool of threads for synchronous workflows, one event loop thread for async
workflows, a run table (every run, start, reserved slot and stranded workflow of this
process, behind one lock) and the maintenance thread (heartbeats, claims, recoveries).

Every workflow it runs is held through a lease: its row names the owner and a fencing
epoch, and the expiry is the executor's own (its row, renewed by maintenance's
heartbeat). A dead executor's workflows are taken over when its lease expires, or at
once when the executor ran on this host and its process is gone. At most
``Settings.max_workflows`` run here at once, however they were started.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from .._engine.bridge import FutureBridge
from .._engine.run import WorkflowRun
from .._engine.state import task_factory
from .._errors import (
    CheckpointFailed,
    ContinueAsNew,
    LeaseLost,
    NonDeterminismError,
    PerdureError,
    Suspended,
)
from .._fingerprint import fingerprint
from .._gauges import StoreGauges
from .._model import Outcome
from .._telemetry import finished, unwatch, watch
from ..storage import (
    ACTIVE_STATUSES,
    HELD_BY_EXECUTOR,
    ExecutorRecord,
    Lease,
    StepRecord,
    WorkflowRecord,
)
from ._holding import hold
from ._host import WorkerHost
from ._maintenance import Maintenance
from ._pool import ThreadPool
from ._table import RunTable, Slot

log = logging.getLogger("perdure")

#: (owner, lease expiry) to record a new workflow with; (None, None): unowned.
Owner = tuple[str | None, float | None]


class StartSlot:
    """``Executor.starting``: a class rather than a generator, as every start in a
    launched app enters one."""

    __slots__ = ("executor", "workflow_id")

    def __init__(self, executor: Executor, workflow_id: str) -> None:
        self.executor = executor
        self.workflow_id = workflow_id

    def __enter__(self) -> Owner:
        executor = self.executor
        if executor.table.begin_start(self.workflow_id):
            return executor.id, HELD_BY_EXECUTOR
        return None, None

    def __exit__(self, *exc_info: object) -> None:
        self.executor.table.end_start(self.workflow_id)


class Executor:
    """Runs the workflows of one app in this process; see the module docstring."""

    def __init__(self, host: WorkerHost) -> None:
        self.app = host
        self.store = host.store
        self.clock = host.clock
        self.settings = host.settings
        self.host_name = socket.gethostname()
        self.pid = os.getpid()
        self.id = f"{self.host_name}:{self.pid}:{uuid.uuid4().hex[:12]}"
        self.table = RunTable(self.settings.max_workflows)
        # Free slots at which a full table claims again (1 when it holds only a few).
        self._claim_batch = max(1, min(self.settings.max_threads, self.settings.max_workflows) // 2)
        self._lease_valid_until = 0.0
        self._pool = ThreadPool(self.settings.max_threads, "perdure-workflow", self.wake)
        self._loop = asyncio.new_event_loop()
        self._loop.set_task_factory(task_factory)
        self._bridge = FutureBridge(self._loop)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_thread = threading.Thread(
            target=self._run_loop, name="perdure-loop", daemon=True
        )
        self.maintenance = Maintenance(host, self, self.table)
        #: What the metrics' gauges read from the store while this executor runs.
        self.gauges = StoreGauges(host.database_url, lambda: self.store, self.clock.time)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Register, start the threads and recover interrupted workflows (at once)."""
        now = self.clock.time()
        self._lease_valid_until = now + self.settings.lease_seconds
        record = ExecutorRecord(
            self.id,
            self.host_name,
            self.pid,
            self.settings.app_version,
            now,
            now,
            self.lease_expiry(),
            None,
        )
        try:
            self.store.register_executor(record)
        except BaseException:
            # Never started: its event loop would otherwise be left open for the collector.
            self._loop.close()
            raise
        self._loop_thread.start()
        self.maintenance.start()
        watch(self.gauges)
        log.info("executor %s started (app version %s)", self.id, self.settings.app_version)

    def shutdown(self, grace: float) -> None:
        """Stop claiming, let running workflows finish for ``grace`` seconds, then release
        the leases of those still running so other executors take them over at once."""
        unwatch(self.gauges)
        self.maintenance.stop()
        leftover = self.table.wait_empty(grace)
        for run in leftover:
            run.release()
        try:
            released = self.store.release_workflows(self.id, self.clock.time())
        except PerdureError as exc:
            released = 0
            log.warning("could not release leases at shutdown (%s); they expire instead", exc)
        if leftover or released:
            log.info(
                "executor %s stopped; %d unfinished workflow(s) released for other executors",
                self.id,
                released,
            )
        if self._loop_thread.is_alive():
            self._loop.call_soon_threadsafe(self._cancel_tasks)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(timeout=5)
        elif not self._loop.is_closed():
            self._loop.close()
        self._pool.stop()

    def _run_loop(self) -> None:
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def _cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()

    def _lease_holds(self) -> bool:
        # Self-fencing: past the expiry of the last renewal that reached the store, another
        # executor may have claimed our workflows, so start no new step attempt.
        return self.clock.time() < self._lease_valid_until

    def renewed(self, valid_until: float) -> None:
        """The store confirmed our leases until ``valid_until`` (maintenance calls it)."""
        self._lease_valid_until = valid_until

    def lease_expiry(self) -> float:
        """When this executor's lease, renewed now, expires (its workflows' rows hold
        ``HELD_BY_EXECUTOR``: the lease is the executor's)."""
        return self.clock.time() + self.settings.lease_seconds

    def thread_room(self) -> int:
        """How many more synchronous workflows to take now (see ``ThreadPool.room``)."""
        return self._pool.room()

    def want_threads(self) -> None:
        """Wake maintenance to claim again once half a pool's room is back."""
        self._pool.want_room()

    def runs_here(self, workflow_id: str) -> bool:
        """Whether this executor is running the workflow now."""
        return self.table.runs_here(workflow_id)

    def tells(self, workflow_id: str) -> bool:
        """Whether the workflow's end here will tell its waiters its outcome itself: it
        runs here, or is being started here (its start's handle already waits)."""
        return self.table.busy(workflow_id)

    @property
    def running(self) -> int:
        """How many workflows this executor is running now."""
        return len(self.table)

    def wake(self) -> None:
        """Make the maintenance thread look for work now."""
        self.maintenance.wake()

    def next_fire(self, now: float) -> float | None:
        """When this executor fires a schedule's tick next (``Scheduler.next_fire``)."""
        return self.maintenance.scheduler.next_fire(now)

    def cancel_pushed(self) -> None:
        """The store pushed that workflows were asked to cancel: look up ours now."""
        self.maintenance.cancel_pushed()

    def cancel_local(self, workflow_ids: list[str]) -> None:
        """Tell the runs of these workflows in this process that they were asked to cancel."""
        for run in self.table.runs(workflow_ids):
            run.request_cancel()

    # -- starting in this process --------------------------------------------------------

    def starting(self, workflow_id: str) -> StartSlot:
        """Reserve a slot for a workflow this process is starting (``with``). Gives the
        owner and lease expiry to record it with: this executor's when a slot was free,
        else (None, None) (it is recorded unowned and claimed when there is room). Until
        the block ends, ``adopt`` leaves the workflow alone (its starter dispatches it)."""
        return StartSlot(self, workflow_id)

    def started(self, record: WorkflowRecord, created: bool) -> None:
        """Run a workflow this process has just started, if recorded as ours (call it
        inside ``starting``)."""
        if record.owner != self.id:
            return
        if created:
            self.dispatch(record, [], Slot.START)
        else:
            # Ours but not created now: an earlier start committed although its caller saw
            # an error (the connection died at COMMIT). Run it unless it already runs.
            self._adopt(record.id, Slot.START)

    # -- running workflows -------------------------------------------------------------

    def _new_run(self, record: WorkflowRecord, steps: list[StepRecord]) -> WorkflowRun:
        return WorkflowRun(
            record=record,
            definition=self.app.registry.workflows[record.name],
            lease=Lease(self.id, record.epoch),
            steps=steps,
            store=self.store,
            serializer=self.app.serializer,
            clock=self.clock,
            bridge=self._bridge,
            lease_holds=self._lease_holds,
            suspend_after=self.settings.suspend_after,
            poll_interval=self.settings.poll_interval,
            notifier=self.app.notifier,
        )

    def dispatch(
        self, record: WorkflowRecord, steps: list[StepRecord], slot: Slot = Slot.FREE
    ) -> bool:
        """Run a workflow that this executor owns (``record.owner`` is us) in a slot of the
        run table; False when it already runs here or no slot is free."""
        run = self._new_run(record, steps)
        if not self.table.add(run, slot):
            return False
        self._launch(run)
        return True

    def _launch(self, run: WorkflowRun) -> None:
        if run.definition.is_async:
            if run.deadline is not None:
                self._loop.call_soon_threadsafe(self._arm_deadline, run)
            self._loop.call_soon_threadsafe(self._spawn, run, context=contextvars.Context())
        else:
            # A fresh context per run: pool threads are reused and must not leak one
            # workflow's context variables into the next.
            self._pool.submit(lambda: contextvars.Context().run(self._run_sync, run))

    def _arm_deadline(self, run: WorkflowRun) -> None:
        # A running async step is interrupted at the deadline (waits end there anyway).
        assert run.deadline is not None
        delay = max(run.deadline - self.clock.time(), 0.0)
        run.deadline_timer = self._loop.call_later(delay, run.interrupt)

    def _spawn(self, run: WorkflowRun) -> None:
        task = self._loop.create_task(self._run_async(run))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _complete(self, run: WorkflowRun, outcome: Outcome) -> Future[bool]:
        return self.store.complete_workflow(
            run.workflow_id,
            run.lease,
            outcome.state,
            outcome.output,
            outcome.error,
            self.clock.time(),
            parent_id=run.record.parent_id,
            steps=run.last_steps,
        )

    def _run_sync(self, run: WorkflowRun) -> None:
        try:
            outcome = run.execute()
            completed = self._complete(run, outcome)
        except Suspended as signal:
            self._suspend(run, signal, lambda future: future.result())
            return
        except ContinueAsNew as signal:
            self._continue(run, self._continue_future(run, signal).result())
            return
        except NonDeterminismError as error:
            self._hold(run, error, lambda future: future.result())
            return
        except BaseException as exc:  # noqa: BLE001 - every way out must be accounted for
            self._finish(run, None, exc)
            if not isinstance(exc, Exception | LeaseLost | CheckpointFailed):
                raise
            return
        # The thread does not wait for the outcome's commit: whoever resolves the future
        # (the writer thread, or this one if it led the commit) finishes the run. Waiting
        # here would cost one more wake-up of this thread per workflow (a hand-off between
        # threads costs tens of µs of CPU), and the thread is free for the next one sooner.
        context = contextvars.copy_context()  # the run's log fields, for _finish's logs
        completed.add_done_callback(
            lambda future: context.run(self._completed, run, outcome, future)
        )

    def _completed(self, run: WorkflowRun, outcome: Outcome, future: Future[bool]) -> None:
        """Finish a synchronous run once its outcome's write is over (in the thread that
        resolved it)."""
        try:
            accepted = future.result()
        except Exception as exc:  # noqa: BLE001 - the store's error, as _run_sync's
            self._finish(run, None, exc)
            return
        self._finish(run, outcome if accepted else None, None)

    async def _run_async(self, run: WorkflowRun) -> None:
        try:
            try:
                outcome = await run.execute_async()
            finally:
                # Tasks the workflow created and left running end with it.
                run.cancel_tasks()
            accepted = await self._bridge.wait(self._complete(run, outcome))
        except Suspended as signal:
            future = self._suspend_future(run, signal)
            if future is not None:
                try:
                    accepted = await self._bridge.wait(future)
                except PerdureError as exc:
                    self._finish(run, None, exc)
                    return
                self._suspended(run, signal, accepted)
            return
        except ContinueAsNew as signal:
            try:
                record = await self._bridge.wait(self._continue_future(run, signal))
            except PerdureError as exc:
                self._finish(run, None, exc)
                return
            self._continue(run, record)
            return
        except NonDeterminismError as error:
            try:
                accepted = await self._bridge.wait(self._hold_future(run, error))
            except PerdureError as exc:
                self._finish(run, None, exc)
                return
            self._held(run, accepted)
            return
        except BaseException as exc:  # noqa: BLE001
            self._finish(run, None, exc)
            if not isinstance(exc, Exception | LeaseLost | CheckpointFailed):
                raise
            return
        self._finish(run, outcome if accepted else None, None)

    def _continue_future(
        self, run: WorkflowRun, signal: ContinueAsNew
    ) -> Future[WorkflowRecord | None]:
        return self.store.continue_workflow(
            run.workflow_id, run.lease, signal.inputs, self.clock.time()
        )

    def _continue(self, run: WorkflowRun, record: WorkflowRecord | None) -> None:
        """Run the workflow again from the top with its new inputs and no history, in the
        slot of its previous run (no other workflow can take it in between)."""
        if record is None:
            self._finish(run, None, None)  # logs the lost lease
            return
        log.debug(
            "workflow %s continues as new (generation %d)", run.workflow_id, record.generation
        )
        self._stop_timer(run)
        new = self._new_run(record, [])
        if self.table.replace(run, new):
            self._launch(new)

    def _suspend_future(self, run: WorkflowRun, signal: Suspended) -> Future[bool] | None:
        wake_at = signal.wake_at
        if run.deadline is not None and not run.deadline_delivered:
            wake_at = min(wake_at, run.deadline)  # it must wake to meet its deadline
        try:
            return self.store.suspend_workflow(
                run.workflow_id,
                run.lease,
                wake_at,
                signal.topic,
                self.clock.time(),
                cancel_delivered=run.signals.cancel_delivered,
            )
        except PerdureError as exc:
            self._finish(run, None, exc)
            return None

    def _suspend(
        self,
        run: WorkflowRun,
        signal: Suspended,
        settle: Callable[[Future[bool]], bool],
    ) -> None:
        """Record a workflow that waits long as suspended, and forget it: nothing of it
        stays in this process until an executor claims it when it wakes."""
        future = self._suspend_future(run, signal)
        if future is None:
            return
        try:
            accepted = settle(future)
        except PerdureError as exc:
            self._finish(run, None, exc)
            return
        self._suspended(run, signal, accepted)

    def _suspended(self, run: WorkflowRun, signal: Suspended, accepted: bool) -> None:
        if not accepted:
            self._finish(run, None, None)  # logs the lost lease
            return
        log.debug("%s", signal)
        self._forget(run)
        # The maintenance thread must wake by this workflow's wake time.
        self.wake()

    def _hold_future(self, run: WorkflowRun, error: NonDeterminismError) -> Future[bool]:
        return hold(
            self.store,
            run.workflow_id,
            run.lease,
            error,
            app_version=self.settings.app_version,
            code=fingerprint(run.definition),
            recheck=self.settings.hold_recheck,
            now=self.clock.time(),
        )

    def _hold(
        self,
        run: WorkflowRun,
        error: NonDeterminismError,
        settle: Callable[[Future[bool]], bool],
    ) -> None:
        """Hold a workflow whose code no longer replays its history (``_holding``), and
        forget it like a suspended one."""
        try:
            accepted = settle(self._hold_future(run, error))
        except PerdureError as exc:
            self._finish(run, None, exc)
            return
        self._held(run, accepted)

    def _held(self, run: WorkflowRun, accepted: bool) -> None:
        if not accepted:
            self._finish(run, None, None)  # logs the lost lease
            return
        self._forget(run)

    def _stop_timer(self, run: WorkflowRun) -> None:
        timer = run.deadline_timer
        if timer is not None:
            self._loop.call_soon_threadsafe(timer.cancel)

    def _forget(self, run: WorkflowRun, outcome: Outcome | None = None) -> None:
        """Take the run out of the table, then tell its waiters here its outcome (told
        before too), or (without one: it was suspended, held, lost its lease, or runs
        again later) poke them to read the store: none waits on for a run that is gone.
        In this order, a waiter that subscribes after it was told finds the workflow no
        longer running here, and reads its (committed) outcome."""
        self._stop_timer(run)
        if outcome is not None:
            # Told once before too: the outcome's ``done`` event (committed with it) may
            # reach the listener once the run has left the table, and would then poke the
            # waiters, its start's handle included, to read the store (``tells``).
            self.app.notifier.notify(run.workflow_id, outcome)
        if run.record.parent_id is not None or run.record.queue is not None:
            # Its parent may wait for it here, or it freed a slot of its queue: claim now.
            self.wake()
        free, running = self.table.remove(run)
        if free == self._claim_batch or running == self.settings.max_threads // 2:
            # Room again: claim what waits now, not at the next tick. After the table was
            # full, not at the first free slot but at a batch of them: a round per slot
            # would be a claim transaction per workflow that waits for room.
            self.wake()
        self.app.notifier.notify(run.workflow_id, outcome)

    def _finish(
        self,
        run: WorkflowRun,
        outcome: Outcome | None,
        exc: BaseException | None,
    ) -> None:
        if outcome is not None:
            finished(run.definition.name, outcome.state.value)
            self._forget(run, outcome)
            return
        if isinstance(exc, LeaseLost) or (exc is None):
            log.warning("%s", exc or LeaseLost(run.workflow_id, run.lease.epoch))
        elif isinstance(exc, asyncio.CancelledError) and run.released:
            pass
        else:
            # The database failed under us: keep the lease, and run the workflow again from
            # its recorded steps once the store answers (the maintenance thread does it).
            log.warning("workflow %s interrupted: %s; retrying", run.workflow_id, exc)
            self.table.strand(run.workflow_id, self.clock.time() + 1.0)
        self._forget(run)

    # -- adopting what the store says is ours ------------------------------------------

    def adopt(self, workflow_id: str) -> bool:
        """Run a workflow that the store says this executor owns, if it is still active,
        still ours, not running or being started here, and a slot is free; returns
        whether it was dispatched."""
        if self.table.busy(workflow_id):
            return False
        return self._adopt(workflow_id, Slot.FREE)

    def _adopt(self, workflow_id: str, slot: Slot) -> bool:
        if self.table.runs_here(workflow_id):
            return False
        record = self.store.get_workflow(workflow_id)
        if record is None or record.owner != self.id or record.status not in ACTIVE_STATUSES:
            return False  # finished, or taken over by another executor meanwhile
        return self.dispatch(record, self.store.load_steps(workflow_id), slot)
