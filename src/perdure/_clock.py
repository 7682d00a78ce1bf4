"""The one clock that timers, leases, retries and listings read.

Injecting a different ``Clock`` into ``App(clock=...)`` lets tests move time
instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """A source of wall-clock time and a way to wait for it."""

    def time(self) -> float:
        """Seconds since the epoch."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""
        ...

    async def sleep_async(self, seconds: float) -> None:
        """Suspend the calling coroutine for ``seconds``."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        """Seconds since the epoch, from ``time.time()``."""
        return time.time()

    def sleep(self, seconds: float) -> None:
        """``time.sleep``, ignoring negative durations."""
        if seconds > 0:
            time.sleep(seconds)

    async def sleep_async(self, seconds: float) -> None:
        """``asyncio.sleep``, ignoring negative durations."""
        if seconds > 0:
            await asyncio.sleep(seconds)
