"""Schedules on both stores, in this process: the catch-up policies after every executor
was down, the decorator's forms, schedules created at run time, pause, resume, delete,
the listing and ``perdure schedules``.

Time is the real clock moved by an offset (``OffsetClock``): minutely schedules whose
ticks the test brings on by moving the clock, instead of waiting minutes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime

import pytest
from click.testing import CliRunner
from conftest import OffsetClock
from ledger import wait_for

import perdure
from perdure._cli import cli
from perdure._schedules import tick_id

POLICIES = ("skip", "latest", "all")


def _minute_ahead() -> float:
    """A whole minute at least a minute from now (seconds since the epoch)."""
    return (math.floor(time.time() / 60) + 2) * 60.0


def _set(clock: OffsetClock, at: float) -> None:
    """Move the clock so that it reads ``at`` now."""
    clock.offset = at - time.time()


def _ran(app: perdure.App, name: str) -> set[float]:
    """The ticks of schedule ``name`` whose workflows exist, once all have finished."""
    store = app.store
    prefix = f"schedule:{name}:"

    def records() -> list[perdure.storage.WorkflowRecord]:
        return [r for r in store.list_workflows(limit=1000) if r.id.startswith(prefix)]

    wait_for(
        lambda: all(r.status == "SUCCEEDED" for r in records()),
        30,
        f"the runs of {name} to finish",
    )
    return {datetime.fromisoformat(r.id[len(prefix) :]).timestamp() for r in records()}


def _handled(app: perdure.App, name: str, tick: float) -> None:
    """Wait until schedule ``name`` handled ``tick`` (ran or skipped it)."""

    def done() -> bool:
        return any(r.name == name and r.last_tick >= tick for r in app.store.list_schedules())

    wait_for(done, 30, f"schedule {name} to handle its tick")


def _build(make_app: Callable[..., perdure.App], clock: OffsetClock) -> perdure.App:
    app = make_app(clock=clock)

    @app.workflow
    def report(tick: datetime) -> str:
        return tick.isoformat()

    # One workflow under three schedules, one per policy; a tick more than 20 s late is
    # missed.
    for policy in POLICIES:
        app.schedule("* * * * *", catch_up=policy, grace=20, name=policy)(report)
    return app


def test_catch_up_policies_after_every_executor_was_down_for_five_ticks(
    make_app: Callable[..., perdure.App],
) -> None:
    minute = _minute_ahead()
    clock = OffsetClock()
    _set(clock, minute - 1.0)
    first = _build(make_app, clock)
    with first:  # the schedules are declared now: their first tick is `minute`
        for policy in POLICIES:
            _handled(first, policy, minute)
            assert _ran(first, policy) == {minute}
    # Every executor is down from minute+1 to minute+330: five ticks come and go.
    _set(clock, minute + 330.0)
    second = _build(make_app, clock)
    with second:
        for policy in POLICIES:
            _handled(second, policy, minute + 300)
        outage = [minute + 60.0 * n for n in range(1, 6)]
        assert _ran(second, "skip") == {minute}
        assert _ran(second, "latest") == {minute, outage[-1]}
        assert _ran(second, "all") == {minute, *outage}
        # Each goes on with its next tick, on time.
        _set(clock, minute + 360.5)
        for policy in POLICIES:
            _handled(second, policy, minute + 360)
        assert _ran(second, "skip") == {minute, minute + 360}
        assert _ran(second, "latest") == {minute, outage[-1], minute + 360}
        assert _ran(second, "all") == {minute, *outage, minute + 360}


def test_forms_run_time_schedules_pause_resume_delete_and_listing(
    make_app: Callable[..., perdure.App], database_url: str
) -> None:
    minute = _minute_ahead()
    clock = OffsetClock()
    _set(clock, minute - 1.0)
    app = make_app(clock=clock)
    seen: list[datetime] = []

    # Above a plain function: it becomes a workflow (named `name` when given).
    @app.schedule("* * * * *", catch_up="all", name="minutely")
    def minutely(tick: datetime) -> str:
        seen.append(tick)
        return tick.isoformat()

    @app.workflow(name="ping")
    def ping(tick: datetime) -> str:
        return tick.isoformat()

    assert app.registry.workflow(minutely).name == "minutely"
    created = app.create_schedule("runtime", ping, "* * * * *", tz="Europe/Paris")
    assert (created.source, created.workflow, created.catch_up) == ("api", "ping", "skip")
    assert created.next_tick is not None and created.next_tick.timestamp() == minute
    listed = {status.name: status for status in app.schedules()}
    assert sorted(listed) == ["minutely", "runtime"]
    assert listed["minutely"].last_tick is None  # not stored until an executor launches
    with app:
        _handled(app, "minutely", minute)
        _handled(app, "runtime", minute)
        assert _ran(app, "minutely") == {minute} == _ran(app, "runtime")
        # The tick is a timezone-aware datetime, in the schedule's zone.
        paris = app.retrieve(tick_id("runtime", created.next_tick)).result()
        assert paris.endswith("+01:00") and datetime.fromisoformat(paris).timestamp() == minute
        assert seen and seen[0].utcoffset() is not None and seen[0].timestamp() == minute

        assert app.pause_schedule("minutely") is True
        assert app.pause_schedule("minutely") is False
        _set(clock, minute + 125.0)
        _handled(app, "runtime", minute + 120)
        assert _ran(app, "runtime") == {minute, minute + 120}  # skip: minute+60 is missed
        assert _ran(app, "minutely") == {minute}
        (paused,) = [s for s in app.schedules() if s.name == "minutely"]
        assert paused.paused and paused.next_tick is None
        # Resumed: the ticks that came while paused never run, whatever catch_up says.
        assert app.resume_schedule("minutely") is True
        _set(clock, minute + 180.5)
        _handled(app, "minutely", minute + 180)
        _handled(app, "runtime", minute + 180)
        assert _ran(app, "minutely") == {minute, minute + 180}
        assert app.delete_schedule("runtime") is True
        assert app.delete_schedule("runtime") is False
        with pytest.raises(perdure.InvalidValueError, match="no schedule is named 'runtime'"):
            app.pause_schedule("runtime")
        assert [s.name for s in app.schedules()] == ["minutely"]
        assert _ran(app, "runtime") == {minute, minute + 120, minute + 180}  # they stay

    runner = CliRunner()
    command = ["schedules", "--database-url", database_url]
    result = runner.invoke(cli, command)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("minutely  * * * * * (UTC)  minutely  catch-up all  next ")
    assert "last run schedule:minutely:" in result.output
    result = runner.invoke(cli, [*command, "--pause", "minutely"])
    assert result.exit_code == 0, result.output
    assert "PAUSED" in result.output
    result = runner.invoke(cli, [*command, "--pause", "nope"])
    assert result.exit_code != 0 and "no schedule is named 'nope'" in result.output


def test_stacked_on_a_workflow_and_bad_declarations(make_app: Callable[..., perdure.App]) -> None:
    app = make_app()

    @app.schedule("0 9 * * MON-FRI", tz="Europe/Paris", name="weekday-morning")
    @app.workflow(name="morning")
    def morning(tick: datetime) -> None: ...

    assert app.registry.schedules["weekday-morning"].workflow == "morning"
    with pytest.raises(perdure.ConfigurationError, match="must take the tick time"):

        @app.schedule("* * * * *")
        def no_tick() -> None: ...

    with pytest.raises(perdure.InvalidValueError, match="unknown time zone"):
        app.schedule("* * * * *", tz="Nowhere/Land")(morning)
    with pytest.raises(perdure.ConfigurationError, match="two schedules are declared"):
        app.schedule("* * * * *", name="weekday-morning")(morning)
