"""Circuit breakers: stop calling a service that keeps failing, for every workflow at once.

A ``CircuitBreaker`` is declared in code and put in front of steps with
``@app.step(breaker=...)``; its state lives in the store, shared by every
executor of every process. CLOSED, it lets every attempt through and counts the
failures; after ``failure_threshold`` failures within ``window`` seconds it
OPENs: an attempt of a step behind it does not call the service, its workflow
parks (suspended, holding nothing, no attempt counted) until the cool-down ends.
Then exactly one workflow, fleet-wide, runs a probe attempt (HALF_OPEN): success
CLOSEs the breaker and wakes every parked workflow at once; failure OPENs it for
another cool-down. ``app.breaker(name)``, ``app.breakers()`` and
``perdure breakers`` show where each stands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from ._engine.describe import error_summary as _error_summary
from .storage import BREAKER_CLOSED, BreakerRecord

if TYPE_CHECKING:
    from ._app import App


@dataclass(frozen=True)
class CircuitBreaker:
    """A named circuit breaker, shared through the store by every workflow and executor
    that uses the same name; put steps behind it with ``@app.step(breaker=...)``.

    It opens after ``failure_threshold`` failed attempts within ``window`` seconds of
    the first (only exceptions that are instances of ``failure_on`` count: an error
    that says the service answered, such as a validation error, does not). While it is
    open, steps behind it park their workflow instead of calling; ``cooldown`` seconds
    after it opened, one workflow runs a probe attempt. When that attempt succeeds (or
    fails with an error that does not count) the breaker closes and every parked
    workflow resumes at once; when it fails, the breaker opens for another cool-down.
    A probe attempt that gives no outcome within ``probe_timeout`` seconds (its process
    died) lets another workflow probe.
    """

    name: str
    failure_threshold: int = 5
    window: float = 60.0
    cooldown: float = 30.0
    probe_timeout: float = 60.0
    failure_on: tuple[type[BaseException], ...] = field(default=(Exception,))

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a CircuitBreaker needs a name")
        if self.failure_threshold < 1:
            raise ValueError("CircuitBreaker.failure_threshold must be at least 1")
        if self.window <= 0 or self.cooldown < 0 or self.probe_timeout <= 0:
            raise ValueError("CircuitBreaker needs window > 0, cooldown >= 0, probe_timeout > 0")

    def counts(self, exc: BaseException) -> bool:
        """Whether a failure with ``exc`` counts against the service."""
        return isinstance(exc, self.failure_on)


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=timezone.utc)


@dataclass(frozen=True)
class BreakerStatus:
    """Where a circuit breaker stands, as ``app.breaker(name)`` reads it from the store.

    ``state`` is CLOSED (calls go through; ``failures`` counted since
    ``window_started_at``), OPEN (steps behind it park until ``retry_at``, the end of
    the cool-down) or HALF_OPEN (``probe_holder``, a workflow ID and step position, runs
    the one probe attempt, until ``probe_expires_at`` at the latest). ``parked`` is the
    number of workflows suspended on it; ``last_error`` the last failure it counted.
    """

    name: str
    state: str
    failures: int
    window_started_at: datetime | None
    opened_at: datetime | None
    retry_at: datetime | None
    probe_holder: str | None
    probe_expires_at: datetime | None
    last_error: str | None
    parked: int
    updated_at: datetime | None

    @classmethod
    def from_record(cls, record: BreakerRecord) -> BreakerStatus:
        """Build from a stored breaker."""
        return cls(
            record.name,
            record.state,
            record.failures,
            _time(record.window_start),
            _time(record.opened_at),
            _time(record.retry_at),
            record.probe_holder,
            _time(record.probe_expires_at),
            _error_summary(record.last_error),
            record.parked,
            _time(record.updated_at),
        )

    @classmethod
    def closed(cls, name: str) -> BreakerStatus:
        """A breaker that never counted a failure."""
        return cls(name, BREAKER_CLOSED, 0, None, None, None, None, None, None, 0, None)


class Breakers:
    """The ``breaker`` and ``breakers`` methods of ``App`` (a mixin)."""

    def breakers(self) -> list[BreakerStatus]:
        """Every circuit breaker, by name: those in the store (each with how many workflows
        are parked on it) and those that this app's steps use, CLOSED until they count a
        failure."""
        app: App = self  # type: ignore[assignment]
        stored = app.store.list_breakers()
        found = {record.name: BreakerStatus.from_record(record) for record in stored}
        for step in app.registry.steps.values():
            if step.breaker is not None and step.breaker.name not in found:
                found[step.breaker.name] = BreakerStatus.closed(step.breaker.name)
        return [found[name] for name in sorted(found)]

    def breaker(self, name: str | CircuitBreaker) -> BreakerStatus:
        """The state of one circuit breaker (by name, or the breaker itself); CLOSED when
        it never counted a failure."""
        key = name.name if isinstance(name, CircuitBreaker) else name
        for status in self.breakers():
            if status.name == key:
                return status
        return BreakerStatus.closed(key)
