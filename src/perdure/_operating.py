"""What ``App`` offers an operator: finding, seeing and repairing workflows, and the
circuit breakers. One function per method, each taking the app first: ``App`` binds them
as its methods (``resume = _operating.resume``), so that ``_app`` stays about registering
and running workflows while the app keeps one flat surface (and no base class). They
delegate to the client (``_client``), inspection (``_inspect``) and repairs (``_repair``).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Protocol

from . import _inspect, _repair
from ._breaker import BreakerStatus, CircuitBreaker
from ._client import Client
from ._handle import WorkflowHandle
from ._inspect import WorkflowDetail

Time = datetime | float | None


class OperatingHost(Protocol):
    """What these functions need of the app: its client."""

    @property
    def client(self) -> Client: ...


def retrieve(app: OperatingHost, workflow_id: str) -> WorkflowHandle[Any]:
    """A handle to an existing workflow; raises ``WorkflowNotFoundError`` if none."""
    return app.client.retrieve(workflow_id)


async def retrieve_async(app: OperatingHost, workflow_id: str) -> WorkflowHandle[Any]:
    """``retrieve`` for coroutines."""
    return await app.client.retrieve_async(workflow_id)


def breakers(app: OperatingHost) -> list[BreakerStatus]:
    """Every circuit breaker, by name: those in the store (each with how many workflows
    are parked on it) and those that this app's steps use, CLOSED until they count a
    failure."""
    return app.client.breakers()


def breaker(app: OperatingHost, name: str | CircuitBreaker) -> BreakerStatus:
    """The state of one circuit breaker (by name, or the breaker itself); CLOSED when
    it never counted a failure."""
    return app.client.breaker(name)


def open_breaker(
    app: OperatingHost, name: str | CircuitBreaker, seconds: float, *, actor: str | None = None
) -> None:
    """Open a circuit breaker by hand for ``seconds``, whatever its state: steps behind
    it park their workflows; then one probe attempt may close it, as after any
    cool-down. Logged (who, when)."""
    key = name.name if isinstance(name, CircuitBreaker) else name
    _repair.open_breaker(app.client, key, seconds, actor)


def close_breaker(
    app: OperatingHost, name: str | CircuitBreaker, *, actor: str | None = None
) -> int:
    """Close a circuit breaker by hand and wake every workflow parked on it; returns how
    many were woken. Logged (who, when)."""
    key = name.name if isinstance(name, CircuitBreaker) else name
    return _repair.close_breaker(app.client, key, actor)


# -- seeing --------------------------------------------------------------------------------


def inspect(app: OperatingHost, workflow_id: str) -> WorkflowDetail:
    """Everything known about a workflow: inputs, output or error with its traceback,
    every step with its start and end, attempts and what it waits for, the owner and
    whether its lease is alive, recoveries, resumes, parent, children, fork origin,
    events, messages waiting and operator actions. ``WorkflowNotFoundError`` if none."""
    return _inspect.inspect_workflow(app.client, workflow_id)


async def inspect_async(app: OperatingHost, workflow_id: str) -> WorkflowDetail:
    """``inspect`` for coroutines."""
    return await asyncio.to_thread(inspect, app, workflow_id)


# -- repairing -----------------------------------------------------------------------------


def resume(
    app: OperatingHost, workflow_id: str, *, actor: str | None = None
) -> WorkflowHandle[Any]:
    """Resume a FAILED or CANCELLED workflow under the same ID: it continues from its
    recorded steps on any executor of this app version; the step that failed (or where
    the cancel reached it) runs afresh with a new attempt budget. Its cancel request and
    deadline are dropped; the outcome it replaced is kept in the operator actions log
    (``inspect(...).actions``), with ``actor`` (default: the OS user) and the time.
    Raises ``WorkflowNotResumableError`` for any other status (nothing changes), also
    when another operator resumed it first."""
    _repair.resume(app.client, workflow_id, actor)
    return WorkflowHandle(app.client, workflow_id)


async def resume_async(
    app: OperatingHost, workflow_id: str, *, actor: str | None = None
) -> WorkflowHandle[Any]:
    """``resume`` for coroutines."""
    return await asyncio.to_thread(resume, app, workflow_id, actor=actor)


def fork(
    app: OperatingHost,
    source_id: str,
    /,
    from_step: int,
    workflow_id: str | None = None,
    *,
    actor: str | None = None,
) -> WorkflowHandle[Any]:
    """Start a new workflow (``workflow_id``, default a new UUID) with the name and
    inputs of ``source_id`` and copies of its first ``from_step`` recorded steps, which
    it replays; from there it runs this app's current code (its version). To rerun
    after a bug fix, or to try again from a known point. Logged (who, when) on the
    source. ``InvalidValueError`` for a step past the recorded ones or a taken ID."""
    new_id = _repair.fork(app.client, source_id, from_step, workflow_id, actor)
    return WorkflowHandle(app.client, new_id)


async def fork_async(
    app: OperatingHost,
    source_id: str,
    /,
    from_step: int,
    workflow_id: str | None = None,
    *,
    actor: str | None = None,
) -> WorkflowHandle[Any]:
    """``fork`` for coroutines."""
    return await asyncio.to_thread(fork, app, source_id, from_step, workflow_id, actor=actor)


def restart(
    app: OperatingHost,
    source_id: str,
    /,
    workflow_id: str | None = None,
    *,
    actor: str | None = None,
) -> WorkflowHandle[Any]:
    """A fork from step 0: the same workflow with the same inputs, run anew."""
    new_id = _repair.restart(app.client, source_id, workflow_id, actor)
    return WorkflowHandle(app.client, new_id)


async def restart_async(
    app: OperatingHost,
    source_id: str,
    /,
    workflow_id: str | None = None,
    *,
    actor: str | None = None,
) -> WorkflowHandle[Any]:
    """``restart`` for coroutines."""
    return await asyncio.to_thread(restart, app, source_id, workflow_id, actor=actor)


def resume_many(
    app: OperatingHost,
    *,
    status: str | None = None,
    name: str | None = None,
    created_after: Time = None,
    created_before: Time = None,
    actor: str | None = None,
) -> list[str]:
    """Resume every FAILED and CANCELLED workflow (or only ``status``) matching the
    filters, oldest first; returns the IDs resumed. Each resume is logged."""
    return _repair.resume_many(
        app.client,
        status=status,
        name=name,
        created_after=created_after,
        created_before=created_before,
        actor=actor,
    )


def cancel_many(
    app: OperatingHost,
    *,
    status: str | None = None,
    name: str | None = None,
    created_after: Time = None,
    created_before: Time = None,
    actor: str | None = None,
) -> list[str]:
    """Ask every active workflow (PENDING and RUNNING, or only ``status``) matching the
    filters to cancel, with its descendants; returns the IDs newly asked. Logged."""
    return _repair.cancel_many(
        app.client,
        status=status,
        name=name,
        created_after=created_after,
        created_before=created_before,
        actor=actor,
    )
