"""Retry policies for steps."""

from __future__ import annotations

import math
import numbers
import random as _random
from collections.abc import Callable
from dataclasses import dataclass, field

from ._errors import InvalidValueError
from ._validation import non_negative_seconds, positive_seconds


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

    Intervals are finite numbers of seconds (``initial_interval`` and ``max_interval`` may
    be 0: retry at once; the probe intervals are above 0), ``backoff`` a finite factor of
    at least 1: anything else raises ``InvalidValueError`` (a ``ConfigurationError`` and a
    ``ValueError``) naming the field.
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
        # Refused here, where the policy is written: a NaN or infinite interval would be
        # accepted and only show as a strange wait on the first failure, in production.
        if (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise InvalidValueError(
                f"Retry.max_attempts must be an int of at least 1, not {self.max_attempts!r}"
            )
        non_negative_seconds("Retry.initial_interval", self.initial_interval)
        non_negative_seconds("Retry.max_interval", self.max_interval)
        backoff = self.backoff
        if isinstance(backoff, bool) or not isinstance(backoff, numbers.Real):
            raise InvalidValueError(f"Retry.backoff must be a finite number >= 1, not {backoff!r}")
        if not (math.isfinite(backoff) and backoff >= 1):
            raise InvalidValueError(f"Retry.backoff must be a finite number >= 1, not {backoff!r}")
        jitter = self.jitter
        if isinstance(jitter, bool) or not isinstance(jitter, numbers.Real) or not 0 <= jitter <= 1:
            raise InvalidValueError(
                f"Retry.jitter is a fraction between 0 and 1 (0.1: +/-10%), not {jitter!r}"
            )
        if self.wait_for is not None and not callable(self.wait_for):
            raise InvalidValueError(
                "Retry.wait_for takes a probe: a callable, such as probes.tcp(...), "
                f"not {self.wait_for!r}"
            )
        positive_seconds("Retry.probe_interval", self.probe_interval)
        positive_seconds("Retry.probe_max_interval", self.probe_max_interval)
        if self.probe_interval > self.probe_max_interval:
            raise InvalidValueError(
                f"Retry needs probe_interval <= probe_max_interval, not {self.probe_interval!r} "
                f"> {self.probe_max_interval!r}"
            )

    def should_retry(self, exc: BaseException, attempts: int) -> bool:
        """Whether a failure of attempt number ``attempts`` with ``exc`` gets another attempt."""
        return (
            attempts < self.max_attempts
            and isinstance(exc, self.retry_on)
            and not isinstance(exc, self.non_retryable)
        )

    def delay(self, attempts: int, rng: _random.Random | None = None) -> float:
        """Seconds to wait after attempt number ``attempts`` failed."""
        try:
            grown = self.initial_interval * self.backoff ** (attempts - 1)
        except OverflowError:  # thousands of attempts: the cap has long been reached
            grown = math.inf if self.initial_interval else 0.0
        base = min(grown, self.max_interval)
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
