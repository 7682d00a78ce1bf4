"""Start options as a value: ``app.options(workflow_id=..., timeout=...)``.

``StartOptions`` is a frozen dataclass: how to start a workflow, apart from its
arguments. ``app.options(...)`` returns a ``Starter`` bound to the app, whose
``start``/``run``/``start_async``/``run_async`` are typed by the workflow's
signature (a ParamSpec): options can't ride next to ``*args: P.args`` in one
signature (PEP 612), so they ride on the starter instead. A coroutine function's
result type is unwrapped: an ``async def`` workflow returning ``T`` gives a
``WorkflowHandle[T]``.

To add an option: add a field here, validate it in ``__post_init__``, give
``App.options`` its keyword, and read it where the client builds the new workflow
(``Client.prepare``, or ``_queueing.entry`` for the flow-control options).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from ._errors import ConfigurationError
from ._handle import WorkflowHandle
from ._queue import check_priority, check_queue_key
from ._validation import (
    check_name,
    check_optional_workflow_id,
    non_negative_seconds,
    optional_positive_seconds,
)

P = ParamSpec("P")
R = TypeVar("R")

#: The options that ``app.start(fn, ..., workflow_id=..., timeout=...)`` still takes as
#: keywords (taken out of the workflow's keyword arguments). New options are only
#: given through ``app.options``: a keyword such as ``key=`` may be the workflow's own.
LEGACY_KEYWORDS = ("workflow_id", "timeout")


@dataclass(frozen=True)
class StartOptions:
    """How to start a workflow (apart from its arguments); every field defaults to "not
    given"."""

    #: The workflow's ID (idempotent: a second start with it starts nothing); when None,
    #: a new UUID whose leading bits are the time (version 7: IDs sort by the millisecond
    #: they were made in), or ``parent/position`` for a child started in a workflow.
    workflow_id: str | None = None
    #: Seconds from the start until the workflow's durable deadline, or None for none.
    timeout: float | None = None
    #: The data subjects whose data the workflow holds (``app.erase(subject=...)`` erases
    #: its payloads, its children's and its forks').
    subjects: tuple[str, ...] = field(default=())
    #: The queue it starts in (``perdure.Queue``, declared on the app), or None.
    queue: str | None = None
    #: Its key in the queue (a customer, a tenant...): the queue's ``key_concurrency``
    #: and its round robin count by key; with ``debounce``, the key of the window.
    key: str | None = None
    #: Lower numbers start first in the queue; equal ones in the order they were started.
    priority: int = 0
    #: Seconds (or a ``timedelta``) before which it does not start.
    delay: float | timedelta | None = None
    #: While an active workflow of the same queue has this ID, a start returns its
    #: handle instead of starting another.
    dedup_id: str | None = None
    #: Seconds (or a ``timedelta``): starts of the same workflow with the same key (and
    #: queue) within this window of each other collapse into one run, with the latest
    #: arguments, which starts once no start came for this long.
    debounce: float | timedelta | None = None
    #: The region whose database holds the workflow (an app with ``regions=``); None on
    #: an app without regions, and for a child (it lives in its parent's region).
    region: str | None = None

    def __post_init__(self) -> None:
        # Refused here, before anything is recorded: an empty ID is not taken for None (a
        # repeated start would no longer be idempotent), a NaN timeout is not a deadline.
        check_optional_workflow_id(self.workflow_id)
        optional_positive_seconds("timeout", self.timeout)
        if self.subjects != ():
            object.__setattr__(self, "subjects", subjects_of(self.subjects))
        if (
            not self.queued
            and self.key is None
            and type(self.priority) is int
            and self.priority == 0
        ):
            return  # no flow control given (the usual start): nothing more to check
        if self.queue is not None:
            check_name("queue", self.queue)
        check_queue_key("key", self.key)
        check_queue_key("dedup_id", self.dedup_id)
        check_priority(self.priority)
        for name in ("delay", "debounce"):
            value = getattr(self, name)
            if isinstance(value, timedelta):
                value = value.total_seconds()
            if value is not None:
                object.__setattr__(self, name, non_negative_seconds(name, value))
        self._check_combination()

    def _check_combination(self) -> None:
        if self.queue is None and self.priority:
            raise ConfigurationError("priority= orders a queue: give queue= too")
        if self.queue is None and self.key is not None and self.debounce is None:
            raise ConfigurationError(
                "key= is a key in a queue or a debounce: give queue= or debounce="
            )
        if self.debounce is not None:
            if self.key is None:
                raise ConfigurationError(
                    "debounce= collapses the starts that share a key: give key= too"
                )
            if self.workflow_id is not None or self.dedup_id is not None:
                raise ConfigurationError(
                    "debounce= collapses starts into the first one's workflow: do not give "
                    "workflow_id= or dedup_id= with it"
                )

    @property
    def queued(self) -> bool:
        """Whether the workflow goes through flow control (a queue, a delay, a
        deduplication ID or a debounce): it is recorded unowned, for a claim."""
        return (
            self.queue is not None
            or self.delay is not None
            or self.dedup_id is not None
            or self.debounce is not None
        )

    @classmethod
    def pop_legacy(cls, kwargs: dict[str, Any]) -> StartOptions:
        """The options given as keywords next to a workflow's arguments (the older form
        ``app.start(fn, x, workflow_id=...)``), removed from ``kwargs``."""
        given = {name: kwargs.pop(name) for name in LEGACY_KEYWORDS if name in kwargs}
        # Most starts give none: the shared default (frozen) spares building and checking one.
        return cls(**given) if given else NO_OPTIONS


