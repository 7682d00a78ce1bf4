"""Schedules: a cron expression, a time zone and a catch-up policy, and the ticks they give.

A schedule starts its workflow once per *tick*, with the tick's time (a timezone-aware
``datetime``) as its one argument. The expression is parsed and iterated by ``cronsim``
(five fields, as in crontab, or six with a leading seconds field: ``"*/2 * * * * *"`` is
every other second); the time zone is an IANA name read by ``zoneinfo``. Daylight saving
time follows Debian cron, as cronsim does for a five-field expression at fixed hours and
minutes (``"30 2 * * *"``): a time that does not exist that day (the clocks jumped over it)
fires at the first minute that does, and a time that happens twice (the clocks went back)
fires once, the first time. An expression with ``*`` in its hour or minute field
follows the elapsed time: every hour that passes fires, both ``02:30`` of the night the
clocks go back included, at their two UTC offsets. A six-field expression gets no
adjustment (cronsim keeps Debian's rules to five fields): it fires at each wall-clock
time that exists, so a time the clocks skip does not fire that day and a time they
repeat fires twice.

Exactly one run per tick: the run of a tick has the workflow ID ``tick_id(name, tick)``
(``schedule:<name>:<tick in ISO 8601 with its UTC offset>``), and the store starts it and
advances the schedule's last tick in one transaction, conditioned on the schedule's
revision (``Store.fire_schedule``): of executors that fire the same tick at once, one
does, and a workflow ID already taken is never started again.

Missed ticks: a tick that no executor fired within ``grace`` seconds of its time (none
was running, or none could reach the database) is *missed*. ``catch_up`` decides:
``"skip"`` runs none of them, ``"latest"`` runs the newest (once, when an executor is up
again: unless a tick on time runs then anyway), ``"all"`` runs each, oldest first, up to
the newest ``CATCH_UP_LIMIT`` (older ones are skipped, and logged). Ticks that are late by
less than ``grace`` always run, whatever the policy: a slow executor misses nothing.
"""

from __future__ import annotations

import enum
import inspect
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from ._errors import ConfigurationError, InvalidValueError
from ._validation import check_name, non_negative_seconds

#: The most missed ticks ``catch_up="all"`` runs after an outage: the newest ones.
CATCH_UP_LIMIT = 100
#: The default ``grace`` (seconds): a tick later than this is missed.
DEFAULT_GRACE = 60.0
#: The shortest ``grace`` (seconds) a schedule may have.
MIN_GRACE = 1.0
#: The most bytes of a schedule's name: its ticks' workflow IDs add about 35 to it, and a
#: workflow ID may have 1,000.
MAX_NAME_BYTES = 900
#: The prefix of the workflow IDs of ticks.
ID_PREFIX = "schedule:"
# Forward iteration over more ticks than this (a frequent schedule after a long outage)
# starts again from the newest CATCH_UP_LIMIT ticks, found backwards.
_SCAN_LIMIT = 10 * CATCH_UP_LIMIT


class CatchUp(str, enum.Enum):
    """What runs of the ticks an outage missed (see the module docstring)."""

    SKIP = "skip"
    LATEST = "latest"
    ALL = "all"

    def __str__(self) -> str:
        return self.value


class ScheduleSource(str, enum.Enum):
    """Where a schedule was declared: in code (``@app.schedule``) or at run time
    (``app.create_schedule``)."""

    CODE = "code"
    API = "api"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ScheduleSpec:
    """What a schedule is: its name, the workflow it starts, when, and after an outage."""

    name: str
    workflow: str
    cron: str
    tz: str = "UTC"
    catch_up: CatchUp = CatchUp.SKIP
    grace: float = DEFAULT_GRACE

    @property
    def zone(self) -> ZoneInfo:
        """The time zone of the ticks."""
        return ZoneInfo(self.tz)


@dataclass(frozen=True)
class ScheduleRecord:
    """A schedule as stored (``Store.put_schedule``, ``Store.list_schedules``)."""

    name: str
    workflow: str
    cron: str
    tz: str
    catch_up: str
    grace: float
    source: str
    paused: bool
    #: The newest tick handled (run or skipped), or when the schedule was created or
    #: resumed: the next tick is the first after it (seconds since the epoch).
    last_tick: float
    #: The first tick after ``last_tick``; None until an executor computes it (a new or
    #: changed schedule).
    next_tick: float | None
    #: The workflow ID of the newest tick that ran, if any.
    last_workflow_id: str | None
    #: Goes up at every change: a firing is conditioned on it (optimistic concurrency).
    revision: int
    created_at: float
    updated_at: float

    @property
    def spec(self) -> ScheduleSpec:
        """Its definition."""
        return ScheduleSpec(
            self.name, self.workflow, self.cron, self.tz, CatchUp(self.catch_up), self.grace
        )


@dataclass(frozen=True)
class Plan:
    """What to do with a schedule now: the ticks to run, the new last and next ticks."""

    run: list[datetime]
    #: Due ticks not run (missed, under the policy; or past ``CATCH_UP_LIMIT``: then at
    #: least this many).
    skipped: int
    last_tick: float
    next_tick: float


