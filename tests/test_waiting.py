"""Waiting and talking: durable timers, suspension, messages and events, on both stores."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import OffsetClock

import perdure


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def suspended(app: perdure.App, workflow_id: str) -> bool:
    record = app.store.get_workflow(workflow_id)
    return record is not None and record.owner is None and record.wake_at is not None


def test_sleep_survives_restart(make_app) -> None:
    ran: list[str] = []

    def register(app: perdure.App) -> None:
        @app.step(name="before")
        def before() -> None:
            ran.append("before")

        @app.step(name="after")
        def after() -> None:
            ran.append("after")

        @app.workflow(name="nap")
        def nap() -> str:
            before()
            perdure.sleep(60)
            after()
            return "rested"

    first = make_app()
    register(first)
    with first:
        handle = first.start("nap", workflow_id="nap-1")  # type: ignore[arg-type]
        wait_for(lambda: suspended(first, "nap-1"))
        assert first.executor is not None and first.executor.running == 0
        status = handle.status()
        assert status.suspended and status.status == "RUNNING" and status.owner is None
        assert status.wake_at is not None and status.waiting_for is not None
        assert status.waiting_for.startswith("sleep until ")
        wake_at = status.wake_at
    # Another app (another process, a minute later) wakes it and finishes it.
    second = make_app(clock=OffsetClock(61))
    register(second)
    with second:
        assert second.retrieve("nap-1").result(timeout=10) == "rested"
    assert ran == ["before", "after"]
    status = second.retrieve("nap-1").status()
    assert status.recoveries == 0 and not status.suspended and status.wake_at is None
    sleeps = [s for s in status.steps if s.name == "perdure.sleep"]
    assert len(sleeps) == 1
    assert abs((wake_at - status.created_at).total_seconds() - 60) < 5


def test_a_sleep_whose_deadline_passed_returns_at_once_on_replay(make_app) -> None:
    app = make_app(suspend_after=0.2)

    @app.workflow(name="late")
    def late() -> float:
        perdure.sleep(0.5)
        return time.time()

    with app:
        began = time.time()
        finished = app.run("late", workflow_id="late-1")  # type: ignore[arg-type]
    # Suspended (0.5 > 0.2), woken on time by the maintenance thread, and replayed.
    assert 0.5 <= finished - began < 2.0
    record = app.store.get_workflow("late-1")
    assert record is not None and record.epoch == 2 and record.recoveries == 0


def test_a_short_sleep_waits_in_place(app: perdure.App) -> None:
    @app.workflow
    def short() -> float:
        began = time.time()
        perdure.sleep(0.3)
        return time.time() - began

    with app:
        waited = app.run(short, workflow_id="short-1")
    assert 0.3 <= waited < 1.0
    record = app.store.get_workflow("short-1")
    # Never suspended: claimed once, at the start.
    assert record is not None and record.epoch == 1 and record.wake_at is None


def test_recv_gets_messages_sent_before_and_after_waiting_in_order_exactly_once(
    make_app,
) -> None:
    app = make_app(suspend_after=0.2)

    @app.workflow(name="inbox")
    def inbox(count: int) -> list[Any]:
        return [perdure.recv("orders", timeout=30) for _ in range(count)]

    # Sent before the workflow waits (it is not even running: the app is a client).
    app.start("inbox", 4, workflow_id="inbox-1")  # type: ignore[arg-type]
    app.send("inbox-1", {"n": 0}, topic="orders")
    app.send("inbox-1", "ignored: another topic", topic="other")
    app.send("inbox-1", {"n": 1}, topic="orders")
    with app:
        wait_for(lambda: suspended(app, "inbox-1"))
        status = app.retrieve("inbox-1").status()
        assert status.waiting_for is not None
        assert status.waiting_for.startswith("message on topic 'orders' until ")
        app.send("inbox-1", {"n": 2}, topic="orders")
        app.send("inbox-1", {"n": 3}, topic="orders")
        result = app.retrieve("inbox-1").result(timeout=10)
    assert result == [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}]
    steps = app.retrieve("inbox-1").status().steps
    assert [(s.name, s.status) for s in steps] == [("perdure.recv", "SUCCEEDED")] * 4


def test_a_message_wakes_a_suspended_recv_at_once(make_app) -> None:
    app = make_app(suspend_after=0.2)

    @app.workflow(name="approve")
    def approve() -> Any:
        return perdure.recv(timeout=3600)

    with app:
        handle = app.start("approve", workflow_id="approve-1")  # type: ignore[arg-type]
        wait_for(lambda: suspended(app, "approve-1"))
        sent = time.monotonic()
        app.send("approve-1", "yes")
        assert handle.result(timeout=10) == "yes"
        assert time.monotonic() - sent < 2.0


def test_recv_timeout_returns_none(make_app) -> None:
    app = make_app(suspend_after=0.5)

    @app.workflow(name="patient")
    def patient() -> list[Any]:
        # In place, then suspended until the timeout.
        return [perdure.recv(timeout=0.2), perdure.recv("t", timeout=1.5)]

    with app:
        began = time.monotonic()
        assert app.run("patient", workflow_id="p") == [None, None]  # type: ignore[call-overload]
        assert 1.7 <= time.monotonic() - began < 4.0


def test_send_is_idempotent_per_key_and_needs_the_workflow(app: perdure.App) -> None:
    @app.workflow(name="once")
    def once() -> list[Any]:
        return [perdure.recv(timeout=0.3), perdure.recv(timeout=0.3)]

    app.start("once", workflow_id="once-1")  # type: ignore[arg-type]
    app.send("once-1", "pay", idempotency_key="k1")
    app.send("once-1", "pay again", idempotency_key="k1")
    with pytest.raises(perdure.WorkflowNotFoundError):
        app.send("nobody", "hello")
    with app:
        assert app.retrieve("once-1").result(timeout=10) == ["pay", None]
    with pytest.raises(perdure.WorkflowFinishedError, match="already finished"):
        app.send("once-1", "too late")


def test_events_are_visible_while_the_workflow_runs_and_not_duplicated_on_replay(
    make_app,
) -> None:
    app = make_app(suspend_after=0.2)

    @app.workflow(name="progress")
    def progress() -> str:
        perdure.set_event("stage", "waiting")
        perdure.set_event("order", {"id": 7})
        answer = perdure.recv(timeout=60)
        perdure.set_event("stage", "done")
        return str(answer)

    with app:
        app.start("progress", workflow_id="prog-1")  # type: ignore[arg-type]
        assert app.get_event("prog-1", "stage", timeout=10) == "waiting"
        assert app.get_event("prog-1", "order", timeout=10) == {"id": 7}
        assert app.get_event("prog-1", "missing", timeout=0.2) is None
        with pytest.raises(perdure.WorkflowNotFoundError):
            app.get_event("nobody", "stage")
        wait_for(lambda: suspended(app, "prog-1"))
        app.send("prog-1", "go")
        assert app.retrieve("prog-1").result(timeout=10) == "go"
        assert app.get_event("prog-1", "stage") == "done"
    steps = app.retrieve("prog-1").status().steps
    # The replay after the wake passed the first two events without setting them again.
    assert [s.name for s in steps] == [
        "perdure.set_event",
        "perdure.set_event",
        "perdure.recv",
        "perdure.set_event",
    ]


def test_async_workflows_sleep_receive_and_publish(make_app) -> None:
    app = make_app(suspend_after=0.2)

    @app.workflow(name="async_waits")
    async def async_waits() -> list[Any]:
        await perdure.sleep_async(0.1)  # in place
        await perdure.sleep_async(0.4)  # suspended
        perdure.set_event("slept", True)
        return [await perdure.recv_async(timeout=30), await perdure.recv_async(timeout=0.1)]

    async def drive() -> list[Any]:
        handle = await app.start_async("async_waits", workflow_id="aw")  # type: ignore[call-overload]
        assert await app.get_event_async("aw", "slept", timeout=10) is True
        await app.send_async("aw", "hi")
        result: list[Any] = await handle.result_async(timeout=10)
        return result

    with app:
        assert asyncio.run(drive()) == ["hi", None]


def test_a_blocking_wait_in_an_async_workflow_is_refused(app: perdure.App) -> None:
    @app.workflow(name="wrong")
    async def wrong() -> None:
        perdure.sleep(1)

    with app, pytest.raises(perdure.ConfigurationError, match="sleep_async"):
        app.run("wrong", workflow_id="wrong")  # type: ignore[call-overload]


def test_suspended_workflows_hold_no_thread(make_app) -> None:
    app = make_app(max_threads=4)

    @app.workflow(name="dormant")
    def dormant() -> None:
        perdure.sleep(3600)

    @app.workflow(name="dormant_async")
    async def dormant_async() -> None:
        await perdure.recv_async(timeout=3600)

    with app:
        assert app.store is not None  # opened (with its threads) before counting
        time.sleep(0.2)
        before = threading.active_count()
        for i in range(100):
            app.start("dormant", workflow_id=f"d{i}")  # type: ignore[arg-type]
            app.start("dormant_async", workflow_id=f"a{i}")  # type: ignore[arg-type]

        def all_suspended() -> bool:
            active = app.store.list_workflows(status="RUNNING", limit=1000)
            return len(active) == 200 and all(r.owner is None for r in active)

        wait_for(all_suspended, timeout=60)
        # The executor forgets a run once its suspension committed: a moment after the
        # store shows it.
        assert app.executor is not None
        wait_for(lambda: app.executor.running == 0, timeout=10)
        # At most the pool's four threads (and its spawner) were started; 200 waiting
        # workflows hold none.
        assert threading.active_count() - before <= 4 + 1


def test_messages_are_delivered_once_with_competing_executors(make_app) -> None:
    """Two executors race to wake and replay workflows that receive messages sent from
    several threads at once: every message is received exactly once, in order."""

    def register(app: perdure.App) -> None:
        @app.workflow(name="inbox")
        def inbox(count: int) -> list[Any]:
            return [perdure.recv("orders", timeout=60) for _ in range(count)]

    first, second, client = make_app(), make_app(), make_app()
    for app in (first, second, client):
        register(app)
    workflows, messages = 12, 6
    handles = [
        client.start("inbox", messages, workflow_id=f"inbox-{i}")  # type: ignore[arg-type]
        for i in range(workflows)
    ]

    def sender(i: int) -> None:
        for k in range(messages):
            client.send(f"inbox-{i}", {"n": k}, topic="orders", idempotency_key=f"{i}:{k}")
            # Again, as a retrying client would: the key makes it a no-op.
            client.send(f"inbox-{i}", {"n": k}, topic="orders", idempotency_key=f"{i}:{k}")
            time.sleep(0.005 * (i % 3))

    with first, second:
        threads = [threading.Thread(target=sender, args=(i,)) for i in range(workflows)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        results = [handle.result(timeout=60) for handle in handles]
    assert results == [[{"n": k} for k in range(messages)]] * workflows
    # One recorded receive per position: no message consumed twice, none lost.
    for handle in handles:
        steps = handle.status().steps
        assert [s.position for s in steps] == [str(k) for k in range(messages)]
        assert all(s.status == "SUCCEEDED" for s in steps), steps
