"""One look at the store, shared by every waiter whose workflow runs elsewhere.

A ``result()`` whose workflow runs in this process is told its outcome by the executor
(``Notifier.notify``) and needs no store. One whose workflow runs in another process,
or still waits to be claimed, has to look at the store; a thousand such waiters each
reading its own row every poll interval would cost a thousand reads per interval (a
gather of 2,000 starts over a worker bounded at 1,000 did exactly that, and the reads
took more CPU than the workflows). The ``Watcher`` makes it one query per interval:
each such waiter registers its workflow ID; the first waiter whose wait ends when a
look is due looks for all of them (``Store.unfinished_among``) and pokes the waiters of
those that ended, which then read their own record once. Until a look is due again, a
waiter whose wait ended just goes on waiting.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

from ._notifier import Notifier
from .storage import Store


class Watcher:
    """The workflow IDs that waiters of this process wait for elsewhere, and their
    shared look at the store (at most one at a time, at most two per ``interval()``)."""

    def __init__(self, notifier: Notifier, interval: Callable[[], float]) -> None:
        self._notifier = notifier
        self._interval = interval
        self._lock = threading.Lock()
        self._watched: Counter[str] = Counter()
        self._looking = False
        self._next_look = float("-inf")

    def watch(self, workflow_id: str) -> None:
        """A waiter waits for ``workflow_id``, which does not run here."""
        with self._lock:
            self._watched[workflow_id] += 1

    def unwatch(self, workflow_id: str) -> None:
        """That waiter stopped waiting (``watch`` once per ``unwatch``)."""
        with self._lock:
            left = self._watched[workflow_id] - 1
            if left > 0:
                self._watched[workflow_id] = left
            else:
                del self._watched[workflow_id]

    def due(self) -> list[str] | None:
        """The IDs to look for, when a look is due and nobody is looking (the caller
        then looks: ``look``); None otherwise."""
        with self._lock:
            if self._looking or not self._watched or time.monotonic() < self._next_look:
                return None
            self._looking = True
            return list(self._watched)

    def look(self, store: Store, workflow_ids: list[str]) -> None:
        """Look for ``workflow_ids`` (what ``due`` gave) and poke the waiters of every
        one that ended (or is gone: its waiter then says so)."""
        try:
            unfinished = store.unfinished_among(workflow_ids)
        finally:
            with self._lock:
                self._looking = False
                # Half an interval: waiters whose waits end just after this look find the
                # next one due within their own interval, so no workflow goes unlooked-at
                # for much longer than one interval.
                self._next_look = time.monotonic() + self._interval() / 2
        for workflow_id in workflow_ids:
            if workflow_id not in unfinished:
                self._notifier.poke(workflow_id)

    def look_if_due(self, store: Store) -> None:
        """``look`` in this thread if a look is due."""
        workflow_ids = self.due()
        if workflow_ids is not None:
            self.look(store, workflow_ids)
