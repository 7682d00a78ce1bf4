"""What ``@app.workflow`` and ``@app.step`` return: the registered function wrapped.

A workflow's wrapper starts it and waits (``app.run``), or runs it as a child inside
another workflow; a step's wrapper records it through the engine inside a workflow and
is the plain function outside one. Kept apart from ``_app`` so that the app's module is
about its surface, not about the shape of the wrappers.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ._engine.state import current_run
from ._engine.steps import call_step, call_step_async
from ._errors import ConfigurationError
from ._registry import STEP_ATTR, WORKFLOW_ATTR, StepDef, WorkflowDef


class WorkflowHost(Protocol):
    """What a workflow's wrapper needs of the app."""

    @property
    def launched(self) -> bool: ...

    def run(self, fn: str, /, *args: Any, **kwargs: Any) -> Any: ...

    async def run_async(self, fn: str, /, *args: Any, **kwargs: Any) -> Any:
        """The coroutine form of ``run``."""


def workflow_wrapper(app: WorkflowHost, definition: WorkflowDef) -> Callable[..., Any]:
    """The function ``@app.workflow`` returns: calling it runs the workflow."""
    fn = definition.fn

    if definition.is_async:

        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            _check_direct_call(app, definition)
            return await app.run_async(definition.name, *args, **kwargs)

        wrapper: Callable[..., Any] = run_async
    else:

        @functools.wraps(fn)
        def run_sync(*args: Any, **kwargs: Any) -> Any:
            _check_direct_call(app, definition)
            return app.run(definition.name, *args, **kwargs)

        wrapper = run_sync
    setattr(wrapper, WORKFLOW_ATTR, definition.name)
    return wrapper


def _check_direct_call(app: WorkflowHost, definition: WorkflowDef) -> None:
    # Called as a plain function outside any workflow, with no executor here, the
    # call would record a workflow under a random ID and wait for it forever.
    if current_run.get() is None and not app.launched:
        raise ConfigurationError(
            f"workflow {definition.name!r} was called directly, but {app!r} is not "
            "launched, so nothing in this process would run it (nothing was recorded): "
            "launch the app first (`with app:` or `app.launch()`), or start it with "
            "`app.start(...)` while a worker runs (`perdure worker module:app`)"
        )


def step_wrapper(definition: StepDef) -> Callable[..., Any]:
    """The function ``@app.step`` returns: a recorded step inside a workflow, the plain
    function outside one."""
    fn = definition.fn
    if definition.is_async:

        @functools.wraps(fn)
        def call_async(*args: Any, **kwargs: Any) -> Awaitable[Any]:
            run = current_run.get()
            if run is None:
                result: Awaitable[Any] = fn(*args, **kwargs)
                return result
            return call_step_async(run, definition, args, kwargs)

        setattr(call_async, STEP_ATTR, definition)
        return call_async

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        run = current_run.get()
        if run is None:
            return fn(*args, **kwargs)
        return call_step(run, definition, args, kwargs)

    setattr(call, STEP_ATTR, definition)
    return call
