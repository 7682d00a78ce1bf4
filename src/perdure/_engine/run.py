"""One execution of one workflow function, to its outcome.

``WorkflowRun`` is what the executor creates, runs and signals (see ``state.py``
for what it holds). Every way out of the workflow function is accounted for: a
return is SUCCEEDED, ``Cancelled`` (a delivered cancel) is CANCELLED, any other
exception *or* ``BaseException`` the workflow's code raises (a ``KeyboardInterrupt``,
a ``SystemExit``, a user's own) is FAILED, recorded like an ordinary error.
perdure's own signals (``Suspended``, ``ContinueAsNew``, ``LeaseLost``,
``CheckpointFailed``), ``GeneratorExit`` and an ``asyncio.CancelledError`` (the
executor shutting down) go on to the executor, and so does a ``NonDeterminismError``
(replay met another step than the one recorded: the executor holds the workflow),
even when the workflow's code caught it. Before an outcome is handed over,
and before a suspension or a continue-as-new, the run's deferred writes are made
durable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._error_codec import encode_error
from .._errors import (
    Cancelled,
    CheckpointFailed,
    ContinueAsNew,
    DeadlineExceeded,
    DeadlineExceededError,
    LeaseLost,
    SerializationError,
    Suspended,
    WorkflowCancelledError,
)
from .._logfields import log_context
from .._model import Outcome, StepRecord, WorkflowState
from .._serialization import decode_call
from .._telemetry import RunTelemetry, observe_run
from .drivers import drive_async, drive_sync
from .effects import Flush, Op
from .scope import Scope, current_scope, current_workflow_id
from .state import RunState, current_run

log = logging.getLogger("perdure")

#: What leaves the workflow function for the executor instead of becoming an outcome.
_SIGNALS = (
    Suspended,
    ContinueAsNew,
    LeaseLost,
    CheckpointFailed,
    GeneratorExit,
    asyncio.CancelledError,
)
# Read once: an enum member costs a descriptor lookup on every access.
_SUCCEEDED, _CANCELLED, _FAILED = (
    WorkflowState.SUCCEEDED,
    WorkflowState.CANCELLED,
    WorkflowState.FAILED,
)
#: Signals after which the run writes nothing more.
_FINAL = (LeaseLost, CheckpointFailed, GeneratorExit, asyncio.CancelledError)


@dataclass
class _Ended:
    """How the workflow function ended."""

    result: Any = None
    error: BaseException | None = None
    signal: BaseException | None = None


class WorkflowRun(RunState):
    """The state of one execution of one workflow, under one lease, and the running of
    its function (sync in a pool thread, async in a task of the executor's loop)."""

    #: The step records to write with the outcome (held until it, see ``writes.py``).
    last_steps: Sequence[StepRecord] = ()

    def _observe(self) -> RunTelemetry | None:
        """Begin the execution's telemetry (its span current from now on in this
        context) and its log fields."""
        log_context.set((*self.log_fields, None, None, None))
        workflow_id, name, executor = self.log_fields
        record = self.record
        self.observer = observe_run(
            workflow_id, name, executor, record.trace_context, record.created_at
        )
        return self.observer

    def _enter(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        current_run.set(self)
        current_workflow_id.set(self.workflow_id)
        current_scope.set(Scope())
        return decode_call(
            self.serializer,
            self.definition.fn,
            self.record.inputs,
            f"workflow {self.definition.name!r}",
        )

    def execute(self) -> Outcome:
        """Run a synchronous workflow function to its outcome (in a fresh context)."""
        observed = self._observe()
        try:
            try:
                args, kwargs = self._enter()
                ended = _Ended(result=self.definition.fn(*args, **kwargs))
            except _SIGNALS as signal:
                ended = _Ended(signal=signal)
            except BaseException as exc:  # noqa: BLE001 - every workflow ends in an outcome
                ended = _Ended(error=exc)
            outcome = drive_sync(self, self._end(ended))
        except BaseException as signal:
            if observed is not None:
                observed.close(type(signal).__name__)
            raise
        if observed is not None:
            _close(observed, outcome, ended)
        return outcome

    async def execute_async(self) -> Outcome:
        """Run an async workflow function to its outcome (inside its own task)."""
        observed = self._observe()
        try:
            try:
                args, kwargs = self._enter()
                ended = _Ended(result=await self.definition.fn(*args, **kwargs))
            except _SIGNALS as signal:
                ended = _Ended(signal=signal)
            except BaseException as exc:  # noqa: BLE001 - every workflow ends in an outcome
                ended = _Ended(error=exc)
            outcome = await drive_async(self, self._end(ended))
        except BaseException as signal:
            if observed is not None:
                observed.close(type(signal).__name__)
            raise
        if observed is not None:
            _close(observed, outcome, ended)
        return outcome

    def _end(self, ended: _Ended) -> Op[Outcome]:
        """Make the deferred writes durable, then hand the ending on."""
        diverged = self.history.diverged
        if diverged is not None and not isinstance(ended.signal, _FINAL):
            ended = _Ended(signal=diverged)  # whatever the code did with it: hold it
        writes = self.writes
        if writes.held and ended.signal is None:
            # The last step records go with the outcome, in its transaction.
            self.last_steps = [record for record, _, _ in writes.take_held()]
        elif writes.held and isinstance(ended.signal, _FINAL):
            writes.take_held()  # nothing more is written
        # (Nothing pending or held and no failure unseen: a flush would have nothing to do.)
        pending = not writes.clear or writes.held or writes.in_flight
        if pending and not isinstance(ended.signal, _FINAL):
            try:
                yield Flush()
            except (LeaseLost, CheckpointFailed):
                raise
            except Exception as exc:  # a deferred start or send failed: the workflow did
                if ended.signal is None:
                    ended = _Ended(error=exc)
        if ended.signal is not None:
            raise ended.signal
        return self.outcome(ended.result, ended.error)

    def outcome(self, result: Any, exc: BaseException | None) -> Outcome:
        """The outcome to record for a workflow that returned ``result`` or raised."""
        if exc is None:
            try:
                output = self.serializer.dumps(result, self.definition.return_hint)
                return Outcome(_SUCCEEDED, output)
            except SerializationError as error:
                exc = SerializationError(
                    f"workflow {self.workflow_id!r} ({self.definition.name}) returned a value "
                    f"that can't be recorded: {error}"
                )
        if isinstance(exc, DeadlineExceeded):
            exc = DeadlineExceededError(self.workflow_id, exc.timeout)
            log.warning("%s", exc)
        elif isinstance(exc, Cancelled):
            log.info("workflow %s cancelled", self.workflow_id)
            cancelled = encode_error(WorkflowCancelledError(self.workflow_id), self.serializer)
            return Outcome(_CANCELLED, None, cancelled)
        if not isinstance(exc, Exception):
            log.error(
                "workflow %s (%s) raised %r, which is not an Exception: it failed",
                self.workflow_id,
                self.definition.name,
                exc,
            )
        return Outcome(_FAILED, None, encode_error(exc, self.serializer))


def _close(observed: RunTelemetry, outcome: Outcome, ended: _Ended) -> None:
    """End the execution's span with its outcome (and the failure's exception)."""
    failed = outcome.state is _FAILED
    observed.close(outcome.state.value, failed, ended.error if failed else None)
