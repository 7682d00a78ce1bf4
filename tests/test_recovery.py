"""Recovery at the state level: leases expire, executors take over, stale owners are fenced.

Two apps in one process stand for two executors; an ``OffsetClock`` makes the
second one see the first one's lease as expired, without waiting for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from conftest import OffsetClock

import perdure
from perdure.storage import HELD_BY_EXECUTOR, open_store


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


class Blocking:
    """A two-step workflow whose second step blocks in the first executor."""

    def __init__(self) -> None:
        self.ledger: list[tuple[str, str]] = []
        self.entered = threading.Event()
        self.gate = threading.Event()

    def register(self, app: perdure.App, tag: str, block: bool) -> None:
        @app.step(name="first")
        def first() -> int:
            self.ledger.append(("first", tag))
            return 1

        @app.step(name="second")
        def second() -> int:
            self.ledger.append(("second", tag))
            if block:
                self.entered.set()
                self.gate.wait(10)
            return 2

        @app.workflow(name="two_steps")
        def two_steps() -> int:
            return first() + second()


def test_expired_lease_is_taken_over_and_the_stale_owner_records_nothing(
    make_app, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    flow = Blocking()
    # One slot, taken by the blocked run: the stale owner (not paused here, its lease
    # holding by its own clock) cannot claim the workflow back while it lies released.
    old = make_app(lease_seconds=5, max_workflows=1)
    flow.register(old, "old", block=True)
    new = make_app(clock=OffsetClock(60))  # sees the old executor's lease as expired
    flow.register(new, "new", block=False)

    with old:
        handle = old.start("two_steps", workflow_id="wf")  # type: ignore[arg-type]
        assert flow.entered.wait(10)
        with new:
            # The completed step is replayed from its record; the one in flight runs again.
            assert handle.result(timeout=10) == 3
            assert flow.ledger == [("first", "old"), ("second", "old"), ("second", "new")]
            with caplog.at_level(logging.WARNING, logger="perdure"):
                flow.gate.set()  # the stale owner finishes its step ...
                wait_until(lambda: old.executor is not None and old.executor.running == 0)
            assert "lost the lease" in caplog.text
    # ... and recorded nothing: one record per position, the outcome recorded once.
    status = handle.status()
    assert status.status == "SUCCEEDED" and status.recoveries == 1
    assert [(s.position, s.name, s.attempts) for s in status.steps] == [
        ("0", "first", 1),
        ("1", "second", 1),
    ]
    store = open_store(database_url)
    try:
        record = store.get_workflow("wf")
        assert record is not None and record.epoch == 2
    finally:
        store.close()


def test_an_executor_that_stops_renewing_its_lease_loses_its_workflows_to_another(
    make_app, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The lease is the executor's: its heartbeats write its own row, never its
    # workflows' rows, and once they stop (a frozen process, a partition; here its
    # maintenance thread stopped) another worker releases and takes its workflows.
    flow = Blocking()
    old = make_app(lease_seconds=3)
    flow.register(old, "old", block=True)
    new = make_app(lease_seconds=3)
    flow.register(new, "new", block=False)
    store = open_store(database_url)
    try:
        with old:
            handle = old.start("two_steps", workflow_id="wf")  # type: ignore[arg-type]
            assert flow.entered.wait(10)
            held = store.get_workflow("wf")
            assert held is not None and held.lease_expires_at == HELD_BY_EXECUTOR
            assert old.executor is not None
            (before,) = store.list_executors()
            time.sleep(1.5)  # a heartbeat or two: the executor's row renewed, not the workflow's
            (renewed,) = store.list_executors()
            assert renewed.lease_expires_at > before.lease_expires_at
            assert store.get_workflow("wf") == held
            detail = old.inspect("wf")
            # Shown: the executor's lease, not the row's "never" (HELD_BY_EXECUTOR).
            assert detail.owner_alive and detail.lease_expires_at is not None
            shown = datetime.fromisoformat(detail.lease_expires_at).timestamp()
            assert time.time() < shown <= time.time() + 3
            old.executor.maintenance.stop()  # it renews nothing more
            with new, caplog.at_level(logging.INFO, logger="perdure"):
                assert handle.result(timeout=10) == 3
                assert f"executor {old.executor.id} let its lease lapse" in caplog.text
                assert flow.ledger == [("first", "old"), ("second", "old"), ("second", "new")]
                flow.gate.set()  # the stale owner's step ends, and records nothing
                wait_until(lambda: old.executor is not None and old.executor.running == 0)
    finally:
        store.close()
    status = handle.status()
    assert status.status == "SUCCEEDED" and status.recoveries == 1
    assert [(s.position, s.attempts) for s in status.steps] == [("0", 1), ("1", 1)]


def test_graceful_shutdown_releases_leases_for_immediate_takeover(make_app) -> None:
    flow = Blocking()
    old = make_app()
    flow.register(old, "old", block=True)
    new = make_app()  # no offset: only the release lets it claim the workflow
    flow.register(new, "new", block=False)

    old.launch()
    handle = old.start("two_steps", workflow_id="wf")  # type: ignore[arg-type]
    assert flow.entered.wait(10)
    old.shutdown(grace=0.1)
    assert handle.status().owner is None
    with new:
        assert handle.result(timeout=10) == 3
    flow.gate.set()


def test_code_changed_under_a_running_workflow_is_held_with_nondeterminism(make_app) -> None:
    # Issue 13: a workflow whose code no longer replays is held (active, its history
    # kept, the difference shown), no longer failed (see tests/test_holds.py).
    flow = Blocking()
    old = make_app(lease_seconds=5, max_workflows=1)  # no claim back (see above)
    flow.register(old, "old", block=True)
    new = make_app(clock=OffsetClock(60))

    @new.step(name="renamed")
    def renamed() -> int:
        return 1

    @new.workflow(name="two_steps")
    def changed() -> int:
        return renamed()

    with old:
        handle = old.start("two_steps", workflow_id="wf")  # type: ignore[arg-type]
        assert flow.entered.wait(10)
        with new:
            deadline = time.monotonic() + 10
            while handle.status().held is None:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        flow.gate.set()
    status = handle.status()
    assert status.held is not None
    assert (status.held.position, status.held.recorded, status.held.actual) == (
        "0",
        "first",
        "renamed",
    )
    assert status.status == "RUNNING"


def test_retry_count_survives_a_takeover(make_app) -> None:
    calls: list[str] = []

    def register(app: perdure.App, tag: str) -> None:
        @app.step(name="flaky", retry=perdure.Retry(max_attempts=3, initial_interval=30, jitter=0))
        def flaky() -> str:
            calls.append(tag)
            if tag == "old":
                raise ConnectionError("inventory service unreachable")
            return "ok"

        @app.workflow(name="uses_flaky")
        def uses_flaky() -> str:
            return flaky()

    old = make_app()
    register(old, "old")
    new = make_app(clock=OffsetClock(31))  # past the recorded 30 s backoff
    register(new, "new")

    old.launch()
    handle = old.start("uses_flaky", workflow_id="wf")  # type: ignore[arg-type]
    wait_until(lambda: bool(handle.status().steps))
    step = handle.status().steps[0]
    assert (step.status, step.attempts) == ("RETRYING", 1)
    assert step.error == "ConnectionError: inventory service unreachable"
    assert step.next_attempt_at is not None
    old.shutdown(grace=0.1)  # ends the backoff wait without another attempt
    with new:
        assert handle.result(timeout=10) == "ok"
    assert calls == ["old", "new"]
    step = handle.status().steps[0]
    assert (step.status, step.attempts) == ("SUCCEEDED", 2)


def test_non_retryable_and_exhausted_retries(app: perdure.App) -> None:
    attempts: list[str] = []

    @app.step(retry=perdure.Retry(max_attempts=3, initial_interval=0, non_retryable=(KeyError,)))
    def declined(kind: str) -> None:
        attempts.append(kind)
        raise KeyError(kind) if kind == "key" else ValueError(kind)

    @app.workflow
    def pay(kind: str) -> None:
        declined(kind)

    with app:
        with pytest.raises(KeyError):
            app.run(pay, "key")
        with pytest.raises(ValueError):
            app.run(pay, "value")
    assert attempts == ["key", "value", "value", "value"]


def test_retry_delays_follow_the_policy() -> None:
    policy = perdure.Retry(max_attempts=5, initial_interval=1, backoff=2, max_interval=5, jitter=0)
    assert [policy.delay(n) for n in range(1, 5)] == [1, 2, 4, 5]
    jittered = perdure.Retry(initial_interval=10, jitter=0.5)
    assert all(5 <= jittered.delay(1) <= 15 for _ in range(50))
    assert policy.should_retry(ValueError(), 4) and not policy.should_retry(ValueError(), 5)
    with pytest.raises(ValueError):
        perdure.Retry(max_attempts=0)


def test_unregistered_workflow_stays_recoverable_and_is_reported(
    make_app, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_app()

    @client.workflow(name="ghost")
    def ghost() -> str:
        return "boo"

    worker = make_app(report_interval=0.05)

    @worker.workflow(name="other")
    def other() -> None:
        return None

    handle = client.start(ghost, workflow_id="g")
    with caplog.at_level(logging.WARNING, logger="perdure"), worker:
        wait_until(lambda: handle.status().note is not None)
    status = handle.status()
    assert status.status == "PENDING"
    assert "'ghost' is not registered" in (status.note or "")
    assert "'ghost' is not registered" in caplog.text
    fixed = make_app()

    @fixed.workflow(name="ghost")
    def ghost_again() -> str:
        return "boo"

    with fixed:
        assert handle.result(timeout=10) == "boo"
    assert handle.status().note is None


def test_executor_runs_only_its_own_version(make_app) -> None:
    def register(app: perdure.App) -> None:
        @app.workflow(name="versioned")
        def versioned() -> str:
            return "done"

    client = make_app(app_version="1")
    register(client)
    newer = make_app(app_version="2", report_interval=0.05)
    register(newer)
    handle = client.start("versioned", workflow_id="v")  # type: ignore[arg-type]
    with newer:
        wait_until(lambda: handle.status().note is not None)
        assert "waiting for an executor of version '1'" in (handle.status().note or "")
        assert handle.status().status == "PENDING"
    same = make_app(app_version="1")
    register(same)
    with same:
        assert handle.result(timeout=10) == "done"


@pytest.mark.parametrize("look", ["adopt_orphans", "heartbeat"])
def test_a_workflow_owned_here_but_not_running_is_adopted(
    app: perdure.App,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    look: str,
) -> None:
    # A start can commit while its caller sees an error (the connection died at COMMIT):
    # the store says this executor owns a workflow that does not run here. The
    # maintenance thread's look for orphans runs it: the heartbeat's (which reads what
    # this executor owns anyway: no read of its own), or adopt_orphans alone.
    @app.workflow
    def double(n: int) -> int:
        return n * 2

    with app:
        worker = app.client._worker
        assert worker is not None
        # Its own look for orphans is the one under test: the maintenance thread's (after
        # each heartbeat, the first at launch) would find it first.
        worker.maintenance.stop()
        monkeypatch.setattr(worker, "started", lambda record, created: None)  # never run
        handle = app.start(double, 21)
        monkeypatch.undo()
        record = app.store.get_workflow(handle.workflow_id)
        assert record is not None and record.owner == worker.id
        assert record.status == "RUNNING" and not worker.runs_here(handle.workflow_id)
        reads: list[str] = []
        owned = app.store.owned_workflows
        monkeypatch.setattr(
            app.store, "owned_workflows", lambda eid: reads.append(eid) or owned(eid)
        )
        with caplog.at_level(logging.WARNING, logger="perdure"):
            getattr(worker.maintenance, look)()
        assert reads == ([] if look == "heartbeat" else [worker.id])
        assert handle.result(timeout=10) == 42
    assert f"workflow {handle.workflow_id} was ours but not running" in caplog.text


@pytest.mark.parametrize("look", ["adopt_orphans", "heartbeat"])
def test_a_run_that_ends_while_orphans_are_looked_for_is_not_read_again(
    app: perdure.App, monkeypatch: pytest.MonkeyPatch, look: str
) -> None:
    # The look for orphans reads the workflows the store says this executor owns (the
    # heartbeat's read, or adopt_orphans' own); a run here that ends during that read was
    # seen unfinished, and is no orphan to read again.
    go = threading.Event()

    @app.workflow
    def held() -> int:
        go.wait(10)
        return 1

    with app:
        worker = app.client._worker
        assert worker is not None
        handle = app.start(held)
        read = app.store.owned_workflows if look == "adopt_orphans" else app.store.heartbeat

        def owned_then_the_run_ends(*args: Any) -> Any:
            found = read(*args)
            assert handle.workflow_id in found
            go.set()
            wait_until(lambda: not worker.tells(handle.workflow_id))
            return found

        worker.maintenance.stop()  # its own heartbeats would race the one under test
        monkeypatch.setattr(app.store, read.__name__, owned_then_the_run_ends)
        reads: list[str] = []
        monkeypatch.setattr(worker, "_adopt", lambda workflow_id, slot: reads.append(workflow_id))
        getattr(worker.maintenance, look)()
        assert reads == []
        assert handle.result(timeout=10) == 1
