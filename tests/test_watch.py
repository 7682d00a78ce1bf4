"""Waiting for results costs the store little: waiters of workflows that run elsewhere
share one look per interval (``_watch.Watcher``), and a waiter of a workflow that runs
in its own process reads nothing (the executor hands it the outcome)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

import perdure
from perdure._handle import WorkflowHandle


def _count(monkeypatch: pytest.MonkeyPatch, app: perdure.App, *names: str) -> Counter[str]:
    """Count the calls of these operations on the app's (real) store."""
    calls: Counter[str] = Counter()
    store = app.store
    for name in names:
        real = getattr(store, name)

        def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(store, name, counted)
    return calls


def _watcher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "perdure-watcher"]


def test_waiters_of_workflows_running_elsewhere_share_one_look_per_interval(
    make_app: Callable[..., perdure.App], monkeypatch: pytest.MonkeyPatch
) -> None:
    go = threading.Event()

    def register(app: perdure.App) -> Any:
        @app.workflow(name="slow")
        def slow(n: int) -> int:
            go.wait(10)
            return n * 2

        return slow

    client = make_app()  # never launched: its workflows run in the worker below
    slow = register(client)
    handles = [client.start(slow, i) for i in range(40)]
    calls = _count(monkeypatch, client, "get_workflow", "unfinished_among")
    results: dict[int, int] = {}
    waiters = [
        threading.Thread(target=lambda i=i, h=h: results.__setitem__(i, h.result(timeout=30)))
        for i, h in enumerate(handles)
    ]
    began = time.monotonic()
    for thread in waiters:
        thread.start()
    worker = make_app()
    register(worker)
    with worker:
        time.sleep(1.0)  # every waiter waits through many poll intervals (0.05 s)
        go.set()
        for thread in waiters:
            thread.join(30)
    elapsed = time.monotonic() - began
    assert results == {i: i * 2 for i in range(40)}
    # Each waiter read its own record when it began and once when poked: not once per
    # poll interval (that was ~20 reads each here).
    assert calls["get_workflow"] <= 3 * len(handles), calls
    # The looks: at most two per interval (2 s with pushed events, 0.05 s without).
    interval = client.client.wait_interval
    assert calls["unfinished_among"] <= 2 * elapsed / interval + 3, (calls, elapsed)
    # The watcher's thread runs only while somebody waits.
    deadline = time.monotonic() + 10
    while _watcher_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _watcher_threads()