def subjects_of(subjects: Sequence[str] | str | None) -> tuple[str, ...]:
    """Data subject IDs as a tuple, each checked like a name (not empty, at most 1,000
    bytes; a lone string is one subject, not its characters), in the order given,
    without repeats."""
    if subjects is None:
        return ()
    given = [subjects] if isinstance(subjects, str) else list(subjects)
    return tuple(dict.fromkeys(check_name("data subject", subject) for subject in given))


def no_child_subjects(options: StartOptions) -> StartOptions:
    """``options`` for a child started inside a workflow: a child holds its parent's data
    and is erased with it, so subjects of its own are refused (``ConfigurationError``)
    rather than silently dropped."""
    if options.subjects:
        raise ConfigurationError(
            "a child workflow cannot be tagged with subjects of its own: it is erased with "
            "its parent (app.erase erases a tagged workflow's children and forks); tag the "
            "workflow that starts it, or start it outside a workflow"
        )
    return options


#: The options of a start that gives none (every field "not given").
NO_OPTIONS = StartOptions()


class StartBackend(Protocol):
    """What starts workflows with options (the client; a ``Protocol``, so that this module
    does not import it)."""

    def start_with(
        self,
        options: StartOptions,
        fn: Callable[..., Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> WorkflowHandle[Any]:
        """Start ``fn(*args, **kwargs)`` with these options; see ``App.start``."""
        ...

    async def start_with_async(
        self,
        options: StartOptions,
        fn: Callable[..., Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> WorkflowHandle[Any]:
        """``start_with`` for coroutines."""
        ...


class OptionsHost(StartBackend, Protocol):
    """What ``app.options`` needs of the app: starting, and knowing its regions."""

    def region(self, name: str) -> Any:
        """The app of region ``name``; ``ConfigurationError`` for an unknown one."""
        ...


def start_options(
    app: OptionsHost,
    *,
    workflow_id: str | None = None,
    timeout: float | None = None,
    subjects: Sequence[str] | None = None,
    region: str | None = None,
    queue: str | None = None,
    key: str | None = None,
    priority: int = 0,
    delay: float | timedelta | None = None,
    dedup_id: str | None = None,
    debounce: float | timedelta | None = None,
) -> Starter:
    """Start options as a value: ``app.options(workflow_id="order-42", timeout=60)
    .start(checkout, order)``. The returned starter's ``start``, ``run``,
    ``start_async`` and ``run_async`` check the arguments against the workflow.

    ``workflow_id`` makes the start idempotent (a workflow with that ID is not
    started again); ``timeout`` (seconds) gives the workflow a durable deadline;
    ``subjects`` tags it with the data subjects whose data it holds, for
    ``app.erase(subject=...)`` (its children and forks are erased with it);
    ``region`` names the region whose database holds it, on an app with ``regions``
    (``ConfigurationError`` naming the app's regions for another one). Flow control
    (see ``StartOptions`` and README "Queues"): ``queue`` (declared with
    ``perdure.Queue``), ``key``, ``priority`` (lower first), ``delay``; ``dedup_id`` (a
    start while an active workflow of the queue has it returns that workflow's handle);
    ``debounce`` with ``key`` (starts collapse into one run with the latest arguments).
    """
    if region is not None:
        app.region(region)  # refused here, before anything runs, unless it is the app's
    chosen = StartOptions(
        workflow_id=workflow_id,
        timeout=timeout,
        subjects=subjects_of(subjects),
        region=region,
        queue=queue,
        key=key,
        priority=priority,
        delay=delay,
        dedup_id=dedup_id,
        debounce=debounce,
    )
    return Starter(app, chosen)


class Starter:
    """Starts workflows with a fixed set of options; made by ``app.options(...)``.

    ``app.options(workflow_id="order-42", timeout=60).start(checkout, order)`` is
    ``app.start(checkout, order)`` with those options; the arguments are checked
    against the workflow's signature.
    """

    def __init__(self, backend: StartBackend, options: StartOptions) -> None:
        self._backend = backend
        self.options = options

    def __repr__(self) -> str:
        return f"Starter({self.options!r})"

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

    def start(
        self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any
    ) -> WorkflowHandle[Any]:
        """Start a workflow with these options; see ``App.start``."""
        return self._backend.start_with(self.options, fn, args, kwargs)

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

    async def start_async(
        self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any
    ) -> WorkflowHandle[Any]:
        """``start`` for coroutines."""
        return await self._backend.start_with_async(self.options, fn, args, kwargs)

    @overload
    def run(self, fn: str, /, *args: Any, **kwargs: Any) -> Any: ...

    @overload
    def run(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R: ...

    @overload
    def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def run(self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Any:
        """Start a workflow with these options and wait for its result."""
        return self._backend.start_with(self.options, fn, args, kwargs).result()

    @overload
    async def run_async(self, fn: str, /, *args: Any, **kwargs: Any) -> Any: ...

    @overload
    async def run_async(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R: ...

    @overload
    async def run_async(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...

    async def run_async(self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Any:
        """``run`` for coroutines."""
        handle = await self._backend.start_with_async(self.options, fn, args, kwargs)
        return await handle.result_async()