def make_spec(
    name: str,
    workflow: str,
    cron: str,
    tz: str = "UTC",
    catch_up: str = "skip",
    grace: float = DEFAULT_GRACE,
) -> ScheduleSpec:
    """A checked ``ScheduleSpec``: a clear ``InvalidValueError`` for a bad name, expression,
    time zone, policy or grace, naming the schedule."""
    name = check_name("schedule name", name)
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise InvalidValueError(
            f"schedule name {name[:40]!r}... is longer than {MAX_NAME_BYTES} bytes in UTF-8 "
            "(its ticks' workflow IDs must stay within 1,000): choose a shorter name"
        )
    workflow = check_name("workflow name", workflow)
    if not isinstance(cron, str):
        raise InvalidValueError(f"schedule {name!r}: the cron expression must be a str")
    try:
        CronSim(cron, datetime(2000, 1, 1, tzinfo=ZoneInfo("UTC")))
    except (CronSimError, ValueError, IndexError) as exc:
        raise InvalidValueError(
            f"schedule {name!r}: {cron!r} is not a cron expression ({exc}): give five fields "
            "(minute hour day-of-month month day-of-week, e.g. '*/5 * * * *') or six with a "
            "leading seconds field (e.g. '* * * * * *': every second)"
        ) from None
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise InvalidValueError(
            f"schedule {name!r}: unknown time zone {tz!r} ({exc}); give an IANA name such "
            "as 'UTC' or 'Europe/Paris' (install the tzdata package where the system has "
            "no time zone database)"
        ) from None
    try:
        policy = CatchUp(catch_up)
    except ValueError:
        raise InvalidValueError(
            f"schedule {name!r}: catch_up must be 'skip', 'latest' or 'all', not {catch_up!r}"
        ) from None
    grace = non_negative_seconds(f"the grace of schedule {name!r}", grace)
    if grace < MIN_GRACE:
        raise InvalidValueError(
            f"the grace of schedule {name!r} must be at least {MIN_GRACE:g} s, not {grace:g}: "
            "executors fire a tick a moment after its time, so a shorter grace would count "
            "ticks as missed while executors run"
        )
    return ScheduleSpec(name, workflow, cron.strip(), tz, policy, grace)


def check_tick_function(name: str, fn: Callable[..., Any]) -> None:
    """Refuse a workflow that cannot be called with one tick (a positional argument)."""
    try:
        inspect.signature(fn).bind(datetime(2000, 1, 1))
    except TypeError as exc:
        raise ConfigurationError(
            f"schedule {name!r}: its workflow must take the tick time as its one positional "
            f"argument (def {getattr(fn, '__name__', 'fn')}(tick: datetime)): {exc}"
        ) from None


def tick_id(name: str, tick: datetime) -> str:
    """The workflow ID of the run of ``tick``: the same in every executor."""
    return f"{ID_PREFIX}{name}:{tick.isoformat()}"


def _at(seconds: float, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(seconds, zone)


def ticks_after(spec: ScheduleSpec, after: float) -> Iterator[datetime]:
    """The ticks strictly after ``after`` (seconds since the epoch), in order, forever."""
    zone = spec.zone
    # cronsim drops the fraction of a second and returns ticks after the whole second.
    for tick in CronSim(spec.cron, _at(after, zone)):
        if tick.timestamp() > after:
            yield tick


def next_tick(spec: ScheduleSpec, after: float) -> datetime:
    """The first tick strictly after ``after``."""
    return next(ticks_after(spec, after))


def _newest_before(spec: ScheduleSpec, until: float, count: int) -> float:
    """The time just before the ``count``-th newest tick at or before ``until``."""
    zone = spec.zone
    # From the next whole second backwards: the first tick given is <= floor(until).
    ticks = CronSim(spec.cron, _at(math.floor(until) + 1, zone), reverse=True)
    oldest = until
    for tick in itertools.islice(ticks, count):
        oldest = tick.timestamp()
    return oldest - 0.5


def plan(spec: ScheduleSpec, last_tick: float, now: float) -> Plan:
    """The ticks of ``spec`` after ``last_tick`` due at ``now``, and which of them run
    under its catch-up policy (see the module docstring)."""
    due: list[datetime] = []
    skipped = 0
    start = last_tick
    ticks = ticks_after(spec, start)
    upcoming = next(ticks)
    while upcoming.timestamp() <= now:
        due.append(upcoming)
        if len(due) > _SCAN_LIMIT:
            # Too many to walk: only the newest CATCH_UP_LIMIT may run; the rest are
            # skipped without being walked (so ``skipped`` is then a lower bound).
            start = max(_newest_before(spec, now, CATCH_UP_LIMIT), due[-1].timestamp())
            skipped += len(due)
            due = []
            ticks = ticks_after(spec, start)
        upcoming = next(ticks)
    if len(due) > CATCH_UP_LIMIT:
        skipped += len(due) - CATCH_UP_LIMIT
        due = due[-CATCH_UP_LIMIT:]
    on_time = [tick for tick in due if now - tick.timestamp() <= spec.grace]
    missed = due[: len(due) - len(on_time)]
    if spec.catch_up is CatchUp.ALL:
        run = due
    elif spec.catch_up is CatchUp.LATEST and missed and not on_time:
        run = missed[-1:]
    else:
        run = on_time
    skipped += len(due) - len(run)
    last = due[-1].timestamp() if due else last_tick
    return Plan(run, skipped, last, upcoming.timestamp())


def describe_tick(seconds: float | None, tz: str) -> datetime | None:
    """A stored tick time as a datetime in the schedule's zone (None stays None)."""
    return None if seconds is None else _at(seconds, ZoneInfo(tz))
