"""Ticks of schedules, without a database: cron fields, time zones, daylight saving time,
the catch-up policies and their bound, tick IDs, and what is refused."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from perdure import ConfigurationError, InvalidValueError
from perdure._schedules import (
    CATCH_UP_LIMIT,
    CatchUp,
    check_tick_function,
    make_spec,
    next_tick,
    plan,
    tick_id,
    ticks_after,
)

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def _ticks(cron: str, tz: str, start: datetime, count: int) -> list[datetime]:
    spec = make_spec("s", "w", cron, tz)
    found = []
    for tick in ticks_after(spec, start.timestamp()):
        found.append(tick)
        if len(found) == count:
            return found
    raise AssertionError("unreachable")


def _utc(tick: datetime) -> datetime:
    return tick.astimezone(timezone.utc)


def test_five_fields_in_a_time_zone_tick_at_local_wall_time() -> None:
    start = datetime(2026, 12, 2, 7, 3, 10, tzinfo=PARIS)
    ticks = _ticks("*/5 * * * *", "Europe/Paris", start, 3)
    assert [t.strftime("%H:%M:%S") for t in ticks] == ["07:05:00", "07:10:00", "07:15:00"]
    assert all(t.utcoffset() == timedelta(hours=1) for t in ticks)  # CET in December
    # The same expression at 9:00 in Paris and in New York are different instants.
    paris = next_tick(make_spec("s", "w", "0 9 * * *", "Europe/Paris"), start.timestamp())
    york = next_tick(make_spec("s", "w", "0 9 * * *", "America/New_York"), start.timestamp())
    assert (_utc(paris).hour, _utc(york).hour) == (8, 14)


def test_six_fields_tick_every_second_or_every_other() -> None:
    start = datetime(2026, 1, 1, 0, 0, 0, 400000, tzinfo=timezone.utc)
    every = _ticks("* * * * * *", "UTC", start, 3)
    assert [t.second for t in every] == [1, 2, 3]
    other = _ticks("*/2 * * * * *", "UTC", start, 3)
    assert [t.second for t in other] == [2, 4, 6]


def test_a_fixed_time_skipped_by_spring_forward_fires_at_the_first_minute_that_exists() -> None:
    # 2026-03-29 in Paris: clocks jump from 02:00 CET to 03:00 CEST; 02:30 does not exist.
    start = datetime(2026, 3, 28, 12, 0, tzinfo=PARIS)
    ticks = _ticks("30 2 * * *", "Europe/Paris", start, 3)
    assert [t.isoformat() for t in ticks] == [
        "2026-03-29T03:00:00+02:00",  # once, as soon as the day has that time no more
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


def test_a_fixed_time_repeated_by_fall_back_fires_once() -> None:
    # 2026-10-25 in Paris: clocks go back from 03:00 CEST to 02:00 CET; 02:30 happens twice.
    start = datetime(2026, 10, 24, 12, 0, tzinfo=PARIS)
    ticks = _ticks("30 2 * * *", "Europe/Paris", start, 2)
    assert [t.isoformat() for t in ticks] == [
        "2026-10-25T02:30:00+02:00",  # the first 02:30 only
        "2026-10-26T02:30:00+01:00",
    ]


def test_a_six_field_fixed_time_follows_the_wall_clock_without_adjustment() -> None:
    spring = _ticks("0 30 2 * * *", "Europe/Paris", datetime(2026, 3, 28, 12, tzinfo=PARIS), 1)
    assert [t.isoformat() for t in spring] == ["2026-03-30T02:30:00+02:00"]  # none on the 29th
    autumn = _ticks("0 30 2 * * *", "Europe/Paris", datetime(2026, 10, 24, 12, tzinfo=PARIS), 2)
    assert [t.isoformat() for t in autumn] == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:30:00+01:00",  # twice: both 02:30s happen
    ]


def test_an_hourly_schedule_follows_elapsed_time_across_both_changes() -> None:
    # Hourly ticks are one hour apart in real time, through both nights: 25 ticks on the
    # autumn day (02:30 twice, at two offsets, two distinct tick IDs) and 23 in spring.
    autumn = _ticks("30 * * * *", "Europe/Paris", datetime(2026, 10, 25, 0, 0, tzinfo=PARIS), 4)
    assert [t.isoformat() for t in autumn] == [
        "2026-10-25T00:30:00+02:00",
        "2026-10-25T01:30:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:30:00+01:00",
    ]
    gaps = {b.timestamp() - a.timestamp() for a, b in zip(autumn, autumn[1:], strict=False)}
    assert gaps == {3600.0}
    assert len({tick_id("s", t) for t in autumn}) == 4
    spring = _ticks("30 * * * *", "Europe/Paris", datetime(2026, 3, 29, 0, 0, tzinfo=PARIS), 3)
    assert [t.isoformat() for t in spring] == [
        "2026-03-29T00:30:00+01:00",
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:30:00+02:00",  # 02:30 never existed; one hour after 01:30
    ]
    # New York changes on other dates (2026-03-08): the zone's own rules apply.
    york = _ticks("0 2 * * *", "America/New_York", datetime(2026, 3, 7, 12, tzinfo=NEW_YORK), 2)
    assert [t.isoformat() for t in york] == [
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:00:00-04:00",
    ]


def test_tick_ids_name_the_schedule_and_the_tick_with_its_offset() -> None:
    tick = datetime(2026, 10, 25, 2, 30, tzinfo=PARIS)
    assert tick_id("report", tick) == "schedule:report:2026-10-25T02:30:00+02:00"


def _plan(catch_up: str, last: float, now: float, grace: float = 10.0, cron: str = "* * * * *"):
    return plan(make_spec("s", "w", cron, "UTC", catch_up, grace), last, now)


#: 2026-12-02 08:00:00 UTC, a whole minute.
T0 = datetime(2026, 12, 2, 8, 0, tzinfo=timezone.utc).timestamp()


def test_ticks_late_by_less_than_grace_run_under_every_policy() -> None:
    for policy in CatchUp:
        due = _plan(policy.value, T0 - 90, T0 + 5)  # ticks T0-60 (65 s late) and T0 (5 s)
        on_time = [t.timestamp() for t in due.run if t.timestamp() == T0]
        assert on_time == [T0], policy
        assert (due.last_tick, due.next_tick) == (T0, T0 + 60)


def test_missed_ticks_follow_the_policy() -> None:
    # The executors were down from T0-1 to T0+330: five ticks (T0+60 ... T0+300), each
    # more than the 10 s grace late.
    last, now = T0 - 1, T0 + 330
    skip, latest, every = (_plan(p, last, now) for p in ("skip", "latest", "all"))
    assert (skip.run, skip.skipped) == ([], 6)  # T0 as well: 330 s late
    assert [t.timestamp() for t in latest.run] == [T0 + 300]
    assert latest.skipped == 5
    assert [t.timestamp() for t in every.run] == [T0 + 60 * i for i in range(6)]
    assert every.skipped == 0
    for due in (skip, latest, every):  # whatever ran, the schedule is past the outage
        assert (due.last_tick, due.next_tick) == (T0 + 300, T0 + 360)


def test_nothing_due_moves_nothing() -> None:
    due = _plan("all", T0 + 1, T0 + 30)
    assert (due.run, due.skipped, due.last_tick, due.next_tick) == ([], 0, T0 + 1, T0 + 60)


def test_catch_up_all_is_bounded_to_the_newest_ticks() -> None:
    # An every-second schedule after a day down: only the newest CATCH_UP_LIMIT run, and
    # working that out does not walk the whole day.
    due = _plan("all", T0, T0 + 86400.5, grace=1.0, cron="* * * * * *")
    assert len(due.run) == CATCH_UP_LIMIT
    assert due.run[-1].timestamp() == T0 + 86400
    assert due.run[0].timestamp() == T0 + 86400 - CATCH_UP_LIMIT + 1
    assert due.skipped > CATCH_UP_LIMIT  # a lower bound: those walked before the jump
    assert due.next_tick == T0 + 86401


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"cron": "* * *"}, "is not a cron expression"),
        ({"cron": "61 * * * *"}, "is not a cron expression"),
        ({"tz": "Mars/Olympus"}, "unknown time zone"),
        ({"catch_up": "some"}, "catch_up must be"),
        ({"grace": -1}, "grace of schedule"),
        ({"grace": 0.5}, "must be at least 1 s"),
        ({"name": "x" * 901}, "longer than 900 bytes"),
        ({"name": ""}, "schedule name"),
    ],
)
def test_bad_definitions_are_refused_naming_the_schedule(kwargs: dict, words: str) -> None:
    args = {"name": "report", "workflow": "w", "cron": "* * * * *", "tz": "UTC"} | kwargs
    with pytest.raises(InvalidValueError, match=words):
        make_spec(**args)


def test_a_workflow_that_cannot_take_a_tick_is_refused() -> None:
    def no_argument() -> None: ...

    def two(tick: datetime, other: int) -> None: ...

    def fine(tick: datetime, other: int = 1) -> None: ...

    for fn in (no_argument, two):
        with pytest.raises(ConfigurationError, match="must take the tick time"):
            check_tick_function("report", fn)
    check_tick_function("report", fine)
