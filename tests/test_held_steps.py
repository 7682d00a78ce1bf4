"""A step's final record is held until the run's next durable operation, and the last
one goes with the workflow's outcome, in its transaction (``_engine/writes.py``,
``_engine/holder.py``; ``GroupCommitter.submit_together``)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from test_storage import _flights, _one_batch, _traced_writer, new, step

import perdure
from perdure import App
from perdure._engine import holder as holder_module
from perdure.storage import Lease, open_store


def _xmin(store: Any, sql: str, *params: Any) -> int:
    """The transaction that wrote a row (PostgreSQL's ``xmin``)."""
    rows = store._read(sql, params)
    assert len(rows) == 1, rows
    return int(rows[0][0])


@pytest.mark.postgres
def test_postgres_a_last_step_and_its_outcome_are_one_statement_in_one_round_trip(
    postgres_url: str, tmp_path: Any
) -> None:
    """Alone in its batch, a record and the outcome that carries it are one statement
    (autocommit, no BEGIN or COMMIT); under a stale lease it writes neither."""
    store = open_store(postgres_url)
    trace = tmp_path / "trace.txt"
    try:
        store.migrate()
        store.create_workflow(new("a"), "me", 500.0).result()
        store.create_workflow(new("b"), "me", 500.0).result()
        with _traced_writer(store, trace):
            lease = Lease("me", 1)
            assert store.complete_workflow(
                "a", lease, "SUCCEEDED", "1", None, 300.0, steps=[step("0")]
            ).result()
            assert not store.complete_workflow(
                "b", Lease("me", 2), "SUCCEEDED", "1", None, 300.0, steps=[step("0")]
            ).result()
        assert [s.position for s in store.load_steps("a")] == ["0"]
        assert store.load_steps("b") == []
        record = store.get_workflow("b")
        assert record is not None and record.status == "RUNNING"
        a_step = _xmin(store, "SELECT xmin FROM perdure_steps WHERE workflow_id = %s", "a")
        a_row = _xmin(store, "SELECT xmin FROM perdure_workflows WHERE id = %s", "a")
        assert a_step == a_row
    finally:
        store.close()
    flights = [f for f in _flights(trace) if "WITH" in f]
    assert flights == [["WITH"], ["WITH"]], _flights(trace)


@pytest.mark.postgres
@pytest.mark.parametrize("alone", [True, False], ids=["one-statement", "transaction"])
def test_postgres_a_held_record_goes_before_its_outcome_in_a_busy_batch(
    postgres_url: str, alone: bool
) -> None:
    """In a batch, a held record is written with its outcome, whatever else the batch
    holds and in whatever order: in the batch's one statement (``alone``: only records
    and outcomes), it is inserted from the outcome's update; in a transaction (another
    write among them), it joins the other step records' statement, which goes before the
    outcomes' (its outcome drops the lease that fences it). Each record commits in its
    outcome's transaction."""
    store = open_store(postgres_url)
    try:
        store.migrate()
        for name in ("x", "a", "b", "c"):
            store.create_workflow(new(name), "me", 500.0).result()
        lease = Lease("me", 1)
        with _one_batch(store):
            if not alone:  # a write that is no row: the batch is a transaction
                store._writer.submit(lambda conn: conn.execute("SELECT 1"))
            futures = [
                # An outcome without a record first: the outcomes' statement starts here.
                store.complete_workflow("x", lease, "SUCCEEDED", "0", None, 300.0),
                store.complete_workflow(
                    "a", lease, "SUCCEEDED", "1", None, 300.0, steps=[step("0")]
                ),
                store.record_step("c", lease, step("0")),
                store.complete_workflow(
                    "b", lease, "FAILED", None, "{}", 300.0, steps=[step("0"), step("1")]
                ),
            ]
        assert [future.result(timeout=10) for future in futures] == [True, True, True, True]
        assert [s.position for s in store.load_steps("a")] == ["0"]
        assert [s.position for s in store.load_steps("b")] == ["0", "1"]
        assert [s.position for s in store.load_steps("c")] == ["0"]
        for name in ("a", "b"):
            record = store.get_workflow(name)
            assert record is not None and record.finished_at == 300.0
        row = _xmin(store, "SELECT xmin FROM perdure_workflows WHERE id = %s", "a")
        assert row == _xmin(store, "SELECT xmin FROM perdure_steps WHERE workflow_id = %s", "a")
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_records_and_outcomes_of_a_batch_are_one_statement_each_fenced(
    postgres_url: str, tmp_path: Any
) -> None:
    """A batch of step records and outcomes is one statement in one round trip (no BEGIN
    or COMMIT), one transaction, yet each write gets its own answer: a record of another
    workflow under a stale lease is refused beside one written, a record carried by an
    outcome is written with it, and with neither when the outcome's lease is stale."""
    store = open_store(postgres_url)
    trace = tmp_path / "trace.txt"
    lease, stale = Lease("me", 1), Lease("me", 2)
    try:
        store.migrate()
        for name in ("a", "b", "c", "d"):
            store.create_workflow(new(name), "me", 500.0).result()
        with _traced_writer(store, trace):
            with _one_batch(store):
                futures = [
                    store.record_step("a", lease, step("0")),
                    store.complete_workflow(
                        "b", lease, "SUCCEEDED", "1", None, 300.0, steps=[step("0")]
                    ),
                    store.record_step("a", stale, step("1")),
                    store.complete_workflow(
                        "c", stale, "SUCCEEDED", "1", None, 300.0, steps=[step("0")]
                    ),
                    store.complete_workflow("d", lease, "FAILED", None, "{}", 300.0),
                ]
            assert [f.result(timeout=10) for f in futures] == [True, True, False, False, True]
        assert [s.position for s in store.load_steps("a")] == ["0"]
        assert [s.position for s in store.load_steps("b")] == ["0"]
        assert store.load_steps("c") == []
        statuses = {n: store.get_workflow(n).status for n in "abcd"}  # type: ignore[union-attr]
        assert statuses == {"a": "RUNNING", "b": "SUCCEEDED", "c": "RUNNING", "d": "FAILED"}
        rows = {
            _xmin(store, "SELECT xmin FROM perdure_steps WHERE workflow_id = %s", "a"),
            _xmin(store, "SELECT xmin FROM perdure_steps WHERE workflow_id = %s", "b"),
            _xmin(store, "SELECT xmin FROM perdure_workflows WHERE id = %s", "b"),
            _xmin(store, "SELECT xmin FROM perdure_workflows WHERE id = %s", "d"),
        }
        assert len(rows) == 1, rows
    finally:
        store.close()
    writes = [f for f in _flights(trace) if "WITH" in f or "INSERT" in f]
    assert writes == [["WITH"]], _flights(trace)


@pytest.mark.postgres
@pytest.mark.parametrize("first", ["record", "outcome"])
def test_postgres_a_record_under_another_lease_than_its_outcome_is_answered_as_alone(
    postgres_url: str, first: str
) -> None:
    """A record of a workflow that the batch completes, not under the outcome's lease,
    cannot ride with it: the batch is a transaction, the record fenced by its own lease
    before the outcome, as alone. (``first``: whose lease is the current one.)"""
    store = open_store(postgres_url)
    try:
        store.migrate()
        store.create_workflow(new("a"), "me", 500.0).result()
        store.create_workflow(new("b"), "me", 500.0).result()
        lease, stale = Lease("me", 1), Lease("me", 2)
        record_lease, outcome_lease = (lease, stale) if first == "record" else (stale, lease)
        with _one_batch(store):
            futures = [
                store.record_step("a", record_lease, step("0")),
                store.complete_workflow("a", outcome_lease, "SUCCEEDED", "1", None, 300.0),
                store.record_step("b", lease, step("0")),
            ]
        answers = [f.result(timeout=10) for f in futures]
        assert answers == ([True, False, True] if first == "record" else [False, True, True])
        assert len(store.load_steps("a")) == (1 if first == "record" else 0)
        assert [s.position for s in store.load_steps("b")] == ["0"]
    finally:
        store.close()


def test_the_last_step_goes_with_the_outcome_and_the_others_before_the_next(
    database_url: str,
) -> None:
    """A step's record is durable before the next step runs (the next step sees it in
    the store); the last one is written by the outcome, not on its own."""
    app = App(database_url)
    seen: list[list[str]] = []

    @app.step
    def first() -> int:
        return 1

    @app.step
    def second(wid: str) -> int:
        seen.append([s.name.rsplit(".", 1)[-1] for s in app.store.load_steps(wid)])
        return 2

    @app.workflow
    def two() -> int:
        return first() + second(perdure.workflow_id())

    alone: list[str] = []
    carried: list[list[str]] = []
    record_step, complete = app.store.record_step, app.store.complete_workflow

    def watched_record(workflow_id: str, lease: Lease, record: Any) -> Any:
        alone.append(record.name.rsplit(".", 1)[-1])
        return record_step(workflow_id, lease, record)

    def watched_complete(*args: Any, **kwargs: Any) -> Any:
        carried.append([s.name.rsplit(".", 1)[-1] for s in kwargs.get("steps", ())])
        return complete(*args, **kwargs)

    app.store.record_step = watched_record  # type: ignore[method-assign]
    app.store.complete_workflow = watched_complete  # type: ignore[method-assign]
    with app:
        assert app.run(two) == 3
        handle = app.start(two)
        assert handle.result(timeout=30) == 3
        names = [s.name.rsplit(".", 1)[-1] for s in app.store.load_steps(handle.workflow_id)]
    assert seen == [["first"], ["first"]]
    assert alone == ["first", "first"]
    assert carried == [["second"], ["second"]]
    assert names == ["first", "second"]


def test_a_record_held_while_the_workflow_code_waits_is_written_soon(
    database_url: str,
) -> None:
    """Workflow code that waits on something perdure does not see after a step (here a
    threading.Event) does not keep the step's record from the store: the holder writes
    it within two intervals, and the step does not run again."""
    app = App(database_url)
    go, ran = threading.Event(), []

    @app.step
    def charge() -> str:
        ran.append("charge")
        return "charged"

    @app.workflow
    def slow() -> str:
        charged = charge()
        go.wait(30)
        return charged

    with app:
        handle = app.start(slow)
        deadline = time.monotonic() + 10
        while not app.store.load_steps(handle.workflow_id):
            assert time.monotonic() < deadline, "the held record was never written"
            time.sleep(holder_module.INTERVAL / 2)
        record = app.store.get_workflow(handle.workflow_id)
        assert record is not None and record.status == "RUNNING"
        go.set()
        assert handle.result(timeout=30) == "charged"
    assert ran == ["charge"]
    steps = app.store.load_steps(handle.workflow_id)
    assert [(s.status, s.attempts) for s in steps] == [("SUCCEEDED", 1)]


def test_an_async_workflows_concurrent_steps_go_with_its_outcome(database_url: str) -> None:
    """Steps of an async workflow that end together are all held, and all written."""
    app = App(database_url)

    @app.step
    async def double(n: int) -> int:
        return 2 * n

    @app.workflow
    async def fan() -> int:
        results = await asyncio.gather(*(double(n) for n in range(4)))
        return sum(results)

    with app:
        handle = app.start(fan)
        assert handle.result(timeout=30) == 12
    steps = app.store.load_steps(handle.workflow_id)
    assert sorted(s.status for s in steps) == ["SUCCEEDED"] * 4


def test_each_task_of_an_async_workflow_sees_its_last_record_before_its_next_step(
    database_url: str,
) -> None:
    """In an async workflow whose tasks run steps side by side, a held record another
    task wrote first is still durable before its own task's next step runs."""
    app = App(database_url)
    missing: list[str] = []

    @app.step
    async def first(lane: int) -> int:
        await asyncio.sleep(0.001 * lane)
        return lane

    @app.step
    async def second(wid: str, lane: int) -> int:
        positions = {s.position for s in app.store.load_steps(wid)}
        if f"t{lane}.0" not in positions:
            missing.append(f"lane {lane}: {sorted(positions)}")
        return lane

    @app.workflow
    async def lanes() -> int:
        wid = perdure.workflow_id()

        async def lane(n: int) -> int:
            return await first(n) + await second(wid, n)

        tasks = [asyncio.create_task(lane(n)) for n in range(8)]
        return sum(await asyncio.gather(*tasks))

    with app:
        handles = [app.start(lanes) for _ in range(5)]
        assert [h.result(timeout=60) for h in handles] == [56] * 5
        steps = app.store.load_steps(handles[0].workflow_id)
    assert missing == []
    assert len(steps) == 16
