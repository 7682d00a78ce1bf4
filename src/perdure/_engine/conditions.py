"""Conditions on a step's next attempt: its retry wait, a probe, a circuit breaker.

Before each attempt of a step that has them, ``gate`` decides whether the attempt
may run now:

- after a failed attempt whose ``Retry`` has ``wait_for``, the probe must pass; a
  failed probe is recorded on the step's RETRYING record (same attempt count, the
  next probe's time in ``next_attempt_at``, the probe and its failures in
  ``output``), so that a replay keeps the wait and the probe's backoff;
- a step behind a ``CircuitBreaker`` asks the store: CLOSED lets it through; OPEN
  parks it until the cool-down ends; after that, the one workflow that claims the
  probe (atomically, fleet-wide) runs its attempt and the others park until that
  probe's outcome.

A wait that the gate (or a failed attempt) sets is a *wait topic*, which the
runtime waits out in place or, when longer than ``suspend_after``, suspends the
workflow with: the store keeps the topic in ``wait_topic`` and ``status()`` tells
what the workflow waits for. After the attempt, ``report`` tells the breaker how
it went. The gate and the report may block (probes, store reads): async workflows
run them in a worker thread.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TypeVar

from .._errors import StoreError
from .._model import BreakerState, StepRecord, StepState, WaitKind, WaitReason
from .._probe import probe_name, run_probe
from .._serialization import seal
from .call import StepCall
from .describe import probe_state
from .state import RunState

log = logging.getLogger("perdure")

T = TypeVar("T")


def _step(call: StepCall) -> str:
    return f"workflow {call.run.workflow_id} step {call.position} ({call.definition.name})"


def _store(run: RunState, operation: Callable[..., T], *args: object) -> T:
    # A store that fails under a workflow interrupts it, to be resumed from its record
    # (like a failed checkpoint), instead of raising into the workflow's own code.
    try:
        return operation(*args)
    except StoreError as exc:
        raise run.failed(exc) from exc


def _short_error(exc: BaseException) -> str:
    cls = type(exc)
    return json.dumps({"type": f"{cls.__module__}:{cls.__qualname__}", "message": str(exc)})


# -- the step's state across replays ---------------------------------------------------------


def restore(call: StepCall, recorded: StepRecord) -> None:
    """Take up a RETRYING record on replay: what its wait is for, the last error, and the
    probe's failures so far."""
    call.last_error = recorded.error
    call.wait_topic = WaitReason(WaitKind.RETRY, call.definition.name).topic
    state = probe_state(recorded.output)
    if state is not None:
        call.wait_topic = WaitReason(WaitKind.PROBE, state[0]).topic
        call.probe_failures = state[1]


# -- before an attempt -------------------------------------------------------------------------


def gated(call: StepCall) -> bool:
    """Whether the next attempt has conditions to check (else it just runs)."""
    definition = call.definition
    return definition.breaker is not None or (
        definition.retry.wait_for is not None and call.attempts > 0
    )


def gate(call: StepCall) -> tuple[bool, StepRecord | None]:
    """Whether the next attempt may run now, and a record to write first (a failed probe).
    When it may not, ``call.next_attempt_at`` and ``call.wait_topic`` say until when and
    why to wait; then ask again."""
    probe = call.definition.retry.wait_for
    if probe is not None and call.attempts > 0:
        passed, record = _probe(call, probe)
        if not passed:
            return False, record
    breaker = call.definition.breaker
    if breaker is not None and not _admit(call):
        return False, None
    return True, None


def _probe(call: StepCall, probe: Callable[[], object]) -> tuple[bool, StepRecord | None]:
    run, retry, name = call.run, call.definition.retry, probe_name(probe)
    passed, why = run_probe(probe)
    now = run.clock.time()
    if passed:
        if call.probe_failures:
            log.info(
                "%s: probe %s passed after %d failure(s); attempt %d runs",
                _step(call),
                name,
                call.probe_failures,
                call.attempts + 1,
            )
        call.probe_failures = 0
        return True, None
    call.probe_failures += 1
    call.next_attempt_at = now + retry.probe_delay(call.probe_failures)
    call.wait_topic = WaitReason(WaitKind.PROBE, name).topic
    log.info(
        "%s: probe %s failed (%s); attempt %d waits for it to pass, next probe in %.1fs",
        _step(call),
        name,
        why,
        call.attempts + 1,
        call.next_attempt_at - now,
    )
    output = json.dumps({"probe": name, "failures": call.probe_failures})
    record = StepRecord(
        call.position,
        call.definition.name,
        StepState.RETRYING,
        output,
        call.last_error,
        call.attempts,
        call.next_attempt_at,
        now,
    )
    return False, record


