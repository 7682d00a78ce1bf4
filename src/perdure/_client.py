"""The client: talks to workflows through the store. It starts them, sends them
messages, cancels them, finds them, reads their events and the circuit breakers.

Every method works with or without a worker in this process. With one attached, a
workflow started here runs here at once when the worker has room, and the worker is
woken when a call made work claimable. Its methods act outside workflows: inside one,
``start``, ``send`` and ``cancel`` are recorded operations of the engine, which the
``App`` hands them to before it calls the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from ._breaker import BreakerStatus, CircuitBreaker
from ._clock import Clock
from ._engine.bridge import loop_bridge
from ._errors import (
    StoreError,
    StoreInDoubtError,
    StoreUnavailableError,
    WorkflowFinishedError,
    WorkflowNotFoundError,
    workflow_id_taken,
)
from ._handle import WorkflowHandle, WorkflowStatus
from ._ids import new_workflow_id
from ._inspect import check_queue_filter
from ._model import Outcome
from ._notifier import Notifier
from ._options import StartOptions
from ._queueing import submit, submitted
from ._registry import Registry
from ._repair import actor_or_default
from ._serialization import Serializer, decode_value, encode_call, encode_value
from ._settings import Settings
from ._telemetry import carrier, started
from ._validation import (
    check_idempotency_key,
    check_key,
    check_optional_key,
    check_workflow_id,
    non_negative_seconds,
)
from ._watch import SharedReads, Watcher
from ._worker import Executor, Owner
from .storage import (
    EVENT_CANCEL,
    EVENT_DONE,
    EVENT_EVENT,
    EVENT_READY,
    EVENT_RESYNC,
    EVENT_STREAM,
    EVENT_WAKE,
    NewWorkflow,
    Store,
    WorkflowRecord,
    open_store,
)

log = logging.getLogger("perdure")


_DOUBTFUL = (StoreInDoubtError, StoreUnavailableError)
#: The slot of a start without a worker in this process: recorded unowned.
_UNOWNED: contextlib.nullcontext[Owner] = contextlib.nullcontext((None, None))


def _start_failed(workflow_id: str, exc: StoreError, kind: str) -> StoreError:
    """The error of a start that failed at the store, saying whether the workflow was
    recorded: not when SQLite was busy (nothing was written, or the transaction was
    still open and rolled back); perhaps when a commit failed in doubt, or PostgreSQL
    went away (perhaps while committing). It names the ID (perhaps a random one the
    caller has not seen) and keeps the error's type (an outage stays retryable)."""
    if isinstance(exc, StoreUnavailableError) and kind == "sqlite":
        message = f"workflow {workflow_id!r} was not started (nothing was recorded): {exc}"
    else:
        wait = " once the database answers" if isinstance(exc, StoreUnavailableError) else ""
        message = (
            f"workflow {workflow_id!r} may have been started or not: {exc}. Look it up with "
            f"app.retrieve({workflow_id!r}){wait}, or start it again with workflow_id="
            f"{workflow_id!r}: a start with the same ID is idempotent (it never starts the "
            "workflow twice)"
        )
    error = type(exc)(message)
    error.__cause__ = exc
    return error


