"""The retention policy: how long finished workflows are kept (``perdure.Retention``).

A value, validated when made; the worker applies it (``_compliance.apply_retention``),
``perdure gc`` and ``app.gc`` run the same deletion once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from ._errors import InvalidValueError
from ._model import TERMINAL_STATES, WorkflowState
from ._validation import positive_seconds

#: The maintenance lease that makes one worker at a time apply retention.
LEASE_NAME = "perdure.retention"


def seconds_of(name: str, value: float | timedelta) -> float:
    """``value`` (seconds, or a ``timedelta``) as positive seconds; ``InvalidValueError``
    naming ``name`` otherwise."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    return positive_seconds(name, value)


def terminal_states(statuses: Sequence[str] | str) -> tuple[WorkflowState, ...]:
    """The outcomes named by ``statuses`` (any case); only finished workflows are ever
    deleted, so an active status is refused."""
    names = [statuses] if isinstance(statuses, str) else list(statuses)
    states: list[WorkflowState] = []
    for text in names:
        try:
            state = WorkflowState.parse(str(text))
        except ValueError as exc:
            raise InvalidValueError(str(exc)) from None
        if not state.terminal:
            allowed = ", ".join(TERMINAL_STATES)
            raise InvalidValueError(
                f"only finished workflows ({allowed}) can be deleted, not {state}"
            )
        if state not in states:
            states.append(state)
    if not states:
        raise InvalidValueError("give at least one status of finished workflows to delete")
    return tuple(states)


@dataclass(frozen=True)
class Retention:
    """Delete finished workflows some time after they finished:
    ``App(retention=perdure.Retention(older_than=timedelta(days=30)))``.

    A worker of the app deletes, every ``interval`` seconds, the workflows that finished
    with one of ``statuses`` more than ``older_than`` ago, ``batch`` trees per
    transaction, one worker of the fleet at a time (a lease in the database). A workflow
    goes with its whole tree: only a root workflow (not a child) is a candidate, and its
    tree goes only when none of its descendants is still active; a child never goes
    before its parent. Its steps, messages, events and subject tags go with it; the
    operator actions log keeps its rows and gains a ``gc`` action per tree.
    """

    #: How long after it finished a workflow is kept (seconds or a ``timedelta``).
    older_than: float | timedelta
    #: Which outcomes are deleted (default: all three).
    statuses: tuple[str, ...] = field(default=tuple(str(s) for s in TERMINAL_STATES))
    #: Trees deleted per transaction.
    batch: int = 200
    #: Seconds between two passes of the worker.
    interval: float = 600.0

    def __post_init__(self) -> None:
        seconds_of("older_than", self.older_than)
        terminal_states(self.statuses)
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise InvalidValueError(f"batch must be a whole number >= 1, not {self.batch!r}")
        positive_seconds("interval", self.interval)

    @property
    def seconds(self) -> float:
        """``older_than`` in seconds."""
        return seconds_of("older_than", self.older_than)
