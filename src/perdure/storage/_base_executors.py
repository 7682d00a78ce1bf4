"""The executors' part of the storage interface (``Store`` inherits it): registering
them, their leases and releasing their workflows. Each method states what it does
atomically and what it returns, like the rest of ``Store`` (``_base``)."""

from __future__ import annotations

import abc

from .._model import ExecutorRecord


class ExecutorOperations(abc.ABC):
    """Executors and their leases: operations of every ``Store``. An executor's lease is
    its row's: the rows of the workflows it owns hold ``HELD_BY_EXECUTOR``."""

    @abc.abstractmethod
    def register_executor(self, executor: ExecutorRecord) -> None:
        """Insert or refresh this executor's row."""

    @abc.abstractmethod
    def heartbeat(self, executor_id: str, now: float, lease_expires_at: float) -> set[str]:
        """Renew the executor's lease: its own row only, which stands for every workflow it
        owns (``HELD_BY_EXECUTOR``), and marks it running again if others found it expired
        and released it; returns the IDs of the active workflows the store says it owns.
        A workflow missing from them is no longer this executor's (released, taken over
        or finished): the caller must stop starting work for it."""

    @abc.abstractmethod
    def list_executors(self) -> list[ExecutorRecord]:
        """Every executor that has not stopped cleanly."""

    @abc.abstractmethod
    def owned_workflows(self, executor_id: str) -> list[str]:
        """IDs of the active workflows that this executor owns, as the store sees them."""

    @abc.abstractmethod
    def release_workflows(self, executor_id: str, now: float) -> int:
        """Drop the executor's lease on all its active workflows so that others can claim
        them at once, and mark the executor stopped; returns how many were released."""

    @abc.abstractmethod
    def release_expired(self, executor_id: str, now: float) -> int | None:
        """``release_workflows`` for another executor whose lease expired before ``now``,
        if it still has (checked under a lock on its row, so that a heartbeat it sends
        meanwhile either commits first, and nothing is released, or waits for this and
        then finds its workflows gone); None when it renewed its lease, was released
        already, or its row is locked by a write of its own right now. A workflow whose
        row a transaction holds (the executor froze inside one) is not waited for: it
        stays the executor's until a later call, and the executor is marked stopped
        once it owns nothing."""
