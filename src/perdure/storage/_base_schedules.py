"""The circuit breakers' and the schedules' part of the storage interface (``Store``
inherits both). Each method states what it does atomically and what it returns, like
the rest of ``Store`` (``_base``)."""

from __future__ import annotations

import abc
from collections.abc import Sequence

from .._model import BreakerRecord, NewWorkflow
from .._schedules import ScheduleRecord, ScheduleSpec


class BreakerOperations(abc.ABC):
    """The circuit breakers' state, shared by every executor: operations of every ``Store``."""

    # -- circuit breakers ------------------------------------------------------------------

    @abc.abstractmethod
    def get_breaker(self, name: str) -> BreakerRecord | None:
        """The breaker's stored state, or None when it never counted a failure (then it is
        CLOSED); one primary-key read. ``parked`` is not counted (0)."""

    @abc.abstractmethod
    def list_breakers(self) -> list[BreakerRecord]:
        """Every stored breaker, by name, each with the number of workflows parked on it
        (suspended with ``wait_topic = BREAKER_TOPIC + name``)."""

    @abc.abstractmethod
    def count_breaker_failure(
        self, name: str, now: float, threshold: int, window: float, retry_at: float, error: str
    ) -> bool:
        """Count a failure of a step behind the breaker, creating its row (CLOSED) if
        needed; one transaction.

        Only a CLOSED breaker counts: the count restarts at 1 when ``window`` seconds
        passed since the first failure of the current window. When the count reaches
        ``threshold`` the breaker opens: OPEN, ``opened_at = now``, ``retry_at`` (the end
        of its cool-down). Returns whether this failure opened it. Concurrent failures from
        any number of executors are each counted once, and only one of them opens it.
        """

    @abc.abstractmethod
    def claim_breaker_probe(self, name: str, holder: str, now: float, expires_at: float) -> bool:
        """Make ``holder`` the one probe of the breaker, atomically: succeeds when the
        breaker is OPEN and its cool-down ended (``retry_at <= now``), or HALF_OPEN with
        a probe that expired or is already ``holder``'s. The breaker becomes HALF_OPEN,
        its probe held by ``holder`` until ``expires_at``. Returns whether ``holder``
        holds the probe; at most one holder does at any time, across every executor."""

    @abc.abstractmethod
    def close_breaker(self, name: str, now: float) -> int | None:
        """Close a breaker that is not CLOSED (its probe succeeded) and, in the same
        transaction, wake every workflow parked on it (``wake_at = now``: claimable at
        once; other executors are told). Returns how many were woken, or None when the
        breaker was CLOSED already (or has no row)."""

    @abc.abstractmethod
    def force_open_breaker(self, name: str, now: float, retry_at: float, reason: str) -> None:
        """An operator opens the breaker, whatever its state, until ``retry_at`` (then a
        probe attempt may close it, as after any cool-down): creates its row if needed,
        drops any probe holder, and keeps ``reason`` as its last error; one transaction.
        (To close a breaker by hand, ``close_breaker``.)"""

    @abc.abstractmethod
    def reopen_breaker(
        self, name: str, holder: str, now: float, retry_at: float, error: str
    ) -> bool:
        """Open the breaker again for another cool-down (until ``retry_at``) after its probe
        failed, if ``holder`` still holds the probe; returns whether it did."""


class ScheduleOperations(abc.ABC):
    """The schedules and their last ticks: operations of every ``Store``."""

    # -- schedules (``perdure._schedules``) ----------------------------------------------

    @abc.abstractmethod
    def put_schedule(
        self, spec: ScheduleSpec, source: str, now: float, actor: str | None = None
    ) -> ScheduleRecord:
        """Create the schedule (``last_tick = now``: its first tick is the first after now;
        not paused; ``next_tick`` None), or update its definition (workflow, cron, tz,
        catch-up, grace, source) keeping its last tick and pause. A changed definition
        increments ``revision`` and clears ``next_tick``; an unchanged one changes nothing.
        With ``actor`` (an operator), the same transaction logs a ``create_schedule``
        action (its definition) under ``perdure.schedule:<name>``. Returns the stored
        record; one transaction."""

    @abc.abstractmethod
    def list_schedules(self) -> list[ScheduleRecord]:
        """Every schedule, by name; one query."""

    @abc.abstractmethod
    def fire_schedule(
        self,
        name: str,
        revision: int,
        last_tick: float,
        next_tick: float,
        workflows: Sequence[NewWorkflow],
        now: float,
    ) -> bool:
        """Advance the schedule and start its ticks' workflows, in one transaction, if its
        revision is still ``revision`` and it is not paused: ``last_tick``, ``next_tick``
        set, ``last_workflow_id`` the last of ``workflows`` (when any), ``revision`` + 1,
        and each of ``workflows`` inserted PENDING and unowned unless a workflow with its
        ID exists (then left untouched); other executors are told. Returns whether it
        advanced (False, changing nothing: another firing, a change or a pause came
        first). Of concurrent firings that read the same revision, exactly one advances."""

    @abc.abstractmethod
    def pause_schedule(
        self, name: str, paused: bool, now: float, actor: str | None = None
    ) -> bool | None:
        """Pause the schedule (no tick fires while paused), or resume it: ``last_tick =
        now`` (ticks that came while it was paused never run), ``next_tick`` None; each
        increments ``revision``. Returns True when it changed, False when it was already
        so, None when no schedule has this name. With ``actor``, a change is logged (a
        ``pause_schedule`` or ``resume_schedule`` action under
        ``perdure.schedule:<name>``) in its transaction."""

    @abc.abstractmethod
    def delete_schedule(self, name: str, now: float = 0.0, actor: str | None = None) -> bool:
        """Delete the schedule (the workflows it started stay); returns whether it
        existed. With ``actor``, a deletion is logged (``delete_schedule`` at ``now``,
        under ``perdure.schedule:<name>``) in its transaction."""