def test_a_waiter_of_a_workflow_running_here_reads_nothing(
    app: perdure.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    go = threading.Event()

    @app.workflow
    def held(n: int) -> int:
        go.wait(10)
        return n + 1

    @app.workflow
    async def held_async(n: int) -> int:
        await asyncio.to_thread(go.wait, 10)
        return n + 2

    with app:
        sync_handle = app.start(held, 1)
        async_handle = app.start(held_async, 1)
        calls = _count(monkeypatch, app, "get_workflow", "get_workflows", "unfinished_among")
        threading.Timer(0.3, go.set).start()
        assert sync_handle.result(timeout=10) == 2

        async def wait() -> int:
            return await async_handle.result_async(timeout=10)

        assert asyncio.run(wait()) == 3
    # The first finished while the other ran: both were handed their outcome by the
    # executor, or read it once if it had just finished.
    assert calls["get_workflow"] + calls["get_workflows"] <= 1, calls
    assert calls["unfinished_among"] == 0, calls


def test_async_waiters_that_look_at_once_share_their_reads(
    app: perdure.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.workflow
    def double(n: int) -> int:
        return n * 2

    with app:
        started = [app.start(double, i) for i in range(200)]
        for handle in started:
            handle.result(timeout=30)
        # All ended before anybody waits, and these handles did not start them (a start's
        # handle hears its run's outcome): each waiter must read its outcome in the store.
        handles = [app.retrieve(handle.workflow_id) for handle in started]
        calls = _count(monkeypatch, app, "get_workflow", "get_workflows")

        async def wait_all() -> list[Any]:
            return await asyncio.gather(*(h.result_async(timeout=30) for h in handles))

        assert asyncio.run(wait_all()) == [i * 2 for i in range(200)]
    # One query per batch of the waiters that looked meanwhile, not one each (200).
    assert calls["get_workflow"] == 0, calls
    assert 1 <= calls["get_workflows"] <= 20, calls


def test_a_shared_read_reports_a_missing_workflow_and_a_failing_store_to_each_waiter(
    app: perdure.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.workflow
    def one() -> int:
        return 1

    with app:
        done = app.start(one)
        assert done.result(timeout=10) == 1
        reads = app.client.reads
        missing = reads.read("no-such-workflow")
        assert missing.result(timeout=10) is None
        with pytest.raises(perdure.WorkflowNotFoundError, match="no-such-workflow"):

            async def wait_missing() -> Any:
                # A handle whose workflow is gone (retrieve would refuse to make one).
                return await WorkflowHandle(app.client, "no-such-workflow").result_async(5)

            asyncio.run(wait_missing())

        # A store that fails: every waiter of that read gets the error, and the reads go
        # on afterwards (the reading thread does not die with it).
        real = app.store.get_workflows

        def down(workflow_ids: list[str]) -> Any:
            raise perdure.StoreError("down")

        monkeypatch.setattr(app.store, "get_workflows", down)
        failed = [reads.read(done.workflow_id) for _ in range(3)]
        for future in failed:
            with pytest.raises(perdure.StoreError, match="down"):
                future.result(timeout=10)
        monkeypatch.setattr(app.store, "get_workflows", real)
        # A waiter that gave up (its future cancelled) does not keep the others waiting.
        gave_up = reads.read(done.workflow_id)
        gave_up.cancel()
        record = reads.read(done.workflow_id).result(timeout=10)
        assert record is not None and record.status == "SUCCEEDED"


def test_results_of_workflows_started_and_ended_here_read_nothing(
    app: perdure.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.workflow
    def double(n: int) -> int:
        return n * 2

    with app:
        calls = _count(monkeypatch, app, "get_workflow", "get_workflows", "unfinished_among")
        handles = [app.start(double, i) for i in range(50)]

        async def start_all() -> list[Any]:
            return await asyncio.gather(*(app.start_async(double, i) for i in range(50, 100)))

        handles += asyncio.run(start_all())
        # Every run ends before anybody asks for a result (a loop of starts, then one of
        # results): the executor handed each handle its outcome. (Waiting for the run
        # table to empty is not enough: a run leaves it just before its outcome is
        # handed over, and a result() in between reads the store once.)
        worker = app.client._worker
        assert worker is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
            worker.running or not all(h._heard is not None and h._heard.done() for h in handles)
        ):
            time.sleep(0.01)
        assert [h.result(timeout=10) for h in handles[:50]] == [i * 2 for i in range(50)]

        async def wait_all() -> list[int]:
            return await asyncio.gather(*(h.result_async(timeout=10) for h in handles[50:]))

        assert asyncio.run(wait_all()) == [i * 2 for i in range(50, 100)]
        # A handle made elsewhere (retrieve reads the record once) still reads the store.
        assert app.retrieve(handles[0].workflow_id).result(timeout=10) == 0
    assert calls == {"get_workflow": 2}, calls


def test_a_resync_while_runs_are_under_way_here_leaves_their_handles_reading_nothing(
    app: perdure.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The PostgreSQL listener emits a resync when it (re)connects, its first connect
    # included, which may come while the first starts run: their handles still hear
    # their outcomes from the runs here, and a waiter of a workflow not run here looks
    # at the store again.
    go = threading.Event()

    @app.workflow
    def held(n: int) -> int:
        go.wait(10)
        return n * 2

    with app:
        handles = [app.start(held, i) for i in range(5)]
        other = app.notifier.subscribe("not-run-here")
        calls = _count(monkeypatch, app, "get_workflow", "get_workflows", "unfinished_among")
        app.client._on_store_event(perdure.storage.EVENT_RESYNC)
        assert other.done() and other.result() is None
        assert not any(h._heard is not None and h._heard.done() for h in handles)
        go.set()
        assert [h.result(timeout=10) for h in handles] == [i * 2 for i in range(5)]
    assert calls == {}, calls


def test_a_done_event_heard_as_a_run_here_ends_leaves_its_handle_reading_nothing(
    app: perdure.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run's outcome commits with its ``done`` event, and the listener may hear it just
    # as the run leaves the run table (a busy machine): the event must not poke the
    # handle of its start before the run told it its outcome.
    @app.workflow
    def double(n: int) -> int:
        return n * 2

    with app:
        worker = app.client._worker
        assert worker is not None
        remove = worker.table.remove

        def remove_then_hear_done(run: Any) -> tuple[int, int]:
            left = remove(run)
            app.client._on_store_event(perdure.storage.EVENT_DONE + run.workflow_id)
            return left

        monkeypatch.setattr(worker.table, "remove", remove_then_hear_done)
        calls = _count(monkeypatch, app, "get_workflow", "get_workflows", "unfinished_among")
        handles = [app.start(double, i) for i in range(5)]
        assert [h.result(timeout=10) for h in handles] == [i * 2 for i in range(5)]
    assert calls == {}, calls


def test_a_handle_of_a_failed_run_started_here_follows_its_resume(app: perdure.App) -> None:
    attempts: list[int] = []

    @app.workflow
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first run fails")
        return "ok"

    with app:
        handle = app.start(flaky)
        with pytest.raises(RuntimeError, match="first run fails"):
            handle.result(timeout=10)
        app.resume(handle.workflow_id)
        # Not the failure the run here recorded: the store's outcome, after the resume.
        assert handle.result(timeout=10) == "ok"
