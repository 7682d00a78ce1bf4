"""The run's writes, in order, and those not yet known durable.

A value a workflow records (``perdure.now()``, a child's ID, a sent message's key)
is known before its commit. A sync form called in an async workflow must not wait
for that commit on the event loop's thread, so its write is *deferred*: submitted,
not awaited. Writes are chained: each is submitted only once the one before it
committed, so the store holds a prefix of the run's history whatever happens; and
every later durable operation first waits for the chain (``Flush``), so that no
side effect and no outcome rests on a value whose record is not durable. A crash
before the commit just replays without the record.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

from .._errors import CheckpointFailed, LeaseLost, StoreError

#: Failures after which no later write of the run may be submitted: its history would
#: have a hole (a store failure), or it is no longer the run's to write (a lost lease).
_POISON = (StoreError, LeaseLost, CheckpointFailed)


def _settle(out: Future[None], error: BaseException | None) -> None:
    with contextlib.suppress(InvalidStateError):
        if error is None:
            out.set_result(None)
        else:
            out.set_exception(error)


class Writes:
    """The chain of one run's writes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tail: Future[None] | None = None
        # Failures of writes that nobody has seen yet.
        self._failures: list[BaseException] = []

    def submit(
        self,
        submit: Callable[[], Future[Any]],
        check: Callable[[Any], None],
        only_after_success: bool = False,
    ) -> Future[None]:
        """Submit ``submit()`` once every earlier write committed; the returned future
        resolves when it committed and ``check`` accepted its result. With
        ``only_after_success``, a failure of the write just before is this one's too."""
        out: Future[None] = Future()
        with self._lock:
            before, self._tail = self._tail, out
        out.add_done_callback(self._ended)

        def committed(done: Future[Any]) -> None:
            try:
                check(done.result())
            except BaseException as exc:  # noqa: BLE001 - handed to whoever flushes
                _settle(out, exc)
            else:
                _settle(out, None)

        def go(_: Future[None] | None = None) -> None:
            failed = before.exception() if before is not None else None
            if isinstance(failed, _POISON) or (failed is not None and only_after_success):
                _settle(out, failed)
                return
            try:
                future = submit()
            except BaseException as exc:  # noqa: BLE001 - handed to whoever flushes
                _settle(out, exc)
                return
            future.add_done_callback(committed)

        if before is None:
            go()
        else:
            before.add_done_callback(go)
        return out

    def tail(self) -> Future[None] | None:
        """The last write submitted, if it has not committed yet (when it has, all have)."""
        tail = self._tail
        return None if tail is None or tail.done() else tail

    def _ended(self, future: Future[None]) -> None:
        error = future.exception()
        if error is not None:
            with self._lock:
                self._failures.append(error)

    def seen(self) -> BaseException | None:
        """The first failure of the writes that ended since the last call, if any."""
        if not self._failures:
            return None
        with self._lock:
            failures, self._failures = self._failures, []
        return failures[0]
