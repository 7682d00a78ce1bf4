"""Replay: recorded values come back unchanged, and the hot path costs one statement per step."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime

from conftest import OffsetClock

import perdure


def test_recorded_values_are_the_same_on_replay(make_app) -> None:
    seen: list[tuple[datetime, uuid.UUID, float]] = []
    entered = threading.Event()
    gate = threading.Event()

    def register(app: perdure.App, block: bool) -> None:
        @app.step(name="wait_here")
        def wait_here() -> None:
            if block:
                entered.set()
                gate.wait(10)

        @app.workflow(name="values")
        def values() -> str:
            seen.append((perdure.now(), perdure.uuid4(), perdure.random()))
            wait_here()
            return str(seen[-1][1])

    # One slot (the blocked run's): the stale owner cannot claim the workflow back while
    # the new one, whose clock is a minute on, has it released.
    old = make_app(lease_seconds=5, max_workflows=1)
    register(old, block=True)
    new = make_app(clock=OffsetClock(60))
    register(new, block=False)
    with old:
        handle = old.start("values", workflow_id="v")  # type: ignore[arg-type]
        assert entered.wait(10)
        with new:
            result = handle.result(timeout=10)
        gate.set()
    assert len(seen) == 2 and seen[0] == seen[1]
    assert result == str(seen[0][1])


def test_a_new_step_costs_one_statement_in_one_transaction(app: perdure.App) -> None:
    statements: list[str] = []

    @app.step
    def one(x: int) -> int:
        return x

    @app.workflow
    def three(x: int) -> int:
        return one(x) + one(x) + one(x)

    store = app.store
    if store.kind != "sqlite":  # the statement trace is SQLite's
        return
    store._writer.submit(lambda conn: conn.set_trace_callback(statements.append)).result()  # type: ignore[attr-defined]
    with app:
        assert app.run(three, 1, workflow_id="t") == 3
    # The executor's own heartbeats and claims share the writer: keep this workflow's writes.
    ours = [s for s in statements if "'t'" in s]
    kinds = [s.split()[0] for s in ours]
    # The start (claimed in the same statement), three steps and the outcome: one statement
    # each, and no read before any of them.
    assert kinds == ["INSERT", "INSERT", "INSERT", "INSERT", "UPDATE"], ours
    assert sum("INSERT INTO perdure_steps" in s for s in ours) == 3
    # Each is committed (alone here; concurrent workflows share commits).
    assert statements.count("COMMIT") >= 5


def test_workflow_id_is_available_inside_steps(app: perdure.App) -> None:
    @app.step
    def key(name: str) -> str:
        return f"{perdure.workflow_id()}:{name}"

    @app.workflow
    def keyed() -> str:
        return key("charge")

    with app:
        assert app.run(keyed, workflow_id="order-7") == "order-7:charge"
