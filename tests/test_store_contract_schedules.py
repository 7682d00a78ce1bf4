"""The store contract for schedules (see ``test_store_contract.py``); run against every
store."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from store_contract import covers, new

from perdure._schedules import CatchUp, ScheduleSpec
from perdure.storage import Store, open_store


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url)
    opened.migrate()
    yield opened
    opened.close()


def _spec(cron: str = "* * * * *", **kwargs: object) -> ScheduleSpec:
    return ScheduleSpec("report", "checkout", cron, **kwargs)  # type: ignore[arg-type]


@covers("put_schedule", "list_schedules")
def test_put_creates_then_redefines_keeping_where_ticks_stand(store: Store) -> None:
    created = store.put_schedule(_spec(), "code", 100.0)
    assert (created.name, created.workflow, created.cron, created.tz) == (
        "report",
        "checkout",
        "* * * * *",
        "UTC",
    )
    assert (created.catch_up, created.grace, created.source, created.paused) == (
        "skip",
        60.0,
        "code",
        False,
    )
    assert (created.last_tick, created.next_tick, created.last_workflow_id) == (100.0, None, None)
    assert (created.created_at, created.updated_at) == (100.0, 100.0)
    assert store.list_schedules() == [created]
    # The same definition again (every executor's launch) changes nothing.
    assert store.put_schedule(_spec(), "code", 200.0) == created
    assert store.fire_schedule("report", created.revision, 180.0, 240.0, [], 200.0)
    fired = store.list_schedules()[0]
    # A changed definition: its revision moves, its next tick is to be computed again,
    # and its last tick and pause are kept.
    changed = store.put_schedule(_spec("*/5 * * * *", catch_up=CatchUp.ALL), "api", 300.0)
    assert (changed.cron, changed.catch_up, changed.source) == ("*/5 * * * *", "all", "api")
    assert changed.revision > fired.revision
    assert (changed.last_tick, changed.next_tick, changed.updated_at) == (180.0, None, 300.0)
    assert changed.created_at == 100.0
    store.put_schedule(ScheduleSpec("another", "checkout", "0 * * * *"), "api", 400.0)
    assert [record.name for record in store.list_schedules()] == ["another", "report"]


@covers("fire_schedule")
def test_fire_advances_and_starts_the_ticks_once(store: Store) -> None:
    record = store.put_schedule(_spec(), "code", 100.0)
    ticks = [new("schedule:report:a", at=130.0), new("schedule:report:b", at=130.0)]
    assert store.fire_schedule("report", record.revision, 120.0, 180.0, ticks, 130.0)
    after = store.list_schedules()[0]
    assert (after.last_tick, after.next_tick) == (120.0, 180.0)
    assert after.last_workflow_id == "schedule:report:b"
    assert after.revision == record.revision + 1
    for workflow_id in ("schedule:report:a", "schedule:report:b"):
        started = store.get_workflow(workflow_id)
        assert started is not None
        assert (started.status, started.owner, started.epoch) == ("PENDING", None, 0)
        assert started.name == "checkout"
    # A firing from the revision it read before is refused and starts nothing.
    late = [new("schedule:report:c", at=131.0)]
    assert not store.fire_schedule("report", record.revision, 120.0, 180.0, late, 131.0)
    assert store.get_workflow("schedule:report:c") is None
    # An ID that exists is not started again (the schedule still advances).
    existing = store.get_workflow("schedule:report:b")
    assert store.fire_schedule("report", after.revision, 180.0, 240.0, ticks[1:], 190.0)
    assert store.get_workflow("schedule:report:b") == existing
    # Advancing with nothing to start keeps the last run; an unknown schedule: False.
    current = store.list_schedules()[0]
    assert store.fire_schedule("report", current.revision, 240.0, 300.0, [], 250.0)
    assert store.list_schedules()[0].last_workflow_id == "schedule:report:b"
    assert not store.fire_schedule("nothing", 0, 1.0, 2.0, [], 3.0)


@covers("fire_schedule")
def test_concurrent_firings_of_one_revision_advance_once(store: Store) -> None:
    record = store.put_schedule(_spec(), "code", 100.0)
    results: list[bool] = []
    barrier = threading.Barrier(6)

    def fire(number: int) -> None:
        tick = [new("schedule:report:t", at=120.0 + number)]
        barrier.wait()
        results.append(store.fire_schedule("report", record.revision, 120.0, 180.0, tick, 121.0))

    threads = [threading.Thread(target=fire, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 5 + [True]
    assert store.list_schedules()[0].revision == record.revision + 1


@covers("pause_schedule")
def test_pause_stops_firing_and_resume_goes_on_from_now(store: Store) -> None:
    record = store.put_schedule(_spec(), "code", 100.0)
    assert store.pause_schedule("report", True, 110.0) is True
    assert store.pause_schedule("report", True, 111.0) is False
    paused = store.list_schedules()[0]
    assert paused.paused and paused.revision > record.revision
    assert not store.fire_schedule("report", paused.revision, 120.0, 180.0, [], 130.0)
    assert store.pause_schedule("report", False, 500.0) is True
    assert store.pause_schedule("report", False, 501.0) is False
    resumed = store.list_schedules()[0]
    assert not resumed.paused
    assert (resumed.last_tick, resumed.next_tick) == (500.0, None)  # the pause's ticks: never
    assert resumed.revision > paused.revision
    assert store.pause_schedule("nothing", True, 1.0) is None
    assert store.pause_schedule("nothing", False, 1.0) is None


@covers("delete_schedule")
def test_delete_removes_the_schedule_not_its_workflows(store: Store) -> None:
    record = store.put_schedule(_spec(), "code", 100.0)
    assert store.fire_schedule("report", record.revision, 120.0, 180.0, [new("t")], 130.0)
    assert store.delete_schedule("report") is True
    assert store.delete_schedule("report") is False
    assert store.list_schedules() == []
    assert store.get_workflow("t") is not None
