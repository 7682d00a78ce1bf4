"""One call of a step at its position: its attempts, its waits, and their records."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .._error_codec import decode_error, encode_error
from .._errors import SerializationError, StepFailedError
from .._model import StepRecord, StepState, WaitKind, WaitReason
from .._registry import StepDef
from .state import RunState

log = logging.getLogger("perdure")

# An enum member costs a descriptor lookup on every access (~0.2 µs on Python 3.11):
# read once, for the record every step writes.
_SUCCEEDED, _RETRYING, _FAILED = StepState.SUCCEEDED, StepState.RETRYING, StepState.FAILED


@dataclass(slots=True)
class Result:
    """What one attempt of a step leads to: a record to write, then a value, an error
    to raise, or another attempt."""

    record: StepRecord
    value: Any = None
    error: BaseException | None = None
    retry: bool = False
    #: What the step function raised (None when it returned), for its circuit breaker.
    raised: BaseException | None = None


class StepCall:
    """One call of a step at its position."""

    __slots__ = (
        "attempts",
        "definition",
        "last_error",
        "next_attempt_at",
        "position",
        "probe_failures",
        "prober",
        "run",
        "started_at",
        "wait_topic",
    )

    def __init__(self, run: RunState, definition: StepDef, position: str) -> None:
        self.run = run
        self.definition = definition
        self.position = position
        self.attempts = 0
        #: When this execution's first attempt began (the store keeps the earliest).
        self.started_at: float | None = None
        self.next_attempt_at: float | None = None
        # What the wait until next_attempt_at is for (a retry, a probe, a breaker), the
        # wait topic of a suspension; see conditions.
        self.wait_topic: str | None = None
        self.last_error: str | None = None
        self.probe_failures = 0
        #: The breaker probe this call holds ("<workflow>#<position>"), if it runs one.
        self.prober: str | None = None

    def wait_seconds(self) -> float:
        """How long to wait before the next attempt."""
        if self.next_attempt_at is None:
            return 0.0
        return self.next_attempt_at - self.run.clock.time()

    def start_attempt(self) -> None:
        """Count an attempt; refuse to start it if this execution may no longer write."""
        self.run.check_lease()
        self.attempts += 1
        if self.started_at is None:
            self.started_at = self.run.clock.time()

    def after(self, result: Any, exc: BaseException | None) -> Result:
        """The record and consequence of the attempt that returned ``result`` or raised."""
        run = self.run
        now = run.clock.time()
        name, position = self.definition.name, self.position
        raised = exc
        if exc is None:
            try:
                hint = self.definition.return_hint
                output = run.serializer.dumps(result, hint)
                # Hand the workflow the decoded value, so that it sees the same thing on
                # the first run as on every replay.
                value = run.serializer.loads(output, hint)
            except SerializationError as error:
                exc = SerializationError(
                    f"step {name!r} (position {position}) of workflow "
                    f"{run.workflow_id!r} returned a value that can't be recorded: {error}"
                )
            else:
                record = StepRecord(
                    position,
                    name,
                    _SUCCEEDED,
                    output,
                    None,
                    self.attempts,
                    None,
                    now,
                    self.started_at,
                )
                return Result(record, value)
        retry = self.definition.retry
        error_text = encode_error(exc, run.serializer)
        if not isinstance(exc, SerializationError) and retry.should_retry(exc, self.attempts):
            self.next_attempt_at = now + retry.delay(self.attempts)
            log.warning(
                "workflow %s step %s (%s) attempt %d failed: %r; next attempt in %.1fs",
                run.workflow_id,
                position,
                name,
                self.attempts,
                exc,
                self.next_attempt_at - now,
                # The attempt's fields: it ended, so they are no longer in the context.
                extra={"step": name, "position": position, "attempt": self.attempts},
            )
            record = StepRecord(
                position,
                name,
                _RETRYING,
                None,
                error_text,
                self.attempts,
                self.next_attempt_at,
                now,
                self.started_at,
            )
            self.retrying(record)
            observer = run.observer
            if observer is not None:
                observer.retried(name)
            return Result(record, retry=True, raised=raised)
        record = StepRecord(
            position, name, _FAILED, None, error_text, self.attempts, None, now, self.started_at
        )
        if not isinstance(exc, Exception):
            # A KeyboardInterrupt, SystemExit or a user's own BaseException from step
            # code: the workflow sees what every replay will, a StepFailedError naming it
            # (raising the original would stop the workflow's thread, not fail it).
            exc = decode_error(error_text, StepFailedError, run.serializer)
        return Result(record, error=exc, raised=raised)

    def retrying(self, record: StepRecord) -> None:
        """Note a failed attempt that gets another one after its backoff."""
        self.last_error = record.error
        self.wait_topic = WaitReason(WaitKind.RETRY, self.definition.name).topic
        self.probe_failures = 0
