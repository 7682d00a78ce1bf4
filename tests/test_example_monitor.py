"""examples/monitor: a recurring check on durable timers until the condition holds,
continuing as new every few checks so that its history stays bounded, across an
outage of the service it watches, a restart of its process, and up to its deadline."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from example_loader import load_example, run_script

import perdure


@pytest.fixture
def main(database_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The example's main module, its app launched on the test's database."""
    monkeypatch.setenv("PERDURE_DATABASE_URL", database_url)
    monkeypatch.chdir(tmp_path)
    with load_example("monitor") as module:
        try:
            module.app.launch()
            yield module
        finally:
            module.app.shutdown()


def bound(watcher: ModuleType) -> int:
    """The most records a run of the monitor holds: its checks, nothing older."""
    return int(watcher.CHECKS_PER_RUN * watcher.RECORDS_PER_CHECK)


def test_the_monitor_checks_until_ready_with_a_bounded_history(main: ModuleType) -> None:
    watcher = main.watcher
    outcome = main.run()

    result = outcome.result
    assert (result.state, result.ready, result.replicas) == ("ready", 4, 4)
    assert main.app.retrieve(main.MONITOR_ID).status().status == "SUCCEEDED"
    assert watcher.last(main.MONITOR_ID) == result
    # Each run made CHECKS_PER_RUN checks, then continued as new: the history never held
    # more than one run's records, and the last run holds only its own.
    record = main.app.store.get_workflow(main.MONITOR_ID)
    assert record.generation == outcome.generation > 0
    assert record.generation == (result.check - 1) // watcher.CHECKS_PER_RUN
    assert len(main.app.store.load_steps(main.MONITOR_ID)) <= bound(watcher)
    assert max(outcome.history) <= bound(watcher)
    # It saw every replica count, and the outage as an observation, not a failure.
    assert [o.check for o in outcome.seen] == sorted({o.check for o in outcome.seen})
    assert {o.ready for o in outcome.seen if o.state != "unreachable"} == {0, 1, 2, 3, 4}
    assert "unreachable" in [o.state for o in outcome.seen]
    # One request per check that reached the endpoint (at least one did not): the
    # replays after each timer asked nothing again.
    answered = [o for o in outcome.seen if o.state != "unreachable"]
    assert len(answered) <= outcome.requests < result.check


def test_a_suspended_monitor_survives_a_restart_of_its_process(main: ModuleType) -> None:
    watcher, app = main.watcher, main.app
    deployment = main.Deployment("v3", 1)
    with main.LocalServer(deployment.api, "deployment") as server:
        # Checks 0.2 s apart: longer than the app's suspend_after, so it is suspended
        # in between.
        handle = app.start(watcher.watch_rollout, f"{server.url}/status", 0.2, workflow_id="m")

        def continued_and_suspended() -> bool:
            return watcher.generation("m") >= 1 and handle.status().suspended

        main.wait_for(continued_and_suspended, 30, "the monitor to continue as new and sleep")
        app.shutdown()
        checks = watcher.last("m").check
        # Its process is gone; the monitor waits in the database, on its timer.
        app.launch()
        main.wait_for(lambda: watcher.last("m").check > checks, 30, "a check after the restart")
        deployment.advance()
        result = handle.result(timeout=30)
    assert (result.state, result.ready) == ("ready", 1)
    assert watcher.generation("m") == (result.check - 1) // watcher.CHECKS_PER_RUN >= 1
    assert len(app.store.load_steps("m")) <= bound(watcher)


def test_a_monitor_that_never_sees_ready_gives_up_at_its_deadline(main: ModuleType) -> None:
    watcher, app = main.watcher, main.app
    deployment = main.Deployment("v4", 2)  # never advances
    with main.LocalServer(deployment.api, "deployment") as server:
        # Suspended between checks, it is woken by its deadline (which continue_as_new
        # keeps) as by a timer.
        handle = app.start(
            watcher.watch_rollout, f"{server.url}/status", 0.2, workflow_id="stuck", timeout=1.5
        )
        with pytest.raises(perdure.DeadlineExceededError):
            handle.result(timeout=30)
    assert handle.status().status == "FAILED"
    assert watcher.last("stuck").state == "rolling out"
    assert len(app.store.load_steps("stuck")) <= bound(watcher) + 1  # and the deadline's record


@pytest.mark.slow
def test_script_runs() -> None:
    out = run_script("monitor")
    assert "Monitor SUCCEEDED after" in out
    assert ": unreachable" in out
    assert "ready (4/4 up)" in out
