"""Child workflows, fan-out/fan-in, continue_as_new and sending from a workflow, on both
stores."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

import perdure
from perdure.storage import STEP_SUCCEEDED


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_child_result_and_deterministic_id(app: perdure.App) -> None:
    @app.step
    def double(n: int) -> int:
        return n * 2

    @app.workflow
    def child(n: int) -> int:
        return double(n)

    @app.workflow
    def parent(n: int) -> list[int]:
        first = app.start(child, n)
        second = app.start(child, n + 1, workflow_id="named-child")
        return [first.result(), second.result(), child(n + 2)]

    with app:
        assert app.run(parent, 1, workflow_id="p") == [2, 4, 6]
        record = app.store.get_workflow("p/0")
        assert record is not None and record.parent_id == "p" and record.status == "SUCCEEDED"
        named = app.store.get_workflow("named-child")
        assert named is not None and named.parent_id == "p"
        names = [s.name for s in app.retrieve("p").status().steps]
        assert names.count("perdure.start_child") == 3
        assert names.count("perdure.child_result") == 3


def test_child_error_reaches_the_parent(app: perdure.App) -> None:
    @app.workflow
    def failing() -> None:
        raise ValueError("no stock")

    @app.workflow
    def parent() -> str:
        try:
            app.run(failing)
        except ValueError as exc:
            return f"caught {exc}"
        return "no error"

    with app:
        assert app.run(parent) == "caught no stock"


def test_async_fan_out_of_1000_children(make_app) -> None:
    app = make_app(poll_interval=0.02)

    @app.workflow(name="square")
    async def square(n: int) -> int:
        return n * n

    @app.workflow
    async def fan_out(count: int) -> int:
        handles = [await app.start_async(square, i) for i in range(count)]
        results = await asyncio.gather(*(h.result_async() for h in handles))
        return sum(results)

    with app:
        handle = app.start(fan_out, 1000, workflow_id="fan")
        assert handle.result(timeout=240) == sum(i * i for i in range(1000))
        assert len(app.store.list_workflows(name="square", limit=2000)) == 1000


def test_sync_fan_out_with_gather_and_first(app: perdure.App) -> None:
    @app.workflow
    def slow(n: int) -> int:
        perdure.recv("go", timeout=30)
        return n

    @app.workflow
    def quick(n: int) -> int:
        return n

    @app.workflow
    def parent() -> tuple[list[int], int, int]:
        handles = [app.start(quick, i) for i in range(20)]
        waiting = app.start(slow, 100)
        fast = app.start(quick, 7)
        index, value = perdure.first(waiting, fast)
        app.send(waiting.workflow_id, "go", topic="go")
        return perdure.gather(*handles), index, value + waiting.result()

    with app:
        results, index, value = app.run(parent, workflow_id="sync-fan")
        assert results == list(range(20)) and index == 1 and value == 107


def test_parent_suspends_while_its_child_waits_and_survives_restart(make_app) -> None:
    started: list[str] = []

    def register(app: perdure.App) -> None:
        @app.step(name="count_start")
        def count_start() -> None:
            started.append("child")

        @app.workflow(name="approval")
        def approval() -> str:
            count_start()
            return str(perdure.recv("decision"))

        @app.workflow(name="order")
        def order() -> str:
            child = app.start(approval)
            return "order " + child.result()

    first = make_app(suspend_after=0.2)
    register(first)
    with first:
        first.start("order", workflow_id="o1")  # type: ignore[arg-type]
        wait_for(lambda: _suspended(first, "o1") and _suspended(first, "o1/0"))
        status = first.retrieve("o1").status()
        assert status.waiting_for is not None and "o1/0" in status.waiting_for
    second = make_app(suspend_after=0.2)
    register(second)
    with second:
        second.send("o1/0", "approved", topic="decision")
        assert second.retrieve("o1").result(timeout=20) == "order approved"
    assert started == ["child"]
    assert len(second.store.list_workflows(name="approval")) == 1


def _suspended(app: perdure.App, workflow_id: str) -> bool:
    record = app.store.get_workflow(workflow_id)
    return record is not None and record.owner is None and record.wake_at is not None


def test_waiting_for_a_workflow_that_is_not_a_child_is_refused(app: perdure.App) -> None:
    @app.workflow
    def other() -> int:
        return 1

    @app.workflow
    def parent(other_id: str) -> int:
        return int(app.retrieve(other_id).result())

    with app:
        app.run(other, workflow_id="other")
        with pytest.raises(perdure.ConfigurationError, match="not its child"):
            app.run(parent, "other")


def test_continue_as_new_keeps_history_bounded(app: perdure.App) -> None:
    @app.step
    def add(total: int, n: int) -> int:
        return total + n

    @app.workflow
    def counter(total: int, rounds: int) -> int:
        total = add(total, 1)
        perdure.set_event("total", total)
        if rounds > 1:
            perdure.continue_as_new(total, rounds - 1)
        return total

    with app:
        handle = app.start(counter, 0, 50, workflow_id="counter")
        assert handle.result(timeout=30) == 50
        record = app.store.get_workflow("counter")
        assert record is not None and record.generation == 49
        assert len(app.store.load_steps("counter")) == 2  # the last run's only
        assert app.get_event("counter", "total") == 50


def test_async_continue_as_new_keeps_pending_messages(app: perdure.App) -> None:
    @app.workflow
    async def aggregator(total: int, seen: int) -> int:
        value = await perdure.recv_async(timeout=10)
        total += int(value)
        if seen + 1 < 5:
            perdure.continue_as_new(total, seen + 1)
        return total

    with app:
        for n in range(5):
            app.send(app.start(aggregator, 0, 0, workflow_id="agg").workflow_id, n)
        assert app.retrieve("agg").result(timeout=30) == 10


def test_send_from_a_workflow_is_recorded_and_delivered_once(make_app) -> None:
    def register(app: perdure.App) -> None:
        @app.workflow(name="inbox")
        def inbox() -> list[str]:
            got = [str(perdure.recv(timeout=5)) for _ in range(2)]
            return got

        @app.workflow(name="sender")
        def sender(target: str) -> str:
            app.send(target, "hello")
            perdure.sleep(1.0)  # suspends: the next app replays past the send
            app.send(target, "world")
            return "sent"

    first = make_app(suspend_after=0.3)
    register(first)
    with first:
        first.start("inbox", workflow_id="inbox")  # type: ignore[arg-type]
        first.start("sender", "inbox", workflow_id="sender")  # type: ignore[arg-type]
        wait_for(lambda: _suspended(first, "sender"))
    second = make_app(suspend_after=0.3)
    register(second)
    with second:
        assert second.retrieve("sender").result(timeout=20) == "sent"
        assert second.retrieve("inbox").result(timeout=20) == ["hello", "world"]
    sends = [s for s in second.store.load_steps("sender") if s.name == "perdure.send"]
    assert [s.status for s in sends] == [STEP_SUCCEEDED, STEP_SUCCEEDED]
