"""The ``App``: registers workflows and steps, starts them, and runs an executor."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from ._breaker import Breakers, CircuitBreaker
from ._clock import Clock, SystemClock
from ._engine.cancelling import cancel_from_workflow, cancel_from_workflow_async
from ._engine.state import current_run
from ._engine.steps import call_step, call_step_async
from ._errors import ConfigurationError, WorkflowNotFoundError
from ._executor import Executor
from ._handle import WorkflowHandle, WorkflowStatus
from ._notifier import Notifier
from ._registry import WORKFLOW_ATTR, WorkflowDef
from ._registry import Registry as _Registry
from ._retry import Retry
from ._serialization import JSONSerializer, Serializer, encode_call
from ._starting import Starting
from ._talking import Talking
from .storage import (
    EVENT_CANCEL,
    EVENT_DONE,
    EVENT_EVENT,
    EVENT_READY,
    EVENT_RESYNC,
    EVENT_WAKE,
    NewWorkflow,
    Store,
    WorkflowRecord,
    open_store,
)

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("perdure")

#: The database used when neither ``App(url)`` nor ``PERDURE_DATABASE_URL`` names one.
DEFAULT_DATABASE_URL = "sqlite:///perdure.db"


@dataclass(frozen=True)
class Settings:
    """How an app's executor behaves; every field has a keyword of the same name on ``App``."""

    #: Recorded on every workflow this app starts; an executor only runs its own version.
    app_version: str = field(default_factory=lambda: os.environ.get("PERDURE_APP_VERSION", "1"))
    #: How long a lease lasts without a heartbeat (heartbeats come every third of it).
    lease_seconds: float = 15.0
    #: How often the executor looks for work that others started, and waiters poll.
    poll_interval: float = 0.2
    #: Threads for synchronous workflows (each running one holds one).
    max_threads: int = 64
    #: Workflows one executor runs at once; it claims no more.
    max_workflows: int = 1000
    #: How often workflows that no executor can run are reported.
    report_interval: float = 30.0
    #: Seconds that shutdown waits for running workflows before releasing them.
    shutdown_grace: float = 10.0
    #: A workflow that waits (sleep, recv, a retry's backoff, a failing probe, an open
    #: circuit breaker) longer than this is suspended: it holds no thread or memory until
    #: it wakes. Shorter waits wait in place.
    suspend_after: float = 1.0


