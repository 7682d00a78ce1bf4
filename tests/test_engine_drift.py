"""The drift between the sync and async paths that the one-engine design removes.

- Sync forms that record a value (``perdure.now()``, ``uuid4()``, ``random()``, a child's
  start, a sent message) called in an async workflow never wait for a commit on the
  event loop's thread.
- No two attempts of one step ever run at once, and an attempt past its timeout
  records nothing but its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import perdure


# Alone (when the suite runs on several processes): the probe measures how late the loop's
# ticks come, and a busy test beside it on the same cores would make them late too.
@pytest.mark.alone
def test_sync_forms_in_async_workflows_do_not_block_the_loop_on_commits(tmp_path: Any) -> None:
    # While the workflow calls the sync forms, another connection holds SQLite's write
    # lock: every commit waits for it. A call that waited for its commit would stall the
    # event loop (and every async workflow on it) until then.
    path = tmp_path / "lag.db"
    app = perdure.App(f"sqlite:///{path}?synchronous=full", poll_interval=0.05)
    rounds = 40
    probe: dict[str, Any] = {"worst": 0.0, "ticks": 0}
    stop, go = threading.Event(), threading.Event()
    times: dict[str, float] = {}

    @app.workflow(name="probe")
    async def lag_probe() -> float:
        # Plain asyncio (not durable): ticks every millisecond on the executor's loop,
        # and notes the longest gap between ticks.
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            probe["worst"] = max(probe["worst"], now - last)
            probe["ticks"] += 1
            last = now
        return float(probe["worst"])

    @app.workflow(name="sink")
    async def sink() -> int:
        got = 0
        while await perdure.recv_async(timeout=3600) is not None:
            got += 1
        return got

    @app.workflow(name="child")
    async def child(i: int) -> int:
        return i

    @app.workflow(name="burst")
    async def burst() -> list[str]:
        await asyncio.to_thread(go.wait)
        probe["worst"] = 0.0
        times["began"] = time.perf_counter()
        seen = []
        for i in range(rounds):
            # Sync forms, called back to back on the loop's thread.
            seen.append(perdure.now().isoformat())
            perdure.uuid4()
            perdure.random()
            app.start(child, i, workflow_id=f"child-{i}")
            app.send("sink", i)
        times["body"] = time.perf_counter() - times["began"]
        return seen  # its outcome waits for the records

    with app:
        app.start(sink, workflow_id="sink")
        deadline = time.time() + 10
        while app.retrieve("sink").status().status != "RUNNING" and time.time() < deadline:
            time.sleep(0.01)
        handle = app.start(lag_probe, workflow_id="probe")
        bursting = app.start(burst, workflow_id="burst")
        while probe["ticks"] < 20:
            time.sleep(0.01)
        # No garbage collection while the probe measures: late in a long test session a
        # full collection can pause every thread for a few hundred milliseconds, which
        # is not the loop waiting for a commit (the lock below holds commits 0.5 s).
        gc.disable()
        try:
            with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as blocker:
                blocker.execute("BEGIN IMMEDIATE")
                go.set()
                time.sleep(0.5)
                blocker.execute("ROLLBACK")
            seen = bursting.result(timeout=30)
            durable = time.perf_counter() - times["began"]
        finally:
            gc.enable()
        stop.set()
        handle.result(timeout=10)
        worst = probe["worst"]
        steps = app.retrieve("burst").status().steps
        children = [app.retrieve(f"child-{i}").result(timeout=10) for i in range(rounds)]
    assert len(seen) == rounds
    assert children == list(range(rounds))
    # now, uuid4, random, the start and the send of each round, recorded.
    assert len(steps) == 5 * rounds
    # The records took the lock's time to become durable; the loop never waited for them.
    assert durable >= 0.4
    assert worst < durable / 5, (worst, durable, times)


def test_a_timed_out_sync_attempt_is_waited_for_before_the_next(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app()
    lock = threading.Lock()
    state = {"running": 0, "most": 0, "calls": 0, "late": 0}

    @app.step(timeout=0.2, retry=perdure.Retry(max_attempts=3, initial_interval=0.01, jitter=0))
    def slow() -> str:
        with lock:
            state["calls"] += 1
            call = state["calls"]
            state["running"] += 1
            state["most"] = max(state["most"], state["running"])
        try:
            if call == 1:
                time.sleep(0.6)  # past its timeout: abandoned, its result discarded
                state["late"] += 1
                return "late"
            return "on time"
        finally:
            with lock:
                state["running"] -= 1

    @app.workflow(name="slow_flow")
    def slow_flow() -> str:
        return slow()

    with app:
        began = time.monotonic()
        assert app.run(slow_flow, workflow_id="slow") == "on time"
        took = time.monotonic() - began
        steps = app.retrieve("slow").status().steps
    assert state["most"] == 1
    assert state["late"] == 1
    assert took >= 0.55  # the second attempt waited for the abandoned one
    (step,) = steps
    assert step.status == "SUCCEEDED" and step.attempts == 2


def test_an_async_step_that_returns_past_its_timeout_fails(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app()

    @app.step(timeout=0.1)
    async def stubborn() -> str:
        try:
            await asyncio.sleep(2)
        except asyncio.CancelledError:
            return "sneaked past its timeout"
        return "slept"

    @app.workflow(name="stubborn_flow")
    async def stubborn_flow() -> str:
        try:
            return await stubborn()
        except perdure.StepTimeoutError as exc:
            return f"timed out: {exc}"

    with app:
        result = app.run(stubborn_flow, workflow_id="stubborn")
        (step,) = app.retrieve("stubborn").status().steps
    assert result.startswith("timed out")
    assert step.status == "FAILED"
    assert "StepTimeoutError" in (step.error or "")


def test_sync_forms_that_would_wait_refuse_in_async_workflows(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app()

    @app.workflow(name="canceller")
    async def canceller() -> None:
        app.cancel("someone")

    @app.workflow(name="firster")
    async def firster() -> None:
        perdure.first()

    with app:
        with pytest.raises(perdure.ConfigurationError, match="cancel_async"):
            app.run(canceller, workflow_id="canceller")
        with pytest.raises(perdure.ConfigurationError, match="first_async"):
            app.run(firster, workflow_id="firster")


def test_deferred_records_are_durable_before_the_outcome(tmp_path: Any) -> None:
    path = tmp_path / "deferred.db"
    app = perdure.App(f"sqlite:///{path}", poll_interval=0.05)

    @app.workflow(name="values")
    async def values() -> list[str]:
        return [str(perdure.uuid4()) for _ in range(20)]

    with app:
        first = app.run(values, workflow_id="values")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT COUNT(*) FROM perdure_steps").fetchone()
    assert rows == (20,)
    again = perdure.App(f"sqlite:///{path}", poll_interval=0.05)
    with again:
        assert again.retrieve("values").result(timeout=5) == first
