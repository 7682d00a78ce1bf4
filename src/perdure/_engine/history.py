"""The one history cursor: where each step or wait lands, and what is recorded there.

A workflow runs from the top every time it (re)starts. Its recorded steps are
loaded once, up front; every durable operation takes the next position of its
scope here, and the replay check is done once, here: a CANCELLED record raises
the signal it holds again, a record of another name is a ``NonDeterminismError``
(the code changed under a running workflow), and any other record is handed back:
a final one (SUCCEEDED, FAILED) to return or raise without running, an in-flight
one (RETRYING, WAITING) to go on from.
"""

from __future__ import annotations

from .._errors import NonDeterminismError
from .._model import StepRecord, StepState
from .scope import current_scope, scope
from .signals import Signals

# Read once: an enum member costs a descriptor lookup on every access.
_CANCELLED = StepState.CANCELLED


class History:
    """The recorded steps of one workflow, and the cursor over them."""

    def __init__(
        self,
        workflow_id: str,
        steps: list[StepRecord],
        signals: Signals,
    ) -> None:
        self.workflow_id = workflow_id
        self.recorded = {step.position: step for step in steps}
        self._signals = signals
        #: The signal unwinding the execution (``RunState.unwinding`` is this attribute):
        #: held here, where every operation's first look goes, to cost no call.
        self.unwinding: BaseException | None = None
        #: The first difference replay met: once set, every later operation raises it
        #: again, so a workflow that catches it still ends held (see ``run.py``).
        self.diverged: NonDeterminismError | None = None

    def take(self, name: str) -> tuple[str, StepRecord | None]:
        """The next position of the current scope for operation ``name``, and what is
        recorded there (None: nothing yet). Raises the unwinding signal instead while
        the execution unwinds."""
        if self.unwinding is not None:
            raise self.unwinding
        if self.diverged is not None:
            raise self.diverged
        current = current_scope.get()
        assert current is not None, "a workflow run always has a scope"
        position = current.take_position()
        recorded = self.recorded.get(position)
        if recorded is None:
            return position, None  # the common case: a new position
        return position, self.check(position, name)

    def check(self, position: str, name: str) -> StepRecord | None:
        """The replay check of ``position`` for operation ``name`` (see the module)."""
        recorded = self.recorded.get(position)
        if recorded is None:
            return None
        if recorded.status == _CANCELLED:
            raise self._signals.replayed(recorded.error)
        if recorded.name != name:
            self.diverged = NonDeterminismError(self.workflow_id, position, recorded.name, name)
            raise self.diverged
        return recorded

    def continues_past(self, position: str) -> bool:
        """Whether a later position of the same scope as ``position`` is recorded (the
        history was written by code that took no position here)."""
        prefix, _, number = position.rpartition(".")
        prefix = f"{prefix}." if prefix else ""
        here = int(number)
        for recorded in self.recorded:
            head, _, tail = recorded.rpartition(".")
            if (f"{head}." if head else "") == prefix and tail.isdigit() and int(tail) > here:
                return True
        return False

    def cancelled_next(self) -> bool:
        """Whether the next position holds a CANCELLED record (then take it: it raises)."""
        recorded = self.recorded.get(scope().peek())
        return recorded is not None and recorded.status == _CANCELLED

    def free_next(self) -> bool:
        """Whether nothing is recorded at the next position."""
        return scope().peek() not in self.recorded
