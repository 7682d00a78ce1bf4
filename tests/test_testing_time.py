"""Time skipping (``perdure.testing``) over schedules and queues: a schedule's ticks, a
delayed or debounced start and a queue's rate are wake times like a durable sleep.

Every test runs on both stores (a fresh SQLite file, a fresh PostgreSQL schema).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

import perdure
from perdure.testing import TestApp

START = datetime(2030, 1, 1, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


def ticks_run(app: TestApp, name: str) -> dict[datetime, list[str]]:
    """The ticks whose workflows ran, by tick: [the tick argument, ``perdure.now()``]."""
    found: dict[datetime, list[str]] = {}
    for status in app.list_workflows(limit=1000):
        if status.workflow_id.startswith(f"schedule:{name}:"):
            assert status.status == "SUCCEEDED", status
            tick, now = app.retrieve(status.workflow_id).result()
            found[datetime.fromisoformat(tick)] = [tick, now]
    return found


def test_an_hourly_schedule_fires_24_ticks_over_a_virtual_day(database_url: str) -> None:
    with TestApp(database_url, start=START) as app:

        @app.schedule("0 * * * *", name="hourly")
        def hourly(tick: datetime) -> list[str]:
            return [tick.isoformat(), perdure.now().isoformat()]

        began = time.monotonic()
        assert app.skip_until(START + timedelta(days=1)) == (START + timedelta(days=1)).timestamp()
        wall = time.monotonic() - began
        ran = ticks_run(app, "hourly")
        # Held at the end of the day: the schedule does not run the clock on.
        time.sleep(0.1)
        assert app.clock.datetime() == START + timedelta(days=1)
    # Each tick of the day once, under its own ID, and each ran at its tick's virtual time.
    assert sorted(ran) == [START + n * HOUR for n in range(1, 25)]
    for when, (tick, now) in ran.items():
        assert datetime.fromisoformat(tick) == when == datetime.fromisoformat(now)
    assert wall < 20, wall  # well under a second unloaded; generous for a shared machine


@pytest.mark.parametrize(
    ("catch_up", "caught_up"),
    [("skip", []), ("latest", [7]), ("all", [3, 4, 5, 6, 7])],
)
def test_catch_up_after_a_worker_was_down_while_the_clock_jumped(
    database_url: str, catch_up: str, caught_up: list[int]
) -> None:
    app = TestApp(database_url, start=START)

    @app.schedule("0 * * * *", catch_up=catch_up, name="hourly")
    def hourly(tick: datetime) -> list[str]:
        return [tick.isoformat(), perdure.now().isoformat()]

    with app:
        app.skip_until(START + 2 * HOUR)
        # The worker goes down, five hours pass (ticks 3:00 to 7:00 are missed), and a
        # worker starts again at 7:30.
        app.shutdown()
        app.clock.set(START + 7.5 * HOUR)
        app.launch()
        app.skip_until(START + 7.5 * HOUR)
        ran = ticks_run(app, "hourly")
    assert sorted(ran) == [START + n * HOUR for n in [1, 2, *caught_up]]
    for when, (tick, now) in ran.items():
        assert datetime.fromisoformat(tick) == when
        # On time, or caught up when the worker came back.
        expected = when if when <= START + 2 * HOUR else START + 7.5 * HOUR
        assert datetime.fromisoformat(now) == expected


def test_a_schedule_created_at_run_time_and_one_paused_under_skipping(database_url: str) -> None:
    with TestApp(database_url, start=START) as app:

        @app.workflow
        def report(tick: datetime) -> list[str]:
            return [tick.isoformat(), perdure.now().isoformat()]

        app.create_schedule("reports", report, "*/30 * * * *")
        app.skip_until(START + 2 * HOUR)
        assert len(ticks_run(app, "reports")) == 4
        app.pause_schedule("reports")
        # Paused: nothing is due, the clock goes straight to where it is told.
        app.skip_until(START + 10 * HOUR)
        assert len(ticks_run(app, "reports")) == 4


def test_a_delay_and_a_debounce_fire_in_virtual_time(database_url: str) -> None:
    app = TestApp(database_url, start=START, queues=[perdure.Queue("q")])
    # Held from the launch on while the test starts them: all at the same virtual instant
    # (held only after the launch, the clock may have moved on with the real time).
    app.hold(START)
    with app:

        @app.workflow
        def job(name: str) -> list[str]:
            return [name, perdure.now().isoformat()]

        began = time.monotonic()
        later = app.options(delay=timedelta(days=1)).start(job, "later")
        queued = app.options(queue="q", delay=timedelta(hours=5)).start(job, "queued")
        first = app.options(queue="q", key="k", debounce=timedelta(hours=2)).start(job, "a")
        again = app.options(queue="q", key="k", debounce=timedelta(hours=2)).start(job, "b")
        assert again.workflow_id == first.workflow_id
        app.hold(None)
        results = [handle.result() for handle in (later, queued, first)]
        wall = time.monotonic() - began
    assert results == [
        ["later", (START + timedelta(days=1)).isoformat()],
        ["queued", (START + 5 * HOUR).isoformat()],
        ["b", (START + 2 * HOUR).isoformat()],
    ]
    assert wall < 20, wall


def test_a_queue_rate_of_one_an_hour_runs_five_over_five_virtual_hours(
    database_url: str,
) -> None:
    rate = perdure.Queue("hourly", rate=perdure.Rate(1, per=3600))
    app = TestApp(database_url, start=START, queues=[rate])
    app.hold(START)  # from the launch on, as in the test above
    with app:

        @app.workflow
        def job(n: int) -> str:
            return perdure.now().isoformat()

        began = time.monotonic()
        handles = [app.options(queue="hourly").start(job, n) for n in range(5)]
        app.hold(None)
        started = [datetime.fromisoformat(handle.result()) for handle in handles]
        wall = time.monotonic() - began
    # One start an hour, each as soon as the window lets it: 0:00, 1:00, ... 4:00 (in
    # any order: they were started at the same virtual instant).
    assert sorted(started) == [START + n * HOUR for n in range(5)]
    assert wall < 20, wall


def test_skip_until_without_automatic_skipping(database_url: str) -> None:
    with TestApp(database_url, start=START, time_skipping=False) as app:

        @app.schedule("*/30 * * * *", name="half")
        def half(tick: datetime) -> list[str]:
            return [tick.isoformat(), perdure.now().isoformat()]

        time.sleep(0.1)
        assert app.clock.datetime() == START  # nothing moves it by itself
        assert app.skip_until(timedelta(hours=2)) == (START + 2 * HOUR).timestamp()
        ran = ticks_run(app, "half")
    assert sorted(ran) == [START + n * HOUR / 2 for n in range(1, 5)]
    assert all(datetime.fromisoformat(now) == when for when, (_, now) in ran.items())
