"""Time skipping: move a ``VirtualClock`` to the next wake time once nothing can run.

A ``TimeSkipper`` watches one launched app. Every few milliseconds of real time it
looks whether the app can do anything *now*: a run in its executor's run table, a
start or a claim under way (the table says), or a workflow in the database that an
executor of this app could claim at the virtual now (unowned or its lease expired,
and not suspended past now). When none, it moves the clock to the earliest time at
which something becomes due: a suspended workflow's wake time (a sleep, a ``recv``
timeout, a retry's backoff, a deadline, a parked probe or breaker) or the expiry of a
lease held by another executor (a crashed one), and wakes the executor, whose claim
then finds the workflow due. With nothing due ever (a ``recv`` with no timeout and
no message), the clock flows at real speed, so that a wait with a timeout ends.

The move is made under the run table's lock, and only if the table did not change
since the look (``RunTable.if_quiet``): no run, start or claim can begin while the
skipper decides, so a running workflow never sees time jump under it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from .._clock import Clock
from .._errors import ConfigurationError
from .._model import WorkflowState
from .._queue import QueueReason
from .._registry import Registry
from .._settings import Settings
from .._worker import Executor
from ..storage import FOREVER, Store, WorkflowRecord, lease_expiry
from ._clock import VirtualClock

log = logging.getLogger("perdure")

#: Seconds of real time between two looks; longer while the clock merely flows (nothing
#: will ever be due), to spare the database.
_INTERVAL = 0.005
_IDLE_INTERVAL = 0.05
#: Active workflows read per query (a test has few; more are read page by page).
_PAGE = 500


class SkippingHost(Protocol):
    """What time skipping needs of the app it watches."""

    @property
    def clock(self) -> Clock: ...

    @property
    def store(self) -> Store: ...

    @property
    def registry(self) -> Registry: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def executor(self) -> Executor | None: ...


class TimeSkipper:
    """Moves ``app``'s virtual clock whenever nothing can run; see the module. ``auto``
    False leaves the clock alone (``skip()`` then moves it once, on demand)."""

    def __init__(
        self,
        app: SkippingHost,
        clock: VirtualClock,
        *,
        auto: bool = True,
        hold: float | None = None,
    ) -> None:
        self.app = app
        self.clock = clock
        self.auto = auto
        #: Skipping never moves the clock past this time (None: no bound). Below it, a
        #: clock with nothing due before it moves straight to it.
        self.hold = hold
        # One look-and-move at a time (the thread, and a test's own skip()).
        self._skipping = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_look = time.monotonic()
        # Whether the last look found nothing that will ever be due (the clock flowed).
        self._flowing = False

    def start(self) -> None:
        """Start watching (a thread of its own); idempotent."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._loop, name="perdure-time-skipping", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop watching."""
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join()

    def _loop(self) -> None:
        interval = _INTERVAL
        while not self._stop.wait(interval):
            interval = _INTERVAL
            if not self.auto:
                continue
            try:
                self.skip(flow=True)
            except Exception:  # noqa: BLE001 - a store failure: look again next time
                log.debug("time skipping could not look at the store", exc_info=True)
            if self._flowing:
                interval = _IDLE_INTERVAL

    def skip(self, *, flow: bool = False) -> float | None:
        """If nothing can run now, move the clock to the next time something becomes due
        and wake the executor; returns the new time, or None when something can run (or
        nothing is launched, or nothing will ever be due). With ``flow``, a clock with
        nothing ever due moves by the real time since the last look. Never past
        ``hold``."""
        with self._skipping:
            return self._skip(flow)

    def _skip(self, flow: bool) -> float | None:
        # Read before the look: a hold set meanwhile (``skip_until`` right after creating
        # a schedule, say) must not move the clock on a look older than what it follows.
        hold = self.hold
        executor = self.app.executor
        elapsed = time.monotonic() - self._last_look
        self._last_look = time.monotonic()
        self._flowing = False
        if executor is None:
            return None
        token = executor.table.quiet()
        if token is None:
            return None
        now = self.clock.time()
        due, target = self._look(executor, now)
        if due:
            return None
        if hold is not None:
            if now >= hold:
                return None  # held where it is
            if target is None or target > hold:
                target = hold
        if target is None:
            if not flow:
                return None
            self._flowing = True
            target = now + elapsed
        moved: list[float] = []
        if not executor.table.if_quiet(token, lambda: moved.append(self.clock.set(target))):
            return None
        if not self._flowing:
            executor.wake()  # a workflow is due now: claim it at once
        return moved[0]

    def idle(self) -> bool:
        """Whether nothing can run now (whatever may become due later)."""
        executor = self.app.executor
        token = None if executor is None else executor.table.quiet()
        if executor is None or token is None:
            return False
        if self._look(executor, self.clock.time())[0]:
            return False
        # Quiet still: a claim that began during the look (and made a workflow the look
        # read RUNNING and ours) would have changed the token.
        return executor.table.quiet() == token

    def _look(self, executor: Executor, now: float) -> tuple[bool, float | None]:
        """(whether a workflow this app can run is due now, the earliest time one will be)."""
        names = self.app.registry.workflows
        version = self.app.settings.app_version
        target: float | None = None

        def later(when: float) -> None:
            nonlocal target
            if when < FOREVER and (target is None or when < target):
                target = when

        for when in executor.table.stranded().values():
            if when <= now:
                return True, None
            later(when)
        # The schedules' next ticks: the executor's scheduler fires a due one at its next
        # round, and the tick's workflow is then due like any other.
        tick = executor.next_fire(now)
        if tick is not None:
            if tick <= now:
                return True, None
            later(tick)
        # Another executor's workflows (a crashed one's) are released once its lease
        # lapses (the rows of those it owns stand for it: HELD_BY_EXECUTOR).
        leases = {e.id: e.lease_expires_at for e in self.app.store.list_executors()}
        for record in self._active():
            if record.name not in names or record.app_version != version:
                continue  # nothing here can run it: it never becomes due here
            if record.held_code is not None:
                continue  # held: it waits for other code, not for a time
            expires = lease_expiry(record, leases)
            if record.owner is not None and (expires is None or expires >= now):
                if record.owner != executor.id and expires is not None:
                    # Another executor's (a crashed one's): claimable once it expires.
                    later(math.nextafter(expires, math.inf))
                continue
            if record.wake_at is not None and record.wake_at > now:
                later(record.wake_at)  # a wait, a delay or a debounce window
                continue
            if record.queue is None:
                return True, None
            due, admits_at = self._admitted(record, now)
            if due:
                return True, None
            if admits_at is not None:
                later(admits_at)
        return False, target

    def _admitted(self, record: WorkflowRecord, now: float) -> tuple[bool, float | None]:
        """(whether the queue claim admits this queued workflow now, when its queue's
        rate admits it if the rate holds it): what the claim counts, through
        ``Store.queue_place``. One held by workflows that run waits for them: they run
        here (the table is not quiet) or hold a lease whose expiry is a wake time."""
        if record.queue not in self.app.registry.queues:
            return False, None  # this app's claim never takes it
        place = self.app.store.queue_place(record.id, now)
        if place is None:
            return True, None  # suspended and woken: the claim puts it in its queue
        reason = place.reason()
        if reason == QueueReason.WORKER:
            return True, None
        if reason == QueueReason.RATE:
            return False, place.rate_frees_at
        return False, place.delayed_until

    def _active(self) -> Iterator[WorkflowRecord]:
        """Every active workflow, page by page."""
        store = self.app.store
        for state in (WorkflowState.PENDING, WorkflowState.RUNNING):
            after: tuple[float, str] | None = None
            while True:
                page = store.list_workflows(
                    status=state.value, limit=_PAGE, newest_first=False, after=after
                )
                yield from page
                if len(page) < _PAGE:
                    break
                after = (page[-1].created_at, page[-1].id)


@contextmanager
def time_skipping(app: SkippingHost) -> Iterator[TimeSkipper]:
    """Skip time for an app built with ``clock=VirtualClock()`` and ``suspend_after=0``
    (your own app's factory, in a test), launched: ``with app, time_skipping(app):``.
    A ``TestApp`` does this by itself."""
    clock = app.clock
    if not isinstance(clock, VirtualClock) or app.settings.suspend_after != 0:
        raise ConfigurationError(
            f"time skipping needs an app with clock=VirtualClock() and suspend_after=0, not "
            f"{type(clock).__name__} and suspend_after={app.settings.suspend_after:g}"
        )
    skipper = TimeSkipper(app, clock)
    skipper.start()
    try:
        yield skipper
    finally:
        skipper.stop()
