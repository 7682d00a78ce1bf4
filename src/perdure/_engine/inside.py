"""What code inside a step's body sees of its step: the attempt it runs in.

The current run is None inside a step's body (a step called there is a plain call), so
a durable call made there (``perdure.write_stream``, ``perdure.connection``) finds its
step here instead: set by ``attempts.py`` around each attempt, and by
``transactions.py`` around a transactional step's function.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from ..storage import Transaction
from .state import RunState


@dataclass(slots=True)
class StepContext:
    """The step attempt that code runs in."""

    run: RunState
    position: str
    #: The attempt's number (1 for the first).
    attempt: int
    #: The open transaction of a transactional step (``@app.transaction``).
    transaction: Transaction | None = None


current_step: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar(
    "perdure_step", default=None
)
