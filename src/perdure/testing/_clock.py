"""``VirtualClock``: a clock that moves only when told to.

An ``App(clock=VirtualClock())`` reads every time from it: timers, ``recv`` timeouts,
retry backoffs, deadlines, leases, ``perdure.now()``. Nothing in perdure waits on it
in place when the app suspends every wait (``suspend_after=0``, what ``TestApp``
sets): a waiting workflow is a wake time in the database, and moving the clock past
it makes the workflow due. ``TestApp``'s time skipping moves it to the next wake time
as soon as nothing else can run.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from datetime import timedelta, timezone

from .._errors import InvalidValueError
from .._validation import non_negative_seconds


def as_timestamp(when: float | dt.datetime) -> float:
    """Seconds since the epoch of a timestamp or a datetime (naive meaning UTC)."""
    if isinstance(when, dt.datetime):
        return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
    return float(when)


class VirtualClock:
    """A ``perdure.Clock`` whose time moves only by ``advance``, ``set`` and ``sleep``
    (thread-safe). It starts at ``start`` (a timestamp or a datetime, naive meaning
    UTC), by default the real time when it is created."""

    def __init__(self, start: float | dt.datetime | None = None) -> None:
        self._now = time.time() if start is None else as_timestamp(start)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"VirtualClock({self.datetime().isoformat()})"

    def time(self) -> float:
        """The virtual time, in seconds since the epoch."""
        with self._lock:
            return self._now

    def datetime(self) -> dt.datetime:
        """The virtual time as an aware UTC datetime (what ``perdure.now()`` returns in a
        workflow that reads it now)."""
        return dt.datetime.fromtimestamp(self.time(), tz=timezone.utc)

    def advance(self, duration: float | timedelta) -> float:
        """Move the clock forward by ``duration`` (seconds or a ``timedelta``); returns the
        new time. Workflows whose wake time it passes become due."""
        seconds = duration.total_seconds() if isinstance(duration, timedelta) else duration
        seconds = non_negative_seconds("the duration of VirtualClock.advance()", seconds)
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, when: float | dt.datetime) -> float:
        """Move the clock forward to ``when`` (a timestamp or a datetime, naive meaning
        UTC); a time before the clock's is refused (``InvalidValueError``): time going
        back would make recorded times lie. Returns the new time."""
        target = as_timestamp(when)
        with self._lock:
            if target < self._now:
                raise InvalidValueError(
                    f"VirtualClock.set() moves time forward only: {target} is before {self._now}"
                )
            self._now = target
            return self._now

    def sleep(self, seconds: float) -> None:
        """A virtual sleep: the clock moves forward by ``seconds`` at once."""
        if seconds > 0:
            self.advance(seconds)

    async def sleep_async(self, seconds: float) -> None:
        """``sleep`` for coroutines (it does not wait either)."""
        self.sleep(seconds)
