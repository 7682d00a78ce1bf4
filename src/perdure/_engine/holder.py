"""How long a step's record may be held: one thread per process that lets go of
records held too long.

A step's final record is not written the moment the step returns: it is *held*
(``writes.py``) until the run's next durable operation, which writes it first, or
until the run's outcome, which writes it in its own transaction (a checkout's last
step then costs no commit of its own). Workflow code between two steps is meant to
be quick, but nothing stops it from computing for minutes or waiting on something
perdure does not see; a record held all that time would be lost to a crash and
missing from what an operator sees. So this thread, awake only while some run holds
a record (and for a second after), submits every record held for at least one
interval (between one and two: it looks once per interval, ``INTERVAL``).

Its writes only queue (``storage.queue_only``): the store's writer commits them
together, instead of this thread committing one after the other.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from ..storage import queue_only

#: Seconds between looks: a record is held at most about twice this long.
INTERVAL = 0.02
#: Looks that found nothing held before the thread parks until the next hold.
_PARK_AFTER = 50


class Holding(Protocol):
    """A run's writes that may hold records (``Writes``)."""

    #: The holder's tick when the oldest record it holds now was held.
    held_since: int

    def release(self) -> None:
        """Submit every held record (the run's next durable operation waits for them)."""


class _Holder:
    def __init__(self) -> None:
        self.tick = 0
        self._holding: set[Holding] = set()
        self._parked = False
        self._wake = threading.Event()
        self._start = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, writes: Holding) -> None:
        """Let go of ``writes``' records if they are still held an interval from now."""
        writes.held_since = self.tick
        self._holding.add(writes)
        if self._thread is None:
            self._begin()
        elif self._parked:
            self._wake.set()

    def forget(self, writes: Holding) -> None:
        """``writes`` holds nothing any more."""
        self._holding.discard(writes)

    def _begin(self) -> None:
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._main, name="perdure-holder", daemon=True
                )
                self._thread.start()

    def _main(self) -> None:
        queue_only()
        idle = 0
        while True:
            # Parked only after a second of nothing held: between a busy process's
            # steps nothing may be held for a moment, and a wake-up per step would cost
            # more than a look per interval.
            idle = 0 if self._holding else idle + 1
            if idle >= _PARK_AFTER:
                self._parked = True
                # Looked at again once parked: a watch in between saw it awake and did
                # not wake it.
                if not self._holding:
                    self._wake.wait()
                self._wake.clear()
                self._parked = False
                idle = 0
            time.sleep(INTERVAL)
            self.tick += 1
            due = self.tick - 2
            for writes in list(self._holding):
                if writes.held_since <= due:
                    writes.release()


#: The process's one holder.
holder = _Holder()
