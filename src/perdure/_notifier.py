"""Telling waiters in this process the moment a workflow finishes here."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future

from ._model import Outcome


class Notifier:
    """Tells waiters in this process the moment a workflow finishes here, so that a local
    ``result()`` needs no polling."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, list[Future[Outcome | None]]] = {}

    def subscribe(self, workflow_id: str) -> Future[Outcome | None]:
        """A future that resolves with the outcome if the workflow finishes in this process,
        or with None when it may have finished elsewhere."""
        future: Future[Outcome | None] = Future()
        with self._lock:
            self._waiters.setdefault(workflow_id, []).append(future)
        return future

    def unsubscribe(self, workflow_id: str, future: Future[Outcome | None]) -> None:
        """Forget a waiter that stopped waiting."""
        with self._lock:
            waiters = self._waiters.get(workflow_id)
            if waiters and future in waiters:
                waiters.remove(future)
                if not waiters:
                    del self._waiters[workflow_id]

    def notify(self, workflow_id: str, outcome: Outcome | None) -> None:
        """Resolve every waiter of the workflow with its outcome, or with None to make
        them look at the store (the workflow finished in another process)."""
        with self._lock:
            waiters = self._waiters.pop(workflow_id, [])
        for future in waiters:
            if not future.done():
                future.set_result(outcome)

    def poke(self, workflow_id: str) -> None:
        """Make the workflow's waiters look at the store now."""
        self.notify(workflow_id, None)

    def poke_all(self, told_here: Callable[[str], bool] | None = None) -> None:
        """Make every waiter look at the store now (events may have been missed), but
        those of the workflows ``told_here`` names: their runs here tell them their
        outcomes, and a poke would only make them read the store."""
        with self._lock:
            workflow_ids = list(self._waiters)
        for workflow_id in workflow_ids:
            if told_here is None or not told_here(workflow_id):
                self.poke(workflow_id)
