"""Awaiting many thread-side futures on one event loop with few wake-ups.

``asyncio.wrap_future`` wakes the loop once per future (one ``call_soon_threadsafe``,
one syscall, each). When the writer thread commits a batch of hundreds of step
records for async workflows, the bridge wakes the loop once and resolves them all.
The executor has one for its loop; ``loop_bridge()`` is the one of the running loop of
this thread, for the client's awaits (starts, outcomes, reads of a ``gather``).
"""

from __future__ import annotations

import asyncio
import collections
import threading
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class FutureBridge:
    """Turns ``concurrent.futures.Future`` objects into awaitables of one loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        #: The loop the awaitables belong to.
        self.loop = loop
        self._arrived: collections.deque[tuple[asyncio.Future[Any], Future[Any]]] = (
            collections.deque()
        )
        self._lock = threading.Lock()
        self._scheduled = False
        # The waiter of each future awaited once, looked up when it ends: a closure per
        # future would be four more objects per write in flight for the garbage collector
        # to walk (thousands of writes may be in flight).
        self._waiters: dict[Future[Any], asyncio.Future[Any]] = {}
        self._ended = self._one_ended

    def wait(self, future: Future[T]) -> asyncio.Future[T]:
        """An awaitable of the loop (call from the loop's thread) for ``future``."""
        waiter: asyncio.Future[T] = self._loop.create_future()
        if future in self._waiters:  # awaited twice (rare): one closure for this waiter
            future.add_done_callback(lambda done: self._arrive(waiter, done))
        else:
            self._waiters[future] = waiter
            future.add_done_callback(self._ended)
        return waiter

    def forget(self, future: Future[Any]) -> None:
        """Stop waiting for ``future`` (call from the loop's thread), which may never end
        (a notifier's waiter, unsubscribed): its awaitable is left as it is."""
        self._waiters.pop(future, None)

    def _one_ended(self, done: Future[Any]) -> None:
        waiter = self._waiters.pop(done, None)
        if waiter is not None:  # None: forgotten
            self._arrive(waiter, done)

    def _arrive(self, waiter: asyncio.Future[Any], done: Future[Any]) -> None:
        self._arrived.append((waiter, done))
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._resolve)
        except RuntimeError:
            return  # the loop is closed: nobody awaits on it any more

    def _resolve(self) -> None:
        with self._lock:
            # Reset before draining: what arrives from now on schedules another round.
            self._scheduled = False
        while self._arrived:
            waiter, done = self._arrived.popleft()
            if waiter.done():  # cancelled, or given up on by its awaiter (a timeout)
                continue
            if done.cancelled():  # as asyncio.wrap_future passes it on
                waiter.cancel()
                continue
            error = done.exception()
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(done.result())


class _ThreadBridge(threading.local):
    bridge: FutureBridge | None = None


_THREAD = _ThreadBridge()


def loop_bridge() -> FutureBridge:
    """The bridge of the event loop running in this thread (call from a coroutine). One
    per thread, replaced when another loop runs here (``asyncio.run`` makes a new loop
    each time), so that no bridge outlives its thread or keeps a finished loop."""
    loop = asyncio.get_running_loop()
    bridge = _THREAD.bridge
    if bridge is None or bridge.loop is not loop:
        bridge = _THREAD.bridge = FutureBridge(loop)
    return bridge
