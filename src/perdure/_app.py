"""The ``App``: registers workflows and steps, and holds a client and a worker.

The client (``perdure._client``) starts, finds and talks to workflows through the
store; the worker (``perdure._worker``) runs them in this process once the app is
launched. ``App`` keeps the public methods of both, delegating.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Mapping, Sequence
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from . import _compliance, _operating, _queueing, _regions, _scheduling
from ._breaker import CircuitBreaker
from ._client import Client
from ._clock import Clock, SystemClock
from ._decorators import step_wrapper, workflow_wrapper
from ._engine.cancelling import cancel_from_workflow, cancel_from_workflow_async
from ._engine.children import start_child, start_child_async
from ._engine.messages import send_from_workflow, send_from_workflow_async
from ._engine.state import current_run
from ._errors import ConfigurationError
from ._handle import WorkflowHandle
from ._notifier import Notifier
from ._options import StartOptions, no_child_subjects, start_options
from ._queue import Queue
from ._registry import Registry as _Registry
from ._retry import Retry
from ._serialization import JSONSerializer, Serializer
from ._settings import DEFAULT_DATABASE_URL, Settings
from ._streams import read_stream as _read_stream
from ._text import redact_url
from ._transactions import transaction as _transaction
from ._versions import VersionStatus, versions
from ._worker import Executor
from .storage import NewWorkflow, Store, WorkflowRecord

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["DEFAULT_DATABASE_URL", "App", "Settings"]


class App:
    """A set of durable workflows and steps, bound to one database (or one per region).

    ``App()`` uses ``PERDURE_DATABASE_URL``, or the SQLite file ``./perdure.db``.
    ``App(regions={"eu": url_eu, "us": url_us})``: each workflow lives wholly in the
    database of its region (``app.options(region="eu")``); see ``perdure._regions``.
    Nothing touches the database until the app is used. ``with app:`` (or
    ``app.launch()``) starts this process's executor, which runs the workflows this
    process starts and recovers those that were interrupted. ``queues=[perdure.Queue(
    ...)]`` declares the queues its workflows start in (``app.options(queue=...)``).
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        serializer: Serializer | None = None,
        clock: Clock | None = None,
        queues: Sequence[Queue] = (),
        regions: Mapping[str, str] | None = None,
        **settings: Any,
    ) -> None:
        default = database_url or os.environ.get("PERDURE_DATABASE_URL") or DEFAULT_DATABASE_URL
        self.database_url = default if regions is None else _regions.label(regions, database_url)
        self.serializer: Serializer = serializer or JSONSerializer()
        self.clock: Clock = clock or SystemClock()
        try:
            self.settings = Settings(**settings)
        except TypeError as exc:
            raise ConfigurationError(f"unknown App setting: {exc}") from exc
        self.registry = _Registry()
        #: Starts, finds and talks to workflows (the app's public methods delegate to it).
        self.client = (Client if regions is None else _regions.UnroutedClient)(
            self.database_url,
            serializer=self.serializer,
            clock=self.clock,
            settings=self.settings,
            registry=self.registry,
        )
        self._worker: Executor | None = None
        for queue in queues:
            self.add_queue(queue)
        #: The app of each region (None without ``regions``): ``app.region(name)``.
        self.regions = None if regions is None else _regions.Regions.of(self, regions, settings)

    def __repr__(self) -> str:
        return f"App({redact_url(self.database_url)!r})"

    @property
    def store(self) -> Store:
        """The store, opened and migrated on first use."""
        return self.client.store

    @property
    def notifier(self) -> Notifier:
        """Tells waiters in this process when a workflow finishes here."""
        return self.client.notifier

    @property
    def wait_interval(self) -> float:
        """How long waiters and the executor sleep between looks at the store."""
        return self.client.wait_interval

    def wake(self) -> None:
        """Make this process's executor look for work now (nothing when not launched)."""
        self.client.wake()

    def owned_here(self, owner: str | None) -> bool:
        """Whether ``owner`` (a workflow's lease holder) is this process's executor."""
        return self.client.owned_here(owner)

    @property
    def executor_id(self) -> str | None:
        """The ID of this process's executor (None when not launched)."""
        return self.client.executor_id

    def _started(self, new: NewWorkflow, record: WorkflowRecord, created: bool) -> None:
        # Today's child starts (``_children``) report a created child through this.
        self.client._started(new, record, created)

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
            return workflow_wrapper(self, self.registry.add_workflow(fn, name))

        return decorate if fn is None else decorate(fn)

    @property
    def launched(self) -> bool:
        """Whether this process's executor runs (``with app:`` or ``app.launch()``)."""
        return self._worker is not None or bool(self.regions and self.regions.served)

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
            return step_wrapper(self.registry.add_step(fn, name, retry, timeout, breaker))

        return decorate if fn is None else decorate(fn)

    # -- the executor --------------------------------------------------------------------------

    def launch(self, regions: Sequence[str] | None = None) -> App:
        """Start this process's executor (runs and recovers workflows); idempotent. With
        regions, of the ``regions`` it serves (``with app.launch(regions=["eu"]):``)."""
        if self.regions is not None or regions is not None:
            return _regions.launch(self, regions)
        if self._worker is None:
            worker = Executor(self.client)
            worker.start()
            self._worker = worker
            self.client.attach(worker)
        return self

    def shutdown(self, grace: float | None = None) -> None:
        """Stop the executor: no new claims, running workflows get ``grace`` seconds to
        finish, the rest are released to other executors; then close the database."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.shutdown(self.settings.shutdown_grace if grace is None else grace)
            self.client.attach(None)
        self.client.close()
        if self.regions is not None:
            self.regions.shutdown(grace)

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

    def cancel_local(self, workflow_ids: list[str]) -> None:
        """Tell this process's runs of these workflows they were asked to cancel (``Host``)."""
        worker = self._worker
        if worker is not None:
            worker.cancel_local(workflow_ids)

    @property
    def executor(self) -> Executor | None:
        """This process's executor while launched."""
        return self._worker

    @property
    def worker(self) -> Executor | None:
        """This process's executor while launched (another name for ``executor``)."""
        return self._worker

    # -- starting workflows ----------------------------------------------------------------
    # Typed by the workflow's ParamSpec. The options ride on ``app.options(...)``; the older
    # ``workflow_id=``/``timeout=`` keywords are still taken (the last two, unchecked, overloads).

    # ``app.options(workflow_id=, timeout=, subjects=, region=, queue=)``: ``start_options``.
    options = start_options

    def start_with(
        self,
        options: StartOptions,
        fn: Callable[..., Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> WorkflowHandle[Any]:
        """Start ``fn(*args, **kwargs)`` with ``options`` (what ``start`` and the
        starters of ``options`` call); inside a workflow, a child."""
        if self.regions is not None:
            return self.regions.start_with(options, fn, args, kwargs)
        run = current_run.get()
        if run is not None:
            o = no_child_subjects(options)
            _queueing.refuse_in_workflow(o)
            child_id = start_child(self, run, fn, args, kwargs, o.workflow_id, o.timeout)
            return self._child_handle(fn, child_id)
        return self.client.start_with(options, fn, args, kwargs)

    async def start_with_async(
        self,
        options: StartOptions,
        fn: Callable[..., Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> WorkflowHandle[Any]:
        """``start_with`` for coroutines."""
        if self.regions is not None:
            return await self.regions.start_with_async(options, fn, args, kwargs)
        run = current_run.get()
        if run is not None:
            o = no_child_subjects(options)
            _queueing.refuse_in_workflow(o)
            child_id = await start_child_async(
                self, run, fn, args, kwargs, o.workflow_id, o.timeout
            )
            return self._child_handle(fn, child_id)
        return await self.client.start_with_async(options, fn, args, kwargs)

    def _child_handle(self, fn: Callable[..., Any] | str, child_id: str) -> WorkflowHandle[Any]:
        # The registered name types the child's result without a read of its record.
        return WorkflowHandle(self.client, child_id, name=self.registry.workflow(fn).name)

    @overload
    def start(self, fn: str, /, *args: Any, **kwargs: Any) -> WorkflowHandle[Any]: ...

    @overload
    def start(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> WorkflowHandle[R]: ...

    @overload
    def start(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> WorkflowHandle[R]: ...

    @overload
    def start(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        workflow_id: str | None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> WorkflowHandle[Any]: ...

    @overload
    def start(
        self, fn: Callable[..., Any], /, *args: Any, timeout: float | None, **kwargs: Any
    ) -> WorkflowHandle[Any]: ...

    def start(
        self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any
    ) -> WorkflowHandle[Any]:
        """Start a workflow and return its handle at once (once the start is durable).

        ``fn`` is a workflow (or a registered workflow's name), called with ``args`` and
        ``kwargs``; options go through ``app.options(workflow_id=..., timeout=...)``
        (``workflow_id=`` and ``timeout=`` keywords here are still taken). Idempotent
        on ``workflow_id``: if a workflow with that ID exists, nothing runs again and
        the handle refers to it. Arguments are serialized before anything is recorded;
        one that can't be raises ``SerializationError`` and records nothing. With
        ``timeout`` (seconds), the workflow has a durable deadline measured from now:
        past it, ``DeadlineExceeded`` is raised inside it at its next step or wait, and
        it fails with ``DeadlineExceededError``.

        It runs on this process's executor at once if the app is launched and has room
        (``max_workflows``); else it is recorded PENDING for an executor to claim.
        Inside a workflow this starts a *child*: recorded, with an ID derived from the
        parent's (``parent/position``) unless given; its handle's ``result()`` is a
        durable wait, and cancelling the parent cancels it.
        """
        return self.start_with(StartOptions.pop_legacy(kwargs), fn, args, kwargs)

    @overload
    async def start_async(self, fn: str, /, *args: Any, **kwargs: Any) -> WorkflowHandle[Any]: ...

    @overload
    async def start_async(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> WorkflowHandle[R]: ...

    @overload
    async def start_async(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> WorkflowHandle[R]: ...

    @overload
    async def start_async(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        workflow_id: str | None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> WorkflowHandle[Any]: ...

    @overload
    async def start_async(
        self, fn: Callable[..., Any], /, *args: Any, timeout: float | None, **kwargs: Any
    ) -> WorkflowHandle[Any]: ...

    async def start_async(
        self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any
    ) -> WorkflowHandle[Any]:
        """``start()`` for coroutines: waits for the durable start without a thread."""
        options = StartOptions.pop_legacy(kwargs)
        return await self.start_with_async(options, fn, args, kwargs)

    @overload
    def run(self, fn: str, /, *args: Any, **kwargs: Any) -> Any: ...

    @overload
    def run(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R: ...

    @overload
    def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...

    @overload
    def run(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        workflow_id: str | None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any: ...

    @overload
    def run(
        self, fn: Callable[..., Any], /, *args: Any, timeout: float | None, **kwargs: Any
    ) -> Any: ...

    def run(self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Any:
        """Start a workflow and wait for its result (see ``start`` and ``result``).

        Without a launched app, another process's executor must run it: a warning is
        logged (once) when none of this app version is running.
        """
        self._warn_without_executor()
        return self.start(fn, *args, **kwargs).result()

    @overload
    async def run_async(self, fn: str, /, *args: Any, **kwargs: Any) -> Any: ...

    @overload
    async def run_async(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R: ...

    @overload
    async def run_async(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...

    @overload
    async def run_async(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        workflow_id: str | None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any: ...

    @overload
    async def run_async(
        self, fn: Callable[..., Any], /, *args: Any, timeout: float | None, **kwargs: Any
    ) -> Any: ...

    async def run_async(self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Any:
        """``run()`` for coroutines."""
        if current_run.get() is None and self._worker is None:
            await asyncio.to_thread(self.client.warn_without_executor)
        handle = await self.start_async(fn, *args, **kwargs)
        return await handle.result_async()

    def _warn_without_executor(self) -> None:
        if current_run.get() is None and self._worker is None:
            self.client.warn_without_executor()

    # -- talking to workflows --------------------------------------------------------------

    @_regions.by_workflow
    def send(
        self,
        workflow_id: str,
        message: Any,
        topic: str | None = None,
        idempotency_key: str | None = None,
        actor: str | None = None,
    ) -> None:
        """Send ``message`` (encoded by the app's serializer) to the workflow's
        ``perdure.recv(topic)``; durable when this returns.

        Messages of one topic are received in the order they were sent, each exactly
        once; a message sent before the workflow waits for it is kept. A repeated send
        with the same ``idempotency_key`` (per workflow) stores nothing. Raises
        ``WorkflowNotFoundError`` when no workflow has this ID, ``WorkflowFinishedError``
        when it has finished (nothing would ever receive the message).

        Inside a workflow the send is recorded like a step, and its idempotency key
        defaults to the sender's ID and position: it is delivered exactly once, also
        when the sender crashes and replays. Outside one, with ``actor`` (an operator)
        the send is logged in the operator actions log, with who and when.
        """
        run, key = current_run.get(), idempotency_key
        if run is not None:
            return send_from_workflow(self, run, workflow_id, message, topic, key)
        self.client.send(workflow_id, message, topic, idempotency_key, actor)

    @_regions.by_workflow_async
    async def send_async(
        self,
        workflow_id: str,
        message: Any,
        topic: str | None = None,
        idempotency_key: str | None = None,
        actor: str | None = None,
    ) -> None:
        """``send`` for coroutines."""
        run, key = current_run.get(), idempotency_key
        if run is not None:
            to = workflow_id
            return await send_from_workflow_async(self, run, to, message, topic, key)
        await self.client.send_async(workflow_id, message, topic, idempotency_key, actor)

    @_regions.by_workflow
    def get_event(self, workflow_id: str, key: str, timeout: float = 0.0) -> Any:
        """The value the workflow published as event ``key`` (``perdure.set_event``), or
        None if it has not within ``timeout`` seconds (0: look once).

        Looks at the store every ``poll_interval``; on PostgreSQL a set event wakes the
        wait at once. Raises ``WorkflowNotFoundError`` when no workflow has this ID.
        """
        return self.client.get_event(workflow_id, key, timeout)

    @_regions.by_workflow_async
    async def get_event_async(self, workflow_id: str, key: str, timeout: float = 0.0) -> Any:
        """``get_event`` for coroutines: waits without holding a thread."""
        return await self.client.get_event_async(workflow_id, key, timeout)

    @_regions.by_workflow
    def cancel(self, workflow_id: str, actor: str | None = None) -> bool:
        """Ask a workflow and its active descendants to cancel; durable when this returns.

        ``perdure.Cancelled`` is raised inside each at its next step or wait (a running
        async step is interrupted; a running sync step finishes first); ``finally``
        blocks and compensation steps run, and a workflow that lets it propagate ends
        CANCELLED. Returns False when the workflow had already finished or was asked
        before. Raises ``WorkflowNotFoundError`` for an unknown ID. Inside a workflow,
        the request is recorded like a step; outside, it is logged as an operator action
        by ``actor`` (default: the OS user).
        """
        run = current_run.get()
        if run is not None:
            return cancel_from_workflow(self, run, workflow_id)
        return self.client.cancel(workflow_id, actor)

    @_regions.by_workflow_async
    async def cancel_async(self, workflow_id: str, actor: str | None = None) -> bool:
        """``cancel`` for coroutines."""
        run = current_run.get()
        if run is not None:
            return await cancel_from_workflow_async(self, run, workflow_id)
        return await self.client.cancel_async(workflow_id, actor)

    # -- streams and transactional steps (docstrings in ``_streams``, ``_transactions``) --
    read_stream = _regions.by_workflow(_read_stream)
    transaction = _transaction

    # -- finding, seeing and repairing workflows; breakers ------------------------------------
    # One function each in ``_operating`` (docstrings there), bound here as methods.
    # With regions: in the region holding the workflow, or each (``_regions``).
    region = _regions.region
    retrieve = _regions.by_workflow(_operating.retrieve)
    retrieve_async = _regions.by_workflow_async(_operating.retrieve_async)
    list_workflows = _regions.list_workflows
    list_page = _regions.list_page
    inspect = _regions.by_workflow(_operating.inspect)
    inspect_async = _regions.by_workflow_async(_operating.inspect_async)
    resume = _regions.by_workflow(_operating.resume)
    resume_async = _regions.by_workflow_async(_operating.resume_async)
    fork = _regions.by_workflow(_operating.fork)
    fork_async = _regions.by_workflow_async(_operating.fork_async)
    restart = _regions.by_workflow(_operating.restart)
    restart_async = _regions.by_workflow_async(_operating.restart_async)
    resume_many = _regions.in_each(_regions.joined)(_operating.resume_many)
    cancel_many = _regions.in_each(_regions.joined)(_operating.cancel_many)
    breakers = _operating.breakers
    breaker = _operating.breaker
    open_breaker = _operating.open_breaker
    close_breaker = _operating.close_breaker
    # Compliance: retention, erasure, rekeying, the audit trail (``_compliance``).
    gc = _regions.in_each(_regions.gc_results)(_compliance.gc)
    erase = _regions.erase
    rekey = _regions.in_each(_regions.total)(_compliance.rekey)
    retry_held = _regions.by_workflow(_compliance.retry_held)
    audit_log = _compliance.audit_log

    # -- schedules: one function each in ``_scheduling`` (docstrings there) -------------------
    schedule = _scheduling.schedule
    schedules = _scheduling.schedules
    create_schedule = _scheduling.create_schedule
    pause_schedule = _scheduling.pause_schedule
    resume_schedule = _scheduling.resume_schedule
    delete_schedule = _scheduling.delete_schedule
    # Queues: one function each in ``_queueing``.
    add_queue = _queueing.add_queue
    update_queue = _queueing.update_queue
    queue = _queueing.queue
    queues = _queueing.queues

    def versions(self) -> list[VersionStatus]:
        """The app versions with active workflows (how many, held, the oldest)."""
        return versions(self.client.store)
