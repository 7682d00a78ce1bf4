"""Workflows and steps in one process: running, recording, replaying, idempotent starts."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import pytest

import perdure


def step_rows(app: perdure.App, workflow_id: str) -> list[tuple[str, str, str, int]]:
    steps = app.retrieve(workflow_id).status().steps
    return [(s.position, s.name.rsplit(".", 1)[-1], s.status, s.attempts) for s in steps]


def test_sync_workflow_runs_steps_in_order_and_records_each(app: perdure.App) -> None:
    calls: list[str] = []

    @app.step
    def intake(order: str) -> dict:
        calls.append("intake")
        return {"order": order, "step": "intake"}

    @app.step()
    def pay(order: str) -> dict:
        calls.append("pay")
        return {"order": order, "step": "pay"}

    @app.workflow
    def checkout(order: str) -> dict:
        intake(order)
        return pay(order)

    with app:
        handle = app.start(checkout, "o-1", workflow_id="w-1")
        assert handle.result(timeout=10) == {"order": "o-1", "step": "pay"}
    assert calls == ["intake", "pay"]
    status = app.retrieve("w-1").status()
    assert status.status == "SUCCEEDED" and status.done
    assert step_rows(app, "w-1") == [("0", "intake", "SUCCEEDED", 1), ("1", "pay", "SUCCEEDED", 1)]


def test_start_is_idempotent_on_workflow_id(app: perdure.App) -> None:
    runs = []

    @app.workflow()
    def once(x: int) -> int:
        runs.append(x)
        return x * 2

    with app:
        first = app.start(once, 21, workflow_id="same")
        assert first.result(timeout=10) == 42
        second = app.start(once, 99, workflow_id="same")
        assert second.workflow_id == "same"
        assert second.result(timeout=10) == 42
    assert runs == [21]


def test_start_same_id_for_another_workflow_is_refused(app: perdure.App) -> None:
    @app.workflow()
    def first() -> int:
        return 1

    @app.workflow()
    def second() -> int:
        return 2

    with app:
        app.run(first, workflow_id="taken")
        with pytest.raises(perdure.ConfigurationError, match="already belongs"):
            app.start(second, workflow_id="taken")


def test_run_and_direct_call_wait_for_the_result(app: perdure.App) -> None:
    @app.workflow()
    def add(a: int, b: int = 1) -> int:
        return a + b

    with app:
        assert app.run(add, 1, b=2) == 3
        assert add(5) == 6


def test_step_outside_a_workflow_just_runs(app: perdure.App) -> None:
    @app.step
    def double(x: int) -> int:
        return 2 * x

    assert double(4) == 8
    assert not (app.store.list_workflows())  # nothing was recorded


def test_async_workflow_with_async_and_sync_steps(app: perdure.App) -> None:
    @app.step
    async def fetch(x: int) -> int:
        await asyncio.sleep(0.01)
        return x + 1

    @app.step
    def plain(x: int) -> int:
        return x * 10

    @app.workflow
    async def flow(x: int) -> list[int]:
        a = await fetch(x)
        return [a, plain(a)]

    async def main() -> list[int]:
        handle = await app.start_async(flow, 1, workflow_id="af")
        return await handle.result_async(timeout=10)

    with app:
        assert asyncio.run(main()) == [2, 20]
        assert asyncio.run(app.run_async(flow, 2)) == [3, 30]


def test_gathered_steps_get_positions_in_call_order(app: perdure.App) -> None:
    @app.step
    async def slow(x: int, delay: float) -> int:
        await asyncio.sleep(delay)
        return x

    async def branch(x: int) -> int:
        # Steps inside a task created by the workflow get the task's scope.
        return await slow(x, 0.001) + await slow(x, 0.001)

    @app.workflow
    async def fan(x: int) -> list[int]:
        # The first call finishes last: positions still follow the calls.
        results = await asyncio.gather(slow(1, 0.05), slow(2, 0.0), branch(3))
        return list(results)

    with app:
        assert app.run(fan, 0, workflow_id="fan") == [1, 2, 6]
    positions = [(s[0], s[1]) for s in step_rows(app, "fan")]
    # gather wraps each awaitable in a task: the branch is the third task created.
    assert sorted(positions) == [("0", "slow"), ("1", "slow"), ("t2.0", "slow"), ("t2.1", "slow")]


@dataclass
class Receipt:
    amount: Decimal
    at: datetime
    ref: uuid.UUID


def test_step_results_round_trip_to_annotated_types(app: perdure.App) -> None:
    @app.step
    def charge(amount: Decimal) -> Receipt:
        return Receipt(amount, datetime(2026, 1, 2, 3, 4, 5), uuid.UUID(int=7))

    @app.workflow
    def pay(amount: Decimal) -> Receipt:
        receipt = charge(amount)
        # The workflow sees the decoded record, the same on first run and replay.
        assert isinstance(receipt, Receipt) and isinstance(receipt.amount, Decimal)
        return receipt

    with app:
        result = app.run(pay, Decimal("12.50"))
    assert result == Receipt(Decimal("12.50"), datetime(2026, 1, 2, 3, 4, 5), uuid.UUID(int=7))


def test_unserializable_argument_fails_start_and_records_nothing(app: perdure.App) -> None:
    @app.workflow
    def takes(thing: object) -> None:
        return None

    with app:
        with pytest.raises(perdure.SerializationError, match="argument 'thing' of workflow"):
            app.start(takes, threading.Lock(), workflow_id="bad")
        assert app.store.get_workflow("bad") is None


def test_unknown_workflow_name_is_a_clear_error(app: perdure.App) -> None:
    with pytest.raises(perdure.UnknownWorkflowError, match="no workflow named 'nope'"):
        app.start("nope")  # type: ignore[arg-type]


def test_retrieve_unknown_id(app: perdure.App) -> None:
    with pytest.raises(perdure.WorkflowNotFoundError, match="missing"):
        app.retrieve("missing")


def test_workflow_error_is_recorded_and_raised(app: perdure.App) -> None:
    class OutOfStock(Exception):
        pass

    @app.step
    def reserve() -> None:
        raise OutOfStock("sku-1 is out of stock")

    @app.workflow
    def order() -> None:
        reserve()

    with app:
        handle = app.start(order, workflow_id="fails")
        with pytest.raises(Exception, match="sku-1 is out of stock") as info:
            handle.result(timeout=10)
    # A class local to a test can't be re-imported by name: a recorded stand-in is raised.
    assert type(info.value).__name__ in ("OutOfStock", "WorkflowFailedError")
    status = handle.status()
    assert status.status == "FAILED"
    assert status.error is not None and "sku-1 is out of stock" in status.error
    assert status.steps[0].status == "FAILED"


def test_step_error_reaches_the_workflow_as_an_exception_it_can_catch(app: perdure.App) -> None:
    @app.step
    def risky() -> int:
        raise ValueError("no")

    @app.step
    def fallback() -> int:
        return 7

    @app.workflow
    def careful() -> int:
        try:
            return risky()
        except ValueError:
            return fallback()

    with app:
        assert app.run(careful, workflow_id="careful") == 7
    assert [s[1:3] for s in step_rows(app, "careful")] == [
        ("risky", "FAILED"),
        ("fallback", "SUCCEEDED"),
    ]


def test_workflow_value_that_cannot_be_recorded_fails_clearly(app: perdure.App) -> None:
    @app.step
    def lock() -> object:
        return threading.Lock()

    @app.workflow
    def leaky() -> None:
        lock()

    with app, pytest.raises(perdure.SerializationError, match="step 'test_"):
        app.run(leaky, workflow_id="leaky")


def test_recorded_values_inside_a_workflow(app: perdure.App) -> None:
    seen: list[tuple[str, datetime, uuid.UUID, float]] = []

    @app.workflow
    def values() -> str:
        seen.append((perdure.workflow_id(), perdure.now(), perdure.uuid4(), perdure.random()))
        return perdure.workflow_id()

    with app:
        assert app.run(values, workflow_id="vals") == "vals"
    names = [s[1] for s in step_rows(app, "vals")]
    assert names == ["now", "uuid4", "random"]  # recorded as perdure.now and so on
    assert isinstance(seen[0][1], datetime) and seen[0][1].tzinfo is not None
    made = seen[0][2]
    assert made.version == 4 and made.variant == uuid.RFC_4122
    with pytest.raises(perdure.ConfigurationError):
        perdure.workflow_id()
    assert isinstance(perdure.now(), datetime)  # outside a workflow: just the time
    fresh = [perdure.uuid4() for _ in range(600)]  # outside: fresh, random version 4 UUIDs
    assert len(set(fresh)) == 600 and {u.version for u in fresh} == {4}


def test_status_reports_steps_and_listing(app: perdure.App) -> None:
    @app.step
    def one() -> int:
        return 1

    @app.workflow(name="listed")
    def listed() -> int:
        return one()

    with app:
        for i in range(3):
            app.run(listed, workflow_id=f"l-{i}")
    found = app.list_workflows(name="listed")
    assert [w.workflow_id for w in found] == ["l-2", "l-1", "l-0"]
    assert all(w.status == "SUCCEEDED" for w in found)
    assert app.list_workflows(status="FAILED") == []


def test_client_app_without_executor_starts_pending_work_for_a_worker(make_app) -> None:
    client = make_app()
    worker = make_app()
    for registering in (client, worker):

        @registering.workflow(name="greet")
        def greet(who: str) -> str:
            return f"hello {who}"

    handle = client.start("greet", "ada", workflow_id="g")  # type: ignore[arg-type]
    assert handle.status().status == "PENDING"
    with worker:
        assert handle.result(timeout=10) == "hello ada"


def test_result_timeout(app: perdure.App) -> None:
    release = threading.Event()

    @app.workflow
    def waits() -> None:
        release.wait(10)

    with app:
        handle = app.start(waits)
        with pytest.raises(perdure.WorkflowTimeoutError, match="did not finish"):
            handle.result(timeout=0.1)
        release.set()
        handle.result(timeout=10)


def test_sqlite_settings(tmp_path) -> None:
    from perdure.storage import open_store

    store = open_store(f"sqlite:///{tmp_path}/n.db?synchronous=normal")
    try:
        store.migrate()
        assert store.synchronous == "NORMAL"  # type: ignore[attr-defined]
    finally:
        store.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "n.db")) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(perdure.ConfigurationError, match="synchronous"):
        open_store(f"sqlite:///{tmp_path}/x.db?synchronous=sometimes")
    with pytest.raises(perdure.ConfigurationError, match="unsupported database URL"):
        open_store("mysql://x")


def test_workflows_claimed_together_run_concurrently(make_app) -> None:
    # Regression: a pool with one idle thread handed every workflow of a claim round to
    # that thread, so they ran one after another. Five workflows that meet at a barrier
    # can only finish if they run at the same time.
    worker = make_app()
    client = make_app()
    barrier = threading.Barrier(5, timeout=10)
    for app in (worker, client):

        @app.step(name="meet")
        def meet() -> None:
            barrier.wait()

        @app.workflow(name="warm_up")
        def warm_up() -> None:
            pass

        @app.workflow(name="together")
        def together() -> None:
            meet()

    with worker:
        client.start("warm_up").result(timeout=10)  # type: ignore[arg-type]
        handles = [client.start("together") for _ in range(5)]  # type: ignore[arg-type]
        for handle in handles:
            handle.result(timeout=20)
