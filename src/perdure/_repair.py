"""Repairing workflows: resume, fork, restart, and their bulk forms.

- ``resume``: a FAILED or CANCELLED workflow continues from its recorded steps under the
  same ID; the steps that failed (and a cancel's record) run afresh with a new attempt
  budget. The store does it in one transaction fenced by the epoch, like a takeover
  (``Store.resume_workflow``): of concurrent resumes one wins, and executors then claim
  it as they claim any new workflow.
- ``fork``: a new workflow with the first N recorded steps of another, running the
  current code (this app's version) from step N; ``restart`` is a fork from step 0.

Each is logged in the store's append-only actions log with who (``actor``, default the
OS user) and when, in the same transaction as the change.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from ._clock import Clock
from ._errors import InvalidValueError, WorkflowNotFoundError, WorkflowNotResumableError
from ._ids import new_workflow_id
from ._inspect import InspectHost, list_page
from ._model import OperatorAction, WaitKind, WorkflowState
from ._settings import Settings
from ._validation import (
    check_key,
    check_optional_workflow_id,
    check_workflow_id,
    positive_seconds,
)
from .storage import NewWorkflow, Store

#: How many workflows a bulk action reads per page.
BULK_PAGE = 200


class RepairHost(Protocol):
    """What repairing needs of the client (a ``Protocol``: no import of the client)."""

    @property
    def store(self) -> Store: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def settings(self) -> Settings: ...

    def wake(self) -> None:
        """Make this process's worker look for work now."""
        ...

    def cancel(self, workflow_id: str, actor: str | None = None) -> bool:
        """Ask a workflow and its descendants to cancel."""
        ...


def default_actor() -> str:
    """Who acts when no ``actor`` is given: the OS user running this process."""
    try:
        return getpass.getuser() or "unknown"
    except (OSError, KeyError, ImportError):  # no user name in a container, say
        return "unknown"


def actor_or_default(actor: str | None) -> str:
    """``actor``, checked, or the OS user."""
    return default_actor() if actor is None else check_key("actor", actor)


def resume(host: RepairHost, workflow_id: str, actor: str | None = None) -> None:
    """Resume a FAILED or CANCELLED workflow (see the module); ``WorkflowNotFoundError``,
    ``WorkflowNotResumableError`` (nothing changed) otherwise."""
    check_workflow_id(workflow_id)
    result = host.store.resume_workflow(workflow_id, actor_or_default(actor), host.clock.time())
    if result is None:
        raise WorkflowNotFoundError(workflow_id)
    record, resumed = result
    if not resumed:
        raise WorkflowNotResumableError(workflow_id, record.status)
    host.wake()


def fork(
    host: RepairHost,
    source_id: str,
    from_step: int,
    workflow_id: str | None = None,
    actor: str | None = None,
    action: OperatorAction = OperatorAction.FORK,
) -> str:
    """Fork ``source_id`` at ``from_step`` into ``workflow_id`` (default: a new time-ordered ID);
    returns the new ID. ``InvalidValueError`` for a step past the recorded ones or an ID
    already taken, ``WorkflowNotFoundError`` for an unknown source."""
    check_workflow_id(source_id)
    new_id = check_optional_workflow_id(workflow_id) or new_workflow_id()
    who = actor_or_default(actor)
    if isinstance(from_step, bool) or not isinstance(from_step, int) or from_step < 0:
        raise InvalidValueError(f"from_step must be a whole number >= 0, not {from_step!r}")
    store = host.store
    source = store.get_workflow(source_id)
    if source is None:
        raise WorkflowNotFoundError(source_id)
    recorded = len(store.load_steps(source_id))
    if from_step > recorded:
        raise InvalidValueError(
            f"workflow {source_id!r} has {recorded} recorded step(s): fork it from a step "
            f"between 0 and {recorded}, not {from_step}"
        )
    now = host.clock.time()
    new = NewWorkflow(
        new_id, source.name, source.inputs, source.serializer, host.settings.app_version, now
    )
    result = store.fork_workflow(source_id, new, from_step, action, who, now)
    if result is None:
        raise WorkflowNotFoundError(source_id)
    record, created = result
    if not created:
        raise InvalidValueError(
            f"workflow ID {new_id!r} is taken (by a {record.name!r} workflow, "
            f"{record.status}); nothing was forked: choose another ID or leave it out"
        )
    host.wake()
    return new_id


