"""The executor: the part of a process that runs workflows.

It owns a pool of threads for synchronous workflows, one event loop thread for
async workflows, and one maintenance thread that heartbeats its leases, claims
workflows that nobody runs (new ones started by other processes, and those of
executors that died) and retries executions whose checkpoint failed.

Every workflow it runs is held through a lease in the store (owner, expiry,
fencing epoch). A dead executor's workflows are taken over when their lease
expires, or at once when the executor ran on this host and its process is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._bridge import FutureBridge
from ._context import task_factory
from ._errors import CheckpointFailed, ContinueAsNew, LeaseLost, PerdureError, Suspended
from ._model import Outcome
from ._runtime import WorkflowRun
from .storage import ACTIVE_STATUSES, ExecutorRecord, Lease, StepRecord, WorkflowRecord

if TYPE_CHECKING:
    from ._app import App

log = logging.getLogger("perdure")

#: Seconds the maintenance thread sleeps past a wake time before claiming.
_WAKE_MARGIN = 0.005


class _ThreadPool:
    """Daemon threads started on demand: a workflow stuck in user code must not keep the
    process from exiting after shutdown (``ThreadPoolExecutor`` joins its threads)."""

    def __init__(self, max_threads: int, name: str) -> None:
        self._max = max_threads
        self._name = name
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._backlog = 0

    def submit(self, fn: Callable[[], None]) -> None:
        # Each item is matched with a thread at once: an idle thread is reserved for it (not
        # merely seen idle, or several items submitted together would all count on the same
        # thread and run one after another), else a new thread starts, else it waits in
        # the backlog for the next thread that finishes.
        with self._lock:
            start = False
            if self._idle > 0:
                self._idle -= 1
            elif self._threads < self._max:
                self._threads += 1
                start = True
            else:
                self._backlog += 1
        self._queue.put(fn)
        if start:
            threading.Thread(
                target=self._work, name=f"{self._name}-{self._threads}", daemon=True
            ).start()

    def _work(self) -> None:
        while True:
            fn = self._queue.get()
            if fn is None:
                return
            try:
                fn()
            except BaseException:  # noqa: BLE001 - a pool thread must survive anything
                log.exception("perdure executor thread failed")
            with self._lock:
                if self._backlog > 0:
                    self._backlog -= 1  # the next queued item is this thread's
                else:
                    self._idle += 1

    def stop(self) -> None:
        for _ in range(self._threads):
            self._queue.put(None)


def _process_gone(pid: int) -> bool:
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


class Executor:
    """Runs the workflows of one app in this process; see the module docstring."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.store = app.store
        self.clock = app.clock
        self.settings = app.settings
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.id = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:12]}"
        self._runs: dict[str, WorkflowRun] = {}
        self._stranded: dict[str, float] = {}
        self._starting: set[str] = set()
        self._lease_valid_until = 0.0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._pool = _ThreadPool(self.settings.max_threads, "perdure-workflow")
        self._loop = asyncio.new_event_loop()
        self._loop.set_task_factory(task_factory)
        self._bridge = FutureBridge(self._loop)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_thread = threading.Thread(
            target=self._run_loop, name="perdure-loop", daemon=True
        )
        self._maintenance = threading.Thread(
            target=self._maintain, name="perdure-maintenance", daemon=True
        )
        self._reported: set[str] = set()
        # Set when the store pushed that workflows were asked to cancel.
        self._cancels_pushed = False

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Register, start the threads and recover interrupted workflows (at once)."""
        now = self.clock.time()
        self._lease_valid_until = now + self.settings.lease_seconds
        self.store.register_executor(
            ExecutorRecord(
                self.id,
                self.host,
                self.pid,
                self.settings.app_version,
                now,
                now,
                self.lease_expiry(),
                None,
            )
        )
        self._loop_thread.start()
        self._maintenance.start()
        log.info("executor %s started (app version %s)", self.id, self.settings.app_version)

    def shutdown(self, grace: float) -> None:
        """Stop claiming, let running workflows finish for ``grace`` seconds, then release
        the leases of those still running so other executors take them over at once."""
        self._stop.set()
        self._wake.set()
        if self._maintenance.is_alive():
            self._maintenance.join()
        with self._idle:
            self._idle.wait_for(lambda: not self._runs, timeout=grace)
            leftover = list(self._runs.values())
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

    def lease_expiry(self) -> float:
        """When a lease taken or renewed now expires."""
        return self.clock.time() + self.settings.lease_seconds

    def runs_here(self, workflow_id: str) -> bool:
        """Whether this executor is running the workflow now."""
        return workflow_id in self._runs

    @property
    def running(self) -> int:
        """How many workflows this executor is running now."""
        return len(self._runs)

    # -- running workflows -------------------------------------------------------------

    def dispatch(self, record: WorkflowRecord, steps: list[StepRecord]) -> None:
        """Run a workflow that this executor has just claimed (``record.owner`` is us),
        unless it already runs here."""
        definition = self.app.registry.workflows[record.name]
        run = WorkflowRun(
            record=record,
            definition=definition,
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
        with self._lock:
            if record.id in self._runs:
                return
            self._runs[record.id] = run
        if run.deadline is not None and definition.is_async:
            self._loop.call_soon_threadsafe(self._arm_deadline, run)
        if definition.is_async:
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
        )

    def _run_sync(self, run: WorkflowRun) -> None:
        try:
            outcome = run.execute()
            accepted = self._complete(run, outcome).result()
        except Suspended as signal:
            self._suspend(run, signal, lambda future: future.result())
            return
        except ContinueAsNew as signal:
            self._continue(run, signal, self._continue_future(run, signal).result())
            return
        except BaseException as exc:  # noqa: BLE001 - every way out must be accounted for
            self._finish(run, None, exc)
            if not isinstance(exc, Exception | LeaseLost | CheckpointFailed):
                raise
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
            self._continue(run, signal, record)
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

    def _continue(
        self, run: WorkflowRun, signal: ContinueAsNew, record: WorkflowRecord | None
    ) -> None:
        """Run the workflow again from the top with its new inputs and no history."""
        if record is None:
            self._finish(run, None, None)  # logs the lost lease
            return
        log.debug(
            "workflow %s continues as new (generation %d)", run.workflow_id, record.generation
        )
        self._forget(run)
        self.dispatch(record, [])

    def _suspend_future(self, run: WorkflowRun, signal: Suspended) -> Future[bool] | None:
        wake_at = signal.wake_at
        if run.deadline is not None and not run.deadline_delivered:
            wake_at = min(wake_at, run.deadline)  # it must wake to meet its deadline
        try:
            return self.store.suspend_workflow(
                run.workflow_id, run.lease, wake_at, signal.topic, self.clock.time()
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
        self._wake.set()

    def _forget(self, run: WorkflowRun) -> None:
        timer = run.deadline_timer
        if timer is not None:
            self._loop.call_soon_threadsafe(timer.cancel)
        if run.record.parent_id is not None:
            self.wake()  # its parent may wait for it here: claim the parent now
        with self._idle:
            was_full = len(self._runs) >= self.settings.max_workflows
            if self._runs.get(run.workflow_id) is run:
                del self._runs[run.workflow_id]
            running = len(self._runs)
            self._idle.notify_all()
        if was_full or running == self.settings.max_threads // 2:
            self.wake()  # room again: claim what waits now, not at the next tick

    def _finish(
        self,
        run: WorkflowRun,
        outcome: Outcome | None,
        exc: BaseException | None,
    ) -> None:
        if outcome is not None:
            self.app.notifier.notify(run.workflow_id, outcome)
        elif isinstance(exc, LeaseLost) or (exc is None):
            log.warning("%s", exc or LeaseLost(run.workflow_id, run.lease.epoch))
        elif isinstance(exc, asyncio.CancelledError) and run.released:
            pass
        else:
            # The database failed under us: keep the lease, and run the workflow again from
            # its recorded steps once the store answers (the maintenance thread does it).
            log.warning("workflow %s interrupted: %s; retrying", run.workflow_id, exc)
            with self._lock:
                self._stranded[run.workflow_id] = self.clock.time() + 1.0
        self._forget(run)

    # -- maintenance ---------------------------------------------------------------------

    def wake(self) -> None:
        """Make the maintenance thread look for work now."""
        self._wake.set()

    def cancel_pushed(self) -> None:
        """The store pushed that workflows were asked to cancel: look up ours now."""
        self._cancels_pushed = True
        self._wake.set()

    def cancel_local(self, workflow_ids: list[str]) -> None:
        """Tell the runs of these workflows in this process that they were asked to cancel."""
        with self._lock:
            runs = [self._runs[wid] for wid in workflow_ids if wid in self._runs]
        for run in runs:
            run.request_cancel()

    def _check_cancels(self) -> None:
        self._cancels_pushed = False
        self.cancel_local(self.store.cancel_requests(self.id))

    def _maintain(self) -> None:
        settings = self.settings
        next_heartbeat = 0.0
        next_report = 0.0
        failures = 0
        while not self._stop.is_set():
            now = self.clock.time()
            try:
                if now >= next_heartbeat:
                    self._heartbeat()
                    next_heartbeat = now + settings.lease_seconds / 3
                    self._adopt_orphans()
                    self._check_cancels()
                elif self._cancels_pushed:
                    self._check_cancels()
                self._retry_stranded(now)
                self._claim(now)
                if now >= next_report:
                    self._report_unclaimable(now)
                    next_report = now + settings.report_interval
                failures = 0
                next_wake = self.store.next_wake_at(after=now)
            except PerdureError as exc:
                failures += 1
                next_wake = None
                log.warning("executor %s maintenance failed (%s); retrying", self.id, exc)
            delay = min(self.app.wait_interval * 2**failures, settings.lease_seconds / 3)
            if next_wake is not None:
                # Wake when the next suspended workflow does (a hair after, so that the
                # claim finds it due).
                delay = min(delay, max(next_wake - self.clock.time(), 0.0) + _WAKE_MARGIN)
            self._wake.wait(delay)
            self._wake.clear()

    def _heartbeat(self) -> None:
        began = time.monotonic()
        expires = self.lease_expiry()
        renewed = self.store.heartbeat(self.id, self.clock.time(), expires)
        # Runs the store no longer confirms as ours (taken over while we were paused or cut
        # off) start nothing more; only then may the renewed ones go on.
        with self._lock:
            for run in self._runs.values():
                if run.workflow_id not in renewed and run.dispatched_at < began:
                    run.release("its lease was not renewed: another executor may own it now")
        self._lease_valid_until = expires

    def _claim(self, now: float) -> None:
        capacity = self.settings.max_workflows - len(self._runs)
        if capacity <= 0:
            return
        claimed = self.store.claim_workflows(
            self.id,
            list(self.app.registry.workflows),
            self.settings.app_version,
            now,
            self.lease_expiry(),
            dead_owners=self._dead_owners(),
            # A round claims what the executor can start soon, leaving the rest to others.
            limit=min(capacity, self.settings.max_threads),
        )
        if len(claimed) == self.settings.max_threads and self.running < self.settings.max_workflows:
            self.wake()  # there may be more: go on claiming after this round
        for record in claimed:
            if record.recoveries:
                log.info("recovering workflow %s (%s)", record.id, record.name)
            # Epoch 1 after a claim: it was never owned before, so it has no steps to load.
            steps = [] if record.epoch == 1 else self.store.load_steps(record.id)
            self.dispatch(record, steps)

    def _dead_owners(self) -> list[str]:
        dead = [
            executor.id
            for executor in self.store.list_executors()
            if executor.host == self.host
            and executor.id != self.id
            and executor.pid != self.pid
            and _process_gone(executor.pid)
        ]
        for executor_id in dead:
            # Hand its workflows to whoever claims next and mark it stopped, so the list of
            # executors to check does not grow with every crash.
            count = self.store.release_workflows(executor_id, self.clock.time())
            log.info(
                "executor %s is gone (its process died); released %d workflow(s)",
                executor_id,
                count,
            )
        return dead

    @contextlib.contextmanager
    def starting(self, workflow_id: str) -> Iterator[None]:
        """Mark a workflow that this process is starting (and will dispatch itself), so
        that ``adopt`` leaves it alone between its commit and its dispatch."""
        with self._lock:
            self._starting.add(workflow_id)
        try:
            yield
        finally:
            with self._lock:
                self._starting.discard(workflow_id)

    def adopt(self, workflow_id: str) -> bool:
        """Run a workflow that the store says this executor owns, if it is still active,
        still ours and not running here; returns whether it was dispatched."""
        if workflow_id in self._runs or workflow_id in self._starting:
            return False
        record = self.store.get_workflow(workflow_id)
        if record is None or record.owner != self.id or record.status not in ACTIVE_STATUSES:
            return False  # finished, or taken over by another executor meanwhile
        self.dispatch(record, self.store.load_steps(workflow_id))
        return True

    def _retry_stranded(self, now: float) -> None:
        due = [wid for wid, when in self._stranded.items() if when <= now]
        for workflow_id in due:
            self.adopt(workflow_id)
            with self._lock:
                self._stranded.pop(workflow_id, None)

    def _adopt_orphans(self) -> None:
        # A claim or a start can commit while its caller sees an error (the connection
        # died at COMMIT): the store then says we own a workflow that we do not run.
        # Without this, our heartbeats would keep its lease alive and nobody would run it.
        for workflow_id in self.store.owned_workflows(self.id):
            if workflow_id not in self._runs and self.adopt(workflow_id):
                log.warning("workflow %s was ours but not running; resumed it", workflow_id)

    def _report_unclaimable(self, now: float) -> None:
        known = list(self.app.registry.workflows)
        version = self.settings.app_version
        for record in self.store.unclaimable_workflows(known, version, now):
            if record.id in self._reported:
                continue
            self._reported.add(record.id)
            if record.app_version != version:
                note = (
                    f"waiting for an executor of version {record.app_version!r} "
                    f"(executor {self.id} runs version {version!r})"
                )
            else:
                note = (
                    f"workflow {record.name!r} is not registered in executor {self.id}; "
                    "it stays recoverable: deploy code that registers it under this name"
                )
            log.warning("workflow %s: %s", record.id, note)
            if record.note != note:
                self.store.set_note(record.id, note, now)
