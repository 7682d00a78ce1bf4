"""``perdure.testing``: a virtual clock that skips ahead, and crash injection.

Every test runs on both stores (a fresh SQLite file, a fresh PostgreSQL schema).
"""

from __future__ import annotations

import inspect
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import perdure
import perdure.testing
from perdure.testing import (
    TestApp,
    VirtualClock,
    assert_survives_crashes,
    crash_points,
    time_skipping,
)

WEEK = 7 * 86400.0


def test_a_week_of_sleep_takes_no_real_week(database_url: str) -> None:
    app = TestApp(database_url)

    @app.workflow
    def weekly() -> list[str]:
        before = perdure.now()
        perdure.sleep(timedelta(days=7))
        return [before.isoformat(), perdure.now().isoformat()]

    with app:
        began, started_at = time.monotonic(), app.clock.time()
        before, after = app.run(weekly)
        wall = time.monotonic() - began
    # The workflow read the virtual clock: a week passed for it, and (a little more
    # than) a week passed on the clock; the wall clock saw well under a minute.
    assert datetime.fromisoformat(after) - datetime.fromisoformat(before) == timedelta(days=7)
    assert app.clock.time() - started_at >= WEEK
    assert wall < 30, wall


def test_now_reads_the_virtual_clock_and_start_sets_it(database_url: str) -> None:
    start = datetime(2031, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    app = TestApp(database_url, start=start)

    @app.workflow
    def when() -> str:
        return perdure.now().isoformat()

    with app:
        assert datetime.fromisoformat(app.run(when)) == start


def test_retry_backoff_recv_timeout_and_deadline_fire_in_virtual_time(database_url: str) -> None:
    app = TestApp(database_url)
    attempts: list[float] = []

    @app.step(
        retry=perdure.Retry(max_attempts=3, initial_interval=3600.0, max_interval=1e6, jitter=0.0)
    )
    def flaky() -> str:
        attempts.append(app.clock.time())
        if len(attempts) < 3:
            raise ConnectionError("down")
        return "up"

    @app.workflow
    def patient() -> list[Any]:
        answer = perdure.recv("approval", timeout=timedelta(days=2))
        return [flaky(), answer]

    @app.workflow
    def too_slow() -> None:
        perdure.sleep(timedelta(days=30))

    with app:
        started = app.clock.time()
        assert app.run(patient) == ["up", None]
        # The recv timed out after two (virtual) days, then the backoff waited an hour
        # and then two (the default backoff doubles).
        assert attempts[0] - started == pytest.approx(2 * 86400, abs=1)
        assert attempts[1] - attempts[0] == pytest.approx(3600, abs=1)
        assert attempts[2] - attempts[1] == pytest.approx(7200, abs=1)
        handle = app.options(timeout=86400).start(too_slow)
        with pytest.raises(perdure.DeadlineExceededError):
            handle.result()


def test_without_time_skipping_the_test_moves_the_clock(database_url: str) -> None:
    app = TestApp(database_url, time_skipping=False)

    @app.workflow
    def nap() -> str:
        perdure.sleep(3600)
        return "rested"

    with app:
        handle = app.start(nap)
        assert wait_until(app.idle)  # suspended: nothing can run until its wake time
        assert handle.status().wake_at is not None
        assert isinstance(app.clock, VirtualClock)
        app.clock.advance(timedelta(minutes=59))
        assert app.skip() is not None  # nothing can run: on to the wake time
        assert handle.result() == "rested"


def test_with_nothing_ever_due_the_clock_flows_so_timeouts_end(database_url: str) -> None:
    with TestApp(database_url) as app:

        @app.workflow
        def forever() -> Any:
            return perdure.recv("never")  # no timeout, and nothing is sent

        handle = app.start(forever)
        with pytest.raises(perdure.WorkflowTimeoutError):
            handle.result(timeout=0.3)
        app.send(handle.workflow_id, "at last", topic="never")
        assert handle.result() == "at last"


def wait_until(condition: Any, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


# -- crash injection -----------------------------------------------------------------------


def five_steps(app: TestApp) -> Any:
    """A checkout of five steps with a durable sleep and a recv with a timeout."""

    @app.step
    def reserve(order: str) -> str:
        return f"reserved {order}"

    @app.step
    def charge(order: str) -> int:
        return 42

    @app.step(retry=perdure.Retry(max_attempts=2, initial_interval=60.0, jitter=0.0))
    def label(order: str) -> str:
        return f"label {order}"

    @app.step
    def ship(order: str) -> str:
        return f"shipped {order}"

    @app.step
    def notify(order: str, answer: Any) -> str:
        return f"told {order} ({answer})"

    @app.workflow
    def checkout(order: str) -> list[Any]:
        done = [reserve(order), charge(order)]
        perdure.sleep(timedelta(days=1))
        done += [label(order), ship(order)]
        answer = perdure.recv("feedback", timeout=timedelta(hours=6))
        done.append(notify(order, answer))
        return done

    return checkout


def test_a_five_step_workflow_with_waits_survives_a_crash_at_every_point(
    database_url: str,
) -> None:
    with TestApp(database_url) as app:
        checkout = five_steps(app)
        points = assert_survives_crashes(app, checkout, "order-7")
    kinds = [(point.kind, point.name) for point in points]
    steps = [name.rsplit(".", 1)[-1] for kind, name in kinds if kind == "step"]
    assert [name for name in steps if name in ("reserve", "charge", "label", "ship", "notify")] == [
        "reserve",
        "charge",
        "label",
        "ship",
        "notify",
    ]
    assert ("step", "perdure.sleep") in kinds and ("step", "perdure.recv") in kinds
    assert sum(1 for kind, _ in kinds if kind == "wake") == 2  # after the sleep, the recv


def test_crash_injection_finds_state_kept_outside_the_steps(database_url: str) -> None:
    with TestApp(database_url) as app:
        seen: list[str] = []

        @app.step
        def fetch(n: int) -> int:
            return n

        @app.workflow
        def forgetful() -> int:
            # Kept in memory, not in a step: a replay after a crash counts it again.
            seen.append("run")
            return fetch(1) + fetch(2) + len(seen)

        assert len(crash_points(app, forgetful)) == 2
        with pytest.raises(AssertionError, match="does not survive every crash"):
            assert_survives_crashes(app, forgetful)


def test_crash_injection_of_an_async_workflow(database_url: str) -> None:
    with TestApp(database_url) as app:

        @app.step
        async def double(n: int) -> int:
            return 2 * n

        @app.workflow
        async def doubling(n: int) -> int:
            n = await double(n)
            await perdure.sleep_async(600)
            return await double(n)

        points = assert_survives_crashes(app, doubling, 5)
    names = [str(p.name).rsplit(".", 1)[-1] for p in points if p.kind == "step"]
    assert names == ["double", "sleep", "double"]


def test_time_skipping_for_an_app_of_ones_own(database_url: str) -> None:
    clock = VirtualClock()
    app = perdure.App(database_url, clock=clock, suspend_after=0, poll_interval=0.02)

    @app.workflow
    def monthly() -> str:
        perdure.sleep(timedelta(days=30))
        return "paid"

    try:
        with app, time_skipping(app):
            started = clock.time()
            assert app.run(monthly) == "paid"
            assert clock.time() - started >= 30 * 86400
    finally:
        app.shutdown()
    plain = perdure.App(database_url)
    with pytest.raises(perdure.ConfigurationError, match="suspend_after=0"), time_skipping(plain):
        pass


def test_the_kit_is_documented() -> None:
    for name in perdure.testing.__all__:
        value = getattr(perdure.testing, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), name
            for attr, member in vars(value).items() if inspect.isclass(value) else ():
                if not attr.startswith("_") and inspect.isfunction(member):
                    assert inspect.getdoc(member), f"{name}.{attr}"
