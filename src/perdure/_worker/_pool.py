"""The worker's thread pool for synchronous workflows."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("perdure")


class ThreadPool:
    """Daemon threads started on demand: a workflow stuck in user code must not keep the
    process from exiting after shutdown (``ThreadPoolExecutor`` joins its threads)."""

    def __init__(self, max_threads: int, name: str) -> None:
        self._max = max_threads
        self._name = name
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._backlog = 0

    def submit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on a pool thread: an idle one, a new one, or the next that frees up."""
        # Each item is matched with a thread at once: an idle thread is reserved for it (not
        # merely seen idle, or several items submitted together would all count on the same
        # thread and run one after another), else a new thread starts, else it waits in
        # the backlog for the next thread that finishes.
        with self._lock:
            start = False
            if self._idle > 0:
                self._idle -= 1
            elif self._threads < self._max:
                self._threads += 1
                start = True
            else:
                self._backlog += 1
        self._queue.put(fn)
        if start:
            threading.Thread(
                target=self._work, name=f"{self._name}-{self._threads}", daemon=True
            ).start()

    def _work(self) -> None:
        while True:
            fn = self._queue.get()
            if fn is None:
                return
            try:
                fn()
            except BaseException:  # noqa: BLE001 - a pool thread must survive anything
                log.exception("perdure executor thread failed")
            with self._lock:
                if self._backlog > 0:
                    self._backlog -= 1  # the next queued item is this thread's
                else:
                    self._idle += 1

    def stop(self) -> None:
        """Let every thread end once it is idle."""
        for _ in range(self._threads):
            self._queue.put(None)
