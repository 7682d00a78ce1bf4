"""Retry policies for steps."""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Retry:
    """How often and how soon a failed step runs again.

    Attempt ``n`` (counting from 1) that fails waits
    ``min(initial_interval * backoff ** (n - 1), max_interval)`` seconds, spread by
    ``jitter`` (a fraction: 0.1 means +/-10%), before attempt ``n + 1``, up to
    ``max_attempts`` attempts in all. An exception is retried when it is an
    instance of one of ``retry_on`` and of none of ``non_retryable``.

    The attempt count and the time of the next attempt are recorded before the
    wait, so a crash during the wait neither resets the count nor skips the wait.
    A wait longer than the app's ``suspend_after`` suspends the workflow: it holds no
    thread meanwhile, and any executor runs the next attempt when it is due.

    ``wait_for`` gates every retry on a condition: a probe such as
    ``perdure.probes.http(url)`` or ``perdure.probes.tcp(host, port)``, or any callable
    that returns something truthy when the service is up (falsy or raising: down).
    After a failed attempt's wait, the probe runs before the next attempt; while it
    fails, no attempt runs and none is counted, and it runs again after
    ``probe_interval`` seconds, doubling up to ``probe_max_interval`` (spread by
    ``jitter``), the workflow suspended while it waits. Each failed probe is recorded
    with the step, so a crash keeps the wait.
    """

    max_attempts: int = 3
    initial_interval: float = 1.0
    backoff: float = 2.0
    max_interval: float = 60.0
    jitter: float = 0.1
    retry_on: tuple[type[BaseException], ...] = field(default=(Exception,))
    non_retryable: tuple[type[BaseException], ...] = field(default=())
    wait_for: Callable[[], object] | None = None
    probe_interval: float = 1.0
    probe_max_interval: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("Retry.max_attempts must be at least 1")
        if self.initial_interval < 0 or self.max_interval < 0 or self.backoff < 1:
            raise ValueError("Retry intervals must be >= 0 and backoff >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("Retry.jitter is a fraction between 0 and 1")
        if self.wait_for is not None and not callable(self.wait_for):
            raise ValueError("Retry.wait_for takes a probe: a callable, such as probes.tcp(...)")
        if not 0 < self.probe_interval <= self.probe_max_interval:
            raise ValueError("Retry needs 0 < probe_interval <= probe_max_interval")

    def should_retry(self, exc: BaseException, attempts: int) -> bool:
        """Whether a failure of attempt number ``attempts`` with ``exc`` gets another attempt."""
        return (
            attempts < self.max_attempts
            and isinstance(exc, self.retry_on)
            and not isinstance(exc, self.non_retryable)
        )

    def delay(self, attempts: int, rng: _random.Random | None = None) -> float:
        """Seconds to wait after attempt number ``attempts`` failed."""
        base = min(self.initial_interval * self.backoff ** (attempts - 1), self.max_interval)
        if self.jitter:
            spread = (rng or _random).uniform(-self.jitter, self.jitter)
            base *= 1 + spread
        return max(base, 0.0)

    def probe_delay(self, failures: int, rng: _random.Random | None = None) -> float:
        """Seconds to wait before probing again after ``failures`` failed probes in a row."""
        # The exponent is capped: a service may stay down for thousands of probes.
        base = min(self.probe_interval * 2.0 ** min(failures - 1, 64), self.probe_max_interval)
        if self.jitter:
            base *= 1 + (rng or _random).uniform(-self.jitter, self.jitter)
        return max(base, 0.0)


#: The policy of a step declared without ``retry=``: one attempt, its error goes
#: straight to the workflow.
NO_RETRY = Retry(max_attempts=1, jitter=0.0)