def _admit(call: StepCall) -> bool:
    run, breaker = call.run, call.definition.breaker
    assert breaker is not None
    store, now = run.store, run.clock.time()
    record = _store(run, store.get_breaker, breaker.name)
    if record is None or record.state == BreakerState.CLOSED:
        return True
    if record.state == BreakerState.OPEN and record.retry_at is not None and record.retry_at > now:
        return _park(call, record.retry_at, "OPEN")
    # The cool-down ended: one workflow, fleet-wide, gets to run a probe attempt.
    holder = f"{run.workflow_id}#{call.position}"
    expires = now + breaker.probe_timeout
    if _store(run, store.claim_breaker_probe, breaker.name, holder, now, expires):
        call.prober = holder
        log.info("%s runs the probe attempt of circuit breaker %r", _step(call), breaker.name)
        return True
    record = _store(run, store.get_breaker, breaker.name)
    if record is None or record.state == BreakerState.CLOSED:
        return True
    if record.state == BreakerState.OPEN:
        until = record.retry_at or now
    else:
        # A probe runs: its success wakes us at once; its failure opens the breaker for a
        # cool-down, after which someone must probe again, so look by then at the latest.
        until = min(record.probe_expires_at or now, now + breaker.cooldown)
    # Never a wait in the past: the state may move under us, and then we look again soon.
    return _park(call, max(until, now + run.poll_interval), record.state)


def _park(call: StepCall, until: float, state: str) -> bool:
    breaker = call.definition.breaker
    assert breaker is not None
    call.next_attempt_at = until
    call.wait_topic = WaitReason(WaitKind.BREAKER, breaker.name).topic
    log.debug(
        "%s parks: circuit breaker %r is %s (for %.1fs at most)",
        _step(call),
        breaker.name,
        state,
        until - call.run.clock.time(),
    )
    return False


# -- after an attempt --------------------------------------------------------------------------


def reports(call: StepCall, exc: BaseException | None) -> bool:
    """Whether the attempt's outcome must be told to a breaker (``report``)."""
    breaker = call.definition.breaker
    return breaker is not None and (
        call.prober is not None or (exc is not None and breaker.counts(exc))
    )


def report(call: StepCall, exc: BaseException | None) -> None:
    """Tell the step's breaker how the attempt went: count a failure (which may open it),
    or, for its probe attempt, close it (waking every parked workflow) or open it again."""
    run, breaker = call.run, call.definition.breaker
    assert breaker is not None
    store, now = run.store, run.clock.time()
    holder, call.prober = call.prober, None
    counted = exc is not None and breaker.counts(exc)
    if holder is not None and not counted:
        woken = _store(run, store.close_breaker, breaker.name, now)
        if woken is not None:
            log.warning(
                "circuit breaker %r closed: the probe attempt of %s succeeded; "
                "%d parked workflow(s) resume",
                breaker.name,
                _step(call),
                woken,
            )
        return
    if exc is None or not counted:
        return
    # Sealed under an encrypting serializer: an error's text may hold the data it failed on.
    retry_at, error = now + breaker.cooldown, seal(run.serializer, _short_error(exc))
    if holder is not None:
        if _store(run, store.reopen_breaker, breaker.name, holder, now, retry_at, error):
            log.warning(
                "circuit breaker %r stays open: the probe attempt of %s failed: %r; "
                "next probe attempt in %.1fs",
                breaker.name,
                _step(call),
                exc,
                breaker.cooldown,
            )
        return
    opened = _store(
        run,
        store.count_breaker_failure,
        breaker.name,
        now,
        breaker.failure_threshold,
        breaker.window,
        retry_at,
        error,
    )
    if opened:
        log.warning(
            "circuit breaker %r opened after %d failure(s) within %.0fs, the last in %s: %r; "
            "steps behind it park instead of calling, for %.1fs",
            breaker.name,
            breaker.failure_threshold,
            breaker.window,
            _step(call),
            exc,
            breaker.cooldown,
        )
