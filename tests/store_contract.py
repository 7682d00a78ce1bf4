"""Shared by the store contract suite (``test_store_contract*.py``): the registry of which
test covers which ``Store`` operation, and builders of records."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from perdure.storage import ExecutorRecord, Lease, NewWorkflow, StepRecord, Store

F = TypeVar("F", bound=Callable[..., Any])

#: Store operation -> the tests that check its contract.
COVERED: dict[str, list[str]] = {}


def covers(*operations: str) -> Callable[[F], F]:
    """Register the decorated test as a contract test of ``operations``."""

    def register(test: F) -> F:
        for operation in operations:
            assert hasattr(Store, operation), f"Store has no operation {operation!r}"
            COVERED.setdefault(operation, []).append(test.__name__)
        return test

    return register


def new(
    workflow_id: str,
    name: str = "checkout",
    at: float = 100.0,
    version: str = "1",
    parent_id: str | None = None,
    deadline_at: float | None = None,
) -> NewWorkflow:
    return NewWorkflow(
        workflow_id, name, '{"args":[]}', "json", version, at, parent_id, deadline_at
    )


def step(position: str, status: str = "SUCCEEDED", output: str | None = '"ok"') -> StepRecord:
    error = None if status == "SUCCEEDED" else '{"type":"x"}'
    next_at = 200.0 if status in ("RETRYING", "WAITING") else None
    return StepRecord(position, "s", status, output, error, 1, next_at, 150.0)


def running(store: Store, workflow_id: str, owner: str = "me", **kwargs: Any) -> Lease:
    """A RUNNING workflow owned by ``owner`` (epoch 1); its lease."""
    record, created = store.create_workflow(new(workflow_id, **kwargs), owner, 500.0).result()
    assert created and record.epoch == 1
    return Lease(owner, 1)


def executor(executor_id: str, stopped_at: float | None = None) -> ExecutorRecord:
    return ExecutorRecord(executor_id, "host", 42, "1", 1.0, 2.0, 17.0, stopped_at)
