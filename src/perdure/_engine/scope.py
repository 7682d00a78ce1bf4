"""Where the code is running: which workflow, and which position its next step takes.

Positions must come out the same on every replay, also when an async workflow
runs steps concurrently. Each workflow (and each task that a workflow creates)
has a ``Scope``: a step takes the next number of its scope at the moment it is
*called*, and a task created inside a workflow gets a child scope named after
its place in the parent ("t0.", "t1.", ...). Neither depends on timing, only on
the order of the workflow's own code.
"""

from __future__ import annotations

import contextvars


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


# Stays set while a step runs (the current run is cleared there), so that a step can
# build an idempotency key from its workflow's ID.
current_workflow_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "perdure_workflow_id", default=None
)
current_scope: contextvars.ContextVar[Scope | None] = contextvars.ContextVar(
    "perdure_scope", default=None
)


def scope() -> Scope:
    """The scope of the running workflow code (a run always has one)."""
    current = current_scope.get()
    assert current is not None, "a workflow run always has a scope"
    return current
