"""The worker's thread pool for synchronous workflows."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("perdure")


class ThreadPool:
    """Daemon threads started on demand: a workflow stuck in user code must not keep the
    process from exiting after shutdown (``ThreadPoolExecutor`` joins its threads).

    ``room()`` says how many more workflows it takes while keeping at most one pool's
    worth waiting for a thread. After ``want_room()`` (a claim left workflows for lack
    of room), ``on_room`` is called once finished workflows bring that room back to half
    a pool (the moment to claim more: a claim per freed thread would be a claim
    transaction per workflow, and one whenever room comes back, a claim that finds
    nothing while the workflows all start in this process).

    New threads are started by a thread of the pool's own (the spawner, started at the
    first need), not by the caller of ``submit``: ``Thread.start()`` waits until the new
    thread runs, which in a busy process is as long as it takes that thread to get the
    GIL (up to tens of ms); an event loop starting 2,000 workflows spent 166 ms of its
    time in 107 such waits."""

    def __init__(
        self, max_threads: int, name: str, on_room: Callable[[], None] | None = None
    ) -> None:
        self._max = max_threads
        self._name = name
        self._on_room = on_room
        self._refill_at = max(1, max_threads // 2)
        self._wanted = False
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._backlog = 0
        # One item per thread to start (None: stop), for the spawner.
        self._to_start: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._spawner: threading.Thread | None = None

    def submit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on a pool thread: an idle one, a new one, or the next that frees up."""
        # Each item is matched with a thread at once: an idle thread is reserved for it (not
        # merely seen idle, or several items submitted together would all count on the same
        # thread and run one after another), else a new thread starts, else it waits in
        # the backlog for the next thread that finishes.
        spawner = None
        with self._lock:
            start = 0
            if self._idle > 0:
                self._idle -= 1
            elif self._threads < self._max:
                self._threads += 1
                start = self._threads
                if self._spawner is None:
                    self._spawner = threading.Thread(
                        target=self._spawn, name=f"{self._name}-spawner", daemon=True
                    )
                    spawner = self._spawner  # started below, outside the lock (once)
            else:
                self._backlog += 1
        self._queue.put(fn)
        if start:
            self._to_start.put(start)
            if spawner is not None:
                spawner.start()

    def _spawn(self) -> None:
        while (number := self._to_start.get()) is not None:
            try:
                threading.Thread(
                    target=self._work, name=f"{self._name}-{number}", daemon=True
                ).start()
            except BaseException:  # noqa: BLE001 - the spawner must go on
                log.exception("perdure could not start a workflow thread")
                with self._lock:
                    # Its work waits for the threads there are (the system's limit on
                    # threads was met); a later submit may start one again.
                    self._threads -= 1
                    self._backlog += 1

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
                refill = self._wanted and self._room() >= self._refill_at
                if refill:
                    self._wanted = False
            if refill and self._on_room is not None:
                self._on_room()

    def _room(self) -> int:
        # Busy threads (an idle one reserved for a submitted item counts as busy) and the
        # backlog against two pools' worth: as many running as threads, as many waiting.
        return 2 * self._max - (self._threads - self._idle) - self._backlog

    def want_room(self) -> None:
        """Call ``on_room`` once half a pool's room is back."""
        with self._lock:
            self._wanted = True

    def room(self) -> int:
        """How many more workflows it takes now: one per thread not busy, plus one per
        place in a backlog of at most ``max_threads`` (so that a thread that frees up
        finds the next workflow here, not after a claim's round trip)."""
        with self._lock:
            return self._room()

    def stop(self) -> None:
        """Let every thread end once it is idle (and the spawner once it started those
        it was asked for)."""
        self._to_start.put(None)
        for _ in range(self._threads):
            self._queue.put(None)
