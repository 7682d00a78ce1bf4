"""What ``@app.workflow`` and ``@app.step`` register: definitions keyed by name; and the
queues an app declares."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._breaker import CircuitBreaker
from ._errors import ConfigurationError, UnknownWorkflowError
from ._queue import Queue
from ._retry import NO_RETRY, Retry
from ._schedules import ScheduleSpec
from ._serialization import return_hint
from ._validation import check_name, optional_positive_seconds


@dataclass(frozen=True)
class StepDef:
    """A registered step."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    retry: Retry
    #: Seconds one attempt may take (``StepTimeoutError`` past it), or None.
    timeout: float | None = None
    breaker: CircuitBreaker | None = None
    #: A transactional step (``@app.transaction``): runs inside the transaction that
    #: records it.
    transaction: bool = False

    @functools.cached_property
    def return_hint(self) -> Any:
        """The annotated return type, which recorded results are decoded to (read once: every step
        and every outcome needs it)."""
        return return_hint(self.fn)


@dataclass(frozen=True)
class WorkflowDef:
    """A registered workflow."""

    name: str
    fn: Callable[..., Any]
    is_async: bool

    @functools.cached_property
    def return_hint(self) -> Any:
        """The annotated return type, which the recorded result is decoded to (read once: every step
        and every outcome needs it)."""
        return return_hint(self.fn)


#: The attribute that marks a decorated workflow function with its registered name.
WORKFLOW_ATTR = "__perdure_workflow__"
#: The attribute that marks a decorated step function with its definition.
STEP_ATTR = "__perdure_step__"


def default_name(fn: Callable[..., Any]) -> str:
    """A function's registered name unless one is given: its qualified name, without the
    ``<locals>`` parts of functions defined inside functions."""
    qualname = str(getattr(fn, "__qualname__", getattr(fn, "__name__", repr(fn))))
    return qualname.replace("<locals>.", "")


def is_async_function(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` returns a coroutine."""
    return inspect.iscoroutinefunction(inspect.unwrap(fn))


class Registry:
    """The workflows and steps of one app."""

    def __init__(self) -> None:
        self.workflows: dict[str, WorkflowDef] = {}
        self.steps: dict[str, StepDef] = {}
        #: The schedules declared in code (``@app.schedule``), by name.
        self.schedules: dict[str, ScheduleSpec] = {}
        self.queues: dict[str, Queue] = {}

    def add_queue(self, queue: Queue) -> None:
        """Declare a queue; another queue with the same name and other limits is an error."""
        if not isinstance(queue, Queue):
            raise ConfigurationError(f"not a perdure.Queue: {queue!r}")
        existing = self.queues.get(queue.name)
        if existing is not None and existing != queue:
            raise ConfigurationError(
                f"two queues are declared as {queue.name!r} with different limits "
                f"({existing} and {queue})"
            )
        self.queues[queue.name] = queue

    def add_workflow(self, fn: Callable[..., Any], name: str | None) -> WorkflowDef:
        """Register ``fn`` as a workflow; a second, different function under the same name
        is an error (two workflows would share one history)."""
        name = default_name(fn) if name is None else check_name("workflow name", name)
        definition = WorkflowDef(name, fn, is_async_function(fn))
        existing = self.workflows.get(definition.name)
        if existing is not None and existing.fn is not fn:
            raise ConfigurationError(
                f"two workflows are registered as {definition.name!r} "
                f"({existing.fn.__module__} and {fn.__module__}); give one of them name=..."
            )
        self.workflows[definition.name] = definition
        return definition

    def add_step(
        self,
        fn: Callable[..., Any],
        name: str | None,
        retry: Retry | None,
        timeout: float | None = None,
        breaker: CircuitBreaker | None = None,
        transaction: bool = False,
    ) -> StepDef:
        """Register ``fn`` as a step (``transaction``: a transactional step)."""
        step_name = default_name(fn) if name is None else check_name("step name", name)
        timeout = optional_positive_seconds(f"the timeout of step {step_name!r}", timeout)
        definition = StepDef(
            step_name,
            fn,
            is_async_function(fn),
            retry or NO_RETRY,
            timeout,
            breaker,
            transaction,
        )
        self.steps[definition.name] = definition
        return definition

    def add_schedule(self, spec: ScheduleSpec) -> ScheduleSpec:
        """Declare a schedule in code; two different ones under one name is an error."""
        existing = self.schedules.get(spec.name)
        if existing is not None and existing != spec:
            raise ConfigurationError(
                f"two schedules are declared as {spec.name!r} (of workflows {existing.workflow!r} "
                f"and {spec.workflow!r}); give one of them name=..."
            )
        self.schedules[spec.name] = spec
        return spec

    def workflow(self, fn_or_name: Callable[..., Any] | str) -> WorkflowDef:
        """The definition of a decorated workflow function or of a registered name."""
        if isinstance(fn_or_name, str):
            name = fn_or_name
        else:
            name = getattr(fn_or_name, WORKFLOW_ATTR, None) or default_name(fn_or_name)
        definition = self.workflows.get(name)
        if definition is None:
            raise UnknownWorkflowError(name, tuple(self.workflows))
        return definition
