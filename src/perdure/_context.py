"""Where the code is running: which workflow, and which position its next step takes.

Positions must come out the same on every replay, also when an async workflow
runs steps concurrently. Each workflow (and each task that a workflow creates)
has a ``Scope``: a step takes the next number of its scope at the moment it is
*called*, and a task created inside a workflow gets a child scope named after
its place in the parent ("t0.", "t1.", ...). Neither depends on timing, only on
the order of the workflow's own code.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._runtime import WorkflowRun


class Scope:
    """The position counters of one workflow or of one task inside it."""

    __slots__ = ("next_step", "next_task", "prefix")

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.next_step = 0
        self.next_task = 0

    def take_position(self) -> str:
        """The position of the next step called in this scope."""
        position = f"{self.prefix}{self.next_step}"
        self.next_step += 1
        return position

    def peek(self) -> str:
        """The position the next step called in this scope will take."""
        return f"{self.prefix}{self.next_step}"

    def child(self) -> Scope:
        """The scope of the next task created in this scope."""
        child = Scope(f"{self.prefix}t{self.next_task}.")
        self.next_task += 1
        return child


current_run: contextvars.ContextVar[WorkflowRun | None] = contextvars.ContextVar(
    "perdure_run", default=None
)
# Stays set while a step runs (current_run is cleared there), so that a step can build an
# idempotency key from its workflow's ID.
current_workflow_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "perdure_workflow_id", default=None
)
current_scope: contextvars.ContextVar[Scope | None] = contextvars.ContextVar(
    "perdure_scope", default=None
)


def task_factory(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
    **kwargs: Any,
) -> asyncio.Task[Any]:
    """The executor loop's task factory: a task created inside a workflow gets the next
    child scope, so the steps it calls get replay-stable positions."""
    parent = current_scope.get()
    run = current_run.get()
    if parent is None or run is None or "context" in kwargs:
        return asyncio.Task(coro, loop=loop, **kwargs)
    # The task copies the current context when it is created, so setting the child
    # scope around its creation hands the child, and only the child, its own scope.
    token = current_scope.set(parent.child())
    try:
        task = asyncio.Task(coro, loop=loop, **kwargs)
    finally:
        current_scope.reset(token)
    run.track(task)
    return task