class App(Starting, Talking, Breakers):
    """A set of durable workflows and steps, bound to one database.

    ``App()`` uses ``PERDURE_DATABASE_URL``, or the SQLite file ``./perdure.db``.
    Nothing touches the database until the app is used. ``with app:`` (or
    ``app.launch()``) starts this process's executor, which runs the workflows this
    process starts and recovers those that were interrupted.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        serializer: Serializer | None = None,
        clock: Clock | None = None,
        **settings: Any,
    ) -> None:
        self.database_url = (
            database_url or os.environ.get("PERDURE_DATABASE_URL") or DEFAULT_DATABASE_URL
        )
        self.serializer: Serializer = serializer or JSONSerializer()
        self.clock: Clock = clock or SystemClock()
        try:
            self.settings = Settings(**settings)
        except TypeError as exc:
            raise ConfigurationError(f"unknown App setting: {exc}") from exc
        self.registry = _Registry()
        self.notifier = Notifier()
        self._store: Store | None = None
        self._store_lock = threading.Lock()
        self._executor: Executor | None = None
        self._pushed = False

    def __repr__(self) -> str:
        return f"App({self.database_url!r})"

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
                        # Pushed events (PostgreSQL) wake waiters and the executor at once;
                        # without them both poll.
                        self._pushed = opened.listen(self._on_store_event)
                    except BaseException:
                        opened.close()
                        raise
                    self._store = opened
                store = self._store
        return store

    @property
    def wait_interval(self) -> float:
        """How long waiters and the executor sleep between looks at the store: the poll
        interval, or a slow fallback poll when the store pushes events."""
        return (
            max(self.settings.poll_interval, 2.0) if self._pushed else self.settings.poll_interval
        )

    def _on_store_event(self, event: str) -> None:
        executor = self._executor
        if event.startswith(EVENT_DONE):
            workflow_id = event[len(EVENT_DONE) :]
            # One that runs here tells its waiters itself, with its outcome: a poke would
            # only make them read the store again.
            if executor is None or not executor.runs_here(workflow_id):
                self.notifier.poke(workflow_id)
        elif event.startswith(EVENT_EVENT):
            self.notifier.poke(event)  # get_event waiters subscribe under the event's name
        elif event == EVENT_RESYNC:
            self.notifier.poke_all()
        if executor is not None and event in (EVENT_CANCEL, EVENT_RESYNC):
            executor.cancel_pushed()
        if executor is not None and event in (EVENT_READY, EVENT_RESYNC, EVENT_WAKE):
            executor.wake()

    # -- registration ------------------------------------------------------------------------

    @overload
    def workflow(self, fn: Callable[P, R], /) -> Callable[P, R]: ...

    @overload
    def workflow(
        self, *, name: str | None = None
    ) -> Callable[[Callable[P, R]], Callable[P, R]]: ...

    def workflow(self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None) -> Any:  # type: ignore[misc]
        """Register a workflow: ``@app.workflow`` or ``@app.workflow(name="...")``.

        The function runs from the top whenever it (re)starts, so it must be
        deterministic given its arguments and the results of its steps; do side effects
        in steps. Calling the decorated function starts it and waits for its result
        (``app.run``); inside another workflow, that runs it as a child.
        """

        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            definition = self.registry.add_workflow(fn, name)
            return self._workflow_wrapper(definition)

        return decorate if fn is None else decorate(fn)

    def _workflow_wrapper(self, definition: WorkflowDef) -> Callable[..., Any]:
        fn = definition.fn

        if definition.is_async:

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                return await self.run_async(definition.name, *args, **kwargs)

            wrapper: Callable[..., Any] = run_async
        else:

            @functools.wraps(fn)
            def run_sync(*args: Any, **kwargs: Any) -> Any:
                return self.run(definition.name, *args, **kwargs)

            wrapper = run_sync
        setattr(wrapper, WORKFLOW_ATTR, definition.name)
        return wrapper

    @overload
    def step(self, fn: Callable[P, R], /) -> Callable[P, R]: ...

    @overload
    def step(
        self,
        *,
        name: str | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]: ...

    def step(  # type: ignore[misc]
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> Any:
        """Register a step: ``@app.step`` or ``@app.step(retry=Retry(...), timeout=30)``.

        Inside a workflow, a step's result is recorded when it completes and returned
        from the record on replay; a failed attempt is retried by ``retry`` (default:
        no retry). An attempt that runs longer than ``timeout`` seconds fails with
        ``StepTimeoutError`` and records nothing else: an async step is cancelled (one
        that catches the cancellation and returns anyway still failed); a sync one runs
        in a thread of its own, which is abandoned: its late result is discarded, and
        the step's next attempt does not start until that thread has ended (no two
        attempts of one step run at once in a process). Whatever the body raises is a
        failed attempt, ``BaseException`` included (``KeyboardInterrupt``,
        ``SystemExit``, your own): it is recorded and retried when ``retry.retry_on``
        covers it, and the workflow then sees ``StepFailedError``. With ``breaker``, the
        step is behind that circuit breaker: while it is open, the workflow parks
        instead of calling. Outside a workflow, calling a step just runs the function.
        """

        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            definition = self.registry.add_step(fn, name, retry, timeout, breaker)
            if definition.is_async:

                @functools.wraps(fn)
                def call_async(*args: Any, **kwargs: Any) -> Awaitable[Any]:
                    run = current_run.get()
                    if run is None:
                        result: Awaitable[Any] = fn(*args, **kwargs)
                        return result
                    return call_step_async(run, definition, args, kwargs)

                return call_async

            @functools.wraps(fn)
            def call(*args: Any, **kwargs: Any) -> Any:
                run = current_run.get()
                if run is None:
                    return fn(*args, **kwargs)
                return call_step(run, definition, args, kwargs)

            return call

        return decorate if fn is None else decorate(fn)

    # -- the executor --------------------------------------------------------------------------

    def launch(self) -> None:
        """Start this process's executor: it runs the workflows this app starts and
        recovers interrupted ones. Idempotent."""
        if self._executor is None:
            executor = Executor(self)
            executor.start()
            self._executor = executor

    def shutdown(self, grace: float | None = None) -> None:
        """Stop the executor: no new claims, running workflows get ``grace`` seconds to
        finish, the rest are released to other executors; then close the database."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(self.settings.shutdown_grace if grace is None else grace)
        with self._store_lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()

    def __enter__(self) -> App:
        self.launch()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def wake(self) -> None:
        """Make this process's executor look for work now (the engine's ``Host``)."""
        executor = self._executor
        if executor is not None:
            executor.wake()

    def cancel_local(self, workflow_ids: list[str]) -> None:
        """Tell this process's runs of these workflows that they were asked to cancel."""
        executor = self._executor
        if executor is not None:
            executor.cancel_local(workflow_ids)

    @property
    def executor(self) -> Executor | None:
        """This process's executor while launched."""
        return self._executor

    # -- starting and finding workflows -----------------------------------------------------------

    def _prepare(
        self,
        fn: Callable[..., Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        workflow_id: str | None,
        timeout: float | None = None,
    ) -> tuple[NewWorkflow, str | None, float | None]:
        definition = self.registry.workflow(fn)
        inputs = encode_call(
            self.serializer, definition.fn, args, kwargs, f"workflow {definition.name!r}"
        )
        if timeout is not None and timeout <= 0:
            raise ConfigurationError(
                f"a workflow timeout must be positive seconds, not {timeout!r}"
            )
        now = self.clock.time()
        new = NewWorkflow(
            id=workflow_id or str(uuid.uuid4()),
            name=definition.name,
            inputs=inputs,
            serializer=self.serializer.name,
            app_version=self.settings.app_version,
            created_at=now,
            deadline_at=None if timeout is None else now + timeout,
        )
        executor = self._executor
        if executor is None:
            return new, None, None
        return new, executor.id, executor.lease_expiry()

    def _starting(
        self, workflow_id: str, owner: str | None
    ) -> contextlib.AbstractContextManager[None]:
        executor = self._executor
        if owner is None or executor is None:
            return contextlib.nullcontext()
        return executor.starting(workflow_id)

    def _started(self, new: NewWorkflow, record: WorkflowRecord, created: bool) -> None:
        if not created and record.name != new.name:
            raise ConfigurationError(
                f"workflow ID {new.id!r} already belongs to a {record.name!r} workflow; "
                f"it was not started again as {new.name!r}: choose another ID"
            )
        executor = self._executor
        if executor is None or record.owner != executor.id:
            return
        if created:
            executor.dispatch(record, [])
        else:
            # Ours but not created now: an earlier start committed although its caller saw
            # an error (the connection died at COMMIT). Run it unless it already runs.
            executor.adopt(record.id)

    def cancel(self, workflow_id: str) -> bool:
        """Ask a workflow and its active descendants to cancel; durable when this returns.

        ``perdure.Cancelled`` is raised inside each at its next step or wait (a running
        async step is interrupted; a running sync step finishes first); ``finally``
        blocks and compensation steps run, and a workflow that lets it propagate ends
        CANCELLED. Returns False when the workflow had already finished or was asked
        before. Raises ``WorkflowNotFoundError`` for an unknown ID. Inside a workflow,
        the request is recorded like a step.
        """
        run = current_run.get()
        if run is not None:
            return cancel_from_workflow(self, run, workflow_id)
        return self._cancel(workflow_id)

    def _cancel(self, workflow_id: str) -> bool:
        asked = self.store.cancel_workflow(workflow_id, self.clock.time())
        if asked is None:
            raise WorkflowNotFoundError(workflow_id)
        executor = self._executor
        if executor is not None and asked:
            executor.cancel_local(asked)
            executor.wake()  # suspended ones were woken: claim them now
        return bool(asked)

    async def cancel_async(self, workflow_id: str) -> bool:
        """``cancel`` for coroutines."""
        run = current_run.get()
        if run is not None:
            return await cancel_from_workflow_async(self, run, workflow_id)
        return await asyncio.to_thread(self._cancel, workflow_id)

    def retrieve(self, workflow_id: str) -> WorkflowHandle[Any]:
        """A handle to an existing workflow; raises ``WorkflowNotFoundError`` if none."""
        handle: WorkflowHandle[Any] = WorkflowHandle(self, workflow_id)
        handle._record()
        return handle

    async def retrieve_async(self, workflow_id: str) -> WorkflowHandle[Any]:
        """``retrieve`` for coroutines."""
        return await asyncio.to_thread(self.retrieve, workflow_id)

    def list_workflows(
        self, *, status: str | None = None, name: str | None = None, limit: int = 100
    ) -> list[WorkflowStatus]:
        """The newest workflows matching the filters (their steps are not loaded)."""
        records = self.store.list_workflows(status=status, name=name, limit=limit)
        return [WorkflowStatus.from_records(record, []) for record in records]
