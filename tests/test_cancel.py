"""Cancellation, workflow deadlines and step timeouts, on both stores."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

import perdure
from perdure.testing import TestApp


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _suspended(app: perdure.App, workflow_id: str) -> bool:
    record = app.store.get_workflow(workflow_id)
    return record is not None and record.owner is None and record.wake_at is not None


def test_cancel_a_suspended_workflow_runs_its_compensation(app: perdure.App) -> None:
    undone: list[str] = []

    @app.step
    def refund(order: str) -> None:
        undone.append(order)

    @app.workflow
    def order(order_id: str) -> str:
        try:
            perdure.sleep(3600)
        except perdure.Cancelled:
            refund(order_id)
            raise
        return "shipped"

    with app:
        handle = app.start(order, "o-1", workflow_id="o-1")
        wait_for(lambda: _suspended(app, "o-1"))
        assert app.cancel("o-1") is True
        with pytest.raises(perdure.WorkflowCancelledError):
            handle.result(timeout=15)
        assert handle.status().status == "CANCELLED"
        assert undone == ["o-1"]
        assert app.cancel("o-1") is False  # finished: nothing to ask
    with pytest.raises(perdure.WorkflowNotFoundError):
        app.cancel("nope")


def test_cancel_interrupts_a_running_async_step(app: perdure.App) -> None:
    events: list[str] = []

    @app.step
    async def long_call() -> str:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            events.append("interrupted")
            raise
        return "done"

    @app.step
    async def cleanup() -> None:
        events.append("cleanup")

    @app.workflow
    async def agent() -> str:
        try:
            return await long_call()
        finally:
            await cleanup()

    with app:
        handle = app.start(agent, workflow_id="agent")
        wait_for(lambda: any(s.name.endswith("long_call") for s in _steps(app, "agent")) or True)
        time.sleep(0.3)
        started = time.monotonic()
        app.cancel("agent")
        with pytest.raises(perdure.WorkflowCancelledError):
            handle.result(timeout=15)
        assert time.monotonic() - started < 10  # interrupted, not waited out (60 s)
        assert events == ["interrupted", "cleanup"]
        statuses = [(s.name.rsplit(".", 1)[-1], s.status) for s in handle.status().steps]
        assert statuses == [("long_call", "CANCELLED"), ("cleanup", "SUCCEEDED")]


def _steps(app: perdure.App, workflow_id: str) -> list[perdure.StepStatus]:
    return list(app.retrieve(workflow_id).status().steps)


def test_cancel_cascades_to_a_tree_of_children(app: perdure.App) -> None:
    @app.workflow(name="leaf")
    def leaf() -> str:
        perdure.recv(timeout=3600)
        return "leaf done"

    @app.workflow(name="branch")
    def branch() -> list[str]:
        handles = [app.start(leaf) for _ in range(2)]
        return perdure.gather(*handles)

    @app.workflow(name="root")
    def root() -> list[list[str]]:
        handles = [app.start(branch) for _ in range(2)]
        return perdure.gather(*handles)

    with app:
        handle = app.start(root, workflow_id="root")
        tree = ["root", "root/0", "root/1", "root/0/0", "root/0/1", "root/1/0", "root/1/1"]
        wait_for(lambda: all(_suspended(app, wid) for wid in tree))
        app.cancel("root")
        with pytest.raises(perdure.WorkflowCancelledError):
            handle.result(timeout=20)
        for wid in tree:
            wait_for(lambda wid=wid: app.retrieve(wid).status().status == "CANCELLED")


def test_cancellation_replays_where_it_was_delivered(database_url: str) -> None:
    # On virtual clocks (perdure.testing): the first app never moves its clock, so that
    # the workflow stays suspended mid-compensation; the second skips to its wake time.
    # (A suspension after the cancel was delivered must keep its wake time: woken at once
    # it would replay, suspend and wake again in a loop, for ever on a still clock.)
    ran: list[str] = []

    def register(app: perdure.App) -> None:
        @app.step(name="undo")
        def undo() -> None:
            ran.append("undo")

        @app.step(name="undo_more")
        def undo_more() -> None:
            ran.append("undo_more")

        @app.workflow(name="saga")
        def saga() -> str:
            try:
                perdure.sleep(3600)
            finally:
                undo()
                perdure.sleep(60)  # suspends mid-compensation: the next run replays it
                undo_more()
            return "finished"

    first = TestApp(database_url, time_skipping=False)
    register(first)
    with first:
        first.start("saga", workflow_id="saga")  # type: ignore[arg-type]
        wait_for(lambda: _suspended(first, "saga"))
        time.sleep(0.2)
        # Suspending unwinds the function, finally blocks included: their steps must not
        # run then (only a cancellation or the function's own end runs them).
        assert ran == []
        first.cancel("saga")
        wait_for(lambda: ran == ["undo"] and _suspended(first, "saga"))
        asleep = first.store.get_workflow("saga")
        assert asleep is not None
        assert asleep.wake_at == pytest.approx(first.clock.time() + 60, abs=1)
    second = TestApp(database_url)
    register(second)
    with second, pytest.raises(perdure.WorkflowCancelledError):
        # No timeout: it would count virtual seconds, which the skip to the wake time
        # (a minute ahead) ends at once (docs/testing.md); pytest-timeout guards the wait.
        second.retrieve("saga").result()
    assert ran == ["undo", "undo_more"]


def test_workflow_deadline_fails_it_with_a_recorded_error(app: perdure.App) -> None:
    @app.workflow
    def slow() -> str:
        perdure.sleep(3600)
        return "late"

    @app.step
    async def hang() -> None:
        await asyncio.sleep(3600)

    @app.workflow
    async def slow_async() -> None:
        await hang()

    with app:
        sync_handle = app.start(slow, workflow_id="slow", timeout=1.0)
        async_handle = app.start(slow_async, workflow_id="slow-async", timeout=1.0)
        for handle in (sync_handle, async_handle):
            with pytest.raises(perdure.DeadlineExceededError, match="deadline of 1s"):
                handle.result(timeout=20)
            status = handle.status()
            assert status.status == "FAILED" and "DeadlineExceededError" in (status.error or "")


def test_step_timeout_fails_the_attempt_and_retries(app: perdure.App) -> None:
    attempts: list[int] = []

    @app.step(timeout=0.2, retry=perdure.Retry(max_attempts=2, initial_interval=0.05))
    async def stuck_async() -> None:
        attempts.append(1)
        await asyncio.sleep(30)

    @app.step(timeout=0.2)
    def stuck_sync() -> None:
        time.sleep(2)

    @app.workflow
    async def calls_async() -> str:
        try:
            await stuck_async()
        except perdure.StepTimeoutError as exc:
            return str(exc)
        return "no timeout"

    @app.workflow
    def calls_sync() -> str:
        try:
            stuck_sync()
        except TimeoutError as exc:
            return type(exc).__name__
        return "no timeout"

    with app:
        assert "within its timeout of 0.2s" in app.run(calls_async)
        assert len(attempts) == 2
        assert app.run(calls_sync) == "StepTimeoutError"