class Client:
    """Starts, finds and talks to the workflows of one database; see the module
    docstring. It is also the *host* the engine and handles call back into: ``store``,
    ``serializer``, ``clock``, ``registry``, ``settings``, ``notifier`` and ``wake()``."""

    def __init__(
        self,
        database_url: str,
        *,
        serializer: Serializer,
        clock: Clock,
        settings: Settings,
        registry: Registry,
    ) -> None:
        self.database_url = database_url
        self.serializer = serializer
        self.clock = clock
        self.settings = settings
        self.registry = registry
        self.notifier = Notifier()
        # Waiters of workflows that run elsewhere share one look at the store.
        self.watcher = Watcher(self.notifier, lambda: self._store, lambda: self.wait_interval)
        # And the records that waiters on an event loop read at once, one query per batch.
        self.reads = SharedReads(lambda: self.store, lambda: self.executor_id)
        self._store: Store | None = None
        self._store_lock = threading.Lock()
        self._pushed = False
        self._worker: Executor | None = None
        self._warned_no_executor = False
        self._executors_checked_at = float("-inf")

    # -- the store -------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The store, opened and migrated on first use."""
        store = self._store
        if store is None:
            with self._store_lock:
                if self._store is None:
                    opened = open_store(self.database_url)
                    try:
                        opened.migrate()
                        # Pushed events (PostgreSQL) wake waiters and the worker at once;
                        # without them both poll.
                        self._pushed = opened.listen(self._on_store_event)
                    except BaseException:
                        opened.close()
                        raise
                    self._store = opened
                store = self._store
        return store

    @property
    def opened_store(self) -> Store | None:
        """The store if it is open, without opening it (what the metrics' gauges read:
        a scrape never reopens the database of an app that was shut down)."""
        return self._store

    def close(self) -> None:
        """Close the store (it opens again on next use)."""
        self.watcher.close()
        with self._store_lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()

    @property
    def wait_interval(self) -> float:
        """How long waiters and the worker sleep between looks at the store: the poll
        interval, or a slow fallback poll when the store pushes events."""
        return (
            max(self.settings.poll_interval, 2.0) if self._pushed else self.settings.poll_interval
        )

    def _on_store_event(self, event: str) -> None:
        worker = self._worker
        if event.startswith(EVENT_DONE):
            workflow_id = event[len(EVENT_DONE) :]
            # One that runs here tells its waiters itself, with its outcome: a poke would
            # only make them read the store again.
            if worker is None or not worker.tells(workflow_id):
                self.notifier.poke(workflow_id)
        elif event.startswith((EVENT_EVENT, EVENT_STREAM)):
            self.notifier.poke(event)  # get_event waiters subscribe under the event's name
        elif event == EVENT_RESYNC:
            # The listener's first connect too, which may come while the first runs here
            # are under way: their handles hear their outcomes, and read nothing.
            self.notifier.poke_all(None if worker is None else worker.tells)
        if worker is not None and event in (EVENT_CANCEL, EVENT_RESYNC):
            worker.cancel_pushed()
        if worker is not None and event in (EVENT_READY, EVENT_RESYNC, EVENT_WAKE):
            worker.wake()

    # -- the worker in this process --------------------------------------------------------

    @property
    def worker(self) -> Executor | None:
        """This process's worker, while one is attached (the app is launched)."""
        return self._worker

    def attach(self, worker: Executor | None) -> None:
        """Run what this client starts on ``worker`` (None: on no worker in this process)."""
        self._worker = worker

    def wake(self) -> None:
        """Make this process's worker look for work now; nothing without one."""
        worker = self._worker
        if worker is not None:
            worker.wake()

    def runs_here(self, workflow_id: str) -> bool:
        """Whether this process's executor runs the workflow now."""
        worker = self._worker
        return worker is not None and worker.runs_here(workflow_id)

    def owned_here(self, owner: str | None) -> bool:
        """Whether ``owner`` (a workflow's lease holder) is this process's worker."""
        worker = self._worker
        return worker is not None and owner is not None and owner == worker.id

    @property
    def executor_id(self) -> str | None:
        """The ID of this process's executor (None when not launched): what its waiters
        mark the workflows they wait for with (``Store.watch_workflows``)."""
        worker = self._worker
        return None if worker is None else worker.id

    def warn_without_executor(self) -> None:
        """Log once when no live executor of this app version is registered: a workflow
        ``run`` from here would wait for one forever."""
        if self._warned_no_executor or self._worker is not None:
            return
        now = self.clock.time()
        if now - self._executors_checked_at < self.settings.report_interval:
            return  # looked lately: one query per run would be too many for a client
        self._executors_checked_at = now
        version = self.settings.app_version
        live = any(
            executor.app_version == version
            and executor.stopped_at is None
            and executor.lease_expires_at > now
            for executor in self.store.list_executors()
        )
        if not live:
            self._warned_no_executor = True
            log.warning(
                "no executor of app version %r is running on %s: the workflow waits until "
                "one starts (launch the app with `with app:` or app.launch(), or run "
                "`perdure worker module:app`)",
                version,
                self.database_url,
            )

    # -- starting --------------------------------------------------------------------------

    def prepare(
        self,
        fn: Callable[..., Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: StartOptions,
    ) -> NewWorkflow:
        """The record of a new workflow, its arguments encoded (``SerializationError``
        before anything is recorded)."""
        definition = self.registry.workflow(fn)
        inputs = encode_call(
            self.serializer, definition.fn, args, kwargs, f"workflow {definition.name!r}"
        )
        now = self.clock.time()
        timeout = options.timeout
        return NewWorkflow(
            id=options.workflow_id or new_workflow_id(),
            name=definition.name,
            inputs=inputs,
            serializer=self.serializer.name,
            app_version=self.settings.app_version,
            created_at=now,
            deadline_at=None if timeout is None else now + timeout,
            subjects=options.subjects,
            trace_context=carrier(),  # its executions continue the caller's trace
        )

    def _slot(self, workflow_id: str) -> contextlib.AbstractContextManager[Owner]:
        # (owner, lease expiry) to record a new workflow with: the worker's when it has
        # room (the workflow runs here at once), else none (claimed when there is room).
        worker = self._worker
        return _UNOWNED if worker is None else worker.starting(workflow_id)

    def _started(
        self, new: NewWorkflow, record: WorkflowRecord, created: bool
    ) -> Future[Outcome | None] | None:
        """Run the workflow just started if it is ours; returns, for one created here and
        run here, the future that the executor resolves with its outcome (or with None
        when the run ends without one, e.g. suspended): its handle's ``result()`` then
        needs no read of the store."""
        if not created and record.name != new.name:
            raise workflow_id_taken(new.id, record.name, new.name)
        if created:
            started(new.name)
        worker = self._worker
        if worker is None:
            return None
        if record.owner is None:
            # No slot was free (or one was only reserved by a claim round under way): let
            # the next claim round look now rather than at its next tick.
            worker.wake()
            return None
        # Subscribed before the run is dispatched, so that one ending at once is heard.
        heard = None
        if created and record.owner == worker.id:
            heard = self.notifier.subscribe(record.id)
        worker.started(record, created)
        return heard

    def start_with(
        self,
        options: StartOptions,
        fn: Callable[..., Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> WorkflowHandle[Any]:
        """Start ``fn(*args, **kwargs)`` with ``options`` (outside a workflow); see
        ``App.start``."""
        new = self.prepare(fn, args, kwargs, options)
        if options.queued:  # never run at once: a queue's claim starts it
            try:
                record, created = submit(self, new, options).result()
            except _DOUBTFUL as exc:
                raise _start_failed(new.id, exc, self.store.kind) from exc
            return WorkflowHandle(self, submitted(self, new, record, created))
        with self._slot(new.id) as (owner, lease):
            try:
                record, created = self.store.create_workflow(new, owner, lease).result()
            except _DOUBTFUL as exc:
                raise _start_failed(new.id, exc, self.store.kind) from exc
            heard = self._started(new, record, created)
        # Named: its result() can then wait for a run here without reading the store.
        return WorkflowHandle(self, new.id, record.name, heard, created and record.owner is None)

    async def start_with_async(
        self,
        options: StartOptions,
        fn: Callable[..., Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> WorkflowHandle[Any]:
        """``start_with`` for coroutines: waits for the durable start without a thread."""
        new = self.prepare(fn, args, kwargs, options)
        if options.queued:
            try:
                record, created = await loop_bridge().wait(submit(self, new, options))
            except _DOUBTFUL as exc:
                raise _start_failed(new.id, exc, self.store.kind) from exc
            return WorkflowHandle(self, submitted(self, new, record, created))
        with self._slot(new.id) as (owner, lease):
            future = self.store.create_workflow(new, owner, lease)
            try:
                # The starts of a gather commit in batches: one wake of the loop for each.
                record, created = await loop_bridge().wait(future)
            except _DOUBTFUL as exc:
                raise _start_failed(new.id, exc, self.store.kind) from exc
            heard = self._started(new, record, created)
        # Named: its result() can then wait for a run here without reading the store.
        return WorkflowHandle(self, new.id, record.name, heard, created and record.owner is None)

    # -- sending ---------------------------------------------------------------------------

    def _send(
        self,
        workflow_id: str,
        message: Any,
        topic: str | None,
        idempotency_key: str | None,
        actor: str | None,
    ) -> Future[bool | None]:
        check_workflow_id(workflow_id)
        check_optional_key("topic", topic)
        check_idempotency_key(idempotency_key)
        check_optional_key("actor", actor)
        where = "the default topic" if not topic else f"topic {topic!r}"
        what = f"the message to workflow {workflow_id!r} on {where}"
        payload = encode_value(self.serializer, message, Any, what)
        now = self.clock.time()
        topic = "" if topic is None else topic
        return self.store.send_message(
            workflow_id, topic, payload, idempotency_key, now, actor, trace_context=carrier()
        )

    def _sent(self, workflow_id: str, stored: bool | None) -> None:
        if stored is None:
            record = self.store.get_workflow(workflow_id)
            if record is None:
                raise WorkflowNotFoundError(workflow_id)
            raise WorkflowFinishedError(workflow_id, record.status)
        if stored:
            self.wake()  # the message may have made a workflow claimable now

    def send(
        self,
        workflow_id: str,
        message: Any,
        topic: str | None = None,
        idempotency_key: str | None = None,
        actor: str | None = None,
    ) -> None:
        """``App.send`` outside a workflow: durable when this returns; logged as an
        operator action when ``actor`` is given."""
        future = self._send(workflow_id, message, topic, idempotency_key, actor)
        self._sent(workflow_id, future.result())

    async def send_async(
        self,
        workflow_id: str,
        message: Any,
        topic: str | None = None,
        idempotency_key: str | None = None,
        actor: str | None = None,
    ) -> None:
        """``send`` for coroutines."""
        future = self._send(workflow_id, message, topic, idempotency_key, actor)
        self._sent(workflow_id, await asyncio.wrap_future(future))

    # -- cancelling ------------------------------------------------------------------------

    def cancel(self, workflow_id: str, actor: str | None = None) -> bool:
        """``App.cancel`` outside a workflow: durable when this returns; logged as an
        operator action by ``actor`` (default: the OS user)."""
        return self._cancel(workflow_id, actor)

    async def cancel_async(self, workflow_id: str, actor: str | None = None) -> bool:
        """``cancel`` for coroutines."""
        return await asyncio.to_thread(self._cancel, workflow_id, actor)

    def _cancel(self, workflow_id: str, actor: str | None) -> bool:
        check_workflow_id(workflow_id)
        who = actor_or_default(actor)
        asked = self.store.cancel_workflow(workflow_id, self.clock.time(), who)
        if asked is None:
            raise WorkflowNotFoundError(workflow_id)
        worker = self._worker
        if worker is not None and asked:
            worker.cancel_local(asked)
            worker.wake()  # suspended ones were woken: claim them now
        return bool(asked)

    # -- finding ---------------------------------------------------------------------------

    def retrieve(self, workflow_id: str) -> WorkflowHandle[Any]:
        """A handle to an existing workflow; raises ``WorkflowNotFoundError`` if none."""
        handle: WorkflowHandle[Any] = WorkflowHandle(self, check_workflow_id(workflow_id))
        handle._record()
        return handle

    async def retrieve_async(self, workflow_id: str) -> WorkflowHandle[Any]:
        """``retrieve`` for coroutines."""
        return await asyncio.to_thread(self.retrieve, workflow_id)

    def list_workflows(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        limit: int = 100,
        queue: str | None = None,
        key: str | None = None,
    ) -> list[WorkflowStatus]:
        """The newest workflows matching the filters (their steps are not loaded);
        ``queue`` and ``key`` (with ``queue``) keep a queue's, of one key."""
        check_queue_filter(queue, key)
        records = self.store.list_workflows(
            status=status, name=name, limit=limit, queue=queue, key=key
        )
        return [WorkflowStatus.from_records(record, []) for record in records]

    # -- events ----------------------------------------------------------------------------

    def _event(self, workflow_id: str, key: str, first: bool) -> tuple[bool, Any]:
        value = self.store.get_event(workflow_id, key)
        if value is not None:
            what = f"the value of event {key!r} of workflow {workflow_id!r}"
            return True, decode_value(self.serializer, value, Any, what)
        if first and self.store.get_workflow(workflow_id) is None:
            raise WorkflowNotFoundError(workflow_id)
        return False, None

    def _event_deadline(self, workflow_id: str, key: str, timeout: float) -> float:
        check_workflow_id(workflow_id)
        check_key("event key", key)
        return self.clock.time() + non_negative_seconds("timeout", timeout)

    def _event_wait(self, deadline: float) -> float:
        return min(self.wait_interval, deadline - self.clock.time())

    def get_event(self, workflow_id: str, key: str, timeout: float = 0.0) -> Any:
        """``App.get_event``."""
        deadline = self._event_deadline(workflow_id, key, timeout)
        first = True
        while True:
            waiter = self.notifier.subscribe(EVENT_EVENT + workflow_id)
            try:
                found, value = self._event(workflow_id, key, first)
                first = False
                if found:
                    return value
                wait = self._event_wait(deadline)
                if wait <= 0:
                    return None
                with contextlib.suppress(FutureTimeout):
                    waiter.result(timeout=wait)
            finally:
                self.notifier.unsubscribe(EVENT_EVENT + workflow_id, waiter)

    async def get_event_async(self, workflow_id: str, key: str, timeout: float = 0.0) -> Any:
        """``get_event`` for coroutines: waits without holding a thread."""
        deadline = self._event_deadline(workflow_id, key, timeout)
        first = True
        while True:
            waiter = self.notifier.subscribe(EVENT_EVENT + workflow_id)
            wrapped = asyncio.wrap_future(waiter)
            try:
                found, value = await asyncio.to_thread(self._event, workflow_id, key, first)
                first = False
                if found:
                    return value
                wait = self._event_wait(deadline)
                if wait <= 0:
                    return None
                await asyncio.wait({wrapped}, timeout=wait)
            finally:
                self.notifier.unsubscribe(EVENT_EVENT + workflow_id, waiter)
                wrapped.cancel()

    # -- circuit breakers ------------------------------------------------------------------

    def breakers(self) -> list[BreakerStatus]:
        """``App.breakers``."""
        stored = self.store.list_breakers()
        found = {record.name: BreakerStatus.from_record(record) for record in stored}
        for step in self.registry.steps.values():
            if step.breaker is not None and step.breaker.name not in found:
                found[step.breaker.name] = BreakerStatus.closed(step.breaker.name)
        return [found[name] for name in sorted(found)]

    def breaker(self, name: str | CircuitBreaker) -> BreakerStatus:
        """``App.breaker``."""
        key = name.name if isinstance(name, CircuitBreaker) else name
        for status in self.breakers():
            if status.name == key:
                return status
        return BreakerStatus.closed(key)
