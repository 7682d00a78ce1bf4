"""What ``App`` offers an operator: finding, seeing and repairing workflows, and the
circuit breakers. A base class of ``App`` whose methods delegate to the client
(``_client``), inspection (``_inspect``) and repairs (``_repair``), so that ``_app``
stays about registering and running workflows.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from . import _repair
from ._breaker import BreakerStatus, CircuitBreaker
from ._client import Client
from ._handle import WorkflowHandle, WorkflowStatus
from ._inspect import WorkflowDetail, WorkflowPage, inspect_workflow, list_page

Time = datetime | float | None


class Operating:
    """Finding, seeing and repairing workflows (``App`` inherits these methods)."""

    #: Set by ``App.__init__``.
    client: Client

    def retrieve(self, workflow_id: str) -> WorkflowHandle[Any]:
        """A handle to an existing workflow; raises ``WorkflowNotFoundError`` if none."""
        return self.client.retrieve(workflow_id)

    async def retrieve_async(self, workflow_id: str) -> WorkflowHandle[Any]:
        """``retrieve`` for coroutines."""
        return await self.client.retrieve_async(workflow_id)

    def list_workflows(
        self, *, status: str | None = None, name: str | None = None, limit: int = 100
    ) -> list[WorkflowStatus]:
        """The newest workflows matching the filters (their steps are not loaded)."""
        return self.client.list_workflows(status=status, name=name, limit=limit)

    def breakers(self) -> list[BreakerStatus]:
        """Every circuit breaker, by name: those in the store (each with how many workflows
        are parked on it) and those that this app's steps use, CLOSED until they count a
        failure."""
        return self.client.breakers()

    def breaker(self, name: str | CircuitBreaker) -> BreakerStatus:
        """The state of one circuit breaker (by name, or the breaker itself); CLOSED when
        it never counted a failure."""
        return self.client.breaker(name)

    def open_breaker(
        self, name: str | CircuitBreaker, seconds: float, *, actor: str | None = None
    ) -> None:
        """Open a circuit breaker by hand for ``seconds``, whatever its state: steps behind
        it park their workflows; then one probe attempt may close it, as after any
        cool-down. Logged (who, when)."""
        key = name.name if isinstance(name, CircuitBreaker) else name
        _repair.open_breaker(self.client, key, seconds, actor)

    def close_breaker(self, name: str | CircuitBreaker, *, actor: str | None = None) -> int:
        """Close a circuit breaker by hand and wake every workflow parked on it; returns how
        many were woken. Logged (who, when)."""
        key = name.name if isinstance(name, CircuitBreaker) else name
        return _repair.close_breaker(self.client, key, actor)

    # -- seeing --------------------------------------------------------------------------------

    def inspect(self, workflow_id: str) -> WorkflowDetail:
        """Everything known about a workflow: inputs, output or error with its traceback,
        every step with its start and end, attempts and what it waits for, the owner and
        whether its lease is alive, recoveries, resumes, parent, children, fork origin,
        events, messages waiting and operator actions. ``WorkflowNotFoundError`` if none."""
        return inspect_workflow(self.client, workflow_id)

    async def inspect_async(self, workflow_id: str) -> WorkflowDetail:
        """``inspect`` for coroutines."""
        return await asyncio.to_thread(self.inspect, workflow_id)

    def list_page(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        created_after: Time = None,
        created_before: Time = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> WorkflowPage:
        """One page of workflows matching every filter, newest first: ``status`` in any
        case, ``name``, creation time (a datetime or seconds since the epoch), at most
        ``limit`` (1 to 1,000). Pass the page's ``next_cursor`` as ``cursor`` for the next
        one; each page is one index range however deep, at millions of workflows."""
        return list_page(
            self.client,
            status=status,
            name=name,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            cursor=cursor,
        )

    # -- repairing -----------------------------------------------------------------------------

    def resume(self, workflow_id: str, *, actor: str | None = None) -> WorkflowHandle[Any]:
        """Resume a FAILED or CANCELLED workflow under the same ID: it continues from its
        recorded steps on any executor of this app version; the step that failed (or where
        the cancel reached it) runs afresh with a new attempt budget. Its cancel request and
        deadline are dropped; the outcome it replaced is kept in the operator actions log
        (``inspect(...).actions``), with ``actor`` (default: the OS user) and the time.
        Raises ``WorkflowNotResumableError`` for any other status (nothing changes), also
        when another operator resumed it first."""
        _repair.resume(self.client, workflow_id, actor)
        return WorkflowHandle(self.client, workflow_id)

    async def resume_async(
        self, workflow_id: str, *, actor: str | None = None
    ) -> WorkflowHandle[Any]:
        """``resume`` for coroutines."""
        return await asyncio.to_thread(self.resume, workflow_id, actor=actor)

    def fork(
        self,
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
        new_id = _repair.fork(self.client, source_id, from_step, workflow_id, actor)
        return WorkflowHandle(self.client, new_id)

    async def fork_async(
        self,
        source_id: str,
        /,
        from_step: int,
        workflow_id: str | None = None,
        *,
        actor: str | None = None,
    ) -> WorkflowHandle[Any]:
        """``fork`` for coroutines."""
        return await asyncio.to_thread(self.fork, source_id, from_step, workflow_id, actor=actor)

    def restart(
        self, source_id: str, /, workflow_id: str | None = None, *, actor: str | None = None
    ) -> WorkflowHandle[Any]:
        """A fork from step 0: the same workflow with the same inputs, run anew."""
        new_id = _repair.restart(self.client, source_id, workflow_id, actor)
        return WorkflowHandle(self.client, new_id)

    async def restart_async(
        self, source_id: str, /, workflow_id: str | None = None, *, actor: str | None = None
    ) -> WorkflowHandle[Any]:
        """``restart`` for coroutines."""
        return await asyncio.to_thread(self.restart, source_id, workflow_id, actor=actor)

    def resume_many(
        self,
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
            self.client,
            status=status,
            name=name,
            created_after=created_after,
            created_before=created_before,
            actor=actor,
        )

    def cancel_many(
        self,
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
            self.client,
            status=status,
            name=name,
            created_after=created_after,
            created_before=created_before,
            actor=actor,
        )
