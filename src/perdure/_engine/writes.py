"""The run's writes, in order, and those not yet known durable.

A value a workflow records (``perdure.now()``, a child's ID, a sent message's key)
is known before its commit. A sync form called in an async workflow must not wait
for that commit on the event loop's thread, so its write is *deferred*: submitted,
not awaited. A side effect (a child's start, a message, an event) goes out only
once every write before it committed (a *barrier*), and every later durable
operation first waits for the pending writes (``Flush``), so that no side effect
and no outcome rests on a value whose record is not durable. A crash before the
commit just replays without the record. Plain records go out at once, so that
many of them share a commit (the store's group commit).

A step's final record is *held* instead (``hold``): the next durable operation of the
run submits it first (the drivers ``release`` it before any effect, so a step's
attempt, a side effect, a wait or a suspension come after it as they would after its
commit), and the run's outcome takes it (``take_held``) into its own transaction: the
last step of a workflow costs no commit of its own. ``holder.py`` lets go of a record
held longer than an interval (workflow code that computes or waits between steps).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

from .._errors import CheckpointFailed, LeaseLost, StoreError
from .holder import holder

#: Failures after which no later write of the run may be submitted: its history would
#: have a hole (a store failure), or it is no longer the run's to write (a lost lease).
_POISON = (StoreError, LeaseLost, CheckpointFailed)
# The containers of a run that has made no write yet: shared, never changed (``_chain``
# puts the run's own in their place before its first write).
_NONE: set[Future[None]] = set()
_NO_WRITES: list[Future[None]] = []
_NO_FAILURES: list[BaseException] = []
_NOTHING_HELD: list[tuple[Any, Callable[[], Future[Any]], Callable[[Any], None]]] = []
NOTHING_IN_FLIGHT: list[tuple[Future[Any], Callable[[Any], None]]] = []
_FIRST = threading.Lock()
# Guards every run's held records: taken briefly, by a run's thread and the holder's (a
# lock of each run's own would be one more object per run for the garbage collector).
_HELD = threading.Lock()


def _settle(out: Future[None], error: BaseException | None) -> None:
    with contextlib.suppress(InvalidStateError):
        if error is None:
            out.set_result(None)
        else:
            out.set_exception(error)


class Writes:
    """The writes of one run not yet known durable, and how the next one may go out."""

    def __init__(self) -> None:
        #: Whether no write is pending and no failure unseen (then a flush has nothing to
        #: do). A plain attribute, kept under the lock, as it is read before every step.
        self.clear = True
        # The rest is made at the first write (see ``_chain``): most runs never defer one,
        # and every object a run holds is one more for the garbage collector to walk.
        self._lock: threading.Lock | None = None
        self._pending: set[Future[None]] = _NONE
        self._last: Future[None] | None = None
        # The last barrier, and the writes since: a barrier goes out once these ended
        # (the last barrier ended only after everything before it had).
        self._barrier: Future[None] | None = None
        self._since_barrier: list[Future[None]] = _NO_WRITES
        # Failures of writes that nobody has seen yet.
        self._failures: list[BaseException] = _NO_FAILURES
        #: The step records held (see the module), each with how to submit and check it:
        #: truthy while any is (a plain attribute: the drivers read it before every effect).
        #: Not counted in ``clear``.
        self.held = _NOTHING_HELD
        #: The holder's tick when the oldest of them was held (``holder.py``).
        self.held_since = 0
        #: Held records an async run's task submitted and awaits (with their checks):
        #: its other tasks wait for them too before their next effect (the loop's thread
        #: alone reads and changes it).
        self.in_flight: list[tuple[Future[Any], Callable[[Any], None]]] = NOTHING_IN_FLIGHT

    def _chain(self) -> threading.Lock:
        """The lock, and the run's own containers, made with its first write."""
        if self._lock is None:
            with _FIRST:  # two threads' first writes at once must not make two chains
                if self._lock is None:
                    self._pending, self._since_barrier, self._failures = set(), [], []
                    self._lock = threading.Lock()
        return self._lock

    def submit(
        self,
        submit: Callable[[], Future[Any]],
        check: Callable[[Any], None],
        *,
        barrier: bool = False,
        only_after_success: bool = False,
    ) -> Future[None]:
        """Submit ``submit()``; the returned future resolves when it committed and
        ``check`` accepted its result. With ``barrier`` (a side effect: a child's start,
        a message, an event), it goes out only once every pending write committed; with
        ``only_after_success``, only once the write just before it succeeded."""
        out: Future[None] = Future()
        with self._chain():
            before: list[Future[None]] = []
            if barrier:
                before = [f for f in (self._barrier, *self._since_barrier) if f is not None]
                self._barrier, self._since_barrier = out, []
            else:
                self._since_barrier.append(out)
            previous, self._last = self._last, out
            self._pending.add(out)
            self.clear = False
        out.add_done_callback(self._ended)

        def committed(done: Future[Any]) -> None:
            try:
                check(done.result())
            except BaseException as exc:  # noqa: BLE001 - handed to whoever flushes
                _settle(out, exc)
            else:
                _settle(out, None)

        def go() -> None:
            for earlier in before:
                failed = earlier.exception()
                if isinstance(failed, _POISON):
                    _settle(out, failed)
                    return
            if only_after_success and previous is not None:
                failed = previous.exception()
                if failed is not None:
                    _settle(out, failed)
                    return
            try:
                future = submit()
            except BaseException as exc:  # noqa: BLE001 - handed to whoever flushes
                _settle(out, exc)
                return
            future.add_done_callback(committed)

        waits = [*before, *([previous] if only_after_success and previous else [])]
        _after(waits, go)
        return out

    def hold(
        self, record: Any, submit: Callable[[], Future[Any]], check: Callable[[Any], None]
    ) -> None:
        """Hold ``record`` (written by ``submit()``, its result accepted by ``check``)
        for the run's next write, or its outcome (see the module). Held records do not
        count in ``clear``: whoever decides on a flush looks at ``held`` too."""
        with _HELD:
            first = not self.held
            if first:
                self.held = [(record, submit, check)]
            else:
                self.held.append((record, submit, check))
        if first:
            holder.watch(self)

    def release(self) -> None:
        """Submit the held records (each a plain write: what comes next waits for it).

        They leave ``held`` only once submitted, under the lock that ``take_held`` takes:
        the run's thread, looking meanwhile, finds them either still held (and its
        ``take_held`` waits for this to finish) or pending (``clear`` false), never
        neither. Taken first and submitted after, a record the holder let go of was for
        a moment in no list at all, and the run's next write (or a step's attempt) went
        out before it. Only threads that never lead a commit call this (the holder's, an
        event loop's): a submit here only queues, so the lock is not held across one."""
        with _HELD:
            held = self.held
            if not held:
                return
            for _, submit, check in held:
                self.submit(submit, check)
            self.held = _NOTHING_HELD
        holder.forget(self)

    def take_held(self) -> list[tuple[Any, Callable[[], Future[Any]], Callable[[Any], None]]]:
        """The held records (each with how to submit and check it), no longer held: the
        caller writes them (at once, or with the outcome)."""
        with _HELD:  # the run's thread and the holder's may both ask: one gets them
            held, self.held = self.held, _NOTHING_HELD
        if held:
            holder.forget(self)
        return held

    def pending(self) -> list[Future[None]]:
        """The writes not yet ended."""
        if not self._pending:
            return []
        with self._chain():
            return list(self._pending)

    def _ended(self, future: Future[None]) -> None:
        error = future.exception()
        with self._chain():
            self._pending.discard(future)
            # Keep the list short: ended writes at its head need no waiting for.
            while self._since_barrier and self._since_barrier[0].done():
                self._since_barrier.pop(0)
            if error is not None:
                self._failures.append(error)
            self.clear = not self._pending and not self._failures

    def seen(self) -> BaseException | None:
        """The first failure of the writes that ended since the last call, if any."""
        if not self._failures:
            return None
        with self._chain():
            failures, self._failures = self._failures, []
            self.clear = not self._pending
        return failures[0]


def _after(futures: list[Future[None]], then: Callable[[], None]) -> None:
    """Call ``then`` once every one of ``futures`` has ended (at once if they have)."""
    waiting = [future for future in futures if not future.done()]
    if not waiting:
        then()
        return
    lock = threading.Lock()
    left = [len(waiting)]

    def one(_: Future[None]) -> None:
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            then()

    for future in waiting:
        future.add_done_callback(one)
