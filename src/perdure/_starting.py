"""Starting workflows: ``start``, ``run`` and their async twins, typed against the workflow.

Type checkers cannot check ``*args`` against a workflow's signature *and* accept a
``workflow_id=`` keyword in one signature (PEP 612 forbids keyword-only parameters
after ``*args: P.args``). So each method has overloads: positional calls of up to
three arguments accept ``workflow_id=`` and are checked; any other call is
checked through the workflow's ParamSpec, without options. A coroutine
function's result type is unwrapped, so a handle of an ``async def`` workflow
returning ``T`` is a ``WorkflowHandle[T]``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, overload

from ._engine.children import start_child, start_child_async
from ._engine.state import current_run
from ._handle import WorkflowHandle
from .storage import NewWorkflow, Store, WorkflowRecord

if TYPE_CHECKING:
    from ._app import App

P = ParamSpec("P")
R = TypeVar("R")
A1 = TypeVar("A1")
A2 = TypeVar("A2")
A3 = TypeVar("A3")


class Starting:
    """The start/run methods of ``App`` (a mixin: ``App`` provides what they use)."""

    @property
    def store(self) -> Store:
        raise NotImplementedError

    def _prepare(
        self,
        fn: Callable[..., Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        workflow_id: str | None,
        timeout: float | None = None,
    ) -> tuple[NewWorkflow, str | None, float | None]:
        raise NotImplementedError

    def _started(self, new: NewWorkflow, record: WorkflowRecord, created: bool) -> None:
        raise NotImplementedError

    def _starting(
        self, workflow_id: str, owner: str | None
    ) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    @overload
    def start(
        self,
        fn: Callable[[], Coroutine[Any, Any, R]],
        /,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> WorkflowHandle[R]: ...

    @overload
    def start(
        self,
        fn: Callable[[], R],
        /,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> WorkflowHandle[R]: ...

    @overload
    def start(
        self,
        fn: Callable[[A1], Coroutine[Any, Any, R]],
        /,
        a1: A1,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> WorkflowHandle[R]: ...

    @overload
    def start(
        self,
        fn: Callable[[A1], R],
        /,
        a1: A1,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> WorkflowHandle[R]: ...

    @overload
    def start(
        self,
        fn: Callable[[A1, A2], Coroutine[Any, Any, R]],
        /,
        a1: A1,
        a2: A2,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> WorkflowHandle[R]: ...

    @overload
    def start(
        self,
        fn: Callable[[A1, A2], R],
        /,
        a1: A1,
        a2: A2,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> WorkflowHandle[R]: ...

    @overload
    def start(
        self,
        fn: Callable[[A1, A2, A3], Coroutine[Any, Any, R]],
        /,
        a1: A1,
        a2: A2,
        a3: A3,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> WorkflowHandle[R]: ...

    @overload
    def start(
        self,
        fn: Callable[[A1, A2, A3], R],
        /,
        a1: A1,
        a2: A2,
        a3: A3,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> WorkflowHandle[R]: ...

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
        fn: str,
        /,
        *args: Any,
        workflow_id: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> WorkflowHandle[Any]: ...

    def start(
        self,
        fn: Callable[..., Any] | str,
        /,
        *args: Any,
        **kwargs: Any,
    ) -> WorkflowHandle[Any]:
        """Start a workflow and return its handle at once (once the start is durable).

        Idempotent on ``workflow_id``: if a workflow with that ID exists, nothing runs
        again and the handle refers to it. Arguments are serialized before anything is
        recorded; one that can't be raises ``SerializationError`` and records nothing.
        ``fn`` may also be a registered workflow's name. With ``timeout`` (seconds), the
        workflow has a durable deadline measured from now: past it, ``DeadlineExceeded``
        is raised inside it at its next step or wait, and it fails with
        ``DeadlineExceededError``.

        Inside a workflow this starts a *child*: recorded, with an ID derived from the
        parent's (``parent/position``) unless given; its handle's ``result()`` is a
        durable wait, and cancelling the parent cancels it.
        """
        workflow_id = kwargs.pop("workflow_id", None)
        timeout = kwargs.pop("timeout", None)
        run = current_run.get()
        if run is not None:
            app = cast("App", self)
            child_id = start_child(app, run, fn, args, kwargs, workflow_id, timeout)
            return WorkflowHandle(app, child_id, name=app.registry.workflow(fn).name)
        new, owner, lease = self._prepare(fn, args, kwargs, workflow_id, timeout)
        with self._starting(new.id, owner):
            record, created = self.store.create_workflow(new, owner, lease).result()
            self._started(new, record, created)
        return WorkflowHandle(cast("App", self), new.id)

    @overload
    async def start_async(
        self,
        fn: Callable[[], Coroutine[Any, Any, R]],
        /,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> WorkflowHandle[R]: ...

    @overload
    async def start_async(
        self,
        fn: Callable[[], R],
        /,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> WorkflowHandle[R]: ...

    @overload
    async def start_async(
        self,
        fn: Callable[[A1], Coroutine[Any, Any, R]],
        /,
        a1: A1,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> WorkflowHandle[R]: ...

    @overload
    async def start_async(
        self,
        fn: Callable[[A1], R],
        /,
        a1: A1,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> WorkflowHandle[R]: ...

    @overload
    async def start_async(
        self,
        fn: Callable[[A1, A2], Coroutine[Any, Any, R]],
        /,
        a1: A1,
        a2: A2,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> WorkflowHandle[R]: ...

    @overload
    async def start_async(
        self,
        fn: Callable[[A1, A2], R],
        /,
        a1: A1,
        a2: A2,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> WorkflowHandle[R]: ...

    @overload
    async def start_async(
        self,
        fn: Callable[[A1, A2, A3], Coroutine[Any, Any, R]],
        /,
        a1: A1,
        a2: A2,
        a3: A3,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> WorkflowHandle[R]: ...

    @overload
    async def start_async(
        self,
        fn: Callable[[A1, A2, A3], R],
        /,
        a1: A1,
        a2: A2,
        a3: A3,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> WorkflowHandle[R]: ...

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
        fn: str,
        /,
        *args: Any,
        workflow_id: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> WorkflowHandle[Any]: ...

    async def start_async(
        self,
        fn: Callable[..., Any] | str,
        /,
        *args: Any,
        **kwargs: Any,
    ) -> WorkflowHandle[Any]:
        """``start()`` for coroutines: waits for the durable start without a thread."""
        workflow_id = kwargs.pop("workflow_id", None)
        timeout = kwargs.pop("timeout", None)
        run = current_run.get()
        if run is not None:
            app = cast("App", self)
            child_id = await start_child_async(app, run, fn, args, kwargs, workflow_id, timeout)
            return WorkflowHandle(app, child_id, name=app.registry.workflow(fn).name)
        new, owner, lease = self._prepare(fn, args, kwargs, workflow_id, timeout)
        with self._starting(new.id, owner):
            future = self.store.create_workflow(new, owner, lease)
            record, created = await asyncio.wrap_future(future)
            self._started(new, record, created)
        return WorkflowHandle(cast("App", self), new.id)

    @overload
    def run(
        self,
        fn: Callable[[], Coroutine[Any, Any, R]],
        /,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> R: ...

    @overload
    def run(
        self,
        fn: Callable[[], R],
        /,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> R: ...

    @overload
    def run(
        self,
        fn: Callable[[A1], Coroutine[Any, Any, R]],
        /,
        a1: A1,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> R: ...

    @overload
    def run(
        self,
        fn: Callable[[A1], R],
        /,
        a1: A1,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> R: ...

    @overload
    def run(
        self,
        fn: Callable[[A1, A2], Coroutine[Any, Any, R]],
        /,
        a1: A1,
        a2: A2,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> R: ...

    @overload
    def run(
        self,
        fn: Callable[[A1, A2], R],
        /,
        a1: A1,
        a2: A2,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> R: ...

    @overload
    def run(
        self,
        fn: Callable[[A1, A2, A3], Coroutine[Any, Any, R]],
        /,
        a1: A1,
        a2: A2,
        a3: A3,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> R: ...

    @overload
    def run(
        self,
        fn: Callable[[A1, A2, A3], R],
        /,
        a1: A1,
        a2: A2,
        a3: A3,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> R: ...

    @overload
    def run(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R: ...

    @overload
    def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...

    @overload
    def run(
        self,
        fn: str,
        /,
        *args: Any,
        workflow_id: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any: ...

    def run(
        self,
        fn: Callable[..., Any] | str,
        /,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Start a workflow and wait for its result (see ``start`` and ``result``)."""
        return self.start(fn, *args, **kwargs).result()

    @overload
    async def run_async(
        self,
        fn: Callable[[], Coroutine[Any, Any, R]],
        /,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> R: ...

    @overload
    async def run_async(
        self,
        fn: Callable[[], R],
        /,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> R: ...

    @overload
    async def run_async(
        self,
        fn: Callable[[A1], Coroutine[Any, Any, R]],
        /,
        a1: A1,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> R: ...

    @overload
    async def run_async(
        self,
        fn: Callable[[A1], R],
        /,
        a1: A1,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> R: ...

    @overload
    async def run_async(
        self,
        fn: Callable[[A1, A2], Coroutine[Any, Any, R]],
        /,
        a1: A1,
        a2: A2,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> R: ...

    @overload
    async def run_async(
        self,
        fn: Callable[[A1, A2], R],
        /,
        a1: A1,
        a2: A2,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> R: ...

    @overload
    async def run_async(
        self,
        fn: Callable[[A1, A2, A3], Coroutine[Any, Any, R]],
        /,
        a1: A1,
        a2: A2,
        a3: A3,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> R: ...

    @overload
    async def run_async(
        self,
        fn: Callable[[A1, A2, A3], R],
        /,
        a1: A1,
        a2: A2,
        a3: A3,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
    ) -> R: ...

    @overload
    async def run_async(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R: ...

    @overload
    async def run_async(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...

    @overload
    async def run_async(
        self,
        fn: str,
        /,
        *args: Any,
        workflow_id: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any: ...

    async def run_async(
        self,
        fn: Callable[..., Any] | str,
        /,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """``run()`` for coroutines."""
        handle = await self.start_async(fn, *args, **kwargs)
        return await handle.result_async()
