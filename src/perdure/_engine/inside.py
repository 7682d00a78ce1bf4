"""What code inside a step's body sees of its step: the attempt it runs in.

The current run is None inside a step's body (a step called there is a plain call), so
a durable call made there (``perdure.write_stream``, ``perdure.connection``) finds its
step here instead: set by ``attempts.py`` around each attempt, and by
``transactions.py`` around a transactional step's function.
"""

from __future__ import annotations

import asyncio
import contextvars
from concurrent.futures import Future
from dataclasses import dataclass

from .._errors import LeaseLost
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
    #: Stream writes the step made with the sync form on an event loop, not waited for
    #: there (the loop must not wait): the attempt waits for them before it counts.
    unsent: list[Future[int | None]] | None = None

    async def stored(self) -> None:
        """Wait for the stream writes in ``unsent``; raise the first one's failure
        (``LeaseLost`` for a write the lease refused)."""
        unsent, self.unsent = self.unsent or [], None
        bridge = self.run.bridge
        for future in unsent:
            self._check(await (bridge.wait(future) if bridge else asyncio.wrap_future(future)))

    def stored_sync(self) -> None:
        """``stored`` for a sync step's attempt (one called in an async workflow runs
        on its loop's thread, which its record's write blocks right after anyway)."""
        unsent, self.unsent = self.unsent or [], None
        for future in unsent:
            self._check(future.result())

    def _check(self, offset: int | None) -> None:
        if offset is None:
            raise LeaseLost(self.run.workflow_id, self.run.lease.epoch)


current_step: contextvars.ContextVar[StepContext | None] = contextvars.ContextVar(
    "perdure_step", default=None
)
