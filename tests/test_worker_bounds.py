"""The worker: ``max_workflows`` bounds every workflow running in the process, however it
was started; the run table keeps its stranded workflows behind its one lock; the
maintenance thread survives any failure."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from typing import Any

import pytest

from perdure._worker import RunTable
from perdure._worker._maintenance import Maintenance


class Gauge:
    """Counts the workflows inside a section at once, and the most ever."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


def test_max_workflows_bounds_workflows_started_in_this_process(make_app) -> None:
    # Regression: with max_workflows=2, ten workflows started in the same process ran at
    # once (only claims were bounded).
    app = make_app(max_workflows=2)
    gauge = Gauge()
    go = threading.Event()

    @app.workflow
    def busy(i: int) -> int:
        gauge.enter()
        go.wait(10)
        time.sleep(0.05)
        gauge.leave()
        return i

    @app.workflow
    async def busy_async(i: int) -> int:
        gauge.enter()
        while not go.is_set():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        gauge.leave()
        return i

    with app:
        handles = [app.start(busy, i) for i in range(5)]
        handles += [app.start(busy_async, i) for i in range(5, 10)]
        # At most two run here; beyond the bound, a start records its workflow unowned
        # (PENDING), for a claim when there is room. (A claim round of the maintenance
        # thread may take the second slot for one of those.)
        owners = [h.status().owner for h in handles]
        executor = app.executor
        assert executor is not None and owners[0] == executor.id
        assert owners.count(executor.id) == 2 and owners.count(None) == 8
        go.set()
        assert [h.result(timeout=30) for h in handles] == list(range(10))
        # A result is told to waiters just before its run leaves the run table.
        deadline = time.monotonic() + 10
        while executor.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert executor.running == 0
    assert gauge.most == 2


def test_a_start_beyond_the_bound_waits_pending_and_runs_when_there_is_room(make_app) -> None:
    app = make_app(max_workflows=1)
    release = threading.Event()

    @app.workflow
    def hold() -> None:
        release.wait(10)

    @app.workflow
    def quick() -> str:
        return "done"

    with app:
        held = app.start(hold)
        waiting = app.start(quick)
        time.sleep(0.3)  # several claim rounds: none may take it while the slot is full
        status = waiting.status()
        assert (status.status, status.owner) == ("PENDING", None)
        release.set()
        held.result(timeout=10)
        assert waiting.result(timeout=10) == "done"


def _owned_by(app: Any, handles: list[Any]) -> int:
    executor = app.executor
    assert executor is not None
    return sum(handle.status().owner == executor.id for handle in handles)


def test_a_worker_claims_no_more_sync_workflows_than_its_threads_and_one_queue(
    make_app,
) -> None:
    # Before, a claim round took a pool's worth and went on claiming up to max_workflows:
    # with 2 threads a worker owned all twelve, ten of them waiting for a thread, none
    # left to another worker, all stranded with this one if it died.
    client = make_app()
    worker = make_app(max_threads=2)
    gauge = Gauge()
    go = threading.Event()

    def busy(i: int) -> int:
        gauge.enter()
        go.wait(10)
        gauge.leave()
        return i

    client.workflow(busy)
    worker.workflow(busy)
    handles = [client.start(busy, i) for i in range(12)]  # unowned: the client runs nothing
    with worker:
        deadline = time.monotonic() + 10
        while gauge.now < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gauge.now == 2
        time.sleep(0.5)  # ten claim rounds: none may take more
        # Two running, two waiting for the next free thread; eight left for others.
        assert _owned_by(worker, handles) == 4
        go.set()
        assert [h.result(timeout=30) for h in handles] == list(range(12))
    assert gauge.most == 2


def test_async_workflows_are_claimed_while_every_thread_is_busy(make_app) -> None:
    client = make_app()
    worker = make_app(max_threads=1)
    go = threading.Event()

    def busy(i: int) -> int:
        go.wait(10)
        return i

    async def light(i: int) -> int:
        return i * 10

    for app in (client, worker):
        app.workflow(busy)
        app.workflow(light)
    blocked = [client.start(busy, i) for i in range(4)]
    with worker:
        deadline = time.monotonic() + 10
        while _owned_by(worker, blocked) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        # The one thread is busy and one more waits for it: async workflows need no
        # thread, so they are still claimed and run.
        lights = [client.start(light, i) for i in range(5)]
        assert [h.result(timeout=10) for h in lights] == [0, 10, 20, 30, 40]
        assert _owned_by(worker, blocked) == 2
        go.set()
        assert [h.result(timeout=30) for h in blocked] == [0, 1, 2, 3]


def test_children_count_against_the_bound(make_app) -> None:
    app = make_app(max_workflows=2, suspend_after=0.1)
    gauge = Gauge()

    @app.workflow
    def child(i: int) -> int:
        gauge.enter()
        time.sleep(0.05)
        gauge.leave()
        return i

    @app.workflow
    def parent() -> int:
        handles = [app.start(child, i) for i in range(4)]
        return sum(h.result() for h in handles)

    with app:
        assert app.run(parent) == 6
    # The parent holds a slot while it runs; its children share the other one (while the
    # parent is suspended, two children may run).
    assert gauge.most <= 2