def restart(
    host: RepairHost, source_id: str, workflow_id: str | None = None, actor: str | None = None
) -> str:
    """A fork from step 0: the same workflow and inputs, anew."""
    return fork(host, source_id, 0, workflow_id, actor, OperatorAction.RESTART)


def _each(
    host: InspectHost,
    statuses: tuple[WorkflowState, ...],
    name: str | None,
    created_after: datetime | float | None,
    created_before: datetime | float | None,
    act: Callable[[str], bool],
) -> list[str]:
    # Every match is read first, so that acting on a workflow cannot move it into (or
    # out of) the pages still to read.
    matched: list[str] = []
    for state in statuses:
        cursor: str | None = None
        while True:
            page = list_page(
                host,
                status=state,
                name=name,
                created_after=created_after,
                created_before=created_before,
                limit=BULK_PAGE,
                cursor=cursor,
                newest_first=False,
            )
            matched += [item.workflow_id for item in page.workflows]
            cursor = page.next_cursor
            if cursor is None:
                break
    return [workflow_id for workflow_id in matched if act(workflow_id)]


def _states(
    status: str | None, allowed: tuple[WorkflowState, ...], verb: str
) -> tuple[WorkflowState, ...]:
    if status is None:
        return allowed
    try:
        state = WorkflowState.parse(status)
    except ValueError as exc:
        raise InvalidValueError(str(exc)) from None
    if state not in allowed:
        names = ", ".join(allowed)
        raise InvalidValueError(f"only {names} workflows can be {verb}, not {state}")
    return (state,)


def resume_many(
    host: RepairHost,
    *,
    status: str | None = None,
    name: str | None = None,
    created_after: datetime | float | None = None,
    created_before: datetime | float | None = None,
    actor: str | None = None,
) -> list[str]:
    """Resume every FAILED or CANCELLED workflow (or only ``status``) matching the filters,
    oldest first; returns the IDs resumed (one that another operator resumed meanwhile is
    skipped). Each is logged."""
    who = actor_or_default(actor)
    allowed = (WorkflowState.FAILED, WorkflowState.CANCELLED)
    states = _states(status, allowed, "resumed")

    def one(workflow_id: str) -> bool:
        result = host.store.resume_workflow(workflow_id, who, host.clock.time())
        return result is not None and result[1]

    resumed = _each(host, states, name, created_after, created_before, one)
    if resumed:
        host.wake()
    return resumed


def cancel_many(
    host: RepairHost,
    *,
    status: str | None = None,
    name: str | None = None,
    created_after: datetime | float | None = None,
    created_before: datetime | float | None = None,
    actor: str | None = None,
) -> list[str]:
    """Ask every active workflow (PENDING or RUNNING, or only ``status``) matching the
    filters to cancel, with its descendants; returns the IDs newly asked among the
    matches. Each is logged."""
    who = actor_or_default(actor)
    states = _states(status, (WorkflowState.PENDING, WorkflowState.RUNNING), "cancelled")
    return _each(
        host,
        states,
        name,
        created_after,
        created_before,
        lambda workflow_id: host.cancel(workflow_id, who),
    )


def open_breaker(host: RepairHost, name: str, seconds: float, actor: str | None = None) -> None:
    """Open the circuit breaker ``name`` for ``seconds`` (steps behind it park; then one
    probe attempt may close it); logged under ``perdure.breaker:<name>``."""
    check_key("circuit breaker name", name)
    who = actor_or_default(actor)
    duration = positive_seconds("seconds", seconds)
    now = host.clock.time()
    host.store.force_open_breaker(name, now, now + duration, f"opened by {who}")
    details = json.dumps({"seconds": duration})
    subject = WaitKind.BREAKER.value + name
    host.store.log_action(subject, OperatorAction.OPEN_BREAKER, who, details, now)


def close_breaker(host: RepairHost, name: str, actor: str | None = None) -> int:
    """Close the circuit breaker ``name`` now and wake every workflow parked on it;
    returns how many were woken (0 when it was closed already). Logged."""
    check_key("circuit breaker name", name)
    who = actor_or_default(actor)
    now = host.clock.time()
    woken = host.store.close_breaker(name, now)
    details = json.dumps({"woken": woken or 0, "was_closed": woken is None})
    subject = WaitKind.BREAKER.value + name
    host.store.log_action(subject, OperatorAction.CLOSE_BREAKER, who, details, now)
    if woken:
        host.wake()
    return woken or 0
