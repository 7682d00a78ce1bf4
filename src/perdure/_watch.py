"""One look at the store, shared by every waiter that must look.

A ``result()`` whose workflow runs in this process is told its outcome by the executor
(``Notifier.notify``) and needs no store. One whose workflow runs in another process,
or still waits to be claimed, has to look at the store; a thousand such waiters each
reading its own row every poll interval would cost a thousand reads (and a thousand
wake-ups) per interval: a gather of 2,000 starts over a worker bounded at 1,000 did
exactly that, and the reads took more CPU than the workflows. The ``Watcher`` makes it
one query per interval, in a thread of its own that runs only while somebody waits:
each such waiter registers its workflow ID and sleeps; the watcher looks for all of
them (``Store.unfinished_among``) and pokes the waiters of those that ended, which then
read their own record once. A waiter still reads its record after a long wait (a third
of the lease), so a watcher that cannot look delays nobody for longer than that.

A waiter on an event loop reads its record (at its first look, when its workflow does
not run here, and after a poke) through ``SharedReads``: the reads that many waiters ask
for at once (a gather of 2,000 ``result_async``, most of them of workflows that already
ended or wait to be claimed) become one query per batch, in one thread, instead of a
query, a pooled connection and a hop to a thread each.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError

from ._model import WorkflowRecord
from ._notifier import Notifier
from .storage import Store

log = logging.getLogger("perdure")


class Watcher:
    """The workflow IDs that waiters of this process wait for elsewhere, looked for in
    the store every ``interval()`` seconds by a thread that runs while there are any."""

    def __init__(
        self,
        notifier: Notifier,
        store: Callable[[], Store | None],
        interval: Callable[[], float],
    ) -> None:
        self._notifier = notifier
        self._store = store
        self._interval = interval
        self._lock = threading.Lock()
        self._watched: Counter[str] = Counter()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def watch(self, workflow_id: str) -> None:
        """A waiter waits for ``workflow_id``, which does not run here."""
        with self._lock:
            self._watched[workflow_id] += 1
            if self._thread is None:
                self._closed.clear()
                self._thread = threading.Thread(
                    target=self._run, name="perdure-watcher", daemon=True
                )
                self._thread.start()

    def unwatch(self, workflow_id: str) -> None:
        """That waiter stopped waiting (``watch`` once per ``unwatch``)."""
        with self._lock:
            left = self._watched[workflow_id] - 1
            if left > 0:
                self._watched[workflow_id] = left
            else:
                del self._watched[workflow_id]

    def close(self) -> None:
        """Stop looking (the next ``watch`` starts again)."""
        self._closed.set()
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            self._closed.wait(self._interval())
            with self._lock:
                workflow_ids = list(self._watched)
                if not workflow_ids or self._closed.is_set():
                    self._thread = None
                    return
            self.look(workflow_ids)

    def look(self, workflow_ids: list[str]) -> None:
        """Look for ``workflow_ids`` now and poke the waiters of every one that ended
        (or is gone: its waiter then says so)."""
        store = self._store()
        if store is None:  # closed: the waiters' own reads open it again if they must
            return
        try:
            unfinished = store.unfinished_among(workflow_ids)
        except Exception as exc:  # noqa: BLE001 - each waiter's own read raises it
            log.debug("perdure: the watcher could not look at the store: %s", type(exc).__name__)
            unfinished = set()
        for workflow_id in workflow_ids:
            if workflow_id not in unfinished:
                self._notifier.poke(workflow_id)


#: The most IDs one shared read asks for (the rest go in the next query of the batch).
_READ_CHUNK = 500


class SharedReads:
    """Workflow records read for many waiters at once, by a thread that runs while any
    are asked for: the first read goes out at once, and the reads asked for while it
    runs go together in the next query (as the group commit does for writes)."""

    def __init__(self, store: Callable[[], Store], executor_id: Callable[[], str | None]) -> None:
        self._store = store
        # This process's executor, the one whose outcomes its waiters hear without a push.
        self._executor_id = executor_id
        self._lock = threading.Lock()
        self._asked: dict[str, list[Future[WorkflowRecord | None]]] = {}
        # Those of the asked to read with ``Store.watch_workflows``.
        self._watching: set[str] = set()
        self._reading = False

    def read(self, workflow_id: str, watch: bool = False) -> Future[WorkflowRecord | None]:
        """The workflow's record as the store has it now (None if there is no such
        workflow), or the store's error; ``watch``: marked first as waited for by another
        process than the one running it (``Store.watch_workflows``)."""
        future: Future[WorkflowRecord | None] = Future()
        with self._lock:
            self._asked.setdefault(workflow_id, []).append(future)
            if watch:
                self._watching.add(workflow_id)
            start = not self._reading
            self._reading = True
        if start:
            threading.Thread(target=self._run, name="perdure-reads", daemon=True).start()
        return future

    def _run(self) -> None:
        while True:
            with self._lock:
                asked, self._asked = self._asked, {}
                watching, self._watching = self._watching, set()
                if not asked:
                    self._reading = False
                    return
            workflow_ids = list(asked)
            for at in range(0, len(workflow_ids), _READ_CHUNK):
                chunk = workflow_ids[at : at + _READ_CHUNK]
                try:
                    store = self._store()
                    plain = [i for i in chunk if i not in watching]
                    found = store.get_workflows(plain) if plain else {}
                    if len(plain) < len(chunk):
                        marked = [i for i in chunk if i in watching]
                        found.update(store.watch_workflows(marked, self._executor_id()))
                except BaseException as exc:  # noqa: BLE001 - each waiter raises it
                    for workflow_id in chunk:
                        for future in asked[workflow_id]:
                            _settle(future, None, exc)
                    continue
                for workflow_id in chunk:
                    record = found.get(workflow_id)
                    for future in asked[workflow_id]:
                        _settle(future, record, None)


def _settle(
    future: Future[WorkflowRecord | None],
    record: WorkflowRecord | None,
    error: BaseException | None,
) -> None:
    # A waiter that gave up (its coroutine cancelled) cancelled its future: the others'
    # must still be settled.
    with contextlib.suppress(InvalidStateError):
        if error is None:
            future.set_result(record)
        else:
            future.set_exception(error)
