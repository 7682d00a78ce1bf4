"""Durable timers: ``sleep`` and ``sleep_until``.

A timer's wake time is recorded at its position, like ``perdure.now()``, so that a
replay keeps the first run's. A wait of at most ``suspend_after`` seconds waits in
place. A longer one *suspends* the workflow: the execution unwinds with the
internal ``Suspended`` signal and the executor records the workflow suspended
until its wake time, holding no thread, task or memory for it; any executor claims
it then and replays it to where it waited.
"""

from __future__ import annotations

import asyncio
import math
import numbers
import time
from datetime import datetime, timedelta, timezone

from .._errors import ConfigurationError, InvalidValueError
from .._text import shorten
from .._validation import non_negative_seconds
from .drivers import drive_async, drive_sync
from .effects import Op, Pause
from .state import RunState, current_run
from .values import record_value

SLEEP = "perdure.sleep"


def seconds_of(duration: float | timedelta) -> float:
    """Seconds in ``duration`` (seconds or a ``timedelta``)."""
    return duration.total_seconds() if isinstance(duration, timedelta) else float(duration)


def _plain(duration: object) -> object:
    # A timedelta is a number of seconds too; anything else is checked as given.
    return duration.total_seconds() if isinstance(duration, timedelta) else duration


def timeout_seconds(name: str, timeout: object) -> float | None:
    """``None`` (no limit), or ``timeout`` (seconds or a ``timedelta``) as a finite number
    of seconds, zero meaning "look once"; ``InvalidValueError`` naming ``name`` for NaN,
    infinity, a negative number, a bool or a str (a NaN deadline would never pass, and
    would be recorded so that every replay waits on it too)."""
    return None if timeout is None else non_negative_seconds(name, _plain(timeout))


def sleep_seconds(function: str, duration: object) -> float:
    """The seconds ``perdure.{function}()`` waits: a finite number (or a ``timedelta``);
    a negative one means no wait, as ``time.sleep`` of the past would. NaN and infinity
    are refused: their wake time could never be recorded as a time."""
    seconds = _plain(duration)
    if isinstance(seconds, numbers.Real) and not isinstance(seconds, bool):
        try:
            value = float(seconds)
        except OverflowError:  # an int too large for a float: no time to record
            value = math.inf
        if math.isfinite(value):
            return max(value, 0.0)
    raise InvalidValueError(
        f"the duration of perdure.{function}() must be a finite number of seconds or a "
        f"timedelta, not {type(duration).__name__} {shorten(repr(duration))}"
    )


def wake_time(function: str, when: object) -> float:
    """``when`` as a timestamp; it must be a ``datetime`` (naive means UTC)."""
    if not isinstance(when, datetime):
        raise InvalidValueError(
            f"perdure.{function}() takes a datetime (naive means UTC), not "
            f"{type(when).__name__} {shorten(repr(when))}"
        )
    return timestamp(when)


def timestamp(when: datetime) -> float:
    """``when`` as a timestamp; a naive datetime is taken as UTC, like ``now()`` returns."""
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


def sync_run(function: str) -> RunState | None:
    """The current run, refusing a sync form called in an async workflow: it would block
    the event loop."""
    run = current_run.get()
    if run is not None and run.definition.is_async:
        raise ConfigurationError(
            f"perdure.{function}() blocks: in an async workflow, await perdure.{function}_async()"
        )
    return run


def wait_until(run: RunState, wake_at: float | None, after: float = 0.0) -> Op[None]:
    """Record the wake time (``wake_at``, or now + ``after``) and wait for it."""
    clock = run.clock
    recorded: float = yield from record_value(
        run, SLEEP, lambda: clock.time() + after if wake_at is None else wake_at, float
    )
    history = run.history
    while True:
        # A cancellation recorded right after the wait (the first run was interrupted
        # here) raises again; one due now is delivered at the free position there.
        if history.cancelled_next():
            history.take(SLEEP)
        elif history.free_next() and run.signals.due() is not None:
            position, _ = history.take(SLEEP)
            run.deliver(position, SLEEP)
        remaining = recorded - clock.time()
        if remaining > run.suspend_after:
            run.suspend(recorded, None)
        if remaining <= 0:
            return
        run.check_lease()
        yield Pause(remaining)


def sleep(duration: float | timedelta) -> None:
    """Wait ``duration`` (seconds or a ``timedelta``) in a workflow, durably.

    The wake time is recorded at this position, so a replay keeps it; a long wait
    suspends the workflow (it holds nothing meanwhile) and it resumes on any executor
    once the time comes. Outside a workflow, ``time.sleep``. In an async workflow,
    ``await perdure.sleep_async(...)``. A negative duration waits not at all; NaN,
    infinity and what is not a number of seconds are refused (``InvalidValueError``).
    """
    seconds = sleep_seconds("sleep", duration)
    run = sync_run("sleep")
    if run is None:
        time.sleep(seconds)
        return
    drive_sync(run, wait_until(run, None, seconds))


def sleep_until(when: datetime) -> None:
    """Wait until ``when`` (a ``datetime``; naive means UTC) in a workflow, durably; see
    ``sleep``. A time in the past waits not at all."""
    wake_at = wake_time("sleep_until", when)
    run = sync_run("sleep_until")
    if run is None:
        time.sleep(max(wake_at - time.time(), 0.0))
        return
    drive_sync(run, wait_until(run, wake_at))


async def sleep_async(duration: float | timedelta) -> None:
    """``sleep`` for async workflows (outside a workflow, ``asyncio.sleep``)."""
    seconds = sleep_seconds("sleep_async", duration)
    run = current_run.get()
    if run is None:
        await asyncio.sleep(seconds)
        return
    await drive_async(run, wait_until(run, None, seconds))


async def sleep_until_async(when: datetime) -> None:
    """``sleep_until`` for async workflows."""
    wake_at = wake_time("sleep_until_async", when)
    run = current_run.get()
    if run is None:
        await asyncio.sleep(max(wake_at - time.time(), 0.0))
        return
    await drive_async(run, wait_until(run, wake_at))