def test_the_run_table_strands_and_retries_under_its_lock() -> None:
    # Regression: the maintenance thread iterated the stranded workflows without the lock
    # while workflow threads added to them ("dictionary changed size during iteration").
    table = RunTable(capacity=10)
    stop = threading.Event()
    errors: list[BaseException] = []

    def strand(name: str) -> None:
        i = 0
        while not stop.is_set():
            # Most are not due: the stranded set grows, and each look iterates it all.
            table.strand(f"{name}-{i}", 0.0 if i % 10 == 0 else 9.0)
            i += 1

    def take() -> None:
        try:
            while not stop.is_set():
                table.take_stranded(1.0)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=strand, args=(str(n),)) for n in range(3)]
    threads.append(threading.Thread(target=take))
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switch)
    assert errors == []
    table.take_stranded(10.0)  # what the writers stranded, due or not
    table.strand("late", 5.0)
    assert table.take_stranded(1.0) == [] and table.take_stranded(5.0) == ["late"]


def test_the_run_table_bounds_reservations_starts_and_runs() -> None:
    table = RunTable(capacity=3)
    assert table.reserve(2) == 2
    assert table.begin_start("a") is True
    assert table.begin_start("b") is False  # full: recorded unowned
    assert table.reserve(5) == 0
    table.end_start("b")
    table.end_start("a")  # its slot comes back
    table.unreserve(2)
    assert table.free() == 3


def test_maintenance_survives_an_unexpected_error(
    make_app, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="perdure")
    worker = make_app()
    client = make_app()
    for app in (worker, client):

        @app.workflow(name="greet")
        def greet(who: str) -> str:
            return f"hello {who}"

    store = worker.store
    real_claim = store.claim_workflows
    failed: list[bool] = []

    def claim_once_broken(*args: Any, **kwargs: Any) -> Any:
        if not failed:
            failed.append(True)
            raise RuntimeError("injected bug in a claim")
        return real_claim(*args, **kwargs)

    # One method of the real store raises once: a bug, not a store outage.
    monkeypatch.setattr(store, "claim_workflows", claim_once_broken)
    with worker:
        # Started by a process with no executor: only the worker's claims can run it.
        handle = client.start("greet", "ada")  # type: ignore[arg-type]
        assert handle.result(timeout=20) == "hello ada"
    assert failed == [True]
    assert "maintenance failed unexpectedly" in caplog.text
    assert "RuntimeError: injected bug in a claim" in caplog.text  # with its traceback
    assert "Traceback" in caplog.text


class _Runner:
    """The executor side of a claim, with a thread pool of fixed room (the store real)."""

    id = "executor-under-test"
    host_name = "test-host"
    pid = 0

    def __init__(self, room: int) -> None:
        self.room = room
        self.dispatched: list[str] = []
        self.wanted = 0

    def lease_expiry(self) -> float:
        return time.time() + 60

    def dispatch(self, record: Any, steps: Any, slot: Any) -> bool:
        self.dispatched.append(record.id)
        return True

    def thread_room(self) -> int:
        return self.room

    def want_threads(self) -> None:
        self.wanted += 1


@pytest.mark.parametrize(("room", "claims", "again"), [(3, 3, False), (100, 8, True)])
def test_a_claim_bounded_by_the_threads_waits_for_half_a_pool_of_room(
    make_app, room: int, claims: int, again: bool
) -> None:
    # Before, a claim that filled the thread pool's room called for the next round at
    # once, which claimed the few threads freed meanwhile, and so on: under load a
    # recovering worker ran ~120 claim rounds of ~12 workflows (each ~11 ms of GIL and
    # round trips) while its threads went idle between them. Now such a claim leaves
    # the next round to the pool (want_threads: half a pool's room back); a claim that
    # filled the run table's reservation still goes on at once.
    app = make_app(max_threads=8)

    def short(i: int) -> int:
        return i

    app.workflow(short)
    for i in range(12):
        app.start(short, i)  # not launched: unowned, PENDING
    runner = _Runner(room)
    maintenance = Maintenance(app.client, runner, RunTable(1000))
    woken: list[bool] = []
    maintenance.wake = lambda: woken.append(True)  # type: ignore[method-assign]
    maintenance.claim(time.time())
    assert len(runner.dispatched) == claims
    assert bool(woken) is again
    assert runner.wanted == (0 if again else 1)


def test_the_thread_pool_grows_without_making_its_caller_wait_for_threads() -> None:
    """Workflows handed to the pool from an event loop (a gather of starts) must not hold
    that loop while a new thread gets going (``Thread.start`` waits for it to run): the
    pool's spawner starts its threads; the caller starts that one thread, once. The
    pool still runs every item on at most ``max_threads`` threads."""
    from perdure._worker._pool import ThreadPool

    pool = ThreadPool(4, "test-pool")
    gate, ran, lock = threading.Event(), [], threading.Lock()
    names: set[str] = set()
    started_by_caller: list[str] = []
    original = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        if threading.current_thread() is threading.main_thread():
            started_by_caller.append(thread.name)
        original(thread)

    def item(i: int) -> None:
        gate.wait(10)
        with lock:
            ran.append(i)
            names.add(threading.current_thread().name)

    threading.Thread.start = start  # type: ignore[method-assign]
    try:
        for i in range(20):
            pool.submit(lambda i=i: item(i))
    finally:
        threading.Thread.start = original  # type: ignore[method-assign]
    try:
        assert started_by_caller == ["test-pool-spawner"]
        gate.set()
        deadline = time.monotonic() + 10
        while len(ran) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(ran) == list(range(20))
        assert len(names) <= 4 and all(name.startswith("test-pool-") for name in names), names
        assert pool.room() == 8  # all idle again: four threads, and four places waiting
    finally:
        pool.stop()
